//! One clearing round: serve pending orders in priority order, each through
//! the stages find (cheapest feasible placement on free GPUs) → reserve (take
//! its GPUs from the round's copy of the free index) → else reclaim (on-demand
//! only: plan preemptions) → else explain (a typed reason).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use agora_types::{GpuModel, LeaseId, Micros, NodeId, PricePerGpuHour, ProviderId, Tier};

use super::index::{BucketIndex, Buckets, IndexEntry, PoolKey};
use super::{Allocation, Demand, Market, OrderSpec, Placement, Preemption, RoundPlan, Unplaced};

/// How many feasible nodes preemption scores for one order (per pool, for a
/// gang), cheapest asks first, lowest ids next. Like kube-scheduler's
/// preemption, which also scores a bounded set of candidate nodes: scoring
/// every node that holds spot leases made one round with 10,000 preempting
/// orders on a 27,500-node fleet take minutes. Smaller fleets are searched
/// exhaustively.
pub const RECLAIM_CANDIDATES: usize = 32;

pub(super) fn clear(market: &Market, eligible: impl Fn(&OrderSpec) -> bool) -> RoundPlan {
    let mut round = Round {
        market,
        free: Cow::Borrowed(&market.indexes.free),
        reclaim: Cow::Borrowed(&market.indexes.reclaim),
        taken: BTreeMap::new(),
        claimed: BTreeSet::new(),
        claimed_gpus: BTreeMap::new(),
        no_room: BTreeMap::new(),
        no_reclaim: BTreeMap::new(),
    };
    let mut plan = RoundPlan::default();
    for order in market.pending_orders().filter(|o| eligible(o)) {
        let shape = Shape {
            models: round.accepted_models(order),
            nodes: order.nodes,
            gpus_per_node: order.gpus_per_node,
        };
        if let Some((pool, nodes)) = round.find_placement(order, &shape) {
            plan.placements.push(round.reserve(order, pool, &nodes));
            continue;
        }
        // Spot orders never preempt.
        let reclaim = if order.tier == Tier::OnDemand {
            round.find_reclaim(order, &shape)
        } else {
            None
        };
        if let Some(reclaim) = reclaim {
            let waiting = round.claim(&reclaim);
            let for_order = order.id;
            plan.preemptions.extend(
                reclaim
                    .victims()
                    .into_iter()
                    .map(|lease| Preemption { lease, for_order }),
            );
            plan.unplaced
                .insert(order.id, Unplaced::WaitingForPreemption { leases: waiting });
            continue;
        }
        plan.unplaced.insert(order.id, round.explain(order, &shape.models));
    }
    plan
}

/// What a search depends on besides the price: orders of one shape that
/// failed at some price fail at any lower price in the same round.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    /// Accepted models that have an online node, ascending (VRAM already applied).
    models: Vec<GpuModel>,
    nodes: u32,
    gpus_per_node: u32,
}

/// The state of a round in progress: the market as it was, plus what this
/// round already handed out.
struct Round<'m> {
    market: &'m Market,
    /// The market's free index, copied on the round's first placement.
    free: Cow<'m, BucketIndex>,
    /// The market's reclaim index, copied on the round's first change to it.
    reclaim: Cow<'m, BucketIndex>,
    /// GPU indices taken this round, by placements or kept for an order
    /// waiting on preemption.
    taken: BTreeMap<NodeId, BTreeSet<u32>>,
    /// Leases that an order of this round preempts or waits for: no other
    /// order may count on them again.
    claimed: BTreeSet<LeaseId>,
    /// GPUs of claimed leases per node, which the reclaim index no longer offers.
    claimed_gpus: BTreeMap<NodeId, u32>,
    /// The highest price at which a shape found no room on free GPUs. Free
    /// GPUs only shrink during a round, so a later order of that shape at a
    /// price no higher cannot find room either and skips the search.
    no_room: BTreeMap<Shape, PricePerGpuHour>,
    /// The same for preemption: reclaimable GPUs only shrink too.
    no_reclaim: BTreeMap<Shape, PricePerGpuHour>,
}

/// How an on-demand order gets its GPUs on one node through preemption.
#[derive(Debug, Clone)]
struct NodeReclaim {
    node: NodeId,
    /// GPUs free now that it keeps for itself.
    from_free: u32,
    /// Leases already stopping whose GPUs it counts on, ascending.
    stopping: Vec<LeaseId>,
    /// Running spot leases to preempt, ascending.
    victims: Vec<LeaseId>,
    /// GPUs of the victims, across all their nodes.
    victim_gpus: u64,
}

