//! Reservation contracts: charge a tenant for the GPUs it reserved whether it
//! uses them or not, and pass the spot revenue earned on its idle reserved GPUs
//! back to it.
//!
//! **Contract charges.** [`Ledger::charge_contract`] is cumulative like
//! [`Ledger::settle`]: the caller passes the total due for the contract so
//! far and the ledger charges the difference from what it has charged, never
//! refunding, with the fee always `fee_of(charged, fee_bps)` of the cumulative
//! charge. One call that moves money is one *op* of the contract and writes:
//!
//! | id                          | kind              | debit → credit                            | amount        |
//! |-----------------------------|-------------------|-------------------------------------------|---------------|
//! | `contract:<id>:charge:<op>` | `contract-charge` | `TenantAvailable(t)` → `ProviderEarnings(p)` | the charge    |
//! | `contract:<id>:fee:<op>`    | `contract-fee`    | `ProviderEarnings(p)` → `ExchangeFees`     | its fee, if any |
//!
//! The whole charge goes to the provider and the fee is then taken from the
//! provider, rather than two legs out of the tenant's balance, so that every op
//! has a charge leg naming both parties: the journal alone then says who a
//! contract is between, even when the fee is the whole charge, and transfers
//! need no field beyond the ones escrow uses. The balances end up the same as
//! with two legs from the tenant; the fee leg cannot fail because it follows,
//! in the same all-or-nothing post, a credit at least as large.
//!
//! **Resale credits.** The spot tenant of a lease on reserved GPUs pays through
//! the lease's escrow like any other tenant, so the provider earns it; the
//! reservation's holder is owed that revenue less the exchange's fee.
//! [`Ledger::credit_resale`] is cumulative per `(lease, holder)` and moves
//! `ProviderEarnings(p) → TenantAvailable(holder)` (kind `resale`, id
//! `resale:<lease>:<holder>:<op>`), limited by what the provider has and by
//! what it earned from the lease (the credits of one lease to all its holders
//! never add up to more); the rest waits for a later call.
//!
//! `op` counts the calls that moved money, per contract or per `(lease,
//! holder)`, so the ids are a pure function of the sequence of calls. A
//! contract's parties are fixed by its first call that charged anything: a
//! call that charges nothing leaves no transfer, and the state here is exactly
//! what the journal implies, so [`Ledger::verify`] recomputes it and a snapshot
//! of the journal restores it.

use std::collections::BTreeMap;

use agora_types::{ContractId, LeaseId, Micros, ProviderId, TenantId, UnixMs};

use crate::account::Account;
use crate::escrow::{BPS_PER_WHOLE, fee_of};
use crate::transfer::{Transfer, TransferError, TransferId, TransferKind};
use crate::{Ledger, Leg};

/// What one reservation contract has been charged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractCharges {
    pub tenant: TenantId,
    pub provider: ProviderId,
    /// Everything charged so far, fee included.
    pub charged: Micros,
    /// The exchange's part of `charged`.
    pub fees: Micros,
    pub first_charged_at: UnixMs,
    pub last_charged_at: UnixMs,
    /// The `op` of the next charge's transfer ids; private because only the
    /// ledger may advance it, or ids would repeat.
    pub(crate) next_op: u64,
}

impl ContractCharges {
    /// The provider's part of `charged`.
    pub fn earned(&self) -> Micros {
        self.charged - self.fees
    }
}

/// What one [`Ledger::charge_contract`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ContractCharge {
    /// Charged by this call, fee included.
    pub charged_now: Micros,
    /// The fee part of `charged_now`.
    pub fee_now: Micros,
    /// What is still owed after this call because the tenant ran out of money.
    /// A later call with the same or a larger total charges it if the tenant
    /// has topped up.
    pub short_by: Micros,
}

/// What a lease's provider has passed on to one reservation holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResaleCredit {
    /// The lease's provider, whose earnings pay the credit.
    pub provider: ProviderId,
    /// Everything credited so far.
    pub credited: Micros,
    pub first_credited_at: UnixMs,
    pub last_credited_at: UnixMs,
    /// The `op` of the next credit's transfer id; private for the same reason
    /// as [`ContractCharges`]'s.
    pub(crate) next_op: u64,
}

