//! Conservative backfill. When the round has a clock ([`crate::market::Market::clear_at`])
//! and an order finds no room, the first [`BACKFILL_RESERVATIONS`] such
//! orders of the round (in service order) each get a *reservation*: the
//! nodes where it could start earliest, judging by the estimated ends of the
//! leases on them (a lease without an estimate never ends, for planning).
//! Reserved nodes leave the round's indexes, so later orders cannot take
//! them — except an order with a duration estimate that ends before the
//! reservation starts, which may be *backfilled* onto them. Reservations are
//! recomputed every round from the state; they are plans, not records.
//!
//! For a single-node order of `g` GPUs, a node's start is when `g` of its
//! GPUs are free; for a gang, when the node is wholly free, and the
//! reservation is the pool (provider, model, ask) whose `nodes`-th earliest
//! node frees first. Ties go to the lower ask, then the lower provider or
//! node id. An order that could never start by the estimates gets none, and
//! neither does one whose nodes are free now (power, a policy or the split
//! across pools holds it back, which waiting for work to end does not cure).

use std::collections::BTreeMap;

use agora_types::{GpuModel, NodeId, PricePerGpuHour, ProviderId, SiteId, UnixMs};

use super::{PoolKey, Round};
use crate::market::OrderSpec;

/// Reservations one round makes at most, which bounds its cost (like
/// Slurm's limit on the jobs its backfill scheduler tests).
pub const BACKFILL_RESERVATIONS: usize = 8;

