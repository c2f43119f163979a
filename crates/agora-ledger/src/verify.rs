//! Verification: recompute the ledger from its journal alone and compare, and
//! the snapshot format that relies on it.
//!
//! [`Ledger::verify`] checks, in this order: each transfer's sequence number,
//! id, amount and hash link; that no account but `Funding` is negative after
//! any transfer; that escrow transfers have the shapes the escrow operations
//! write (and no other transfer touches `TenantHeld`); the chain head; every
//! maintained balance against the recomputed one; that balances sum to zero;
//! every hold's money fields against the sums of its lease's transfers;
//! per tenant, that the `TenantHeld` balance equals the sum of the tenant's
//! holds; and every contract's charges and every resale credit against the
//! ones the journal implies.
//!
//! Contract and resale transfers are checked as they are replayed (see
//! [`crate::contract`] for the shapes): ids in their exact form with ops in
//! sequence from 0 per contract and per `(lease, holder)`; the reserved kinds
//! only with their ids and the reserved ids only with their kinds; a charge
//! leg from the tenant to the provider that the contract's first charge named;
//! a fee leg right after the charge of its op, at the same time, from that
//! provider to the fees, and no larger than that charge (so a contract's fees
//! never exceed its charges); a resale credit from the lease's provider to a
//! tenant other than the lease's, which with the lease's earlier credits never
//! exceeds what the provider had earned from the lease at that point.

use std::collections::{BTreeMap, BTreeSet};

use agora_types::{ContractId, LeaseId, Micros, ProviderId, TenantId, UnixMs};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Ledger;
use crate::account::Account;
use crate::chain::{self, GENESIS};
use crate::contract::{self, ContractCharges, LeaseEarnings, ResaleCredit};
use crate::escrow::Hold;
use crate::transfer::{Transfer, TransferId, TransferKind};

/// What a successful [`Ledger::verify`] checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Transfers in the journal.
    pub transfers: u64,
    /// Accounts a transfer touched.
    pub accounts: usize,
    /// The chain head, as 64 hex digits.
    pub head_hex: String,
    /// Money that entered the exchange: `-balance(Funding)`.
    pub total_funded: Micros,
    /// Money in escrow, over all tenants.
    pub total_held: Micros,
    /// The exchange's fees.
    pub total_fees: Micros,
    pub open_holds: usize,
    pub closed_holds: usize,
    /// Contracts charged at least once.
    pub contracts: usize,
    /// Everything charged on contracts, fees included.
    pub total_contract_charged: Micros,
    /// Everything providers passed on to reservation holders.
    pub total_resale_credited: Micros,
}