/// Why a contract or resale operation was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("fee rate must be at most 10000 bps, got {fee_bps}")]
    FeeRateTooHigh { fee_bps: u32 },
    #[error("total due for contract {contract} must not be negative, got {total_due}")]
    NegativeDue { contract: ContractId, total_due: Micros },
    #[error(
        "contract {contract} is between tenant {charged_tenant} and provider {charged_provider}, not tenant {tenant} and provider {provider}"
    )]
    PartyMismatch {
        contract: ContractId,
        charged_tenant: TenantId,
        charged_provider: ProviderId,
        tenant: TenantId,
        provider: ProviderId,
    },
    #[error("total resale credit of lease {lease} to tenant {holder} must not be negative, got {total_credit}")]
    NegativeCredit {
        lease: LeaseId,
        holder: TenantId,
        total_credit: Micros,
    },
    #[error("lease {lease} has no hold, so nothing was earned on it to pass on")]
    UnknownLease { lease: LeaseId },
    #[error("lease {lease} runs at provider {lease_provider}, not provider {provider}")]
    ProviderMismatch {
        lease: LeaseId,
        lease_provider: ProviderId,
        provider: ProviderId,
    },
    #[error("tenant {holder} is the tenant of lease {lease}, so it cannot be credited for reselling it")]
    OwnLease { lease: LeaseId, holder: TenantId },
    /// Posting the legs failed although the checks passed: only a ledger at
    /// the limits of `i128` gets here.
    #[error(transparent)]
    Transfer(#[from] TransferError),
}

impl Ledger {
    /// Charges `contract` up to `total_due`, the cumulative amount owed for it
    /// so far, from the tenant's available balance whether or not the tenant
    /// used the reserved GPUs.
    ///
    /// Charges `total_due - charged` if positive and nothing otherwise, at most
    /// what the tenant has available; the rest is reported in
    /// [`ContractCharge::short_by`]. After the call `fees == fee_of(charged,
    /// fee_bps)`, except that fees already taken are never returned and a
    /// call's fee never exceeds its charge (as in [`Ledger::settle`] when the
    /// rate changes). The first call that charges anything fixes the contract's
    /// tenant and provider; a later call naming others is refused.
    pub fn charge_contract(
        &mut self,
        contract: ContractId,
        tenant: TenantId,
        provider: ProviderId,
        total_due: Micros,
        fee_bps: u32,
        at: UnixMs,
    ) -> Result<ContractCharge, ContractError> {
        if fee_bps > BPS_PER_WHOLE {
            return Err(ContractError::FeeRateTooHigh { fee_bps });
        }
        if total_due.is_negative() {
            return Err(ContractError::NegativeDue { contract, total_due });
        }
        let (charged, fees, op) = match self.contracts.get(&contract) {
            None => (Micros::ZERO, Micros::ZERO, 0),
            Some(c) if (c.tenant, c.provider) != (tenant, provider) => {
                return Err(ContractError::PartyMismatch {
                    contract,
                    charged_tenant: c.tenant,
                    charged_provider: c.provider,
                    tenant,
                    provider,
                });
            }
            Some(c) => (c.charged, c.fees, c.next_op),
        };
        if total_due <= charged {
            return Ok(ContractCharge::default());
        }
        let due_now = total_due - charged;
        let available = self.balance(&Account::TenantAvailable(tenant));
        let payable = due_now.min(available);
        let short_by = due_now - payable;
        if payable.0 <= 0 {
            return Ok(ContractCharge {
                short_by,
                ..ContractCharge::default()
            });
        }
        let fee_target = fee_of(charged + payable, fee_bps);
        let fee_now = Micros((fee_target.0 - fees.0).clamp(0, payable.0));
        let earnings = Account::ProviderEarnings(provider);
        let mut legs = vec![Leg {
            id: TransferId::contract(contract, "charge", op),
            debit: Account::TenantAvailable(tenant),
            credit: earnings,
            amount: payable,
            kind: TransferKind::ContractCharge,
            escrow: None,
        }];
        if fee_now.0 > 0 {
            legs.push(Leg {
                id: TransferId::contract(contract, "fee", op),
                debit: earnings,
                credit: Account::ExchangeFees,
                amount: fee_now,
                kind: TransferKind::ContractFee,
                escrow: None,
            });
        }
        self.post(&legs, at)?;
        let entry = self.contracts.entry(contract).or_insert_with(|| ContractCharges {
            tenant,
            provider,
            charged: Micros::ZERO,
            fees: Micros::ZERO,
            first_charged_at: at,
            last_charged_at: at,
            next_op: 0,
        });
        entry.charged += payable;
        entry.fees += fee_now;
        entry.last_charged_at = at;
        entry.next_op = op + 1;
        assert!(entry.fees <= entry.charged, "a call's fee is at most its charge");
        Ok(ContractCharge {
            charged_now: payable,
            fee_now,
            short_by,
        })
    }

