//! Reservation contracts (compute as a service): tenant T reserves G GPUs of
//! model M at provider P for a term [start, end) at a fixed price per
//! GPU-hour.
//!
//! - **Term.** A contract is `scheduled` until its start, `active` during its
//!   term, `ended` after it (or when the tenant or an admin ends it early, or
//!   when the tenant cannot pay). While active, the market holds its GPUs for
//!   T (`Market::set_reservation`, the sum of T's active contracts on P and
//!   M): T's `tier: reserved` work runs there at no per-hour price, on-demand
//!   work of others never takes those GPUs, and idle ones are resold as spot.
//! - **Charges.** The contract is charged through the ledger whether used or
//!   not: `price × G × seconds of the term served`, cumulatively, every settle
//!   interval and when it ends (an early end charges the term served; what
//!   remains is not charged). A tenant that cannot pay is warned in the
//!   contract's state; after the funds grace the contract ends with
//!   `insufficient_funds`.
//! - **Resale.** A spot lease placed on idle reserved GPUs records which
//!   holders it resells ([`agora_engine::market::ReservedUse`]); each time the
//!   lease is settled, each holder is credited the lease's charge on those
//!   GPUs less the exchange fee, out of the provider's earnings (the provider
//!   is paid by the contract for them already).
//! - **Reclaim.** A holder's reserved work preempts the spot leases resold
//!   from its reservation with the usual grace signal. When a contract ends
//!   and T's reserved work holds more than its remaining reservation, the
//!   newest of those leases are stopped and requeued.
//! - **Admission.** A contract must fit the provider's online GPUs of the
//!   model together with the other contracts overlapping its term, and the
//!   tenant's reservations of the model, exchange-wide, may not exceed
//!   `MarketRules::max_reserved_share_bps` of the model's online GPUs (a
//!   market-health policy). The tenant needs a day of the contract (or the
//!   whole term, if shorter) available when it is created.

use std::collections::BTreeMap;

use agora_engine::lifecycle::LeaseState;
use agora_ledger::fee_of;
use agora_proto::api::{ContractView, CreateContract, HoldingView};
use agora_types::{ContractId, GpuModel, LeaseId, Micros, PricePerGpuHour, ProviderId, TenantId, Tier, UnixMs};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::core::Txn;
use crate::error::ApiError;
use crate::events::{Event, StopReason};
use crate::state::Exchange;

/// Ten years: longer terms are a typo, not a deal.
pub const MAX_TERM_S: u64 = 10 * 365 * 24 * 3600;
/// A contract may start at most this far in the future.
pub const MAX_LEAD_S: u64 = 365 * 24 * 3600;
/// At most this many contracts per tenant that have not ended.
pub const MAX_OPEN_CONTRACTS_PER_TENANT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractState {
    Scheduled,
    Active,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractEndReason {
    Term,
    EndedByTenant,
    EndedByAdmin,
    InsufficientFunds,
}

impl ContractEndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ContractEndReason::Term => "term",
            ContractEndReason::EndedByTenant => "ended_by_tenant",
            ContractEndReason::EndedByAdmin => "ended_by_admin",
            ContractEndReason::InsufficientFunds => "insufficient_funds",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub id: ContractId,
    pub tenant: TenantId,
    pub provider: ProviderId,
    pub model: GpuModel,
    pub gpus: u32,
    pub start: UnixMs,
    pub end: UnixMs,
    pub price: PricePerGpuHour,
    pub state: ContractState,
    pub created_at: UnixMs,
    pub ended_at: Option<UnixMs>,
    pub end_reason: Option<ContractEndReason>,
    /// Charged up to here.
    pub charged_until: Option<UnixMs>,
    /// Set while the tenant could not pay the latest charge.
    pub funds_short_since: Option<UnixMs>,
}

impl Contract {
    /// What the tenant owes for the term served up to `at`.
    pub fn due_until(&self, at: UnixMs) -> Micros {
        let until = UnixMs(at.0.min(self.end.0));
        self.price.cost(self.gpus, until.seconds_since(self.start))
    }

    pub fn term_cost(&self) -> Micros {
        self.price.cost(self.gpus, self.end.seconds_since(self.start))
    }

    /// Whether its term overlaps `[start, end)` and it has not ended.
    fn overlaps(&self, start: UnixMs, end: UnixMs) -> bool {
        self.state != ContractState::Ended && self.start < end && start < self.end
    }
}

impl Exchange {
    pub fn next_contract_id(&self) -> ContractId {
        ContractId(self.contracts.len() as u64 + 1)
    }