impl NodeReclaim {
    /// A node where free GPUs alone suffice.
    fn free(node: NodeId, g: u32) -> NodeReclaim {
        NodeReclaim {
            node,
            from_free: g,
            stopping: Vec::new(),
            victims: Vec::new(),
            victim_gpus: 0,
        }
    }

    /// Smaller is preferred: fewest victims, fewest GPUs preempted, fewest leases waited for, then id.
    fn cost(&self) -> (usize, u64, usize, NodeId) {
        (self.victims.len(), self.victim_gpus, self.stopping.len(), self.node)
    }
}

/// A whole reclaim plan for one order: one [`NodeReclaim`] per node it needs.
#[derive(Debug, Clone)]
struct Reclaim {
    nodes: Vec<NodeReclaim>,
}

impl Reclaim {
    /// Distinct victims, ascending.
    fn victims(&self) -> Vec<LeaseId> {
        let all: BTreeSet<LeaseId> = self.nodes.iter().flat_map(|n| n.victims.iter().copied()).collect();
        all.into_iter().collect()
    }

    /// Fewest distinct victims, then fewest GPUs preempted (each victim counted once).
    fn cost(&self, market: &Market) -> (usize, u64) {
        let victims = self.victims();
        let gpus = victims.iter().map(|l| market.leases[l].gpus_total()).sum();
        (victims.len(), gpus)
    }
}

/// A gang placement's score, smallest wins: ask, GPUs left free on its nodes, provider, model.
type GangScore = (PricePerGpuHour, u64, ProviderId, GpuModel);

/// A gang preemption's score, smallest wins: distinct victims, GPUs preempted, ask, provider, model.
type GangReclaimScore = (usize, u64, PricePerGpuHour, ProviderId, GpuModel);