    /// Passes on to `holder` the spot revenue that `provider` earned on
    /// `lease` while it ran on `holder`'s reserved but idle GPUs, up to
    /// `total_credit`, the cumulative amount owed for this lease and holder
    /// (the lease's charge on the resold GPUs less the exchange's fee on it).
    ///
    /// Credits the difference from what was credited so far, limited by the
    /// provider's earnings balance and by what the provider earned from the
    /// lease less what it already passed on for the lease; the rest waits for a
    /// later call, which is why the credited amount is returned. A repeated or
    /// older total is a no-op. The lease must have a hold (open or closed) at
    /// `provider`, and `holder` must not be the lease's own tenant.
    pub fn credit_resale(
        &mut self,
        lease: LeaseId,
        provider: ProviderId,
        holder: TenantId,
        total_credit: Micros,
        at: UnixMs,
    ) -> Result<Micros, ContractError> {
        if total_credit.is_negative() {
            return Err(ContractError::NegativeCredit {
                lease,
                holder,
                total_credit,
            });
        }
        let hold = self.holds.get(&lease).ok_or(ContractError::UnknownLease { lease })?;
        if hold.provider != provider {
            return Err(ContractError::ProviderMismatch {
                lease,
                lease_provider: hold.provider,
                provider,
            });
        }
        if hold.tenant == holder {
            return Err(ContractError::OwnLease { lease, holder });
        }
        let (credited, op) = self
            .resales
            .get(&(lease, holder))
            .map_or((Micros::ZERO, 0), |r| (r.credited, r.next_op));
        if total_credit <= credited {
            return Ok(Micros::ZERO);
        }
        let lease_left = hold.earned - self.resale_credited_for_lease(lease);
        let earnings = self.balance(&Account::ProviderEarnings(provider));
        let amount = (total_credit - credited).min(lease_left).min(earnings);
        if amount.0 <= 0 {
            return Ok(Micros::ZERO);
        }
        self.post(
            &[Leg {
                id: TransferId::resale(lease, holder, op),
                debit: Account::ProviderEarnings(provider),
                credit: Account::TenantAvailable(holder),
                amount,
                kind: TransferKind::Resale,
                escrow: None,
            }],
            at,
        )?;
        let entry = self.resales.entry((lease, holder)).or_insert_with(|| ResaleCredit {
            provider,
            credited: Micros::ZERO,
            first_credited_at: at,
            last_credited_at: at,
            next_op: 0,
        });
        entry.credited += amount;
        entry.last_credited_at = at;
        entry.next_op = op + 1;
        Ok(amount)
    }

    /// What a contract has been charged; `None` before its first charge that
    /// moved money.
    pub fn contract_charges(&self, contract: ContractId) -> Option<&ContractCharges> {
        self.contracts.get(&contract)
    }

    /// Every contract charged so far, by id.
    pub fn contracts(&self) -> impl Iterator<Item = (ContractId, &ContractCharges)> + '_ {
        self.contracts.iter().map(|(contract, charges)| (*contract, charges))
    }

    /// What `lease`'s provider has passed on to `holder` so far.
    pub fn resale_credited(&self, lease: LeaseId, holder: TenantId) -> Micros {
        self.resales
            .get(&(lease, holder))
            .map_or(Micros::ZERO, |credit| credit.credited)
    }

    /// The resale credits of `lease` to `holder`, if any moved money.
    pub fn resale_credit(&self, lease: LeaseId, holder: TenantId) -> Option<&ResaleCredit> {
        self.resales.get(&(lease, holder))
    }

    /// Every resale credit, by lease then holder.
    pub fn resales(&self) -> impl Iterator<Item = ((LeaseId, TenantId), &ResaleCredit)> + '_ {
        self.resales.iter().map(|(key, credit)| (*key, credit))
    }

    /// What `lease`'s provider has passed on to all holders together.
    fn resale_credited_for_lease(&self, lease: LeaseId) -> Micros {
        self.resales
            .range((lease, TenantId(0))..=(lease, TenantId(u64::MAX)))
            .fold(Micros::ZERO, |sum, (_, credit)| sum + credit.credited)
    }
}

