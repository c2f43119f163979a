//! Transfers: the journal entries of the ledger, their idempotency keys and the
//! errors of posting one.

use std::fmt;

use agora_types::{LeaseId, Micros, ProviderId, UnixMs};
use serde::{Deserialize, Serialize};

use crate::account::Account;

/// Idempotency key of a transfer, chosen by the caller (`topup:abc`) or derived
/// by the escrow operations (`lease:5:hold:0`, `lease:5:settle:3`).
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

    pub fn new(id: impl Into<String>) -> TransferId {
        TransferId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
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
/// escrow legs of a lease are told apart by it when the journal is verified.
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
        }
    }
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
    #[error("transfer id `{id}` is reserved for escrow operations")]
    ReservedId { id: TransferId },
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
    fn kind_serializes_kebab_case() {
        assert_eq!(serde_json::to_string(&TransferKind::TopUp).unwrap(), "\"top-up\"");
        for kind in [
            TransferKind::TopUp,
            TransferKind::Hold,
            TransferKind::Settle,
            TransferKind::Fee,
            TransferKind::Release,
            TransferKind::Adjustment,
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
    }
}