impl Round<'_> {
    /// Models the order accepts that have an online node, ascending.
    fn accepted_models(&self, order: &OrderSpec) -> Vec<GpuModel> {
        self.market
            .indexes
            .models
            .keys()
            .copied()
            .filter(|m| order.accepts(*m))
            .collect()
    }

    /// The index entry of a node the round works with (only online nodes are indexed).
    fn entry(&self, id: NodeId) -> IndexEntry {
        self.market.nodes[&id]
            .indexed
            .expect("the round only uses online nodes")
    }

    fn taken_on(&self, id: NodeId) -> u32 {
        self.taken.get(&id).map_or(0, BTreeSet::len) as u32
    }

    /// Free GPUs of a node in this round.
    fn free_on(&self, id: NodeId) -> u32 {
        self.entry(id).free - self.taken_on(id)
    }

    /// Free plus unclaimed reclaimable GPUs of a node in this round; None if
    /// it had nothing to reclaim when the round began.
    fn capacity_on(&self, id: NodeId) -> Option<u32> {
        let claimed = self.claimed_gpus.get(&id).copied().unwrap_or(0);
        self.entry(id).capacity().map(|c| c - self.taken_on(id) - claimed)
    }

    /// The cheapest placement on free GPUs, unless this shape already failed at
    /// this price or higher in this round.
    fn find_placement(&mut self, order: &OrderSpec, shape: &Shape) -> Option<(PoolKey, Vec<NodeId>)> {
        if self.no_room.get(shape).is_some_and(|p| order.max_price <= *p) {
            return None;
        }
        let found = if order.nodes == 1 {
            self.find_single(order, &shape.models)
        } else {
            self.find_gang(order, &shape.models)
        };
        if found.is_none() {
            let failed = self.no_room.entry(shape.clone()).or_insert(order.max_price);
            *failed = (*failed).max(order.max_price);
        }
        found
    }

    /// Filter + score + select for a single-node order. Score, smallest wins:
    /// (ask, free GPUs on the node before placing, node id) — among equal asks
    /// the fullest node that fits is the best fit.
    fn find_single(&self, order: &OrderSpec, models: &[GpuModel]) -> Option<(PoolKey, Vec<NodeId>)> {
        let mut best: Option<(PricePerGpuHour, u32, NodeId, GpuModel)> = None;
        for &model in models {
            let Some(buckets) = self.free.by_model.get(&model) else {
                continue;
            };
            for (&free, nodes) in buckets.range(order.gpus_per_node..) {
                let Some(&(ask, id)) = nodes.first() else { continue };
                let candidate = (ask, free, id, model);
                if ask <= order.max_price && best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(ask, _, id, model)| {
            let provider = self.entry(id).provider;
            (PoolKey { model, ask, provider }, vec![id])
        })
    }

    /// Filter + score + select for a gang: the cheapest pool holding `nodes`
    /// nodes with `gpus_per_node` free GPUs each, scored by [`GangScore`].
    fn find_gang(&self, order: &OrderSpec, models: &[GpuModel]) -> Option<(PoolKey, Vec<NodeId>)> {
        let need = order.nodes as usize;
        let g = order.gpus_per_node;
        let mut best: Option<(GangScore, Vec<NodeId>)> = None;
        for &model in models {
            for (key, buckets) in self.free.by_pool.range(pools_of(model, order.max_price)) {
                if best.as_ref().is_some_and(|(score, _)| key.ask > score.0) {
                    break;
                }
                // Best fit inside the pool: the fullest nodes that still fit, lowest id first.
                let mut chosen = Vec::with_capacity(need);
                let mut left_free = 0u64;
                'fill: for (&free, nodes) in buckets.range(g..) {
                    for &(_, id) in nodes {
                        chosen.push(id);
                        left_free += u64::from(free - g);
                        if chosen.len() == need {
                            break 'fill;
                        }
                    }
                }
                if chosen.len() < need {
                    continue;
                }
                let score = (key.ask, left_free, key.provider, model);
                if best.as_ref().is_none_or(|(b, _)| score < *b) {
                    chosen.sort_unstable();
                    best = Some((score, chosen));
                }
            }
        }
        best.map(|((ask, _, provider, model), nodes)| (PoolKey { model, ask, provider }, nodes))
    }

    /// Takes the lowest free GPU indices on each chosen node and returns the placement.
    fn reserve(&mut self, order: &OrderSpec, pool: PoolKey, nodes: &[NodeId]) -> Placement {
        let allocations = nodes
            .iter()
            .map(|&node| Allocation {
                node,
                gpu_indices: self.take(node, order.gpus_per_node),
            })
            .collect();
        Placement {
            order: order.id,
            provider: pool.provider,
            price: pool.ask,
            allocations,
        }
    }

    /// Takes `count` GPUs of a node for this round: the lowest indices free in
    /// the market and not yet taken in the round.
    fn take(&mut self, id: NodeId, count: u32) -> Vec<u32> {
        if count == 0 {
            return Vec::new();
        }
        let entry = self.entry(id);
        let free_before = self.free_on(id);
        let capacity_before = self.capacity_on(id);
        let node = &self.market.nodes[&id];
        let taken = self.taken.entry(id).or_default();
        let picked: Vec<u32> = (0..node.spec.gpus)
            .filter(|i| node.owners[*i as usize].is_none() && !taken.contains(i))
            .take(count as usize)
            .collect();
        assert_eq!(picked.len(), count as usize, "node {id} has {count} GPUs to take");
        taken.extend(&picked);
        self.free.to_mut().update(id, &entry, free_before, free_before - count);
        if let Some(capacity) = capacity_before {
            self.reclaim.to_mut().update(id, &entry, capacity, capacity - count);
        }
        picked
    }

    /// Claims a lease for this round: its GPUs leave the reclaim index.
    fn claim_lease(&mut self, lease: LeaseId) {
        if !self.claimed.insert(lease) {
            return;
        }
        for alloc in &self.market.leases[&lease].allocations {
            let node = &self.market.nodes[&alloc.node];
            let Some(entry) = node.indexed else { continue };
            let held = alloc.gpu_indices.iter().filter(|i| **i < node.spec.gpus).count() as u32;
            let capacity = self
                .capacity_on(alloc.node)
                .expect("a node holding a reclaimable lease is in the reclaim index");
            *self.claimed_gpus.entry(alloc.node).or_insert(0) += held;
            self.reclaim
                .to_mut()
                .update(alloc.node, &entry, capacity, capacity - held);
        }
    }

    /// The best way for an on-demand order to get its GPUs through preemption,
    /// or None if even reclaiming every eligible lease would not do.
    fn find_reclaim(&mut self, order: &OrderSpec, shape: &Shape) -> Option<Reclaim> {
        if self.no_reclaim.get(shape).is_some_and(|p| order.max_price <= *p) {
            return None;
        }
        let found = if order.nodes == 1 {
            self.find_single_reclaim(order, &shape.models)
        } else {
            self.find_gang_reclaim(order, &shape.models)
        };
        if found.is_none() {
            let failed = self.no_reclaim.entry(shape.clone()).or_insert(order.max_price);
            *failed = (*failed).max(order.max_price);
        }
        found
    }

    /// Scores the first [`RECLAIM_CANDIDATES`] nodes (by ask, then id) whose
    /// free and reclaimable GPUs reach the order, by (victims, GPUs preempted,
    /// ask, id).
    fn find_single_reclaim(&self, order: &OrderSpec, models: &[GpuModel]) -> Option<Reclaim> {
        let g = order.gpus_per_node;
        let mut candidates: Vec<(PricePerGpuHour, NodeId)> = Vec::new();
        for model in models {
            let Some(buckets) = self.reclaim.by_model.get(model) else {
                continue;
            };
            for (_, nodes) in buckets.range(g..) {
                candidates.extend(
                    nodes
                        .range(..=(order.max_price, NodeId(u64::MAX)))
                        .take(RECLAIM_CANDIDATES),
                );
            }
        }
        candidates.sort_unstable();
        candidates.truncate(RECLAIM_CANDIDATES);
        candidates
            .into_iter()
            .filter_map(|(ask, id)| {
                self.reclaim_on(id, g)
                    .map(|r| ((r.victims.len(), r.victim_gpus, ask, id), r))
            })
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, r)| Reclaim { nodes: vec![r] })
    }

    /// For each pool within price: nodes with room on free GPUs cost nothing;
    /// the first [`RECLAIM_CANDIDATES`] nodes (by id) whose reclaimable GPUs
    /// reach the order are scored like single nodes; the pool takes its
    /// `nodes` cheapest. Pools are scored by [`GangReclaimScore`].
    fn find_gang_reclaim(&self, order: &OrderSpec, models: &[GpuModel]) -> Option<Reclaim> {
        let need = order.nodes as usize;
        let g = order.gpus_per_node;
        let mut best: Option<(GangReclaimScore, Reclaim)> = None;
        // A pool without reclaimable nodes cannot help: its free GPUs alone did not fit the gang.
        for &model in models {
            for (key, buckets) in self.reclaim.by_pool.range(pools_of(model, order.max_price)) {
                let free_buckets = self.free.by_pool.get(key);
                let count = |b: &Buckets| b.range(g..).map(|(_, nodes)| nodes.len()).sum::<usize>();
                // Cheap filter before any allocation (a node may be counted twice here, never missed).
                if count(buckets) + free_buckets.map_or(0, count) < need {
                    continue;
                }
                let with_room: Vec<NodeId> = free_buckets.map_or_else(Vec::new, |b| {
                    b.range(g..)
                        .flat_map(|(_, nodes)| nodes.iter().map(|(_, id)| *id))
                        .take(need)
                        .collect()
                });
                let mut reclaimable: Vec<NodeId> = buckets
                    .range(g..)
                    .flat_map(|(_, nodes)| nodes.iter().take(RECLAIM_CANDIDATES.max(need)).map(|(_, id)| *id))
                    .filter(|id| !with_room.contains(id))
                    .collect();
                if with_room.len() + reclaimable.len() < need {
                    continue;
                }
                reclaimable.sort_unstable();
                reclaimable.truncate(RECLAIM_CANDIDATES.max(need));
                let mut options: Vec<NodeReclaim> = with_room.iter().map(|&id| NodeReclaim::free(id, g)).collect();
                options.extend(reclaimable.iter().filter_map(|&id| self.reclaim_on(id, g)));
                if options.len() < need {
                    continue;
                }
                options.sort_by_key(NodeReclaim::cost);
                options.truncate(need);
                options.sort_by_key(|r| r.node);
                let reclaim = Reclaim { nodes: options };
                let (victims, gpus) = reclaim.cost(self.market);
                let score = (victims, gpus, key.ask, key.provider, key.model);
                if best.as_ref().is_none_or(|(b, _)| score < *b) {
                    best = Some((score, reclaim));
                }
            }
        }
        best.map(|(_, r)| r)
    }

    /// How `g` GPUs could be had on one node: free GPUs first, then leases
    /// already stopping (largest first), then the cheapest set of running spot
    /// victims. None if the node cannot reach `g`.
    fn reclaim_on(&self, id: NodeId, g: u32) -> Option<NodeReclaim> {
        let node = &self.market.nodes[&id];
        if node.spec.gpus < g {
            return None;
        }
        let free = self.free_on(id);
        let mut reclaim = NodeReclaim::free(id, free.min(g));
        let mut missing = g.saturating_sub(free);
        let mut stopping = Vec::new();
        let mut candidates = Vec::new();
        for (lease_id, on_node) in node.gpus_by_lease() {
            if self.claimed.contains(&lease_id) {
                continue;
            }
            let lease = &self.market.leases[&lease_id];
            if lease.stopping {
                stopping.push((on_node, lease_id));
            } else if lease.tier == Tier::Spot {
                candidates.push(Candidate {
                    lease: lease_id,
                    on_node,
                    gpus_total: lease.gpus_total(),
                });
            }
        }
        // Stopping leases cost no new victim; the largest first waits on the fewest.
        stopping.sort_by_key(|&(on_node, lease)| (Reverse(on_node), lease));
        for (on_node, lease) in stopping {
            if missing == 0 {
                break;
            }
            reclaim.stopping.push(lease);
            missing = missing.saturating_sub(on_node);
        }
        reclaim.stopping.sort_unstable();
        if missing > 0 {
            reclaim.victims = choose_victims(missing, &candidates)?;
            reclaim.victim_gpus = candidates
                .iter()
                .filter(|c| reclaim.victims.contains(&c.lease))
                .map(|c| c.gpus_total)
                .sum();
        }
        Some(reclaim)
    }

    /// Claims what a reclaim plan counts on for the rest of the round and
    /// returns the leases the order now waits for, ascending.
    fn claim(&mut self, reclaim: &Reclaim) -> Vec<LeaseId> {
        let mut waiting = BTreeSet::new();
        for n in &reclaim.nodes {
            self.take(n.node, n.from_free);
            waiting.extend(n.stopping.iter().chain(&n.victims).copied());
        }
        debug_assert!(
            !waiting.is_empty(),
            "an order that fits on free GPUs is placed, not reclaimed for"
        );
        for &lease in &waiting {
            self.claim_lease(lease);
        }
        waiting.into_iter().collect()
    }

    /// The first reason, in the order of [`Unplaced`]'s variants, that applies.
    fn explain(&self, order: &OrderSpec, models: &[GpuModel]) -> Unplaced {
        let indexed: Vec<&super::index::ModelNodes> = models
            .iter()
            .filter_map(|m| self.market.indexes.models.get(m))
            .collect();
        if indexed.is_empty() {
            return Unplaced::NoMatchingNode {
                models: order.models.clone(),
                min_vram_mib: order.min_vram_mib,
            };
        }
        let demand = Demand::of(order);
        let g = order.gpus_per_node;
        let largest_node_gpus = indexed
            .iter()
            .filter_map(|m| m.sizes.last_key_value().map(|(k, _)| *k))
            .max();
        let largest_node_gpus = largest_node_gpus.expect("indexed models have nodes");
        if largest_node_gpus < g {
            return Unplaced::NodeTooSmall {
                demand,
                largest_node_gpus,
            };
        }
        let cheapest_ask = indexed
            .iter()
            .filter_map(|m| m.by_ask.first().map(|(ask, _)| *ask))
            .min();
        let cheapest_ask = cheapest_ask.expect("indexed models have nodes");
        if cheapest_ask > order.max_price {
            return Unplaced::AskAboveMaxPrice { demand, cheapest_ask };
        }
        if order.nodes == 1 {
            let most_free_on_one_node = models
                .iter()
                .filter_map(|m| self.free.by_model.get(m))
                .filter_map(|buckets| {
                    // Buckets from the most free down; a bucket's first node is its cheapest.
                    buckets
                        .iter()
                        .rev()
                        .find(|(_, nodes)| nodes.first().is_some_and(|(ask, _)| *ask <= order.max_price))
                })
                .map(|(free, _)| *free)
                .max()
                .unwrap_or(0);
            return Unplaced::NotEnoughFree {
                demand,
                most_free_on_one_node,
            };
        }
        let mut nodes_with_room = 0u32;
        let mut most_in_one_pool = 0u32;
        for &model in models {
            for (_, buckets) in self.free.by_pool.range(pools_of(model, order.max_price)) {
                let in_pool: usize = buckets.range(g..).map(|(_, nodes)| nodes.len()).sum();
                nodes_with_room += in_pool as u32;
                most_in_one_pool = most_in_one_pool.max(in_pool as u32);
            }
        }
        if nodes_with_room >= order.nodes {
            Unplaced::GangSplit {
                demand,
                nodes_with_room,
                most_in_one_pool,
            }
        } else {
            Unplaced::TooFewNodes {
                demand,
                nodes_with_room,
            }
        }
    }
}