impl Round<'_> {
    /// When `g` GPUs of a node are free, by the estimates: now if they are,
    /// else as leases (and this round's placements) end. None: never.
    pub(super) fn free_at(&self, id: NodeId, g: u32, now: UnixMs) -> Option<UnixMs> {
        let node = &self.market.nodes[&id];
        let mut free = self.free_on(id);
        if free >= g {
            return Some(now);
        }
        let mut ends: Vec<(UnixMs, u32)> = Vec::new();
        let by_lease = &mut self.scratch.borrow_mut().by_lease;
        node.gpus_by_lease(by_lease);
        for &(lease, count) in by_lease.iter() {
            if let Some(end) = self.market.leases[&lease].ends_at {
                ends.push((end.max(now), count));
            }
        }
        if let Some(placed) = self.round_ends.get(&id) {
            ends.extend(
                placed
                    .iter()
                    .filter_map(|(count, end)| end.map(|e| (e.max(now), *count))),
            );
        }
        ends.sort_unstable();
        for (end, count) in ends {
            free += count;
            if free >= g {
                return Some(end);
            }
        }
        None
    }

    /// Plans the order's reservation and hides its nodes from later orders;
    /// returns its start and node count, or None (no clock, the round's
    /// reservations used up, or no start in sight).
    pub(super) fn plan_reservation(&mut self, order: &OrderSpec, models: &[GpuModel]) -> Option<(UnixMs, u32)> {
        let now = self.clock?;
        if self.reservations_made >= BACKFILL_RESERVATIONS {
            return None;
        }
        // Nothing running has an estimated end: no node frees at a known time, so
        // no start can be promised (and the scan below would find none).
        let estimated_now = self.round_ends.values().flatten().any(|(_, end)| end.is_some());
        if self.market.estimated_leases == 0 && !estimated_now {
            return None;
        }
        let (g, need) = (order.gpus_per_node, order.nodes as usize);
        // Per pool, each candidate node's start.
        let mut pools: BTreeMap<(PricePerGpuHour, ProviderId, GpuModel), Vec<(UnixMs, NodeId)>> = BTreeMap::new();
        for &model in models {
            let Some(m) = self.market.indexes.models.get(&model) else {
                continue;
            };
            for &(ask, id) in m.by_ask.range(..=(order.max_price, NodeId(u64::MAX))) {
                let e = self.entry(id);
                let fits = if need == 1 { e.gpus >= g } else { e.gpus == g };
                if !fits
                    || self.hidden.contains_key(&id)
                    || !self.site_ok(e.site)
                    || !self.spot_ok(e.site, e.model)
                    || !self.admits(order.tier, e.provider, model, order.gpus_total())
                {
                    continue;
                }
                let wanted = if need == 1 { g } else { e.gpus };
                if let Some(at) = self.free_at(id, wanted, now) {
                    pools.entry((ask, e.provider, model)).or_default().push((at, id));
                }
            }
        }
        let mut best: Option<(UnixMs, PricePerGpuHour, ProviderId, Vec<NodeId>)> = None;
        for ((ask, provider, _), mut nodes) in pools {
            if nodes.len() < need {
                continue;
            }
            nodes.sort_unstable();
            let start = nodes[need - 1].0;
            if best.as_ref().is_none_or(|b| (start, ask, provider) < (b.0, b.1, b.2)) {
                best = Some((start, ask, provider, nodes[..need].iter().map(|(_, id)| *id).collect()));
            }
        }
        let (start, _, _, nodes) = best?;
        // Room now means something else (power, a policy, pools) blocked it: nothing to wait for.
        // (A start of `now` without room is work overrunning its estimate: still worth holding.)
        let wanted = |id: NodeId| if need == 1 { g } else { self.entry(id).gpus };
        if nodes.iter().all(|&id| self.free_on(id) >= wanted(id)) {
            return None;
        }
        for &id in &nodes {
            self.hide(id, start);
        }
        self.reservations_made += 1;
        Some((start, nodes.len() as u32))
    }

    /// Takes a reserved node out of the round's indexes: no later order finds
    /// it, except through [`Round::find_backfill`].
    fn hide(&mut self, id: NodeId, start: UnixMs) {
        let entry = self.entry(id);
        let taken = self.taken_on(id);
        let free = entry.free - taken;
        if free > 0 {
            self.free.update(id, &entry, free, 0);
            super::forget(self.most_free.get_mut());
        }
        if entry.whole() && taken == 0 {
            self.whole.remove(id, &entry);
        }
        if let Some(capacity) = self.capacity_on(id)
            && capacity > 0
        {
            self.reclaim.update(id, &entry, capacity, 0);
        }
        self.reclaim_scores.get_mut().remove(&id);
        self.hidden.insert(id, start);
        self.generation += 1;
    }

    /// A placement on reserved nodes for an order estimated to end before
    /// their reservation starts: single-node by (ask, fewest free, site, id);
    /// a gang on whole nodes of one pool, lowest ids first. Power holds as
    /// anywhere else.
    pub(super) fn find_backfill(&self, order: &OrderSpec, models: &[GpuModel]) -> Option<(PoolKey, Vec<NodeId>)> {
        let now = self.clock?;
        let ends = now.plus_ms(i64::try_from(order.duration_estimate_s?).ok()?.saturating_mul(1000));
        let g = order.gpus_per_node;
        let mut single: Option<(PricePerGpuHour, u32, SiteId, NodeId)> = None;
        let mut pools: BTreeMap<PoolKey, Vec<NodeId>> = BTreeMap::new();
        for (&id, &start) in &self.hidden {
            let e = self.entry(id);
            if start < ends
                || !self.site_ok(e.site)
                || !self.spot_ok(e.site, e.model)
                || e.ask > order.max_price
                || !models.contains(&e.model)
                || !self.admits(order.tier, e.provider, e.model, order.gpus_total())
            {
                continue;
            }
            let free = self.free_on(id);
            if order.nodes == 1 {
                let powered = self.headroom_w(e.site).is_none_or(|h| self.need_w(id, g) <= h);
                let candidate = (e.ask, free, e.site, id);
                if free >= g && powered && single.is_none_or(|b| candidate < b) {
                    single = Some(candidate);
                }
            } else if e.gpus == g && free == g && !e.busy && self.taken_on(id) == 0 {
                pools.entry(PoolKey::of(&e)).or_default().push(id);
            }
        }
        if order.nodes == 1 {
            let (ask, _, _, id) = single?;
            let e = self.entry(id);
            return Some((
                PoolKey {
                    model: e.model,
                    ask,
                    provider: e.provider,
                },
                vec![id],
            ));
        }
        let need = order.nodes as usize;
        for (key, nodes) in pools {
            if nodes.len() < need {
                continue;
            }
            let chosen = &nodes[..need];
            let mut by_site: BTreeMap<SiteId, u64> = BTreeMap::new();
            for &id in chosen {
                *by_site.entry(self.entry(id).site).or_default() += self.need_w(id, g);
            }
            if by_site
                .iter()
                .all(|(site, w)| self.headroom_w(*site).is_none_or(|h| *w <= h))
            {
                return Some((key, chosen.to_vec()));
            }
        }
        None
    }
}
