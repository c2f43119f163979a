//! Transfers: the journal entries of the ledger, their idempotency keys and the
//! errors of posting one.

use std::fmt;

use agora_types::{ContractId, LeaseId, Micros, ProviderId, TenantId, UnixMs};
use serde::{Deserialize, Serialize};

use crate::account::Account;

/// Idempotency key of a transfer, chosen by the caller (`topup:abc`) or derived
/// by the ledger's own operations: escrow (`lease:5:hold:0`, `lease:5:settle:3`),
/// reservation contracts (`contract:7:charge:2`) and resale credits
/// (`resale:5:3:0`).
///
/// Posting a transfer whose id is already in the journal never moves money a
/// second time, so a caller may retry a request as often as it likes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransferId(pub String);

impl TransferId {
    /// Longest id accepted, so that a caller cannot grow the journal and its
    /// hash input without bound through one field.
    pub const MAX_LEN_BYTES: usize = 128;

    /// Prefix of the ids the escrow operations derive. [`crate::Ledger::transfer`]
    /// refuses it, so a caller can never take an id an escrow operation will need.
    pub const ESCROW_PREFIX: &'static str = "lease:";

    /// Prefix of the ids [`crate::Ledger::charge_contract`] derives; refused by
    /// [`crate::Ledger::transfer`] for the same reason as [`Self::ESCROW_PREFIX`].
    pub const CONTRACT_PREFIX: &'static str = "contract:";

    /// Prefix of the ids [`crate::Ledger::credit_resale`] derives; refused by
    /// [`crate::Ledger::transfer`] for the same reason as [`Self::ESCROW_PREFIX`].
    pub const RESALE_PREFIX: &'static str = "resale:";

    /// Every prefix reserved for ids that the ledger derives itself.
    pub const RESERVED_PREFIXES: [&'static str; 3] = [Self::ESCROW_PREFIX, Self::CONTRACT_PREFIX, Self::RESALE_PREFIX];

    pub fn new(id: impl Into<String>) -> TransferId {
        TransferId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the id starts with a prefix reserved for the ledger's own operations.
    pub fn is_reserved(&self) -> bool {
        Self::RESERVED_PREFIXES.iter().any(|prefix| self.0.starts_with(prefix))
    }

    /// Why this id may not be used at all, if it may not.
    pub(crate) fn shape_problem(&self) -> Option<&'static str> {
        if self.0.is_empty() {
            Some("is empty")
        } else if self.0.len() > Self::MAX_LEN_BYTES {
            Some("is longer than 128 bytes")
        } else if self.0.chars().any(char::is_control) {
            Some("contains a control character")
        } else {
            None
        }
    }

    /// The id of one leg of an escrow operation: `lease:<lease>:<leg>:<op>`,
    /// where `op` is the lease's own operation counter.
    pub(crate) fn escrow(lease: LeaseId, leg: &str, op: u64) -> TransferId {
        TransferId(format!("{}{lease}:{leg}:{op}", Self::ESCROW_PREFIX))
    }

    /// The id of one leg of a contract charge: `contract:<contract>:<leg>:<op>`,
    /// where `op` is the contract's own operation counter.
    pub(crate) fn contract(contract: ContractId, leg: &str, op: u64) -> TransferId {
        TransferId(format!("{}{contract}:{leg}:{op}", Self::CONTRACT_PREFIX))
    }

    /// The id of a resale credit: `resale:<lease>:<holder>:<op>`, where `op`
    /// counts the credits of this lease to this holder.
    pub(crate) fn resale(lease: LeaseId, holder: TenantId, op: u64) -> TransferId {
        TransferId(format!("{}{lease}:{holder}:{op}", Self::RESALE_PREFIX))
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TransferId {
    fn from(id: &str) -> TransferId {
        TransferId(id.to_string())
    }
}

/// Why money moved; a label for audit. Balances never depend on it, but the
/// escrow legs of a lease, and the legs of a contract charge, are told apart by
/// it when the journal is verified. The contract and resale kinds are reserved
/// for the operations that write them ([`crate::Ledger::transfer`] refuses
/// them), so a journal entry of such a kind is always one of theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferKind {
    /// Money entering the exchange for a tenant.
    TopUp,
    /// Money moved from a tenant's available balance into escrow for a lease
    /// (the initial hold, a top-up of it, or covering a settlement shortfall).
    Hold,
    /// The provider's part of a settlement, paid out of escrow.
    Settle,
    /// The exchange's part of a settlement, paid out of escrow.
    Fee,
    /// The unused rest of a hold returned to the tenant.
    Release,
    /// A manual correction or payout by an operator.
    Adjustment,
    /// A reservation contract's charge, paid in full from the tenant's
    /// available balance to the provider (the fee is taken from it next).
    ContractCharge,
    /// The exchange's part of a contract charge, taken from the provider's
    /// earnings right after the charge it belongs to.
    ContractFee,
    /// Spot revenue earned on a tenant's reserved but idle GPUs, passed on
    /// from the provider's earnings to the reservation's holder.
    Resale,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::TopUp => "top-up",
            TransferKind::Hold => "hold",
            TransferKind::Settle => "settle",
            TransferKind::Fee => "fee",
            TransferKind::Release => "release",
            TransferKind::Adjustment => "adjustment",
            TransferKind::ContractCharge => "contract-charge",
            TransferKind::ContractFee => "contract-fee",
            TransferKind::Resale => "resale",
        }
    }