/// Splits `<prefix><a>:<b>:<c>` into its parts, accepting only text that
/// `rebuild` writes back exactly, so one journal entry cannot pass for another
/// (`contract:07:…`, `resale:+5:…`).
fn parse_id<'a, A, B>(
    id: &'a TransferId,
    prefix: &str,
    parse_a: impl Fn(&str) -> Option<A>,
    parse_b: impl Fn(&'a str) -> Option<B>,
    rebuild: impl Fn(&A, &B, u64) -> TransferId,
) -> Option<(A, B, u64)> {
    let rest = id.as_str().strip_prefix(prefix)?;
    let mut parts = rest.split(':');
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (a, b, op) = (parse_a(a)?, parse_b(b)?, c.parse::<u64>().ok()?);
    (rebuild(&a, &b, op) == *id).then_some((a, b, op))
}

/// Splits `contract:<contract>:<leg>:<op>` into its parts.
pub(crate) fn parse_contract_id(id: &TransferId) -> Option<(ContractId, &str, u64)> {
    parse_id(
        id,
        TransferId::CONTRACT_PREFIX,
        |a| a.parse().ok().map(ContractId),
        Some,
        |contract, leg, op| TransferId::contract(*contract, leg, op),
    )
}

/// Splits `resale:<lease>:<holder>:<op>` into its parts.
pub(crate) fn parse_resale_id(id: &TransferId) -> Option<(LeaseId, TenantId, u64)> {
    parse_id(
        id,
        TransferId::RESALE_PREFIX,
        |a| a.parse().ok().map(LeaseId),
        |b| b.parse().ok().map(TenantId),
        |lease, holder, op| TransferId::resale(*lease, *holder, op),
    )
}

/// Checks `journal[index]`, a transfer with a `contract:` id, against the
/// shapes [`Ledger::charge_contract`] writes and adds it to its contract.
pub(crate) fn tally_contract(
    contracts: &mut BTreeMap<ContractId, ContractCharges>,
    journal: &[Transfer],
    index: usize,
) -> Result<(), &'static str> {
    let transfer = &journal[index];
    let (contract, leg, op) = parse_contract_id(&transfer.id).ok_or("id is not contract:<contract>:<leg>:<op>")?;
    let amount = transfer.amount;
    match (leg, transfer.kind) {
        ("charge", TransferKind::ContractCharge) => {
            let (Account::TenantAvailable(tenant), Account::ProviderEarnings(provider)) =
                (transfer.debit, transfer.credit)
            else {
                return Err("accounts do not fit a contract charge");
            };
            match contracts.get_mut(&contract) {
                None if op == 0 => {
                    contracts.insert(
                        contract,
                        ContractCharges {
                            tenant,
                            provider,
                            charged: amount,
                            fees: Micros::ZERO,
                            first_charged_at: transfer.at,
                            last_charged_at: transfer.at,
                            next_op: 1,
                        },
                    );
                }
                None => return Err("first charge of a contract is not op 0"),
                Some(charges) => {
                    if (charges.tenant, charges.provider) != (tenant, provider) {
                        return Err("charge names other parties than the contract's first charge");
                    }
                    if op != charges.next_op {
                        return Err("op is not the contract's next");
                    }
                    charges.charged.0 = charges.charged.0.checked_add(amount.0).ok_or("charged overflows")?;
                    charges.last_charged_at = transfer.at;
                    charges.next_op = op + 1;
                }
            }
        }
        ("fee", TransferKind::ContractFee) => {
            let charges = contracts
                .get_mut(&contract)
                .ok_or("fee before any charge of the contract")?;
            // The fee leg is posted with its charge, so it directly follows it.
            let charge = index
                .checked_sub(1)
                .map(|previous| &journal[previous])
                .filter(|previous| previous.id == TransferId::contract(contract, "charge", op))
                .ok_or("fee does not directly follow the charge of its op")?;
            if charge.at != transfer.at {
                return Err("fee and charge of one op have different times");
            }
            if (transfer.debit, transfer.credit) != (Account::ProviderEarnings(charges.provider), Account::ExchangeFees)
            {
                return Err("accounts do not fit a contract fee");
            }
            if amount > charge.amount {
                return Err("fee exceeds the charge of its op");
            }
            charges.fees += amount;
        }
        _ => return Err("kind does not fit the leg of the id"),
    }
    Ok(())
}