/// The first disagreement verification found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("transfer at index {index} has sequence number {seq}")]
    SeqMismatch { index: u64, seq: u64 },
    #[error("transfer {seq} is malformed: {reason}")]
    Malformed { seq: u64, reason: &'static str },
    #[error("transfer {seq} reuses id `{id}`")]
    DuplicateId { seq: u64, id: TransferId },
    #[error("transfer {seq} has hash {stored_hex}, expected {computed_hex}")]
    HashMismatch {
        seq: u64,
        stored_hex: String,
        computed_hex: String,
    },
    /// `seq` is the transfer after which the balance was negative; the
    /// journal's length when a maintained balance is negative at the end.
    #[error("transfer {seq} leaves `{account}` at {balance}")]
    NegativeBalance {
        seq: u64,
        account: Account,
        balance: Micros,
    },
    #[error("transfer {seq} overflows the balance of `{account}`")]
    Overflow { seq: u64, account: Account },
    #[error("transfer {seq} is not a valid escrow transfer: {reason}")]
    EscrowShape { seq: u64, reason: &'static str },
    #[error("chain head is {maintained_hex}, the journal gives {recomputed_hex}")]
    HeadMismatch {
        maintained_hex: String,
        recomputed_hex: String,
    },
    #[error("id index disagrees with the journal")]
    IdIndexMismatch,
    #[error("balance of `{account}` is {maintained}, the journal gives {recomputed}")]
    BalanceMismatch {
        account: Account,
        maintained: Micros,
        recomputed: Micros,
    },
    #[error("balances sum to {sum}, not zero")]
    NotBalanced { sum: Micros },
    #[error("hold of lease {lease} disagrees with the journal on {field}")]
    HoldMismatch { lease: LeaseId, field: &'static str },
    #[error("lease {lease} has a hold but no escrow transfers")]
    HoldWithoutTransfers { lease: LeaseId },
    #[error("lease {lease} has escrow transfers but no hold")]
    TransfersWithoutHold { lease: LeaseId },
    #[error("tenant {tenant} has {held_balance} held but its holds add up to {holds_total}")]
    HeldMismatch {
        tenant: TenantId,
        held_balance: Micros,
        holds_total: Micros,
    },
    #[error("transfer {seq} is not a valid contract or resale transfer: {reason}")]
    ContractShape { seq: u64, reason: &'static str },
    /// `field` is `entry` when only one of the ledger and the journal has the contract.
    #[error("charges of contract {contract} disagree with the journal on {field}")]
    ContractMismatch { contract: ContractId, field: &'static str },
    /// `field` is `entry` when only one of the ledger and the journal has the credit.
    #[error("resale credit of lease {lease} to tenant {holder} disagrees with the journal on {field}")]
    ResaleMismatch {
        lease: LeaseId,
        holder: TenantId,
        field: &'static str,
    },
}

/// What the escrow transfers of one lease add up to.
#[derive(Clone, Debug)]
struct Tally {
    tenant: TenantId,
    provider: ProviderId,
    deposited: Micros,
    held: Micros,
    charged: Micros,
    earned: Micros,
    fees: Micros,
    released: Micros,
    opened_at: UnixMs,
    released_at: Option<UnixMs>,
    /// Highest `op` in the lease's transfer ids; the hold's counter must be past it.
    max_op: u64,
}

/// The state the journal alone implies.
#[derive(Debug)]
struct Recomputed {
    balances: BTreeMap<Account, Micros>,
    ids: BTreeMap<TransferId, usize>,
    head: [u8; 32],
    leases: BTreeMap<LeaseId, Tally>,
    contracts: BTreeMap<ContractId, ContractCharges>,
    resales: BTreeMap<(LeaseId, TenantId), ResaleCredit>,
}

fn hex32(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}

/// Splits `lease:<lease>:<leg>:<op>` into its parts.
fn parse_escrow_id(id: &TransferId) -> Option<(LeaseId, &str, u64)> {
    let rest = id.as_str().strip_prefix(TransferId::ESCROW_PREFIX)?;
    let mut parts = rest.split(':');
    let lease = parts.next()?;
    let leg = parts.next()?;
    let op = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let lease = LeaseId(lease.parse().ok()?);
    let op: u64 = op.parse().ok()?;
    // Only the exact text the escrow operations write counts, so one journal
    // entry cannot pass for another (`lease:05:…`, `lease:+5:…`).
    (TransferId::escrow(lease, leg, op) == *id).then_some((lease, leg, op))
}

/// Checks one escrow transfer against the shapes the escrow operations write
/// and adds it to its lease's tally.
fn tally_escrow(
    leases: &mut BTreeMap<LeaseId, Tally>,
    transfer: &Transfer,
    lease: LeaseId,
    provider: ProviderId,
) -> Result<(), &'static str> {
    let (id_lease, leg, op) = parse_escrow_id(&transfer.id).ok_or("id is not lease:<lease>:<leg>:<op>")?;
    if id_lease != lease {
        return Err("id names another lease");
    }
    let expected_leg: &[&str] = match transfer.kind {
        TransferKind::Hold => &["hold", "cover"],
        TransferKind::Settle => &["settle"],
        TransferKind::Fee => &["fee"],
        TransferKind::Release => &["release"],
        TransferKind::TopUp
        | TransferKind::Adjustment
        | TransferKind::ContractCharge
        | TransferKind::ContractFee
        | TransferKind::Resale => return Err("kind is not an escrow kind"),
    };
    if !expected_leg.contains(&leg) {
        return Err("id names another leg than the kind");
    }
    let tenant = match (transfer.kind, transfer.debit, transfer.credit) {
        (TransferKind::Hold, Account::TenantAvailable(a), Account::TenantHeld(b)) if a == b => a,
        (TransferKind::Settle, Account::TenantHeld(t), Account::ProviderEarnings(p)) if p == provider => t,
        (TransferKind::Fee, Account::TenantHeld(t), Account::ExchangeFees) => t,
        (TransferKind::Release, Account::TenantHeld(a), Account::TenantAvailable(b)) if a == b => a,
        _ => return Err("accounts do not fit the kind"),
    };
    let tally = match leases.get_mut(&lease) {
        Some(tally) => tally,
        None if leg == "hold" => leases.entry(lease).or_insert(Tally {
            tenant,
            provider,
            deposited: Micros::ZERO,
            held: Micros::ZERO,
            charged: Micros::ZERO,
            earned: Micros::ZERO,
            fees: Micros::ZERO,
            released: Micros::ZERO,
            opened_at: transfer.at,
            released_at: None,
            max_op: op,
        }),
        None => return Err("first transfer of a lease is not a hold"),
    };
    if (tally.tenant, tally.provider) != (tenant, provider) {
        return Err("tenant or provider differs from the lease's earlier transfers");
    }
    if tally.released_at.is_some() {
        return Err("transfer after the lease's release");
    }
    tally.max_op = tally.max_op.max(op);
    let amount = transfer.amount;
    match transfer.kind {
        TransferKind::Hold => {
            tally.deposited += amount;
            tally.held += amount;
        }
        TransferKind::Settle => {
            tally.held -= amount;
            tally.charged += amount;
            tally.earned += amount;
        }
        TransferKind::Fee => {
            tally.held -= amount;
            tally.charged += amount;
            tally.fees += amount;
        }
        TransferKind::Release => {
            tally.held -= amount;
            tally.released += amount;
            tally.released_at = Some(transfer.at);
            if tally.held.0 != 0 {
                return Err("release left money in escrow");
            }
        }
        TransferKind::TopUp
        | TransferKind::Adjustment
        | TransferKind::ContractCharge
        | TransferKind::ContractFee
        | TransferKind::Resale => unreachable!("refused above"),
    }
    if tally.held.is_negative() {
        return Err("escrow of the lease went negative");
    }
    Ok(())
}

/// Replays the journal from nothing, checking every transfer on the way.
fn recompute(journal: &[Transfer]) -> Result<Recomputed, VerifyError> {
    let mut balances: BTreeMap<Account, Micros> = BTreeMap::new();
    let mut ids: BTreeMap<TransferId, usize> = BTreeMap::new();
    let mut head = GENESIS;
    let mut leases: BTreeMap<LeaseId, Tally> = BTreeMap::new();
    let mut contracts: BTreeMap<ContractId, ContractCharges> = BTreeMap::new();
    let mut resales: BTreeMap<(LeaseId, TenantId), ResaleCredit> = BTreeMap::new();
    for (index, transfer) in journal.iter().enumerate() {
        let seq = transfer.seq;
        if seq != index as u64 {
            return Err(VerifyError::SeqMismatch {
                index: index as u64,
                seq,
            });
        }
        if let Some(reason) = transfer.id.shape_problem() {
            return Err(VerifyError::Malformed { seq, reason });
        }
        if transfer.amount.0 <= 0 {
            return Err(VerifyError::Malformed {
                seq,
                reason: "amount is not positive",
            });
        }
        if transfer.debit == transfer.credit {
            return Err(VerifyError::Malformed {
                seq,
                reason: "debit and credit are the same account",
            });
        }
        if ids.insert(transfer.id.clone(), index).is_some() {
            return Err(VerifyError::DuplicateId {
                seq,
                id: transfer.id.clone(),
            });
        }
        let computed = chain::link_hash(&head, transfer);
        if computed != transfer.hash {
            return Err(VerifyError::HashMismatch {
                seq,
                stored_hex: hex32(&transfer.hash),
                computed_hex: hex32(&computed),
            });
        }
        head = computed;

        let debit = balances.entry(transfer.debit).or_default();
        debit.0 = debit.0.checked_sub(transfer.amount.0).ok_or(VerifyError::Overflow {
            seq,
            account: transfer.debit,
        })?;
        if debit.is_negative() && !transfer.debit.may_go_negative() {
            return Err(VerifyError::NegativeBalance {
                seq,
                account: transfer.debit,
                balance: *debit,
            });
        }
        let credit = balances.entry(transfer.credit).or_default();
        credit.0 = credit.0.checked_add(transfer.amount.0).ok_or(VerifyError::Overflow {
            seq,
            account: transfer.credit,
        })?;

        match transfer.escrow {
            None => {
                if transfer.debit.is_escrow() || transfer.credit.is_escrow() {
                    return Err(VerifyError::EscrowShape {
                        seq,
                        reason: "moves escrow without naming a lease",
                    });
                }
                if transfer.id.as_str().starts_with(TransferId::ESCROW_PREFIX) {
                    return Err(VerifyError::EscrowShape {
                        seq,
                        reason: "uses an escrow id without naming a lease",
                    });
                }
                let contract_shape = |reason| VerifyError::ContractShape { seq, reason };
                let id = transfer.id.as_str();
                if id.starts_with(TransferId::CONTRACT_PREFIX) {
                    contract::tally_contract(&mut contracts, journal, index).map_err(contract_shape)?;
                } else if id.starts_with(TransferId::RESALE_PREFIX) {
                    let lease_earnings = contract::parse_resale_id(&transfer.id)
                        .and_then(|(lease, ..)| leases.get(&lease))
                        .map(|tally| LeaseEarnings {
                            tenant: tally.tenant,
                            provider: tally.provider,
                            earned: tally.earned,
                        });
                    contract::tally_resale(&mut resales, lease_earnings, transfer).map_err(contract_shape)?;
                } else if transfer.kind.is_reserved() {
                    return Err(contract_shape("has a contract or resale kind but not such an id"));
                }
            }
            Some(escrow) => tally_escrow(&mut leases, transfer, escrow.lease, escrow.provider)
                .map_err(|reason| VerifyError::EscrowShape { seq, reason })?,
        }
    }
    Ok(Recomputed {
        balances,
        ids,
        head,
        leases,
        contracts,
        resales,
    })
}

impl Ledger {
    /// Recomputes everything from the journal alone and compares it with the
    /// maintained state; see the module docs for the list of checks.
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        let recomputed = recompute(&self.journal)?;
        self.check_against(&recomputed)
    }

    fn check_against(&self, recomputed: &Recomputed) -> Result<VerifyReport, VerifyError> {
        if recomputed.head != self.head {
            return Err(VerifyError::HeadMismatch {
                maintained_hex: hex32(&self.head),
                recomputed_hex: hex32(&recomputed.head),
            });
        }
        if recomputed.ids != self.ids {
            return Err(VerifyError::IdIndexMismatch);
        }
        let accounts: BTreeSet<&Account> = self.balances.keys().chain(recomputed.balances.keys()).collect();
        for account in accounts {
            let maintained = self.balance(account);
            let recomputed = recomputed.balances.get(account).copied().unwrap_or(Micros::ZERO);
            if maintained != recomputed || !self.balances.contains_key(account) {
                return Err(VerifyError::BalanceMismatch {
                    account: *account,
                    maintained,
                    recomputed,
                });
            }
        }
        // Cannot overflow: every balance is bounded by what Funding gave out,
        // and the partial sums are checked anyway.
        let sum = self
            .balances
            .values()
            .try_fold(0i128, |sum, balance| sum.checked_add(balance.0))
            .ok_or(VerifyError::NotBalanced { sum: Micros(i128::MAX) })?;
        if sum != 0 {
            return Err(VerifyError::NotBalanced { sum: Micros(sum) });
        }
        for (account, balance) in &self.balances {
            if balance.is_negative() && !account.may_go_negative() {
                return Err(VerifyError::NegativeBalance {
                    seq: self.journal.len() as u64,
                    account: *account,
                    balance: *balance,
                });
            }
        }
        self.check_holds(recomputed)?;
        self.check_contracts(recomputed)?;

        let total_held = self
            .balances
            .iter()
            .filter(|(account, _)| account.is_escrow())
            .fold(Micros::ZERO, |sum, (_, balance)| sum + *balance);
        let open_holds = self.holds.values().filter(|hold| hold.is_open()).count();
        Ok(VerifyReport {
            transfers: self.journal.len() as u64,
            accounts: self.balances.len(),
            head_hex: hex32(&self.head),
            total_funded: Micros(-self.balance(&Account::Funding).0),
            total_held,
            total_fees: self.balance(&Account::ExchangeFees),
            open_holds,
            closed_holds: self.holds.len() - open_holds,
            contracts: self.contracts.len(),
            total_contract_charged: self.contracts.values().fold(Micros::ZERO, |sum, c| sum + c.charged),
            total_resale_credited: self.resales.values().fold(Micros::ZERO, |sum, r| sum + r.credited),
        })
    }

    /// Contract charges and resale credits are nothing but the journal, so the
    /// maintained ones must equal the recomputed ones field for field.
    fn check_contracts(&self, recomputed: &Recomputed) -> Result<(), VerifyError> {
        let contracts: BTreeSet<ContractId> = self
            .contracts
            .keys()
            .chain(recomputed.contracts.keys())
            .copied()
            .collect();
        for contract in contracts {
            let mismatch = |field| VerifyError::ContractMismatch { contract, field };
            let (Some(kept), Some(replayed)) = (self.contracts.get(&contract), recomputed.contracts.get(&contract))
            else {
                return Err(mismatch("entry"));
            };
            let fields = [
                ("tenant", kept.tenant == replayed.tenant),
                ("provider", kept.provider == replayed.provider),
                ("charged", kept.charged == replayed.charged),
                ("fees", kept.fees == replayed.fees),
                ("first_charged_at", kept.first_charged_at == replayed.first_charged_at),
                ("last_charged_at", kept.last_charged_at == replayed.last_charged_at),
                ("next_op", kept.next_op == replayed.next_op),
                ("fees", kept.fees <= kept.charged),
            ];
            if let Some((field, _)) = fields.iter().find(|(_, ok)| !ok) {
                return Err(mismatch(*field));
            }
        }
        let resales: BTreeSet<(LeaseId, TenantId)> =
            self.resales.keys().chain(recomputed.resales.keys()).copied().collect();
        for (lease, holder) in resales {
            let mismatch = |field| VerifyError::ResaleMismatch { lease, holder, field };
            let key = (lease, holder);
            let (Some(kept), Some(replayed)) = (self.resales.get(&key), recomputed.resales.get(&key)) else {
                return Err(mismatch("entry"));
            };
            let fields = [
                ("provider", kept.provider == replayed.provider),
                ("credited", kept.credited == replayed.credited),
                (
                    "first_credited_at",
                    kept.first_credited_at == replayed.first_credited_at,
                ),
                ("last_credited_at", kept.last_credited_at == replayed.last_credited_at),
                ("next_op", kept.next_op == replayed.next_op),
            ];
            if let Some((field, _)) = fields.iter().find(|(_, ok)| !ok) {
                return Err(mismatch(*field));
            }
        }
        Ok(())
    }

    fn check_holds(&self, recomputed: &Recomputed) -> Result<(), VerifyError> {
        for lease in recomputed.leases.keys() {
            if !self.holds.contains_key(lease) {
                return Err(VerifyError::TransfersWithoutHold { lease: *lease });
            }
        }
        let mut held_by_tenant: BTreeMap<TenantId, Micros> = BTreeMap::new();
        for (&lease, hold) in &self.holds {
            let tally = recomputed
                .leases
                .get(&lease)
                .ok_or(VerifyError::HoldWithoutTransfers { lease })?;
            let mismatch = |field| VerifyError::HoldMismatch { lease, field };
            let fields = [
                ("tenant", hold.tenant == tally.tenant),
                ("provider", hold.provider == tally.provider),
                ("held", hold.held == tally.held),
                ("deposited", hold.deposited == tally.deposited),
                ("charged", hold.charged == tally.charged),
                ("earned", hold.earned == tally.earned),
                ("fees", hold.fees == tally.fees),
                ("released", hold.released == tally.released),
                ("opened_at", hold.opened_at == tally.opened_at),
                ("next_op", hold.next_op > tally.max_op),
                // A release transfer closes the hold at its time; a hold closed
                // with nothing left has no release transfer, only `held == 0`.
                (
                    "closed_at",
                    tally.released_at.is_none() || hold.closed_at == tally.released_at,
                ),
                ("held", hold.is_open() || hold.held == Micros::ZERO),
                ("charged", hold.charged == hold.earned + hold.fees),
                ("deposited", hold.deposited == hold.held + hold.charged + hold.released),
            ];
            if let Some((field, _)) = fields.iter().find(|(_, ok)| !ok) {
                return Err(mismatch(*field));
            }
            *held_by_tenant.entry(hold.tenant).or_default() += hold.held;
        }
        let tenants: BTreeSet<TenantId> = self
            .balances
            .keys()
            .filter_map(|account| match account {
                Account::TenantHeld(tenant) => Some(*tenant),
                _ => None,
            })
            .chain(held_by_tenant.keys().copied())
            .collect();
        for tenant in tenants {
            let held_balance = self.balance(&Account::TenantHeld(tenant));
            let holds_total = held_by_tenant.get(&tenant).copied().unwrap_or(Micros::ZERO);
            if held_balance != holds_total {
                return Err(VerifyError::HeldMismatch {
                    tenant,
                    held_balance,
                    holds_total,
                });
            }
        }
        Ok(())
    }

    /// Rebuilds a ledger from a journal and the holds kept beside it (a hold
    /// closed with nothing left to release leaves no transfer, so the journal
    /// alone cannot say it is closed), recomputing balances, ids, the head,
    /// contract charges and resale credits, and verifying the whole.
    pub fn restore(journal: Vec<Transfer>, holds: BTreeMap<LeaseId, Hold>) -> Result<Ledger, VerifyError> {
        let recomputed = recompute(&journal)?;
        let ledger = Ledger {
            balances: recomputed.balances.clone(),
            journal,
            ids: recomputed.ids.clone(),
            head: recomputed.head,
            holds,
            contracts: recomputed.contracts.clone(),
            resales: recomputed.resales.clone(),
        };
        ledger.check_against(&recomputed)?;
        Ok(ledger)
    }
}

/// The serialized form of a ledger: what cannot be recomputed.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    journal: &'a [Transfer],
    holds: &'a BTreeMap<LeaseId, Hold>,
}

#[derive(Deserialize)]
struct Snapshot {
    journal: Vec<Transfer>,
    holds: BTreeMap<LeaseId, Hold>,
}

impl Serialize for Ledger {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SnapshotRef {
            journal: &self.journal,
            holds: &self.holds,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ledger {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let snapshot = Snapshot::deserialize(deserializer)?;
        Ledger::restore(snapshot.journal, snapshot.holds).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::TransferKind;

    const T: TenantId = TenantId(1);
    const P: ProviderId = ProviderId(2);
    const L: LeaseId = LeaseId(5);

    /// A ledger that used every operation.
    fn busy() -> Ledger {
        let mut ledger = Ledger::new();
        ledger.top_up("topup:1".into(), T, Micros(10_000), UnixMs(0)).unwrap();
        ledger
            .top_up("topup:2".into(), TenantId(2), Micros(500), UnixMs(0))
            .unwrap();
        ledger.hold(L, T, P, Micros(3_000), UnixMs(1)).unwrap();
        ledger.hold(LeaseId(6), TenantId(2), P, Micros(400), UnixMs(1)).unwrap();
        ledger.settle(L, Micros(1_234), 250, UnixMs(2)).unwrap();
        ledger.settle(LeaseId(6), Micros(900), 250, UnixMs(2)).unwrap();
        ledger.release(L, UnixMs(3)).unwrap();
        ledger.release(LeaseId(6), UnixMs(3)).unwrap();
        ledger
            .hold(LeaseId(7), T, ProviderId(3), Micros(100), UnixMs(4))
            .unwrap();
        ledger
            .transfer(
                "payout:1".into(),
                Account::ProviderEarnings(P),
                Account::Funding,
                Micros(1_000),
                TransferKind::Adjustment,
                UnixMs(5),
            )
            .unwrap();
        ledger
    }

    #[test]
    fn verify_reports_a_consistent_ledger() {
        let ledger = busy();
        let report = ledger.verify().unwrap();
        assert_eq!(report.transfers, ledger.len() as u64);
        assert_eq!(report.head_hex, hex::encode(ledger.head()));
        assert_eq!(report.total_funded, Micros(10_500 - 1_000));
        assert_eq!(report.total_held, Micros(100));
        assert_eq!((report.open_holds, report.closed_holds), (1, 2));
        assert_eq!(report.total_fees, Micros(30 + 12));
        assert_eq!(Ledger::new().verify().unwrap().head_hex, "0".repeat(64));
    }

    #[test]
    fn verify_catches_a_changed_amount() {
        let mut ledger = busy();
        ledger.journal[0].amount = Micros(10_001);
        assert!(matches!(ledger.verify(), Err(VerifyError::HashMismatch { seq: 0, .. })));
    }

    #[test]
    fn verify_catches_a_rehashed_change_through_the_head_and_balances() {
        // Someone who changes a transfer and recomputes the whole chain still
        // cannot make it agree with the head and balances kept beside it.
        let mut ledger = busy();
        ledger.journal[0].amount = Micros(10_001);
        let mut head = GENESIS;
        for t in &mut ledger.journal {
            t.hash = chain::link_hash(&head, t);
            head = t.hash;
        }
        assert!(matches!(ledger.verify(), Err(VerifyError::HeadMismatch { .. })));
        ledger.head = head;
        assert!(matches!(
            ledger.verify(),
            Err(VerifyError::BalanceMismatch {
                account: Account::Funding,
                ..
            })
        ));
    }

    #[test]
    fn verify_catches_a_dropped_transfer() {
        let mut ledger = busy();
        ledger.journal.remove(1);
        assert_eq!(ledger.verify(), Err(VerifyError::SeqMismatch { index: 1, seq: 2 }));
    }

    #[test]
    fn verify_catches_a_changed_balance() {
        let mut ledger = busy();
        *ledger.balances.get_mut(&Account::ExchangeFees).unwrap() += Micros(1);
        assert_eq!(
            ledger.verify(),
            Err(VerifyError::BalanceMismatch {
                account: Account::ExchangeFees,
                maintained: Micros(43),
                recomputed: Micros(42)
            })
        );
    }

    #[test]
    fn verify_catches_a_changed_hold() {
        let mut ledger = busy();
        ledger.holds.get_mut(&LeaseId(7)).unwrap().held = Micros(99);
        assert_eq!(
            ledger.verify(),
            Err(VerifyError::HoldMismatch {
                lease: LeaseId(7),
                field: "held"
            })
        );
        let mut ledger = busy();
        ledger.holds.get_mut(&LeaseId(7)).unwrap().next_op = 0;
        assert_eq!(
            ledger.verify(),
            Err(VerifyError::HoldMismatch {
                lease: LeaseId(7),
                field: "next_op"
            })
        );
        let mut ledger = busy();
        ledger.holds.remove(&LeaseId(7));
        assert_eq!(
            ledger.verify(),
            Err(VerifyError::TransfersWithoutHold { lease: LeaseId(7) })
        );
    }

    #[test]
    fn verify_catches_escrow_moved_outside_the_escrow_operations() {
        // Forge a transfer that the public API refuses, with a valid hash.
        let mut ledger = busy();
        let mut forged = Transfer {
            seq: ledger.len() as u64,
            id: "steal".into(),
            debit: Account::TenantHeld(T),
            credit: Account::TenantAvailable(T),
            amount: Micros(100),
            kind: TransferKind::Adjustment,
            at: UnixMs(9),
            escrow: None,
            hash: GENESIS,
        };
        forged.hash = chain::link_hash(&ledger.head, &forged);
        let journal = [ledger.journal.clone(), vec![forged]].concat();
        assert_eq!(
            Ledger::restore(journal, ledger.holds.clone()),
            Err(VerifyError::EscrowShape {
                seq: ledger.len() as u64,
                reason: "moves escrow without naming a lease"
            })
        );
        ledger.holds.clear();
        assert!(matches!(
            Ledger::restore(ledger.journal.clone(), ledger.holds.clone()),
            Err(VerifyError::TransfersWithoutHold { .. })
        ));
    }

    #[test]
    fn escrow_ids_parse_only_in_their_exact_form() {
        assert_eq!(
            parse_escrow_id(&"lease:5:settle:3".into()),
            Some((LeaseId(5), "settle", 3))
        );
        for id in [
            "lease:05:settle:3",
            "lease:5:settle",
            "lease:5:settle:3:4",
            "lease:x:hold:0",
            "topup:1",
        ] {
            assert_eq!(parse_escrow_id(&id.into()), None, "{id}");
        }
    }

    const C: ContractId = ContractId(7);
    const S: TenantId = TenantId(2);

    /// A ledger with two contract charges (one with a fee) and a lease of
    /// tenant `S` resold on `T`'s reserved GPUs, credited in two steps.
    fn contracted() -> Ledger {
        let mut ledger = Ledger::new();
        ledger.top_up("topup:1".into(), T, Micros(10_000), UnixMs(0)).unwrap();
        ledger.top_up("topup:2".into(), S, Micros(1_000), UnixMs(0)).unwrap();
        ledger.charge_contract(C, T, P, Micros(2_000), 250, UnixMs(1)).unwrap();
        ledger.hold(L, S, P, Micros(800), UnixMs(1)).unwrap();
        ledger.settle(L, Micros(600), 250, UnixMs(2)).unwrap();
        ledger.credit_resale(L, P, T, Micros(300), UnixMs(2)).unwrap();
        ledger.charge_contract(C, T, P, Micros(3_000), 250, UnixMs(3)).unwrap();
        ledger.credit_resale(L, P, T, Micros(585), UnixMs(3)).unwrap();
        ledger
            .charge_contract(ContractId(8), S, ProviderId(3), Micros(10), 250, UnixMs(4))
            .unwrap();
        ledger
    }

    /// `journal` with `change` applied to the transfer at `index` and every
    /// hash after it recomputed, as a forger who controls the whole file would.
    fn forged(journal: &[Transfer], index: usize, change: impl FnOnce(&mut Transfer)) -> Vec<Transfer> {
        let mut journal = journal.to_vec();
        change(&mut journal[index]);
        let mut head = GENESIS;
        for t in &mut journal {
            t.hash = chain::link_hash(&head, t);
            head = t.hash;
        }
        journal
    }

    fn index_of(ledger: &Ledger, id: &str) -> usize {
        ledger.ids[&TransferId::from(id)]
    }

    #[test]
    fn verify_reports_contracts_and_resales() {
        let ledger = contracted();
        let report = ledger.verify().unwrap();
        assert_eq!(report.contracts, 2);
        assert_eq!(report.total_contract_charged, Micros(3_010));
        assert_eq!(report.total_resale_credited, Micros(585));
        // 2.5% of 3,000 and of 600; 10 micros take no fee.
        assert_eq!(report.total_fees, Micros(75 + 15));
        let restored = Ledger::restore(ledger.journal.clone(), ledger.holds.clone()).unwrap();
        assert_eq!(restored, ledger);
    }

    /// Verifies `contracted()` after `change` to its maintained state.
    fn verify_changed(change: impl FnOnce(&mut Ledger)) -> Result<VerifyReport, VerifyError> {
        let mut ledger = contracted();
        change(&mut ledger);
        ledger.verify()
    }

    #[test]
    fn verify_catches_a_changed_contract_or_resale_record() {
        let contract = |field| Err(VerifyError::ContractMismatch { contract: C, field });
        let resale = |holder, field| {
            Err(VerifyError::ResaleMismatch {
                lease: L,
                holder,
                field,
            })
        };
        assert_eq!(
            verify_changed(|l| l.contracts.get_mut(&C).unwrap().charged += Micros(1)),
            contract("charged")
        );
        assert_eq!(
            verify_changed(|l| l.contracts.get_mut(&C).unwrap().next_op = 5),
            contract("next_op")
        );
        assert_eq!(
            verify_changed(|l| {
                l.contracts.remove(&C);
            }),
            contract("entry")
        );
        assert_eq!(
            verify_changed(|l| l.resales.get_mut(&(L, T)).unwrap().credited = Micros(1)),
            resale(T, "credited")
        );
        assert_eq!(
            verify_changed(|l| {
                let credit = l.resales[&(L, T)].clone();
                l.resales.insert((L, TenantId(9)), credit);
            }),
            resale(TenantId(9), "entry")
        );
    }

    #[test]
    fn verify_catches_a_tampered_contract_transfer() {
        let ledger = contracted();
        // A changed charge breaks the chain, and rehashed it disagrees with
        // the head and balances kept beside the journal.
        let charge = index_of(&ledger, "contract:7:charge:1");
        let mut tampered = ledger.clone();
        tampered.journal[charge].amount = Micros(999);
        assert!(matches!(tampered.verify(), Err(VerifyError::HashMismatch { .. })));
        tampered.journal = forged(&ledger.journal, charge, |t| t.amount = Micros(999));
        assert!(matches!(tampered.verify(), Err(VerifyError::HeadMismatch { .. })));

        // A forger who rewrites the whole journal is caught by its shape.
        let fee = index_of(&ledger, "contract:7:fee:1");
        let resale = index_of(&ledger, "resale:5:1:1");
        let shape = |index: usize, change: fn(&mut Transfer)| {
            let journal = forged(&ledger.journal, index, change);
            match Ledger::restore(journal, ledger.holds.clone()) {
                Err(VerifyError::ContractShape { seq, reason }) => {
                    assert_eq!(seq, index as u64);
                    reason
                }
                other => panic!("expected a contract shape error, got {other:?}"),
            }
        };
        assert_eq!(
            shape(fee, |t| t.amount = Micros(2_000)),
            "fee exceeds the charge of its op"
        );
        assert_eq!(
            shape(fee, |t| t.at = UnixMs(99)),
            "fee and charge of one op have different times"
        );
        assert_eq!(
            shape(fee, |t| t.id = "contract:7:fee:3".into()),
            "fee does not directly follow the charge of its op"
        );
        assert_eq!(
            shape(fee, |t| t.credit = Account::Funding),
            "accounts do not fit a contract fee"
        );
        assert_eq!(
            shape(charge, |t| t.id = "contract:7:charge:2".into()),
            "op is not the contract's next"
        );
        assert_eq!(
            shape(charge, |t| t.credit = Account::ProviderEarnings(ProviderId(3))),
            "charge names other parties than the contract's first charge"
        );
        assert_eq!(
            shape(charge, |t| t.kind = TransferKind::Adjustment),
            "kind does not fit the leg of the id"
        );
        assert_eq!(
            shape(charge, |t| t.id = "contract:07:charge:1".into()),
            "id is not contract:<contract>:<leg>:<op>"
        );
        assert_eq!(
            shape(charge, |t| t.id = "steal".into()),
            "has a contract or resale kind but not such an id"
        );
        assert_eq!(
            shape(resale, |t| t.amount = Micros(500)),
            "credits more than the provider earned from the lease"
        );
        assert_eq!(
            shape(resale, |t| t.credit = Account::TenantAvailable(S)),
            "credits another tenant than the id names"
        );
        assert_eq!(
            shape(resale, |t| t.id = "resale:5:1:2".into()),
            "op is not the next of this lease and holder"
        );
        assert_eq!(
            shape(resale, |t| t.id = "resale:6:1:0".into()),
            "lease has no escrow transfers before the credit"
        );
    }

    #[test]
    fn snapshot_round_trips_and_is_verified_on_load() {
        let ledger = busy();
        let json = serde_json::to_string(&ledger).unwrap();
        let back: Ledger = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ledger);
        // The snapshot holds only what cannot be recomputed.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["holds", "journal"]);
        // A changed amount is refused on load.
        let tampered = json.replacen("\"amount\":10000", "\"amount\":10001", 1);
        assert_ne!(tampered, json);
        let err = serde_json::from_str::<Ledger>(&tampered).unwrap_err();
        assert!(err.to_string().contains("transfer 0 has hash"), "{err}");
    }

    #[test]
    fn snapshot_with_contracts_round_trips_with_the_same_keys() {
        // Contract charges and resale credits come back from the journal, so
        // the snapshot format is unchanged and older snapshots still load.
        let ledger = contracted();
        let json = serde_json::to_string(&ledger).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["holds", "journal"]);
        let back: Ledger = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ledger);
        assert_eq!(back.contract_charges(C), ledger.contract_charges(C));
        assert_eq!(back.resale_credited(L, T), Micros(585));
        assert!(json.contains("\"kind\":\"contract-fee\""));
    }
}