    /// Tag of the kind in the hash chain's canonical bytes; never renumber.
    pub(crate) fn tag(self) -> u8 {
        match self {
            TransferKind::TopUp => 0,
            TransferKind::Hold => 1,
            TransferKind::Settle => 2,
            TransferKind::Fee => 3,
            TransferKind::Release => 4,
            TransferKind::Adjustment => 5,
            TransferKind::ContractCharge => 6,
            TransferKind::ContractFee => 7,
            TransferKind::Resale => 8,
        }
    }

    /// Whether only the ledger's contract and resale operations may post this kind.
    pub fn is_reserved(self) -> bool {
        matches!(
            self,
            TransferKind::ContractCharge | TransferKind::ContractFee | TransferKind::Resale
        )
    }

    /// Every kind, in tag order.
    pub const ALL: [TransferKind; 9] = [
        TransferKind::TopUp,
        TransferKind::Hold,
        TransferKind::Settle,
        TransferKind::Fee,
        TransferKind::Release,
        TransferKind::Adjustment,
        TransferKind::ContractCharge,
        TransferKind::ContractFee,
        TransferKind::Resale,
    ];
}

impl fmt::Display for TransferKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lease an escrow transfer belongs to. It is part of the transfer (and of
/// its hash) so that every hold can be recomputed from the journal alone: the
/// provider is here because a hold that was never settled names it nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EscrowRef {
    pub lease: LeaseId,
    pub provider: ProviderId,
}

/// One entry of the journal: `amount` moved from `debit` to `credit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Position in the journal, from 0; part of the hash so entries cannot be reordered.
    pub seq: u64,
    pub id: TransferId,
    /// The account that gives the money (its balance decreases).
    pub debit: Account,
    /// The account that receives the money (its balance increases).
    pub credit: Account,
    /// Always positive.
    pub amount: Micros,
    pub kind: TransferKind,
    pub at: UnixMs,
    /// Set on, and only on, the transfers of the escrow operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<EscrowRef>,
    /// SHA-256 of the previous transfer's hash and this transfer's canonical
    /// bytes (see [`crate::chain`]); hex in JSON.
    #[serde(with = "crate::chain::hex32")]
    pub hash: [u8; 32],
}