    /// GPUs a tenant holds on (provider, model): its active contracts there.
    fn held_gpus(&self, tenant: TenantId, provider: ProviderId, model: GpuModel) -> u64 {
        self.contracts
            .values()
            .filter(|c| c.state == ContractState::Active)
            .filter(|c| (c.tenant, c.provider, c.model) == (tenant, provider, model))
            .map(|c| u64::from(c.gpus))
            .sum()
    }

    /// Tells the market what a tenant holds on (provider, model) now.
    pub(crate) fn sync_reservation(&mut self, tenant: TenantId, provider: ProviderId, model: GpuModel) {
        let gpus = self.held_gpus(tenant, provider, model);
        self.market.set_reservation(tenant, provider, model, gpus);
    }

    pub(crate) fn apply_contract_created(&mut self, contract: Contract) {
        assert_eq!(contract.id, self.next_contract_id(), "contract ids are sequential");
        self.contracts.insert(contract.id, contract);
    }

    pub(crate) fn apply_contract_started(&mut self, id: ContractId, at: UnixMs) {
        let c = self.contracts.get_mut(&id).expect("known contract");
        assert_eq!(c.state, ContractState::Scheduled, "only a scheduled contract starts");
        c.state = ContractState::Active;
        c.charged_until = Some(at);
        let (tenant, provider, model) = (c.tenant, c.provider, c.model);
        self.sync_reservation(tenant, provider, model);
    }

    /// Charges the term served up to `at` (cumulative, so a repeat is a no-op).
    pub(crate) fn apply_contract_charged(&mut self, id: ContractId, at: UnixMs) {
        let fee_bps = self.rules.fee_bps;
        let c = self.contracts.get_mut(&id).expect("known contract");
        let due = c.due_until(at);
        let outcome = self
            .ledger
            .charge_contract(id, c.tenant, c.provider, due, fee_bps, at)
            .expect("contract charges are validated when the contract is created");
        c.charged_until = Some(at);
        if outcome.short_by > Micros::ZERO {
            c.funds_short_since.get_or_insert(at);
        } else {
            c.funds_short_since = None;
        }
    }

    pub(crate) fn apply_contract_ended(&mut self, id: ContractId, reason: ContractEndReason, at: UnixMs) {
        let was_active = self.contracts[&id].state == ContractState::Active;
        if was_active {
            self.apply_contract_charged(id, at);
        }
        let c = self.contracts.get_mut(&id).expect("known contract");
        assert_ne!(c.state, ContractState::Ended, "a contract ends once");
        c.state = ContractState::Ended;
        c.ended_at = Some(at);
        c.end_reason = Some(reason);
        let (tenant, provider, model) = (c.tenant, c.provider, c.model);
        if was_active {
            self.sync_reservation(tenant, provider, model);
            self.end_resale_beyond_holding(tenant, provider, model, at);
        }
    }

    /// When a holder's remaining reservation no longer backs what it resold,
    /// its resale of the running spot leases on the pool ends now: it is
    /// credited for them only up to `at`.
    fn end_resale_beyond_holding(&mut self, holder: TenantId, provider: ProviderId, model: GpuModel, at: UnixMs) {
        let backed = self
            .market
            .reservations()
            .get(&(provider, model))
            .and_then(|p| p.holders().get(&holder))
            .is_some_and(|h| h.used + h.resold <= h.gpus);
        if backed {
            return;
        }
        let resold: Vec<LeaseId> = self
            .live_leases
            .iter()
            .filter(|id| {
                let l = &self.leases[id];
                l.tier == Tier::Spot
                    && (l.provider, l.model) == (provider, model)
                    && l.reserved.iter().any(|u| u.holder == holder)
            })
            .copied()
            .collect();
        for id in resold {
            self.leases
                .get_mut(&id)
                .expect("live lease")
                .resale_ended
                .entry(holder)
                .or_insert(at);
        }
    }

