//! The exchange's double-entry ledger: balances, idempotent transfers, escrow
//! per lease, charges of reservation contracts and the resale credits that pay
//! their holders back, and a hash chain over the journal that anyone can verify.
//!
//! Architecture invariants:
//! - The ledger is pure and deterministic: no IO, no clock (time comes in as
//!   [`UnixMs`] arguments), no randomness, and `BTreeMap`s wherever iteration
//!   order could reach output. The same operations on a fresh ledger give the
//!   same journal, balances and chain head, bit for bit.
//! - Money moves only by [`Transfer`]s appended to the journal; balances are a
//!   cache of the journal that [`Ledger::verify`] recomputes.
//! - The sum of all balances is zero; only [`Account::Funding`] (the world
//!   outside the exchange) may be negative. Every operation checks its whole
//!   effect before it changes anything, so a refused operation changes nothing.
//! - [`Account::TenantHeld`] is moved only by the escrow operations
//!   ([`Ledger::hold`], [`Ledger::settle`], [`Ledger::release`]), so a tenant's
//!   held balance always equals the sum of that tenant's open holds.
//! - The ledger never refunds through `settle` or [`Ledger::charge_contract`]
//!   and never lets a charge exceed what the tenant has: a shortfall is
//!   reported, not borrowed.
//! - Ids starting with `lease:`, `contract:` or `resale:`, and the contract
//!   and resale [`TransferKind`]s, are written only by the ledger's own
//!   operations, whose ids are a pure function of the sequence of calls.
//! - Contract charges and resale credits, like holds, are recomputed from the
//!   journal by [`Ledger::verify`]; unlike holds, they are nothing *but* the
//!   journal, so a snapshot needs no more than it did before contracts.
//!
//! Deliberately absent: currencies (one per exchange), payouts to providers as
//! a separate mechanism (a [`TransferKind::Adjustment`] to `Funding` does it),
//! and any notion of prices: callers pass the cumulative amount due.

pub mod account;
pub mod chain;
pub mod contract;
pub mod escrow;
pub mod transfer;
pub mod verify;

use std::collections::BTreeMap;

pub use account::{Account, ParseAccountError};
pub use agora_types::{ContractId, LeaseId, Micros, ProviderId, TenantId, UnixMs};
pub use chain::GENESIS;
pub use contract::{ContractCharge, ContractCharges, ContractError, ResaleCredit};
pub use escrow::{EscrowError, Hold, SettleOutcome, fee_of};
pub use transfer::{EscrowRef, Transfer, TransferError, TransferId, TransferKind, TransferOutcome};
pub use verify::{VerifyError, VerifyReport};

/// The ledger: balances, the journal they come from, and the escrow holds.
///
/// Serializes as its journal and holds only; deserializing recomputes
/// everything else and verifies it, so a snapshot that was tampered with (or
/// cut short) is refused instead of loaded.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Ledger {
    /// Current balance of every account that a transfer ever touched.
    balances: BTreeMap<Account, Micros>,
    /// Every transfer, in order; `journal[i].seq == i`.
    journal: Vec<Transfer>,
    /// Index of each transfer id into `journal`, for idempotency.
    ids: BTreeMap<TransferId, usize>,
    /// Hash of the last transfer, or [`GENESIS`].
    head: [u8; 32],
    /// Escrow per lease, open and closed. Closed holds stay so that a late
    /// `hold` or `settle` for an ended lease is refused instead of reopening it.
    holds: BTreeMap<LeaseId, Hold>,
    /// What each reservation contract has been charged; an entry exists from
    /// the contract's first charge that moved money.
    contracts: BTreeMap<ContractId, ContractCharges>,
    /// What each lease's provider has passed on to each reservation holder
    /// whose idle GPUs the lease ran on.
    resales: BTreeMap<(LeaseId, TenantId), ResaleCredit>,
}

