//! Reserved capacity: GPUs of one model at one provider that tenants hold
//! under reservation contracts.
//!
//! The market sees a contract only as a *holding*: tenant T holds G GPUs of
//! model M at provider P (the sum of T's active contracts there; terms,
//! prices and charges are the caller's). The holdings of one (provider,
//! model) form a [`ReservedPool`]. Holdings are counts, not particular GPUs:
//! any free GPU of the pool's nodes may serve any holder, so the market stays
//! free to pack nodes by best fit.
//!
//! Per pool the market keeps the free GPUs of its online nodes and, per
//! holder, the GPUs its reserved-tier leases use (`used`) and the GPUs of spot
//! leases resold from its idle reservation (`resold`). A holder's *idle*
//! reservation is `gpus - used - resold`; the pool's *open* free GPUs are its
//! free GPUs minus every holder's idle reservation. The rules:
//!
//! - A reserved-tier order of T runs only on a pool where T holds a
//!   reservation with `gpus - used` at least its size; it pays nothing per
//!   GPU-hour (its contract does) and may preempt spot leases on the pool's
//!   nodes, idle reserved GPUs being resold as spot.
//! - An on-demand order takes only open free GPUs of a reserved pool, so it
//!   never sits on capacity a holder may claim back. (It preempts spot there
//!   only when the pool has enough open free GPUs, split across nodes.)
//! - A spot order may take any free GPU. What it takes beyond the pool's open
//!   free GPUs is resold from the holders' idle reservations, in ascending
//!   tenant id, and recorded on the placement ([`super::ReservedUse`]) so the
//!   caller credits the holders for it.
//!
//! Free GPUs per pool follow every index change of the pool's nodes; the
//! counters per holder follow every lease start and end. Setting a holding
//! recounts its pool from the nodes and leases (rare: a contract starts or
//! ends), so the counters never drift from the leases that exist.

use std::collections::BTreeMap;

use agora_types::{GpuModel, ProviderId, TenantId, Tier};
use serde::{Deserialize, Serialize};

use super::index::IndexEntry;
use super::{Lease, Market, ReservedUse};

/// One tenant's reservation in a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// GPUs held (the sum of the tenant's active contracts on the pool).
    pub gpus: u64,
    /// GPUs of the tenant's reserved-tier leases on the pool.
    pub used: u64,
    /// GPUs of other tenants' spot leases resold from this reservation.
    pub resold: u64,
}

impl Holding {
    /// Reserved GPUs neither used nor resold.
    pub fn idle(&self) -> u64 {
        self.gpus.saturating_sub(self.used + self.resold)
    }

    /// GPUs a new reserved-tier lease of the holder may still take: resold
    /// ones count, since the holder reclaims them.
    pub fn room(&self) -> u64 {
        self.gpus.saturating_sub(self.used)
    }
}

/// The reservations on one (provider, model).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReservedPool {
    /// Free GPUs of the pool's online nodes.
    pub(super) free: u64,
    pub(super) holders: BTreeMap<TenantId, Holding>,
}

impl ReservedPool {
    pub fn free_gpus(&self) -> u64 {
        self.free
    }

    pub fn holders(&self) -> &BTreeMap<TenantId, Holding> {
        &self.holders
    }

    /// Every holder's idle reservation.
    pub fn idle(&self) -> u64 {
        self.holders.values().map(Holding::idle).sum()
    }

    /// Free GPUs owed to no idle reservation: what on-demand work may take.
    pub fn open_free(&self) -> u64 {
        self.free.saturating_sub(self.idle())
    }

    /// Counts a placement of `gpus` GPUs by `tier` on the pool, taken from
    /// free GPUs the caller already subtracted: returns the reserved capacity
    /// it uses (a reserved-tier placement: the tenant's own; spot: what it
    /// resells beyond the open free GPUs, which were counted before the take).
    pub(super) fn place(&mut self, tier: Tier, tenant: TenantId, gpus: u64, open_before: u64) -> Vec<ReservedUse> {
        match tier {
            Tier::Reserved => {
                let holding = self
                    .holders
                    .get_mut(&tenant)
                    .expect("a reserved placement has a holding");
                holding.used += gpus;
                vec![ReservedUse {
                    holder: tenant,
                    gpus: gpus as u32,
                }]
            }
            Tier::OnDemand => Vec::new(),
            Tier::Spot => {
                let mut rest = gpus.saturating_sub(open_before);
                let mut uses = Vec::new();
                // Never the order's own tenant: it would be credited for its own work.
                for (&holder, holding) in &mut self.holders {
                    if rest == 0 {
                        break;
                    }
                    if holder == tenant {
                        continue;
                    }
                    let take = holding.idle().min(rest);
                    if take > 0 {
                        holding.resold += take;
                        rest -= take;
                        uses.push(ReservedUse {
                            holder,
                            gpus: take as u32,
                        });
                    }
                }
                uses
            }
        }
    }