    /// Credits the holders a spot lease resells from, up to what the lease has been charged.
    pub(crate) fn credit_resales(&mut self, lease: LeaseId, at: UnixMs) {
        let l = &self.leases[&lease];
        if l.tier != Tier::Spot || l.reserved.is_empty() || l.gpus == 0 {
            return;
        }
        let charged = self.ledger.hold_of(lease).map_or(Micros::ZERO, |h| h.charged);
        let fee_bps = self.rules.fee_bps;
        let (provider, gpus) = (l.provider, l.gpus);
        for u in l.reserved.clone() {
            // The holder's share of what was actually charged, pro rata by GPUs (floor),
            // and no more than was due while its reservation backed the resale.
            let l = &self.leases[&lease];
            let backed = match l.resale_ended.get(&u.holder) {
                Some(&until) => l.due_until(until),
                None => charged,
            };
            let basis = charged.min(backed);
            let share = Micros(basis.0 * i128::from(u.gpus) / i128::from(gpus));
            let credit = share - fee_of(share, fee_bps);
            self.ledger
                .credit_resale(lease, provider, u.holder, credit, at)
                .expect("resale credits follow a settlement of the lease");
        }
    }

    /// Restores the market's reservations from the active contracts (before the leases start again).
    pub(crate) fn restore_reservations(&mut self) {
        let keys: std::collections::BTreeSet<(TenantId, ProviderId, GpuModel)> = self
            .contracts
            .values()
            .filter(|c| c.state == ContractState::Active)
            .map(|c| (c.tenant, c.provider, c.model))
            .collect();
        for (t, p, m) in keys {
            self.sync_reservation(t, p, m);
        }
    }
}

/// Validates and records a new contract; it starts at once if its start has come.
pub fn create(txn: &mut Txn<'_>, who: Principal, req: CreateContract) -> Result<ContractView, ApiError> {
    let tenant = match (who, req.tenant) {
        (Principal::Admin, Some(t)) => t,
        (Principal::Admin, None) => return Err(ApiError::invalid("tenant", "an admin must name the tenant")),
        (Principal::Tenant(me), None) => me,
        (Principal::Tenant(me), Some(t)) if t == me => me,
        (Principal::Tenant(_), Some(_)) => {
            return Err(ApiError::invalid("tenant", "a tenant reserves only for itself"));
        }
        (Principal::Provider(_), _) => return Err(ApiError::forbidden("reserve GPUs (tenants and admins do)")),
    };
    if !txn.ex.tenants.contains_key(&tenant) {
        return Err(ApiError::invalid("tenant", format!("no tenant {tenant}")));
    }
    if !txn.ex.providers.contains_key(&req.provider) {
        return Err(ApiError::invalid("provider", format!("no provider {}", req.provider)));
    }
    let model = GpuModel::resolve(&req.model).map_err(|e| ApiError::invalid("model", e.to_string()))?;
    if req.gpus == 0 {
        return Err(ApiError::invalid("gpus", "must be at least 1"));
    }
    if req.duration_s == 0 || req.duration_s > MAX_TERM_S {
        return Err(ApiError::invalid(
            "duration_s",
            format!("must be 1..={MAX_TERM_S} seconds"),
        ));
    }
    let now = txn.now;
    let start = UnixMs(req.start_ms.unwrap_or(now.0).max(now.0));
    if start.0 - now.0 > MAX_LEAD_S as i64 * 1000 {
        return Err(ApiError::invalid("start_ms", "must be within a year from now"));
    }
    let end = start.plus_ms(req.duration_s as i64 * 1000);
    let open = txn
        .ex
        .contracts
        .values()
        .filter(|c| c.tenant == tenant && c.state != ContractState::Ended)
        .count();
    if open >= MAX_OPEN_CONTRACTS_PER_TENANT {
        return Err(ApiError::conflict(format!(
            "tenant {tenant} has {open} contracts not ended, the most allowed"
        )));
    }

    // Capacity: the provider's online GPUs of the model, and what other contracts hold over the term.
    let online = |p: Option<ProviderId>| -> u64 {
        txn.ex
            .nodes
            .values()
            .filter(|n| n.online && n.model == model && p.is_none_or(|p| n.provider == p))
            .map(|n| u64::from(n.gpus))
            .sum()
    };
    let capacity = online(Some(req.provider));
    let committed: u64 = txn
        .ex
        .contracts
        .values()
        .filter(|c| c.provider == req.provider && c.model == model && c.overlaps(start, end))
        .map(|c| u64::from(c.gpus))
        .sum();
    if committed + u64::from(req.gpus) > capacity {
        return Err(ApiError::conflict(format!(
            "provider {} has {capacity} {} online and {committed} already reserved over that term; {} more do not fit",
            req.provider,
            model.name(),
            req.gpus
        )));
    }
    // Market health: one tenant may not reserve more than a share of a model.
    let cap_bps = u64::from(txn.ex.rules.max_reserved_share_bps);
    let model_total = online(None);
    let mine: u64 = txn
        .ex
        .contracts
        .values()
        .filter(|c| c.tenant == tenant && c.model == model && c.overlaps(start, end))
        .map(|c| u64::from(c.gpus))
        .sum();
    let allowed = model_total * cap_bps / 10_000;
    if mine + u64::from(req.gpus) > allowed {
        return Err(ApiError::conflict(format!(
            "a tenant may reserve at most {:.1} % of the {} {} online ({allowed} GPUs); tenant {tenant} would hold {}",
            cap_bps as f64 / 100.0,
            model_total,
            model.name(),
            mine + u64::from(req.gpus)
        )));
    }

    let lowest_ask = txn
        .ex
        .nodes
        .values()
        .filter(|n| n.online && n.provider == req.provider && n.model == model)
        .map(|n| n.ask)
        .min()
        .expect("capacity > 0 means an online node");
    let price = match &req.price_per_gpu_hour {
        None => lowest_ask,
        Some(text) => {
            let p = Micros::parse_decimal(text).map_err(|e| ApiError::invalid("price_per_gpu_hour", e.to_string()))?;
            let p = PricePerGpuHour(p);
            if p.0 <= Micros::ZERO || p.0 > Micros::from_units(1_000_000) {
                return Err(ApiError::invalid(
                    "price_per_gpu_hour",
                    "must be above 0 and at most 1,000,000",
                ));
            }
            if who != Principal::Admin && p < lowest_ask {
                return Err(ApiError::invalid(
                    "price_per_gpu_hour",
                    format!("is below the provider's ask of {lowest_ask} for {}", model.name()),
                ));
            }
            p
        }
    };
    let contract = Contract {
        id: txn.ex.next_contract_id(),
        tenant,
        provider: req.provider,
        model,
        gpus: req.gpus,
        start,
        end,
        price,
        state: ContractState::Scheduled,
        created_at: now,
        ended_at: None,
        end_reason: None,
        charged_until: None,
        funds_short_since: None,
    };
    let first_day = contract.due_until(UnixMs(start.0 + 24 * 3600 * 1000));
    let (available, _) = txn.ex.tenant_funds(tenant);
    if available < first_day {
        return Err(ApiError::insufficient_funds(format!(
            "available balance {available} is below the contract's first day ({first_day}) of {} in all; top up first",
            contract.term_cost()
        )));
    }
    let id = contract.id;
    tracing::info!(contract = %id, %tenant, provider = %req.provider, gpus = req.gpus, "reservation contract created");
    txn.emit(Event::ContractCreated { contract, at: now });
    if start <= now {
        txn.emit(Event::ContractStarted { contract: id, at: now });
    }
    Ok(view(txn, id))
}