/// One movement of money inside an operation, checked together with the
/// other legs of the same operation before any of them is applied.
#[derive(Clone, Debug)]
pub(crate) struct Leg {
    pub(crate) id: TransferId,
    pub(crate) debit: Account,
    pub(crate) credit: Account,
    pub(crate) amount: Micros,
    pub(crate) kind: TransferKind,
    pub(crate) escrow: Option<EscrowRef>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Moves `amount` from `debit` to `credit`.
    ///
    /// Idempotent by `id`: posting an id again with the same accounts, amount
    /// and kind returns [`TransferOutcome::Duplicate`] and changes nothing
    /// (the time may differ: a retry comes later); with anything else different
    /// it is an [`TransferError::IdConflict`]. `TenantHeld` accounts and ids
    /// starting with `lease:` are reserved for the escrow operations; ids
    /// starting with `contract:` or `resale:`, and the kinds
    /// [`TransferKind::is_reserved`] names, for the contract operations.
    pub fn transfer(
        &mut self,
        id: TransferId,
        debit: Account,
        credit: Account,
        amount: Micros,
        kind: TransferKind,
        at: UnixMs,
    ) -> Result<TransferOutcome, TransferError> {
        if let Some(reason) = id.shape_problem() {
            return Err(TransferError::InvalidId { id, reason });
        }
        if id.is_reserved() {
            return Err(TransferError::ReservedId { id });
        }
        if kind.is_reserved() {
            return Err(TransferError::ReservedKind { kind });
        }
        for account in [debit, credit] {
            if account.is_escrow() {
                return Err(TransferError::EscrowAccount { account });
            }
        }
        if let Some(&index) = self.ids.get(&id) {
            return if self.journal[index].same_content(debit, credit, amount, kind) {
                Ok(TransferOutcome::Duplicate)
            } else {
                Err(TransferError::IdConflict { id })
            };
        }
        self.post(
            &[Leg {
                id,
                debit,
                credit,
                amount,
                kind,
                escrow: None,
            }],
            at,
        )?;
        Ok(TransferOutcome::Posted)
    }

    /// Money entering the exchange for a tenant: `Funding` → `TenantAvailable(tenant)`.
    pub fn top_up(
        &mut self,
        id: TransferId,
        tenant: TenantId,
        amount: Micros,
        at: UnixMs,
    ) -> Result<TransferOutcome, TransferError> {
        self.transfer(
            id,
            Account::Funding,
            Account::TenantAvailable(tenant),
            amount,
            TransferKind::TopUp,
            at,
        )
    }

    /// Checks every leg against the balances as the earlier legs leave them,
    /// then appends them all, so an operation happens entirely or not at all.
    pub(crate) fn post(&mut self, legs: &[Leg], at: UnixMs) -> Result<(), TransferError> {
        let mut scratch: BTreeMap<Account, Micros> = BTreeMap::new();
        for (i, leg) in legs.iter().enumerate() {
            if leg.amount.0 <= 0 {
                return Err(TransferError::NonPositiveAmount { amount: leg.amount });
            }
            if let Some(reason) = leg.id.shape_problem() {
                return Err(TransferError::InvalidId {
                    id: leg.id.clone(),
                    reason,
                });
            }
            if leg.debit == leg.credit {
                return Err(TransferError::SameAccount { account: leg.debit });
            }
            if self.ids.contains_key(&leg.id) || legs[..i].iter().any(|earlier| earlier.id == leg.id) {
                return Err(TransferError::IdConflict { id: leg.id.clone() });
            }
            let debit_before = *scratch.get(&leg.debit).unwrap_or(&self.balance(&leg.debit));
            let debit_after = debit_before
                .0
                .checked_sub(leg.amount.0)
                .ok_or(TransferError::Overflow { account: leg.debit })?;
            if debit_after < 0 && !leg.debit.may_go_negative() {
                return Err(TransferError::InsufficientFunds {
                    account: leg.debit,
                    balance: debit_before,
                    amount: leg.amount,
                });
            }
            let credit_before = *scratch.get(&leg.credit).unwrap_or(&self.balance(&leg.credit));
            let credit_after = credit_before
                .0
                .checked_add(leg.amount.0)
                .ok_or(TransferError::Overflow { account: leg.credit })?;
            scratch.insert(leg.debit, Micros(debit_after));
            scratch.insert(leg.credit, Micros(credit_after));
        }
        for leg in legs {
            self.append(leg.clone(), at);
        }
        // Each leg moved the same amount out of one account and into another.
        debug_assert_eq!(self.balances.values().map(|m| m.0).sum::<i128>(), 0);
        Ok(())
    }

    /// Appends one already checked leg to the journal and the chain.
    fn append(&mut self, leg: Leg, at: UnixMs) {
        let seq = self.journal.len() as u64;
        let mut transfer = Transfer {
            seq,
            id: leg.id,
            debit: leg.debit,
            credit: leg.credit,
            amount: leg.amount,
            kind: leg.kind,
            at,
            escrow: leg.escrow,
            hash: GENESIS,
        };
        transfer.hash = chain::link_hash(&self.head, &transfer);
        self.head = transfer.hash;
        *self.balances.entry(transfer.debit).or_default() -= transfer.amount;
        *self.balances.entry(transfer.credit).or_default() += transfer.amount;
        assert!(
            transfer.debit.may_go_negative() || !self.balance(&transfer.debit).is_negative(),
            "post checked the balance of {} before appending",
            transfer.debit
        );
        let previous = self.ids.insert(transfer.id.clone(), self.journal.len());
        assert!(previous.is_none(), "post checked that {} is unused", transfer.id);
        self.journal.push(transfer);
    }