    /// Adds (`sign` 1) or removes (`-1`) a lease's reserved uses.
    fn count(&mut self, lease: &Lease, sign: i8) {
        for u in &lease.reserved {
            let Some(h) = self.holders.get_mut(&u.holder) else {
                continue;
            };
            let counter = if lease.tier == Tier::Reserved {
                &mut h.used
            } else {
                &mut h.resold
            };
            *counter = if sign > 0 {
                *counter + u64::from(u.gpus)
            } else {
                counter.saturating_sub(u64::from(u.gpus))
            };
        }
    }
}

/// The pool a lease belongs to: its provider and the model of its nodes.
fn pool_of(market: &Market, lease: &Lease) -> Option<(ProviderId, GpuModel)> {
    let node = lease.allocations.first()?.node;
    Some((lease.provider, market.nodes.get(&node)?.spec.model))
}

impl Market {
    /// Sets how many GPUs of `model` at `provider` a tenant holds (0 removes
    /// the holding). Running leases are never touched: a holder whose
    /// holding shrank below its use just takes no new reserved work there.
    pub fn set_reservation(&mut self, tenant: TenantId, provider: ProviderId, model: GpuModel, gpus: u64) {
        let key = (provider, model);
        let pool = self.reservations.entry(key).or_default();
        if gpus == 0 {
            pool.holders.remove(&tenant);
        } else {
            pool.holders.entry(tenant).or_default().gpus = gpus;
        }
        if pool.holders.is_empty() {
            self.reservations.remove(&key);
            return;
        }
        self.recount_reservations(key);
    }

    /// The reserved pools, by (provider, model).
    pub fn reservations(&self) -> &BTreeMap<(ProviderId, GpuModel), ReservedPool> {
        &self.reservations
    }

    /// Recomputes a pool's free GPUs and its holders' counters from the nodes and leases.
    fn recount_reservations(&mut self, key: (ProviderId, GpuModel)) {
        let free = self
            .nodes
            .values()
            .filter_map(|n| n.indexed)
            .filter(|e| (e.provider, e.model) == key)
            .map(|e| u64::from(e.free))
            .sum();
        let mut pool = self.reservations.remove(&key).expect("recounted pools exist");
        pool.free = free;
        for h in pool.holders.values_mut() {
            h.used = 0;
            h.resold = 0;
        }
        for lease in self.leases.values() {
            if !lease.reserved.is_empty() && pool_of(self, lease) == Some(key) {
                pool.count(lease, 1);
            }
        }
        self.reservations.insert(key, pool);
    }

    /// Follows a lease's start (`sign` 1) or end (`-1`) in its pool's holders' counters.
    pub(super) fn reserved_lease_changed(&mut self, lease: &Lease, sign: i8) {
        if lease.reserved.is_empty() {
            return;
        }
        if let Some(key) = pool_of(self, lease)
            && let Some(pool) = self.reservations.get_mut(&key)
        {
            pool.count(lease, sign);
        }
    }
}

/// Follows a node's index change in its reserved pool's free GPUs.
pub(super) fn free_changed(
    reservations: &mut BTreeMap<(ProviderId, GpuModel), ReservedPool>,
    old: Option<&IndexEntry>,
    new: Option<&IndexEntry>,
) {
    if reservations.is_empty() {
        return;
    }
    if let Some(e) = old
        && let Some(pool) = reservations.get_mut(&(e.provider, e.model))
    {
        pool.free -= u64::from(e.free);
    }
    if let Some(e) = new
        && let Some(pool) = reservations.get_mut(&(e.provider, e.model))
    {
        pool.free += u64::from(e.free);
    }
}