/// Ends a contract early: its tenant or an admin may.
pub fn end(txn: &mut Txn<'_>, who: Principal, id: ContractId) -> Result<ContractView, ApiError> {
    let c = visible(txn, who, id)?;
    let reason = match who {
        Principal::Admin => ContractEndReason::EndedByAdmin,
        Principal::Tenant(_) => ContractEndReason::EndedByTenant,
        Principal::Provider(_) => return Err(ApiError::forbidden("end contracts (its tenant or an admin does)")),
    };
    if c.state == ContractState::Ended {
        return Err(ApiError::conflict(format!("contract {id} has already ended")));
    }
    end_contract(txn, id, reason);
    Ok(view(txn, id))
}

fn visible<'a>(txn: &'a Txn<'_>, who: Principal, id: ContractId) -> Result<&'a Contract, ApiError> {
    let c = txn
        .ex
        .contracts
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("contract {id}")))?;
    if !sees(who, c) {
        return Err(ApiError::not_found(format!("contract {id}")));
    }
    Ok(c)
}

/// Who sees a contract: its tenant, its provider, an admin.
fn sees(who: Principal, c: &Contract) -> bool {
    match who {
        Principal::Admin => true,
        Principal::Tenant(t) => c.tenant == t,
        Principal::Provider(p) => c.provider == p,
    }
}

pub fn get(txn: &Txn<'_>, who: Principal, id: ContractId) -> Result<ContractView, ApiError> {
    visible(txn, who, id)?;
    Ok(view(txn, id))
}

/// The caller's contracts (an admin sees all), newest first.
pub fn list(txn: &Txn<'_>, who: Principal) -> Vec<ContractView> {
    txn.ex
        .contracts
        .values()
        .rev()
        .filter(|c| sees(who, c))
        .map(|c| view(txn, c.id))
        .collect()
}