/// The pool keys of one model with an ask of at most `max_price`.
fn pools_of(model: GpuModel, max_price: PricePerGpuHour) -> std::ops::RangeInclusive<PoolKey> {
    let lowest = PoolKey {
        model,
        ask: PricePerGpuHour(Micros(i128::MIN)),
        provider: ProviderId(0),
    };
    let highest = PoolKey {
        model,
        ask: max_price,
        provider: ProviderId(u64::MAX),
    };
    lowest..=highest
}

/// A running spot lease on one node, as a possible victim.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    lease: LeaseId,
    /// Its GPUs on this node: what preempting it frees here.
    on_node: u32,
    /// All its GPUs: what preempting it costs (a lease is preempted whole).
    gpus_total: u64,
}

/// The victims that free at least `missing` GPUs on one node: fewest leases,
/// then fewest GPUs preempted in all, then the lexicographically lowest
/// ascending ids. None if all candidates together do not free enough.
///
/// An exact 0/1 knapsack over "GPUs covered, capped at `missing`": a node has
/// few leases (at most one per GPU), so this is tiny. `best[c]` is the best
/// victim set covering `c` GPUs; candidates are visited in ascending id so each
/// set is built already sorted, and two sets with the same count compare by
/// their ids exactly as the final answer would.
fn choose_victims(missing: u32, candidates: &[Candidate]) -> Option<Vec<LeaseId>> {
    let cap = missing as usize;
    let mut best: Vec<Option<(usize, u64, Vec<LeaseId>)>> = vec![None; cap + 1];
    best[0] = Some((0, 0, Vec::new()));
    let mut sorted = candidates.to_vec();
    sorted.sort_by_key(|c| c.lease);
    for c in &sorted {
        // Descending, so that a lease extends only sets built without it.
        for covered in (0..=cap).rev() {
            let Some((count, gpus, ids)) = &best[covered] else {
                continue;
            };
            let reach = (covered + c.on_node as usize).min(cap);
            let mut with = ids.clone();
            with.push(c.lease);
            let candidate = (count + 1, gpus + c.gpus_total, with);
            if best[reach].as_ref().is_none_or(|b| candidate < *b) {
                best[reach] = Some(candidate);
            }
        }
    }
    best[cap].take().map(|(_, _, ids)| ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(lease: u64, on_node: u32, gpus_total: u64) -> Candidate {
        Candidate {
            lease: LeaseId(lease),
            on_node,
            gpus_total,
        }
    }

    fn check_victims(missing: u32, candidates: &[Candidate], expected: Option<&[u64]>) {
        let got = choose_victims(missing, candidates);
        let expected = expected.map(|ids| ids.iter().map(|i| LeaseId(*i)).collect::<Vec<_>>());
        assert_eq!(got, expected, "missing {missing} from {candidates:?}");
    }

    #[test]
    fn victims_are_fewest_then_smallest_then_lowest_ids() {
        // One lease of 4 beats two of 2.
        check_victims(3, &[cand(1, 2, 2), cand(2, 2, 2), cand(3, 4, 4)], Some(&[3]));
        // Among single victims that suffice, the one preempting fewest GPUs in all.
        check_victims(3, &[cand(1, 4, 4), cand(2, 3, 3)], Some(&[2]));
        // A gang lease frees 4 here but preempts 16 in all: one victim still beats two.
        check_victims(4, &[cand(1, 4, 16), cand(2, 2, 2), cand(3, 2, 2)], Some(&[1]));
        // Equal costs: lowest ids.
        check_victims(2, &[cand(7, 1, 1), cand(5, 1, 1), cand(6, 1, 1)], Some(&[5, 6]));
        // Not enough in all.
        check_victims(5, &[cand(1, 2, 2), cand(2, 2, 2)], None);
        // Nothing missing needs no victim.
        check_victims(0, &[cand(1, 2, 2)], Some(&[]));
    }
}
