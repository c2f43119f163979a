//! The hash chain over the journal, so that anyone holding the journal can
//! check that no entry was changed, dropped or reordered.
//!
//! `hash(n) = SHA-256(hash(n-1) || canonical_bytes(transfer n))`, with
//! `hash(-1)` = [`GENESIS`] (32 zero bytes). The head of the chain is the hash
//! of the last transfer, or `GENESIS` for an empty journal.
//!
//! Canonical bytes, version 1 (all integers big-endian, fixed width):
//!
//! | field    | encoding                                                      |
//! |----------|---------------------------------------------------------------|
//! | version  | `u8` = 1                                                      |
//! | seq      | `u64`                                                         |
//! | id       | `u32` byte length, then the UTF-8 bytes                       |
//! | debit    | account: `u8` tag, then `u64` id for tenant/provider accounts |
//! | credit   | account, as debit                                             |
//! | amount   | `i128` micros                                                 |
//! | kind     | `u8` tag                                                      |
//! | at       | `i64` milliseconds since the Unix epoch                       |
//! | escrow   | `u8` 0 for none, or 1 then lease `u64` then provider `u64`    |
//!
//! Account tags: funding 0, tenant available 1, tenant held 2, provider
//! earnings 3, exchange fees 4. Kind tags: top-up 0, hold 1, settle 2, fee 3,
//! release 4, adjustment 5, contract-charge 6, contract-fee 7, resale 8 (new
//! kinds only ever take new tags, so adding one leaves every existing hash as it
//! was). Changing any of this changes every hash, so the format carries a
//! version byte and a test pins one hash.
//!
//! Contract and resale transfers carry no extra field: their ids and accounts
//! name the contract, lease, tenant and provider (see [`crate::contract`]), so
//! they are hashed like any other transfer with escrow byte 0.

use sha2::{Digest, Sha256};

use crate::account::Account;
use crate::transfer::Transfer;

/// The hash before the first transfer.
pub const GENESIS: [u8; 32] = [0; 32];

const CANONICAL_VERSION: u8 = 1;

fn push_account(out: &mut Vec<u8>, account: Account) {
    match account {
        Account::Funding => out.push(0),
        Account::TenantAvailable(t) => {
            out.push(1);
            out.extend_from_slice(&t.0.to_be_bytes());
        }
        Account::TenantHeld(t) => {
            out.push(2);
            out.extend_from_slice(&t.0.to_be_bytes());
        }
        Account::ProviderEarnings(p) => {
            out.push(3);
            out.extend_from_slice(&p.0.to_be_bytes());
        }
        Account::ExchangeFees => out.push(4),
    }
}

/// The bytes of a transfer that the chain hashes: every field but the hash itself.
pub fn canonical_bytes(transfer: &Transfer) -> Vec<u8> {
    let id = transfer.id.as_str().as_bytes();
    let mut out = Vec::with_capacity(1 + 8 + 4 + id.len() + 2 * 9 + 16 + 1 + 8 + 17);
    out.push(CANONICAL_VERSION);
    out.extend_from_slice(&transfer.seq.to_be_bytes());
    // Ids are at most 128 bytes (checked before posting), so the length fits a u32;
    // a length prefix keeps `ab`+`c` and `a`+`bc` apart.
    let id_len = u32::try_from(id.len()).expect("transfer ids are at most 128 bytes");
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(id);
    push_account(&mut out, transfer.debit);
    push_account(&mut out, transfer.credit);
    out.extend_from_slice(&transfer.amount.0.to_be_bytes());
    out.push(transfer.kind.tag());
    out.extend_from_slice(&transfer.at.0.to_be_bytes());
    match transfer.escrow {
        None => out.push(0),
        Some(escrow) => {
            out.push(1);
            out.extend_from_slice(&escrow.lease.0.to_be_bytes());
            out.extend_from_slice(&escrow.provider.0.to_be_bytes());
        }
    }
    out
}

/// The hash of `transfer` chained onto `previous`. The transfer's own `hash`
/// field is ignored, so this is how a stored hash is checked.
pub fn link_hash(previous: &[u8; 32], transfer: &Transfer) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical_bytes(transfer));
    hasher.finalize().into()
}

/// Serde helper: a 32-byte hash as 64 lowercase hex digits.
pub(crate) mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use agora_types::{LeaseId, Micros, ProviderId, TenantId, UnixMs};

    use super::*;
    use crate::transfer::{EscrowRef, TransferId, TransferKind};

    fn sample() -> Transfer {
        Transfer {
            seq: 1,
            id: TransferId::from("lease:5:settle:3"),
            debit: Account::TenantHeld(TenantId(3)),
            credit: Account::ProviderEarnings(ProviderId(7)),
            amount: Micros(1_234_567),
            kind: TransferKind::Settle,
            at: UnixMs(1_700_000_000_000),
            escrow: Some(EscrowRef {
                lease: LeaseId(5),
                provider: ProviderId(7),
            }),
            hash: [0xAA; 32],
        }
    }

    #[test]
    fn canonical_bytes_follow_the_documented_layout() {
        let mut expected = vec![1u8];
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&16u32.to_be_bytes());
        expected.extend_from_slice(b"lease:5:settle:3");
        expected.push(2);
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.push(3);
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.extend_from_slice(&1_234_567i128.to_be_bytes());
        expected.push(2);
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        expected.push(1);
        expected.extend_from_slice(&5u64.to_be_bytes());
        expected.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(canonical_bytes(&sample()), expected);
    }

    /// Pins the format. The expected value was computed outside this code:
    /// the documented layout packed by hand (Python `struct`) after 32 zero
    /// bytes, piped to `sha256sum`.
    #[test]
    fn link_hash_is_pinned() {
        assert_eq!(
            hex::encode(link_hash(&GENESIS, &sample())),
            "9f8c7851c5a146f2ee2d62518c8b50b28079a4d7f465dc78d5352268e4ed019b"
        );
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = link_hash(&GENESIS, &sample());
        let variants: [fn(&mut Transfer); 8] = [
            |t| t.seq = 2,
            |t| t.id = TransferId::from("lease:5:settle:4"),
            |t| t.debit = Account::TenantHeld(TenantId(4)),
            |t| t.credit = Account::ExchangeFees,
            |t| t.amount = Micros(1_234_568),
            |t| t.kind = TransferKind::Fee,
            |t| t.at = UnixMs(1_700_000_000_001),
            |t| t.escrow = None,
        ];
        for change in variants {
            let mut t = sample();
            change(&mut t);
            assert_ne!(link_hash(&GENESIS, &t), base);
        }
        // The previous hash is part of the input; the stored hash is not.
        assert_ne!(link_hash(&[1; 32], &sample()), base);
        let mut t = sample();
        t.hash = [0; 32];
        assert_eq!(link_hash(&GENESIS, &t), base);
    }

    #[test]
    fn hash_serializes_as_hex() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["hash"], "aa".repeat(32));
        let back: Transfer = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }
}