pub fn view(txn: &Txn<'_>, id: ContractId) -> ContractView {
    let c = &txn.ex.contracts[&id];
    let charged = txn.ex.ledger.contract_charges(id).map_or(Micros::ZERO, |ch| ch.charged);
    let mut holding = HoldingView::default();
    if let Some(pool) = txn.ex.market.reservations().get(&(c.provider, c.model))
        && let Some(h) = pool.holders().get(&c.tenant)
    {
        holding.gpus = h.gpus;
        holding.used_gpus = h.used;
        holding.resold_gpus = h.resold;
        holding.idle_gpus = h.idle();
    }
    holding.resale_credited = txn
        .ex
        .ledger
        .resales()
        .filter(|((_, holder), r)| *holder == c.tenant && r.provider == c.provider)
        .filter(|((lease, _), _)| txn.ex.leases.get(lease).is_some_and(|l| l.model == c.model))
        .map(|(_, r)| r.credited)
        .fold(Micros::ZERO, |a, b| a + b);
    ContractView {
        id,
        tenant: c.tenant,
        provider: c.provider,
        model: c.model,
        gpus: c.gpus,
        start_ms: c.start.0,
        end_ms: c.end.0,
        price_per_gpu_hour: c.price,
        state: match c.state {
            ContractState::Scheduled => "scheduled",
            ContractState::Active => "active",
            ContractState::Ended => "ended",
        }
        .to_string(),
        end_reason: c.end_reason.map(|r| r.as_str().to_string()),
        ended_at_ms: c.ended_at.map(|t| t.0),
        term_cost: c.term_cost(),
        charged,
        holding,
    }
}

/// Ends a contract and stops the reserved work its tenant can no longer hold there.
fn end_contract(txn: &mut Txn<'_>, id: ContractId, reason: ContractEndReason) {
    let now = txn.now;
    tracing::info!(contract = %id, reason = reason.as_str(), "reservation contract ended");
    txn.emit(Event::ContractEnded {
        contract: id,
        reason,
        at: now,
    });
    let c = &txn.ex.contracts[&id];
    let (tenant, provider, model) = (c.tenant, c.provider, c.model);
    let held = txn.ex.held_gpus(tenant, provider, model);
    let leases = reserved_leases(txn, tenant, provider, model);
    let mut over = leases.iter().map(|(_, g)| g).sum::<u64>().saturating_sub(held);
    // The newest first: the least work lost.
    for (lease, gpus) in leases.into_iter().rev() {
        if over == 0 {
            break;
        }
        txn.emit(Event::StopRequested {
            lease,
            reason: StopReason::ReservationEnded,
            at: now,
        });
        over = over.saturating_sub(gpus);
    }
}

/// The tenant's running reserved-tier leases on (provider, model), not stopping, ascending id, with their GPUs.
fn reserved_leases(txn: &Txn<'_>, tenant: TenantId, provider: ProviderId, model: GpuModel) -> Vec<(LeaseId, u64)> {
    txn.ex
        .live_leases
        .iter()
        .map(|id| &txn.ex.leases[id])
        .filter(|l| l.tier == Tier::Reserved && l.state != LeaseState::Stopping)
        .filter(|l| (l.tenant, l.provider, l.model) == (tenant, provider, model))
        .map(|l| (l.id, u64::from(l.gpus)))
        .collect()
}

/// The contracts' periodic work: start, charge, end at term or for want of funds.
pub fn tick(txn: &mut Txn<'_>) {
    let now = txn.now;
    let every = txn.cfg.settle_interval_ms as i64;
    let grace = txn.cfg.funds_grace_ms as i64;
    let due: BTreeMap<ContractId, ContractState> = txn
        .ex
        .contracts
        .values()
        .filter(|c| c.state != ContractState::Ended)
        .map(|c| (c.id, c.state))
        .collect();
    for (id, state) in due {
        let c = &txn.ex.contracts[&id];
        match state {
            ContractState::Scheduled if now >= c.start => {
                txn.emit(Event::ContractStarted { contract: id, at: now });
            }
            ContractState::Active if now >= c.end => end_contract(txn, id, ContractEndReason::Term),
            ContractState::Active if c.funds_short_since.is_some_and(|s| now.0 - s.0 >= grace) => {
                tracing::warn!(contract = %id, "ending contract: insufficient funds");
                end_contract(txn, id, ContractEndReason::InsufficientFunds);
            }
            ContractState::Active if c.charged_until.is_none_or(|t| now.0 - t.0 >= every) => {
                txn.emit(Event::ContractCharged { contract: id, at: now });
            }
            _ => {}
        }
    }
}