/// The lease a resale credit is paid from, as the journal so far implies it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaseEarnings {
    pub(crate) tenant: TenantId,
    pub(crate) provider: ProviderId,
    pub(crate) earned: Micros,
}

/// Checks a transfer with a `resale:` id against the shape
/// [`Ledger::credit_resale`] writes and adds it to its `(lease, holder)`.
pub(crate) fn tally_resale(
    resales: &mut BTreeMap<(LeaseId, TenantId), ResaleCredit>,
    lease_earnings: Option<LeaseEarnings>,
    transfer: &Transfer,
) -> Result<(), &'static str> {
    let (lease, holder, op) = parse_resale_id(&transfer.id).ok_or("id is not resale:<lease>:<holder>:<op>")?;
    if transfer.kind != TransferKind::Resale {
        return Err("kind is not resale");
    }
    let (Account::ProviderEarnings(provider), Account::TenantAvailable(credited_tenant)) =
        (transfer.debit, transfer.credit)
    else {
        return Err("accounts do not fit a resale credit");
    };
    if credited_tenant != holder {
        return Err("credits another tenant than the id names");
    }
    let lease_earnings = lease_earnings.ok_or("lease has no escrow transfers before the credit")?;
    if provider != lease_earnings.provider {
        return Err("debits another provider than the lease's");
    }
    if holder == lease_earnings.tenant {
        return Err("credits the lease's own tenant");
    }
    let lease_credited = resales
        .range((lease, TenantId(0))..=(lease, TenantId(u64::MAX)))
        .try_fold(transfer.amount.0, |sum, (_, credit)| sum.checked_add(credit.credited.0))
        .ok_or("credits of the lease overflow")?;
    if lease_credited > lease_earnings.earned.0 {
        return Err("credits more than the provider earned from the lease");
    }
    match resales.get_mut(&(lease, holder)) {
        None if op == 0 => {
            resales.insert(
                (lease, holder),
                ResaleCredit {
                    provider,
                    credited: transfer.amount,
                    first_credited_at: transfer.at,
                    last_credited_at: transfer.at,
                    next_op: 1,
                },
            );
        }
        None => return Err("first credit of a lease to a holder is not op 0"),
        Some(credit) => {
            if op != credit.next_op {
                return Err("op is not the next of this lease and holder");
            }
            // Bounded by the lease's earnings, checked just above.
            credit.credited += transfer.amount;
            credit.last_credited_at = transfer.at;
            credit.next_op = op + 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TenantId = TenantId(1);
    const S: TenantId = TenantId(2);
    const P: ProviderId = ProviderId(3);
    const C: ContractId = ContractId(7);
    const L: LeaseId = LeaseId(5);

    fn at(ms: i64) -> UnixMs {
        UnixMs(ms)
    }

    /// A ledger where tenant `T` has `amount` available.
    fn funded(amount: i128) -> Ledger {
        let mut ledger = Ledger::new();
        ledger.top_up("topup:t".into(), T, Micros(amount), at(0)).unwrap();
        ledger
    }

    fn ids(ledger: &Ledger) -> Vec<&str> {
        ledger.journal().iter().map(|t| t.id.as_str()).collect()
    }

    fn charge(ledger: &mut Ledger, total: i128, fee_bps: u32, ms: i64) -> ContractCharge {
        ledger.charge_contract(C, T, P, Micros(total), fee_bps, at(ms)).unwrap()
    }

    #[test]
    fn charge_moves_the_cumulative_difference_and_takes_the_fee_from_the_provider() {
        let mut ledger = funded(10_000);
        assert_eq!(
            charge(&mut ledger, 1_000, 250, 1),
            ContractCharge {
                charged_now: Micros(1_000),
                fee_now: Micros(25),
                short_by: Micros::ZERO
            }
        );
        assert_eq!(charge(&mut ledger, 2_500, 250, 2).charged_now, Micros(1_500));
        assert_eq!(ledger.tenant_balance(T), (Micros(7_500), Micros::ZERO));
        assert_eq!(ledger.balance(&Account::ProviderEarnings(P)), Micros(2_438));
        assert_eq!(ledger.balance(&Account::ExchangeFees), Micros(62));
        let charges = ledger.contract_charges(C).unwrap();
        assert_eq!(
            (charges.tenant, charges.provider, charges.charged, charges.fees),
            (T, P, Micros(2_500), Micros(62))
        );
        assert_eq!(charges.earned(), Micros(2_438));
        assert_eq!((charges.first_charged_at, charges.last_charged_at), (at(1), at(2)));
        assert_eq!(
            ids(&ledger),
            [
                "topup:t",
                "contract:7:charge:0",
                "contract:7:fee:0",
                "contract:7:charge:1",
                "contract:7:fee:1"
            ]
        );
        let kinds: Vec<TransferKind> = ledger.journal()[1..].iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                TransferKind::ContractCharge,
                TransferKind::ContractFee,
                TransferKind::ContractCharge,
                TransferKind::ContractFee
            ]
        );
        let listed: Vec<ContractId> = ledger.contracts().map(|(id, _)| id).collect();
        assert_eq!(listed, [C]);
        ledger.verify().unwrap();
    }

    #[test]
    fn a_repeated_or_older_total_is_a_no_op() {
        let mut ledger = funded(10_000);
        charge(&mut ledger, 1_000, 250, 1);
        let before = ledger.clone();
        assert_eq!(charge(&mut ledger, 1_000, 250, 2), ContractCharge::default());
        assert_eq!(charge(&mut ledger, 10, 250, 3), ContractCharge::default());
        assert_eq!(ledger, before);
    }

    #[test]
    fn charge_without_fee_writes_no_fee_leg_and_a_full_fee_no_provider_part() {
        let mut ledger = funded(1_000);
        charge(&mut ledger, 39, 250, 1); // 2.5% of 39 micros floors to zero
        assert_eq!(ids(&ledger), ["topup:t", "contract:7:charge:0"]);
        let mut ledger = funded(1_000);
        let all = charge(&mut ledger, 300, 10_000, 1);
        assert_eq!((all.charged_now, all.fee_now), (Micros(300), Micros(300)));
        assert_eq!(ledger.balance(&Account::ProviderEarnings(P)), Micros::ZERO);
        assert_eq!(ledger.balance(&Account::ExchangeFees), Micros(300));
        // The journal still names the provider, through the charge leg.
        let restored = Ledger::restore(ledger.journal().to_vec(), BTreeMap::new()).unwrap();
        assert_eq!(restored.contract_charges(C).unwrap().provider, P);
    }

    #[test]
    fn fee_rounding_does_not_accumulate() {
        let mut stepped = funded(10_000);
        for i in 1..=40 {
            charge(&mut stepped, 39 * i, 250, i as i64);
        }
        let mut once = funded(10_000);
        charge(&mut once, 1_560, 250, 1);
        assert_eq!(stepped.contract_charges(C).unwrap().fees, fee_of(Micros(1_560), 250));
        assert_eq!(once.contract_charges(C).unwrap().fees, Micros(39));
        assert_eq!(
            stepped.balance(&Account::ProviderEarnings(P)),
            once.balance(&Account::ProviderEarnings(P))
        );
    }

    #[test]
    fn shortfall_charges_what_the_tenant_has_and_the_rest_after_a_top_up() {
        let mut ledger = funded(600);
        assert_eq!(
            charge(&mut ledger, 1_000, 1_000, 1),
            ContractCharge {
                charged_now: Micros(600),
                fee_now: Micros(60),
                short_by: Micros(400)
            }
        );
        assert_eq!(ledger.tenant_balance(T), (Micros::ZERO, Micros::ZERO));
        let before = ledger.clone();
        assert_eq!(
            charge(&mut ledger, 1_000, 1_000, 2),
            ContractCharge {
                short_by: Micros(400),
                ..Default::default()
            }
        );
        assert_eq!(ledger, before);
        ledger.top_up("topup:t2".into(), T, Micros(1_000), at(3)).unwrap();
        assert_eq!(
            charge(&mut ledger, 1_000, 1_000, 4),
            ContractCharge {
                charged_now: Micros(400),
                fee_now: Micros(40),
                short_by: Micros::ZERO
            }
        );
        assert_eq!(ledger.contract_charges(C).unwrap().fees, fee_of(Micros(1_000), 1_000));
    }

    #[test]
    fn a_first_call_that_charges_nothing_fixes_nothing() {
        let mut ledger = Ledger::new();
        let outcome = ledger.charge_contract(C, T, P, Micros(100), 0, at(1)).unwrap();
        assert_eq!(outcome.short_by, Micros(100));
        assert_eq!(ledger, Ledger::new());
        assert_eq!(ledger.contract_charges(C), None);
    }

    #[test]
    fn charge_refusals_change_nothing() {
        let mut ledger = funded(1_000);
        charge(&mut ledger, 100, 0, 1);
        let before = ledger.clone();
        assert_eq!(
            ledger.charge_contract(C, T, P, Micros(200), 10_001, at(2)),
            Err(ContractError::FeeRateTooHigh { fee_bps: 10_001 })
        );
        assert_eq!(
            ledger.charge_contract(C, T, P, Micros(-1), 0, at(2)),
            Err(ContractError::NegativeDue {
                contract: C,
                total_due: Micros(-1)
            })
        );
        // Other parties are refused even where the total would be a no-op.
        for (tenant, provider) in [(S, P), (T, ProviderId(9))] {
            assert_eq!(
                ledger.charge_contract(C, tenant, provider, Micros(50), 0, at(2)),
                Err(ContractError::PartyMismatch {
                    contract: C,
                    charged_tenant: T,
                    charged_provider: P,
                    tenant,
                    provider
                })
            );
        }
        assert_eq!(ledger, before);
    }

    /// `T` holds the reservation; spot tenant `S` runs lease `L` on its idle
    /// GPUs at `P`, holding 1,000 and settling `charged` at 10%.
    fn resold(charged: i128) -> Ledger {
        let mut ledger = funded(10_000);
        ledger.top_up("topup:s".into(), S, Micros(1_000), at(0)).unwrap();
        ledger.hold(L, S, P, Micros(1_000), at(1)).unwrap();
        ledger.settle(L, Micros(charged), 1_000, at(2)).unwrap();
        ledger
    }

    #[test]
    fn resale_passes_the_providers_earnings_on_to_the_holder() {
        let mut ledger = resold(500);
        let owed = Micros(500) - fee_of(Micros(500), 1_000);
        assert_eq!(ledger.credit_resale(L, P, T, Micros(300), at(3)), Ok(Micros(300)));
        assert_eq!(ledger.credit_resale(L, P, T, owed, at(4)), Ok(Micros(150)));
        assert_eq!(ledger.resale_credited(L, T), Micros(450));
        assert_eq!(ledger.balance(&Account::ProviderEarnings(P)), Micros::ZERO);
        assert_eq!(ledger.tenant_balance(T), (Micros(10_450), Micros::ZERO));
        assert_eq!(ids(&ledger)[ledger.len() - 2..], ["resale:5:1:0", "resale:5:1:1"]);
        let credit = ledger.resale_credit(L, T).unwrap();
        assert_eq!(
            (credit.provider, credit.first_credited_at, credit.last_credited_at),
            (P, at(3), at(4))
        );
        // The same total again, or an older one, credits nothing.
        let before = ledger.clone();
        assert_eq!(ledger.credit_resale(L, P, T, owed, at(5)), Ok(Micros::ZERO));
        assert_eq!(ledger.credit_resale(L, P, T, Micros(1), at(5)), Ok(Micros::ZERO));
        assert_eq!(ledger, before);
        let listed: Vec<(LeaseId, TenantId)> = ledger.resales().map(|(key, _)| key).collect();
        assert_eq!(listed, [(L, T)]);
        ledger.verify().unwrap();
    }

    #[test]
    fn resale_waits_for_the_providers_earnings() {
        let mut ledger = resold(500);
        ledger
            .transfer(
                "payout:1".into(),
                Account::ProviderEarnings(P),
                Account::Funding,
                Micros(400),
                TransferKind::Adjustment,
                at(3),
            )
            .unwrap();
        assert_eq!(ledger.credit_resale(L, P, T, Micros(450), at(4)), Ok(Micros(50)));
        assert_eq!(ledger.credit_resale(L, P, T, Micros(450), at(5)), Ok(Micros::ZERO));
        // The provider earns more (here from a contract) and the rest follows.
        ledger.charge_contract(C, T, P, Micros(1_000), 0, at(6)).unwrap();
        assert_eq!(ledger.credit_resale(L, P, T, Micros(450), at(7)), Ok(Micros(400)));
        assert_eq!(ledger.resale_credited(L, T), Micros(450));
        ledger.verify().unwrap();
    }

    #[test]
    fn resale_credits_of_a_lease_never_exceed_what_it_earned() {
        let mut ledger = resold(500); // the provider earned 450 from the lease
        ledger.charge_contract(C, T, P, Micros(5_000), 0, at(3)).unwrap();
        let other = TenantId(4);
        assert_eq!(ledger.credit_resale(L, P, T, Micros(300), at(4)), Ok(Micros(300)));
        assert_eq!(ledger.credit_resale(L, P, other, Micros(300), at(4)), Ok(Micros(150)));
        assert_eq!(ledger.credit_resale(L, P, other, Micros(300), at(5)), Ok(Micros::ZERO));
        // More settled on the lease lets the rest through.
        ledger.settle(L, Micros(700), 1_000, at(6)).unwrap();
        assert_eq!(ledger.credit_resale(L, P, other, Micros(300), at(7)), Ok(Micros(150)));
        ledger.verify().unwrap();
    }

    #[test]
    fn resale_refusals_change_nothing() {
        let mut ledger = resold(500);
        let before = ledger.clone();
        assert_eq!(
            ledger.credit_resale(L, P, T, Micros(-1), at(3)),
            Err(ContractError::NegativeCredit {
                lease: L,
                holder: T,
                total_credit: Micros(-1)
            })
        );
        assert_eq!(
            ledger.credit_resale(LeaseId(99), P, T, Micros(1), at(3)),
            Err(ContractError::UnknownLease { lease: LeaseId(99) })
        );
        assert_eq!(
            ledger.credit_resale(L, ProviderId(9), T, Micros(1), at(3)),
            Err(ContractError::ProviderMismatch {
                lease: L,
                lease_provider: P,
                provider: ProviderId(9)
            })
        );
        assert_eq!(
            ledger.credit_resale(L, P, S, Micros(1), at(3)),
            Err(ContractError::OwnLease { lease: L, holder: S })
        );
        assert_eq!(ledger, before);
        // A closed lease may still pass on what it earned.
        ledger.release(L, at(4)).unwrap();
        assert_eq!(ledger.credit_resale(L, P, T, Micros(1), at(5)), Ok(Micros(1)));
    }

    #[test]
    fn ids_parse_only_in_their_exact_form() {
        assert_eq!(
            parse_contract_id(&"contract:7:charge:3".into()),
            Some((ContractId(7), "charge", 3))
        );
        assert_eq!(
            parse_resale_id(&"resale:5:1:0".into()),
            Some((LeaseId(5), TenantId(1), 0))
        );
        for id in [
            "contract:07:charge:3",
            "contract:7:charge",
            "contract:7:charge:3:4",
            "contract:x:fee:0",
            "lease:7:charge:3",
        ] {
            assert_eq!(parse_contract_id(&id.into()), None, "{id}");
        }
        for id in ["resale:5:01:0", "resale:5:1", "resale:5:x:0", "resale:5:1:+0"] {
            assert_eq!(parse_resale_id(&id.into()), None, "{id}");
        }
    }

    #[test]
    fn error_messages_are_lowercase_without_trailing_punctuation() {
        let err = ContractError::PartyMismatch {
            contract: C,
            charged_tenant: T,
            charged_provider: P,
            tenant: S,
            provider: P,
        };
        assert_eq!(
            err.to_string(),
            "contract 7 is between tenant 1 and provider 3, not tenant 2 and provider 3"
        );
    }
}