    /// Balance of one account; zero for an account no transfer touched.
    pub fn balance(&self, account: &Account) -> Micros {
        self.balances.get(account).copied().unwrap_or(Micros::ZERO)
    }

    /// Every account a transfer ever touched, in [`Account`] order, with its balance.
    pub fn accounts(&self) -> impl Iterator<Item = (&Account, Micros)> + '_ {
        self.balances.iter().map(|(account, balance)| (account, *balance))
    }

    /// A tenant's `(available, held)` balances.
    pub fn tenant_balance(&self, tenant: TenantId) -> (Micros, Micros) {
        (
            self.balance(&Account::TenantAvailable(tenant)),
            self.balance(&Account::TenantHeld(tenant)),
        )
    }

    pub fn journal(&self) -> &[Transfer] {
        &self.journal
    }

    /// The transfer posted under `id`, if any.
    pub fn transfer_by_id(&self, id: &TransferId) -> Option<&Transfer> {
        self.ids.get(id).map(|&index| &self.journal[index])
    }

    /// Hash of the last transfer, or [`GENESIS`] for an empty journal.
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Number of transfers in the journal.
    pub fn len(&self) -> usize {
        self.journal.len()
    }

    pub fn is_empty(&self) -> bool {
        self.journal.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TenantId = TenantId(1);
    const P: ProviderId = ProviderId(2);

    fn at(ms: i64) -> UnixMs {
        UnixMs(ms)
    }

    fn funded(amount: i128) -> Ledger {
        let mut ledger = Ledger::new();
        assert_eq!(
            ledger.top_up("topup:1".into(), T, Micros(amount), at(0)),
            Ok(TransferOutcome::Posted)
        );
        ledger
    }

    #[test]
    fn top_up_moves_money_from_funding() {
        let ledger = funded(500);
        assert_eq!(ledger.balance(&Account::Funding), Micros(-500));
        assert_eq!(ledger.tenant_balance(T), (Micros(500), Micros::ZERO));
        assert_eq!(ledger.len(), 1);
        let t = &ledger.journal()[0];
        assert_eq!(
            (t.seq, t.kind, t.debit, t.credit),
            (0, TransferKind::TopUp, Account::Funding, Account::TenantAvailable(T))
        );
        assert_eq!(ledger.head(), chain::link_hash(&GENESIS, t));
        assert_eq!(ledger.accounts().map(|(_, b)| b.0).sum::<i128>(), 0);
    }

    #[test]
    fn transfer_between_accounts() {
        let mut ledger = funded(500);
        let outcome = ledger.transfer(
            "pay:1".into(),
            Account::TenantAvailable(T),
            Account::ProviderEarnings(P),
            Micros(200),
            TransferKind::Adjustment,
            at(5),
        );
        assert_eq!(outcome, Ok(TransferOutcome::Posted));
        assert_eq!(ledger.balance(&Account::TenantAvailable(T)), Micros(300));
        assert_eq!(ledger.balance(&Account::ProviderEarnings(P)), Micros(200));
        let listed: Vec<(Account, Micros)> = ledger.accounts().map(|(a, b)| (*a, b)).collect();
        assert_eq!(
            listed,
            [
                (Account::Funding, Micros(-500)),
                (Account::TenantAvailable(T), Micros(300)),
                (Account::ProviderEarnings(P), Micros(200)),
            ]
        );
    }

    #[test]
    fn insufficient_funds_changes_nothing() {
        let mut ledger = funded(100);
        let before = ledger.clone();
        let err = ledger.transfer(
            "pay:1".into(),
            Account::TenantAvailable(T),
            Account::ExchangeFees,
            Micros(101),
            TransferKind::Adjustment,
            at(1),
        );
        assert_eq!(
            err,
            Err(TransferError::InsufficientFunds {
                account: Account::TenantAvailable(T),
                balance: Micros(100),
                amount: Micros(101),
            })
        );
        assert_eq!(ledger, before);
    }

    #[test]
    fn funding_may_go_negative_without_limit_but_not_overflow() {
        let mut ledger = Ledger::new();
        assert!(ledger.top_up("a".into(), T, Micros(i128::MAX), at(0)).is_ok());
        assert_eq!(ledger.balance(&Account::Funding), Micros(-i128::MAX));
        let before = ledger.clone();
        assert_eq!(
            ledger.top_up("b".into(), TenantId(9), Micros(2), at(0)),
            Err(TransferError::Overflow {
                account: Account::Funding
            })
        );
        assert_eq!(ledger, before);
    }

    #[test]
    fn duplicate_id_with_same_content_is_a_no_op() {
        let mut ledger = funded(100);
        let before = ledger.clone();
        // A retry arrives later; the time is not part of the content.
        assert_eq!(
            ledger.top_up("topup:1".into(), T, Micros(100), at(99)),
            Ok(TransferOutcome::Duplicate)
        );
        assert_eq!(ledger, before);
    }

    #[test]
    fn duplicate_id_with_different_content_is_a_conflict() {
        let mut ledger = funded(100);
        let before = ledger.clone();
        let conflict = Err(TransferError::IdConflict { id: "topup:1".into() });
        assert_eq!(ledger.top_up("topup:1".into(), T, Micros(101), at(0)), conflict);
        assert_eq!(
            ledger.top_up("topup:1".into(), TenantId(2), Micros(100), at(0)),
            conflict
        );
        assert_eq!(
            ledger.transfer(
                "topup:1".into(),
                Account::Funding,
                Account::TenantAvailable(T),
                Micros(100),
                TransferKind::Adjustment,
                at(0)
            ),
            conflict
        );
        assert_eq!(ledger, before);
    }

    #[test]
    fn refuses_malformed_transfers() {
        let mut ledger = funded(100);
        let before = ledger.clone();
        let avail = Account::TenantAvailable(T);
        let fees = Account::ExchangeFees;
        let adj = TransferKind::Adjustment;
        assert_eq!(
            ledger.transfer("x".into(), avail, fees, Micros(0), adj, at(0)),
            Err(TransferError::NonPositiveAmount { amount: Micros(0) })
        );
        assert_eq!(
            ledger.transfer("x".into(), avail, fees, Micros(-5), adj, at(0)),
            Err(TransferError::NonPositiveAmount { amount: Micros(-5) })
        );
        assert_eq!(
            ledger.transfer("x".into(), avail, avail, Micros(5), adj, at(0)),
            Err(TransferError::SameAccount { account: avail })
        );
        assert_eq!(
            ledger.transfer("".into(), avail, fees, Micros(5), adj, at(0)),
            Err(TransferError::InvalidId {
                id: "".into(),
                reason: "is empty"
            })
        );
        assert_eq!(
            ledger.transfer("lease:1:hold:0".into(), avail, fees, Micros(5), adj, at(0)),
            Err(TransferError::ReservedId {
                id: "lease:1:hold:0".into()
            })
        );
        for id in ["contract:1:charge:0", "resale:1:2:0"] {
            assert_eq!(
                ledger.transfer(id.into(), avail, fees, Micros(5), adj, at(0)),
                Err(TransferError::ReservedId { id: id.into() })
            );
        }
        for kind in [
            TransferKind::ContractCharge,
            TransferKind::ContractFee,
            TransferKind::Resale,
        ] {
            assert_eq!(
                ledger.transfer("x".into(), avail, fees, Micros(5), kind, at(0)),
                Err(TransferError::ReservedKind { kind })
            );
        }
        assert_eq!(
            ledger.transfer("x".into(), avail, Account::TenantHeld(T), Micros(5), adj, at(0)),
            Err(TransferError::EscrowAccount {
                account: Account::TenantHeld(T)
            })
        );
        assert_eq!(ledger, before);
    }

    #[test]
    fn lookup_by_id() {
        let ledger = funded(100);
        assert_eq!(
            ledger.transfer_by_id(&"topup:1".into()).map(|t| t.amount),
            Some(Micros(100))
        );
        assert_eq!(ledger.transfer_by_id(&"topup:2".into()), None);
        assert!(Ledger::new().is_empty());
        assert_eq!(Ledger::new().head(), GENESIS);
    }

    #[test]
    fn error_messages_are_lowercase_without_trailing_punctuation() {
        let err = TransferError::InsufficientFunds {
            account: Account::TenantAvailable(T),
            balance: Micros(1),
            amount: Micros(2_500_000),
        };
        assert_eq!(
            err.to_string(),
            "insufficient funds in `tenant:1:available`: balance 0.000001, amount 2.50"
        );
    }
}