impl Transfer {
    /// Whether `self` records the same movement of money as the other fields.
    /// The time is left out on purpose: a retried request arrives later than
    /// the original, and it must still be recognised as the same transfer.
    pub(crate) fn same_content(&self, debit: Account, credit: Account, amount: Micros, kind: TransferKind) -> bool {
        self.debit == debit && self.credit == credit && self.amount == amount && self.kind == kind
    }
}

/// What [`crate::Ledger::transfer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The transfer was appended to the journal.
    Posted,
    /// A transfer with this id and the same content was already posted; nothing changed.
    Duplicate,
}

/// Why a transfer was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("amount must be positive, got {amount}")]
    NonPositiveAmount { amount: Micros },
    #[error("transfer id `{id}` {reason}")]
    InvalidId { id: TransferId, reason: &'static str },
    #[error("transfer id `{id}` is reserved for the ledger's escrow, contract and resale operations")]
    ReservedId { id: TransferId },
    #[error("transfer kind `{kind}` is reserved for the ledger's contract and resale operations")]
    ReservedKind { kind: TransferKind },
    #[error("debit and credit are the same account `{account}`")]
    SameAccount { account: Account },
    #[error("account `{account}` is moved only by the escrow operations")]
    EscrowAccount { account: Account },
    #[error("insufficient funds in `{account}`: balance {balance}, amount {amount}")]
    InsufficientFunds {
        account: Account,
        balance: Micros,
        amount: Micros,
    },
    #[error("transfer id `{id}` was already used for a different transfer")]
    IdConflict { id: TransferId },
    #[error("balance of `{account}` would overflow")]
    Overflow { account: Account },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escrow_ids_are_derived_from_lease_leg_and_op() {
        assert_eq!(TransferId::escrow(LeaseId(5), "settle", 3).as_str(), "lease:5:settle:3");
        assert!(
            TransferId::escrow(LeaseId(5), "hold", 0)
                .as_str()
                .starts_with(TransferId::ESCROW_PREFIX)
        );
    }

    #[test]
    fn id_shape_limits() {
        assert_eq!(TransferId::from("topup:abc").shape_problem(), None);
        assert_eq!(TransferId::from("").shape_problem(), Some("is empty"));
        assert_eq!(TransferId::new("x".repeat(128)).shape_problem(), None);
        assert_eq!(
            TransferId::new("x".repeat(129)).shape_problem(),
            Some("is longer than 128 bytes")
        );
        assert_eq!(
            TransferId::from("a\nb").shape_problem(),
            Some("contains a control character")
        );
    }

    #[test]
    fn contract_and_resale_ids_are_derived_and_reserved() {
        let charge = TransferId::contract(ContractId(7), "charge", 2);
        assert_eq!(charge.as_str(), "contract:7:charge:2");
        let resale = TransferId::resale(LeaseId(5), TenantId(3), 0);
        assert_eq!(resale.as_str(), "resale:5:3:0");
        for id in [charge, resale, TransferId::escrow(LeaseId(1), "hold", 0)] {
            assert!(id.is_reserved(), "{id}");
        }
        assert!(!TransferId::from("topup:contract:1").is_reserved());
    }

    #[test]
    fn kind_serializes_kebab_case() {
        assert_eq!(serde_json::to_string(&TransferKind::TopUp).unwrap(), "\"top-up\"");
        for kind in TransferKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<TransferKind>(&json).unwrap(), kind);
        }
        assert_eq!(TransferKind::ContractCharge.as_str(), "contract-charge");
    }

    #[test]
    fn kind_tags_are_pinned_and_distinct() {
        // The tags are part of every hash: existing ones never change.
        let tags: Vec<u8> = TransferKind::ALL.iter().map(|kind| kind.tag()).collect();
        assert_eq!(tags, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let reserved: Vec<TransferKind> = TransferKind::ALL.into_iter().filter(|k| k.is_reserved()).collect();
        assert_eq!(
            reserved,
            [
                TransferKind::ContractCharge,
                TransferKind::ContractFee,
                TransferKind::Resale
            ]
        );
    }
}
