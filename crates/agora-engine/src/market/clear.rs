//! One clearing round: serve pending orders in priority order, each through
//! the stages find (cheapest feasible placement on free GPUs, within the
//! power of its sites; for a gang, the fewest fabric domains) → reserve (take
//! its GPUs from the round's copies of the indexes and its watts from its
//! sites) → else reclaim (on-demand only: plan preemptions) → else explain (a
//! typed reason).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use agora_types::{
    DomainId, GpuModel, LeaseId, Micros, NodeId, PricePerGpuHour, ProviderId, SiteId, TenantId, Tier, UnixMs,
};

use super::idmap::{IdMap, IdSet};
use super::index::{BucketKey, GangPoolKey, IndexEntry, PoolKey, WholeNodes};
use super::policy::{CapMode, TenantUse, within_cap};
use super::view::{BucketView, ModelView, WholeView};
use super::{
    Allocation, Demand, Market, OrderSpec, Placement, Preemption, Reasons, ReservedPool, RoundInputs, RoundPlan,
    Unplaced,
};

mod backfill;
mod reserved;
mod split;

pub use backfill::BACKFILL_RESERVATIONS;

/// How many feasible nodes preemption scores for one order (per pool, for a
/// gang), cheapest asks first, lowest ids next. Like kube-scheduler's
/// preemption, which also scores a bounded set of candidate nodes: scoring
/// every node that holds spot leases made one round with 10,000 preempting
/// orders on a 27,500-node fleet take minutes. Smaller fleets are searched
/// exhaustively.
pub const RECLAIM_CANDIDATES: usize = 32;

/// How many feasible nodes a single-node preemption search looks at in all,
/// scored or refused (by an orbital site, a policy or a reservation).
pub const RECLAIM_EXAMINED: usize = 16 * RECLAIM_CANDIDATES;

pub(super) fn clear(market: &Market, inputs: RoundInputs<'_>, eligible: impl Fn(&OrderSpec) -> bool) -> RoundPlan {
    let mut round = Round {
        market,
        clock: inputs.now,
        spot_prices: inputs.spot_prices,
        free: ModelView::of(&market.indexes.free),
        reclaim: BucketView::of(&market.indexes.reclaim),
        whole: WholeView::of(&market.indexes.whole),
        reserved: Cow::Borrowed(&market.reservations),
        only_provider: None,
        victims_of: None,
        current: None,
        strict_share: false,
        placed: BTreeMap::new(),
        taken_by_model: BTreeMap::new(),
        policy_refusal: Cell::new(None),
        hidden: BTreeMap::new(),
        reservations_made: 0,
        round_ends: BTreeMap::new(),
        current_ends: None,
        added_w: BTreeMap::new(),
        last_site: Cell::new(None),
        site_states: RefCell::default(),
        taken: IdMap::default(),
        claimed: IdSet::default(),
        claimed_gpus: IdMap::default(),
        no_room: IdMap::default(),
        no_reclaim: IdMap::default(),
        no_split: IdMap::default(),
        scratch: RefCell::default(),
        reclaim_scores: RefCell::default(),
        most_free: RefCell::default(),
        generation: 0,
        failed: IdMap::with_capacity_and_hasher(4096, Default::default()),
    };
    // Most pending orders stay pending: size the reasons once rather than regrow them.
    let mut plan = RoundPlan {
        unplaced: Reasons::with_capacity(market.orders.len()),
        ..RoundPlan::default()
    };
    // Per filter number, once per round rather than once per order.
    let accepted: Vec<Accepted> = market
        .filters
        .list
        .iter()
        .enumerate()
        .map(|(number, (min_vram_mib, models))| Accepted::of(market, number as u32, models.clone(), *min_vram_mib))
        .collect();
    for queued in market.queue.values().filter(|q| eligible(&q.spec)) {
        let order = &queued.spec;
        let accepted = &accepted[queued.filter as usize];
        let shape = Shape {
            models: queued.filter,
            nodes: order.nodes,
            gpus_per_node: order.gpus_per_node,
            checkpointable: order.checkpointable,
            tier: order.tier,
        };
        let reason = if order.tier == Tier::Reserved {
            round.serve_reserved(order, &mut plan)
        } else if let Some(index) = round.failed_alike(order, shape) {
            // Most orders of a busy round end here, without a search.
            plan.unplaced.push_same(order.id, index);
            continue;
        } else {
            round.serve(order, shape, accepted, &mut plan)
        };
        if let Some(reason) = reason {
            plan.unplaced.push(order.id, reason);
        }
    }
    plan
}

/// What a round knows of one model filter: the models it accepts and the
/// facts of their nodes that the unplaced reasons read, none of which the
/// round changes.
struct Accepted {
    /// Accepted models that have an online node, ascending (VRAM applied).
    models: Vec<GpuModel>,
    /// Over those models (0 when there are none).
    largest_node_gpus: u32,
    /// Over those models (0 when there are none).
    cheapest_ask: PricePerGpuHour,
    /// The filter's model list as the orders give it, which their reasons share.
    listed: Arc<[GpuModel]>,
    /// The market's number for the filter.
    number: u32,
}

impl Accepted {
    fn of(market: &Market, number: u32, filter: Arc<[GpuModel]>, min_vram_mib: u32) -> Accepted {
        let indexed = &market.indexes.models;
        let models: Vec<GpuModel> = indexed
            .keys()
            .copied()
            .filter(|m| (filter.is_empty() || filter.contains(m)) && m.spec().vram_mib >= min_vram_mib)
            .collect();
        let nodes = || models.iter().map(|m| &indexed[m]);
        Accepted {
            largest_node_gpus: nodes()
                .filter_map(|m| m.sizes.last_key_value().map(|(k, _)| *k))
                .max()
                .unwrap_or(0),
            cheapest_ask: nodes()
                .filter_map(|m| m.by_ask.first().map(|(ask, _)| *ask))
                .min()
                .unwrap_or(PricePerGpuHour(Micros(0))),
            models,
            listed: filter,
            number,
        }
    }

    /// An order's [`Demand`], sharing the model list.
    fn demand(&self, order: &OrderSpec) -> Demand {
        Demand::sharing(order, self.listed.clone())
    }
}

/// What a search depends on besides the price: orders of one shape that
/// failed at some price fail at any lower price in the same round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// The market's number for the order's model filter: orders with the
    /// same model list and VRAM floor accept the same models.
    models: u32,
    nodes: u32,
    gpus_per_node: u32,
    /// Orbital sites take only checkpointable work, so it searches more nodes.
    checkpointable: bool,
    /// Tiers see different capacity: on-demand work never takes idle reserved GPUs, spot work may.
    tier: Tier,
}

/// One word for the hasher: the maps keyed by shapes are looked up once or
/// more per order, and hashing five fields one by one was most of a lookup.
/// (Equal shapes hash equal; unequal ones rarely collide, and equality decides.)
impl std::hash::Hash for Shape {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.word());
    }
}

impl Shape {
    fn word(&self) -> u64 {
        (u64::from(self.models) << 40)
            ^ (u64::from(self.nodes) << 16)
            ^ (u64::from(self.gpus_per_node) << 3)
            ^ (u64::from(self.checkpointable) << 2)
            ^ self.tier as u64
    }
}

/// A shape at a price, hashed as one word (see [`Shape`]'s `Hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShapeAt(Shape, PricePerGpuHour);

impl std::hash::Hash for ShapeAt {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let micros = (self.1).0.0;
        h.write_u64(self.0.word() ^ (micros as u64).rotate_left(21) ^ ((micros >> 64) as u64));
    }
}

/// The state of a round in progress: the market as it was, plus what this
/// round already handed out.
struct Round<'m> {
    market: &'m Market,
    /// When the round runs, if the caller said: enables estimated ends and backfill.
    clock: Option<UnixMs>,
    /// See [`RoundInputs::spot_prices`].
    spot_prices: Option<&'m BTreeMap<(SiteId, GpuModel), PricePerGpuHour>>,
    /// The market's free index, each bucket copied on the round's first change to it.
    free: ModelView<'m>,
    /// The market's reclaim index, each bucket and pool copied on the round's first change to it.
    reclaim: BucketView<'m>,
    /// The market's whole-node index, each pool copied on the round's first change to it.
    whole: WholeView<'m>,
    /// The market's reserved pools, copied on the round's first change to one.
    reserved: Cow<'m, BTreeMap<(ProviderId, GpuModel), ReservedPool>>,
    /// While a reserved-tier order searches: the provider of the reservation.
    only_provider: Option<ProviderId>,
    /// While a reserved-tier order reclaims its own resold GPUs: only spot
    /// leases resold from this holder's reservation are victims.
    victims_of: Option<TenantId>,
    /// The order being served, for the policies that depend on its tenant.
    current: Option<Current>,
    /// While a soft provider share cap is tried first: placements breaking it are refused.
    strict_share: bool,
    /// GPUs placed this round per tenant, in all and per provider.
    placed: BTreeMap<TenantId, TenantUse>,
    /// GPUs taken this round per model, by placements and by waiting orders.
    taken_by_model: BTreeMap<GpuModel, u64>,
    /// The first policy refusal of the current order's search, for its reason.
    policy_refusal: Cell<Option<PolicyRefusal>>,
    /// Nodes reserved for blocked orders (see [`backfill`]), with the reservation's start.
    hidden: BTreeMap<NodeId, UnixMs>,
    reservations_made: usize,
    /// GPUs this round's placements took per node, with their estimated end.
    round_ends: BTreeMap<NodeId, Vec<(u32, Option<UnixMs>)>>,
    /// The estimated end of the placement `take` is serving.
    current_ends: Option<UnixMs>,
    /// Watts this round added at sites with a budget.
    added_w: BTreeMap<SiteId, u64>,
    /// See [`Round::site_state`].
    last_site: Cell<Option<(SiteId, Option<&'m super::SiteState>)>>,
    /// Every site the round looked up, hashed: the market's sites are a
    /// B-tree of 10,000 small providers' sites, and a single-node search
    /// looks up the site of each bucket's cheapest node.
    site_states: RefCell<IdMap<SiteId, Option<&'m super::SiteState>>>,
    /// GPUs taken this round per node, by placements or kept for an order
    /// waiting on preemption. Each take picks the lowest indices free in the
    /// market and not yet taken, so the taken ones are always the node's
    /// first `n` free indices: the count says which they are.
    taken: IdMap<NodeId, u32>,
    /// Leases that an order of this round preempts or waits for: no other
    /// order may count on them again.
    claimed: IdSet<LeaseId>,
    /// GPUs of claimed leases per node, which the reclaim index no longer offers.
    claimed_gpus: IdMap<NodeId, u32>,
    /// The highest price at which a shape found no room on free GPUs, with
    /// the power refusal that search met. Free GPUs and power headroom only
    /// shrink during a round, so a later order of that shape at a price no
    /// higher cannot find room either and skips the search.
    /// Hashed (only looked up): most orders of a round after the first end
    /// here, so this lookup is most of their cost.
    no_room: IdMap<Shape, (PricePerGpuHour, Option<PowerRefusal>)>,
    /// The same for preemption: reclaimable GPUs only shrink too.
    no_reclaim: IdMap<Shape, PricePerGpuHour>,
    /// The same for gangs spanning pools, by shape and latency bound, with
    /// the most nodes one set of regions offered — until the round takes a
    /// whole node (the greedy search is not monotone in its candidates).
    no_split: IdMap<(Shape, u32), (PricePerGpuHour, u32)>,
    /// Buffers the preemption search reuses from node to node, so that scoring
    /// a candidate node allocates nothing but its victim list.
    scratch: RefCell<Scratch>,
    /// [`Round::reclaim_score`] by node and GPU count; a node's entry is
    /// dropped whenever the round takes its GPUs or claims a lease on it.
    reclaim_scores: RefCell<IdMap<NodeId, NodeScores>>,
    /// `most_free_on_one_node` of the unplaced reasons by (filter number,
    /// price), forgotten whenever the round changes its free-GPU view: the
    /// orders left once GPUs run out share a few filters and prices.
    most_free: RefCell<IdMap<(u32, PricePerGpuHour), u32>>,
    /// Counts the round's changes to what a search reads (free, whole-node,
    /// reclaim and reserved views, hidden nodes, claims): a reason given at
    /// one count holds until the next.
    generation: u64,
    /// The reason the last order of a shape and price got, at which
    /// generation: a later order alike — not personal, not spanning
    /// providers, not planning a backfill reservation — gets the same while
    /// nothing changed (most orders of a busy round end here).
    /// (The reason's index in the plan's reasons: `clear` pushes what `serve` returns next.)
    failed: IdMap<ShapeAt, (u64, usize)>,
}

/// The order a round is serving, as the policies see it.
#[derive(Debug, Clone, Copy)]
struct Current {
    tenant: TenantId,
    tier: Tier,
    bid: PricePerGpuHour,
    /// Orbital sites take only checkpointable work.
    checkpointable: bool,
    /// The policies may refuse or reorder its candidates, so searches for it
    /// neither use nor feed the round's per-shape failure memory.
    personal: bool,
}

/// Why a policy refused a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyRefusal {
    ShareCap { provider: ProviderId, cap_bps: u32 },
    Floor { model: GpuModel, kept_gpus: u64 },
}

/// Victims, then GPUs preempted in all: what a single node's reclaim costs.
type ReclaimScore = (usize, u64);

/// A node's known [`ReclaimScore`]s by GPU count (None: no plan that waits).
type NodeScores = Vec<(u32, Option<ReclaimScore>)>;

/// See [`Round::scratch`].
#[derive(Debug, Default)]
struct Scratch {
    by_lease: Vec<(LeaseId, u32)>,
    stopping: Vec<(u32, LeaseId)>,
    candidates: Vec<Candidate>,
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

    /// Whether it waits on some lease. One that does not fits on free GPUs
    /// alone, so only power refused it, which preemption does not weigh: it
    /// is no plan.
    fn waits(&self) -> bool {
        !self.stopping.is_empty() || !self.victims.is_empty()
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
        let gpus = victims.iter().map(|l| market.leases[l].lost_gpus()).sum();
        (victims.len(), gpus)
    }
}

/// A site that refused a candidate for want of power, as the first refusal of
/// a search reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PowerRefusal {
    site: SiteId,
    headroom_w: u64,
    needed_w: u64,
    /// The candidate's ask: a later search at a lower price may reuse the
    /// refusal only if this candidate was within its price.
    ask: PricePerGpuHour,
}

/// Keeps the first refusal of a search: the cheapest candidate's.
fn note(refused: &mut Option<PowerRefusal>, r: PowerRefusal) {
    if refused.is_none() {
        *refused = Some(r);
    }
}

/// A gang placement's score, smallest wins: split across domains (false
/// first), ask, domains, whole nodes left in the last domain, provider, model.
type GangScore = (bool, PricePerGpuHour, u32, u32, ProviderId, GpuModel);

/// How a gang is spread over one pool's domains.
struct DomainPick {
    /// Grouped by domain (site, then domain id), node ids ascending inside one.
    nodes: Vec<NodeId>,
    domains: u32,
    /// Free whole nodes the last (best-fit) domain keeps.
    stranded: u32,
}

/// A gang preemption's score, smallest wins: distinct victims, GPUs preempted, ask, provider, model.
type GangReclaimScore = (usize, u64, PricePerGpuHour, ProviderId, GpuModel);

impl<'m> Round<'m> {
    /// Places the order, or plans preemptions for it (spot orders never
    /// preempt); None if it was placed, else why not.
    fn serve(
        &mut self,
        order: &OrderSpec,
        shape: Shape,
        accepted: &Accepted,
        plan: &mut RoundPlan,
    ) -> Option<Unplaced> {
        self.begin(order);
        let memo = self
            .alike_fails_alike(order, self.personal())
            .then_some(ShapeAt(shape, order.max_price));
        let models = accepted.models.as_slice();
        // A soft provider share cap: a placement within it first, at any ask within the bid.
        let p = self.market.policies;
        let no_room = || {
            self.no_room
                .get(&shape)
                .is_some_and(|(price, _)| order.max_price <= *price)
        };
        if self.personal() && p.provider_share_cap_bps.is_some() && p.provider_share_mode == CapMode::Soft && !no_room()
        {
            self.strict_share = true;
            let mut refused = None;
            let found = if order.nodes == 1 {
                self.find_single(order, models, &mut refused)
            } else {
                self.find_gang(order, models, &mut refused)
            };
            self.strict_share = false;
            if let Some((pool, nodes)) = found {
                plan.placements.push(self.reserve(order, pool, &nodes));
                return None;
            }
        }
        let refused = match self.find_placement(order, shape, models) {
            Ok((pool, nodes)) => {
                plan.placements.push(self.reserve(order, pool, &nodes));
                return None;
            }
            Err(refused) => refused,
        };
        // A gang that may span providers, when no single pool holds it.
        let mut split_most = None;
        if order.nodes > 1
            && let Some(bound_ms) = order.max_latency_ms
        {
            match self.split(order, shape, models, bound_ms) {
                Ok(parts) => {
                    self.reserve_split(order, parts, &mut plan.placements);
                    return None;
                }
                Err(most) => split_most = Some((bound_ms, most)),
            }
        }
        if !self.hidden.is_empty()
            && let Some((pool, nodes)) = self.find_backfill(order, models)
        {
            plan.placements.push(self.reserve(order, pool, &nodes));
            return None;
        }
        if order.tier != Tier::Spot
            && let Some(reclaim) = self.find_reclaim(order, shape, models)
        {
            return Some(self.wait_for(order, &reclaim, plan));
        }
        let mut reason = self.explain(order, accepted, refused);
        if let (Some((max_latency_ms, most_within_bound)), Unplaced::GangSplit { nodes_with_room, .. }) =
            (split_most, &reason)
        {
            reason = Unplaced::LatencyBound {
                demand: accepted.demand(order),
                max_latency_ms,
                nodes_with_room: *nodes_with_room,
                most_within_bound,
            };
        }
        match self.plan_reservation(order, models) {
            Some((start, nodes)) => Some(Unplaced::ReservedAhead {
                demand: accepted.demand(order),
                start_ms: start.0,
                starts_in_s: self.clock.map_or(0, |now| start.seconds_since(now) as u64),
                nodes,
            }),
            None => {
                if let Some(key) = memo {
                    self.failed.insert(key, (self.generation, plan.unplaced.len()));
                }
                Some(reason)
            }
        }
    }

    /// Whether the order's outcome depends on its shape, its price and the
    /// round's state alone: not on its tenant (the policies), its latency
    /// bound (a split), nor its duration estimate (backfill).
    fn alike_fails_alike(&self, order: &OrderSpec, personal: bool) -> bool {
        !personal
            && order.max_latency_ms.is_none()
            && (self.clock.is_none() || self.reservations_made >= BACKFILL_RESERVATIONS)
            && (self.hidden.is_empty() || order.duration_estimate_s.is_none())
    }

    /// [`Round::find_split`], unless this shape and bound already failed at
    /// this price or higher in this round (for anyone: the policies only
    /// take candidates away).
    fn split(
        &mut self,
        order: &OrderSpec,
        shape: Shape,
        models: &[GpuModel],
        bound_ms: u32,
    ) -> Result<Vec<(PoolKey, Vec<NodeId>)>, u32> {
        if let Some(&(price, most)) = self.no_split.get(&(shape, bound_ms))
            && order.max_price <= price
        {
            return Err(most);
        }
        let found = self.find_split(order, models, bound_ms);
        if let Err(most) = found
            && !self.personal()
        {
            let failed = self
                .no_split
                .entry((shape, bound_ms))
                .or_insert((order.max_price, most));
            if order.max_price >= failed.0 {
                *failed = (order.max_price, most);
            }
        }
        found
    }

    /// Claims what a reclaim plan counts on and records its preemptions.
    fn wait_for(&mut self, order: &OrderSpec, reclaim: &Reclaim, plan: &mut RoundPlan) -> Unplaced {
        let waiting = self.claim(reclaim);
        let for_order = order.id;
        plan.preemptions.extend(
            reclaim
                .victims()
                .into_iter()
                .map(|lease| Preemption { lease, for_order }),
        );
        Unplaced::WaitingForPreemption { leases: waiting }
    }

    /// The round's copy of a reserved pool, copied on the round's first change
    /// to the reservations; None (and no copy) for a pool nobody reserved.
    fn reserved_mut(&mut self, key: (ProviderId, GpuModel)) -> Option<&mut ReservedPool> {
        if !self.reserved.contains_key(&key) {
            return None;
        }
        self.generation += 1;
        self.reserved.to_mut().get_mut(&key)
    }

    /// The index in the plan's reasons of the reason an order alike got
    /// (see [`Round::failed`]), if nothing changed since.
    fn failed_alike(&self, order: &OrderSpec, shape: Shape) -> Option<usize> {
        if self.failed.is_empty() || !self.alike_fails_alike(order, self.personal_for(order)) {
            return None;
        }
        self.failed
            .get(&ShapeAt(shape, order.max_price))
            .filter(|(generation, _)| *generation == self.generation)
            .map(|(_, index)| *index)
    }

    /// Whether the policies look at the order's tenant: they may refuse or
    /// reorder its candidates.
    fn personal_for(&self, order: &OrderSpec) -> bool {
        let p = &self.market.policies;
        // Without policies (the common case) the tenant's holdings are not looked up.
        order.tier != Tier::Reserved && (p.provider_share_cap_bps.is_some() || p.small_tenant_floor_bps > 0) && {
            let total_after = self.held_total(order.tenant) + order.gpus_total();
            let capped = p.provider_share_cap_bps.is_some() && total_after > p.provider_share_min_gpus;
            let floored = p.small_tenant_floor_bps > 0 && total_after >= p.small_tenant_gpus;
            capped || floored
        }
    }

    /// Starts serving an order: the policies look at its tenant from here on.
    fn begin(&mut self, order: &OrderSpec) {
        let personal = self.personal_for(order);
        self.current = Some(Current {
            tenant: order.tenant,
            tier: order.tier,
            bid: order.max_price,
            checkpointable: order.checkpointable,
            personal,
        });
        self.policy_refusal.set(None);
    }

    fn personal(&self) -> bool {
        self.current.is_some_and(|c| c.personal)
    }

    /// GPUs a tenant holds, counting this round's placements.
    fn held_total(&self, tenant: TenantId) -> u64 {
        self.market.tenant_use.get(&tenant).map_or(0, |u| u.total) + self.placed.get(&tenant).map_or(0, |u| u.total)
    }

    /// GPUs a tenant holds on one provider, counting this round's placements.
    fn held_on(&self, tenant: TenantId, provider: ProviderId) -> u64 {
        self.market.tenant_use.get(&tenant).map_or(0, |u| u.on(provider))
            + self.placed.get(&tenant).map_or(0, |u| u.on(provider))
    }

    /// Whether an order of `tier` may take `gpus` GPUs of the pool (provider,
    /// model): a reserved-tier search stays at its reservation's provider,
    /// on-demand work takes only a reserved pool's open free GPUs, and the
    /// market-health policies hold for the current order's tenant.
    fn admits(&self, tier: Tier, provider: ProviderId, model: GpuModel, gpus: u64) -> bool {
        if self.only_provider.is_some_and(|p| p != provider) {
            return false;
        }
        if tier == Tier::OnDemand
            && self
                .reserved
                .get(&(provider, model))
                .is_some_and(|r| r.open_free() < gpus)
        {
            return false;
        }
        let Some(current) = self.current.filter(|c| c.personal) else {
            return true;
        };
        let p = &self.market.policies;
        if let Some(cap_bps) = p.provider_share_cap_bps
            && (p.provider_share_mode == CapMode::Hard || self.strict_share)
            && !within_cap(
                p,
                self.held_on(current.tenant, provider) + gpus,
                self.held_total(current.tenant) + gpus,
            )
        {
            if p.provider_share_mode == CapMode::Hard {
                self.refuse(PolicyRefusal::ShareCap { provider, cap_bps });
            }
            return false;
        }
        self.model_ok(model, gpus)
    }

    /// The small-tenant floor for the current order: whether it may take
    /// `gpus` more of `model`. It depends on the model alone, so a search
    /// checks it once per model rather than once per node.
    fn model_ok(&self, model: GpuModel, gpus: u64) -> bool {
        let Some(current) = self.current.filter(|c| c.personal) else {
            return true;
        };
        let p = &self.market.policies;
        if p.small_tenant_floor_bps > 0
            && self.held_total(current.tenant) + gpus >= p.small_tenant_gpus
            && let Some(m) = self.market.indexes.models.get(&model)
        {
            let kept_gpus = m.gpus_total * u64::from(p.small_tenant_floor_bps) / 10_000;
            let taken = self.taken_by_model.get(&model).copied().unwrap_or(0);
            let free_after = m.gpus_free.saturating_sub(taken + gpus);
            if free_after < kept_gpus {
                self.refuse(PolicyRefusal::Floor { model, kept_gpus });
                return false;
            }
        }
        true
    }

    /// Keeps the first policy refusal of a search.
    fn refuse(&self, r: PolicyRefusal) {
        if self.policy_refusal.get().is_none() {
            self.policy_refusal.set(Some(r));
        }
    }

    /// Whether the current order may run at a site: an orbital site takes only checkpointable work.
    fn site_ok(&self, site: SiteId) -> bool {
        self.market.orbital_sites.is_empty()
            || self.current.is_none_or(|c| c.checkpointable)
            || !self.market.orbital_sites.contains(&site)
    }

    /// Whether the current order may take `model` at a site for the spot
    /// price: a spot order only where it is within its bid (see
    /// [`RoundInputs::spot_prices`]), so it is never placed to be outbid at once.
    fn spot_ok(&self, site: SiteId, model: GpuModel) -> bool {
        let Some(prices) = self.spot_prices else {
            return true;
        };
        self.current
            .is_none_or(|c| c.tier != Tier::Spot || prices.get(&(site, model)).is_none_or(|p| *p <= c.bid))
    }

    /// Whether [`Round::admits`] can refuse anything for this tier in this round.
    fn filters(&self, tier: Tier) -> bool {
        self.only_provider.is_some() || (tier == Tier::OnDemand && !self.reserved.is_empty()) || self.personal()
    }

    /// The index entry of a node the round works with (only online nodes are indexed).
    fn entry(&self, id: NodeId) -> IndexEntry {
        self.market.nodes[&id]
            .indexed
            .expect("the round only uses online nodes")
    }

    fn taken_on(&self, id: NodeId) -> u32 {
        self.taken.get(&id).copied().unwrap_or(0)
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

    /// Headroom of a site in this round, or None if it has no budget.
    fn headroom_w(&self, site: SiteId) -> Option<u64> {
        let s = self.site_state(site)?;
        let budget = s.budget_w()?;
        let added = self.added_w.get(&site).copied().unwrap_or(0);
        Some(budget.saturating_sub(s.used_w() + added))
    }

    /// The site's node overhead (0 for a site never upserted).
    fn overhead_w(&self, site: SiteId) -> u64 {
        self.site_state(site).map_or(0, super::SiteState::overhead_w)
    }

    /// A site's state in the market, remembering the last one looked up:
    /// consecutive candidates mostly share a site (a large provider's nodes
    /// at one ask are one run of the buckets).
    fn site_state(&self, site: SiteId) -> Option<&'m super::SiteState> {
        if let Some((last, state)) = self.last_site.get()
            && last == site
        {
            return state;
        }
        let sites = &self.market.sites;
        let state = *self
            .site_states
            .borrow_mut()
            .entry(site)
            .or_insert_with(|| sites.get(&site));
        self.last_site.set(Some((site, state)));
        state
    }

    /// What `g` more GPUs on a node add to its site: their TDP, plus the node's
    /// overhead if it runs nothing yet.
    fn need_w(&self, id: NodeId, g: u32) -> u64 {
        self.need_w_taken(&self.entry(id), self.taken_on(id), g)
    }

    /// [`Round::need_w`] for a node with entry `e` of which the round took `taken` GPUs.
    fn need_w_taken(&self, e: &IndexEntry, taken: u32, g: u32) -> u64 {
        let gpus_w = u64::from(e.model.spec().tdp_w) * u64::from(g);
        if e.busy || taken > 0 {
            gpus_w
        } else {
            gpus_w + self.overhead_w(e.site)
        }
    }

    /// The cheapest placement on free GPUs within power, unless this shape
    /// already failed at this price or higher in this round. On failure, the
    /// first power refusal met, if any.
    fn find_placement(
        &mut self,
        order: &OrderSpec,
        shape: Shape,
        models: &[GpuModel],
    ) -> Result<(PoolKey, Vec<NodeId>), Option<PowerRefusal>> {
        // The policies only take candidates away: a shape that found no room at
        // a price, for anyone, finds none for a personal order either.
        let personal = self.personal();
        if let Some((price, refused)) = self.no_room.get(&shape)
            && order.max_price <= *price
        {
            return Err(refused.filter(|r| r.ask <= order.max_price));
        }
        let mut refused = None;
        let found = if order.nodes == 1 {
            self.find_single(order, models, &mut refused)
        } else {
            self.find_gang(order, models, &mut refused)
        };
        match found {
            Some(found) => Ok(found),
            None if personal => Err(refused),
            None => {
                let failed = self.no_room.entry(shape).or_insert((order.max_price, refused));
                if order.max_price >= failed.0 {
                    *failed = (order.max_price, refused);
                }
                Err(refused)
            }
        }
    }

    /// Filter + score + select for a single-node order. Score, smallest wins:
    /// (ask, free GPUs on the node before placing, site, node id) — among equal
    /// asks the fullest node that fits is the best fit. A node whose site
    /// lacks the power is skipped.
    fn find_single(
        &self,
        order: &OrderSpec,
        models: &[GpuModel],
        refused: &mut Option<PowerRefusal>,
    ) -> Option<(PoolKey, Vec<NodeId>)> {
        let g = order.gpus_per_node;
        let mut best: Option<(PricePerGpuHour, u32, SiteId, NodeId, GpuModel)> = None;
        for &model in models {
            let Some(buckets) = self.free.get(&model) else {
                continue;
            };
            if !self.model_ok(model, u64::from(g)) {
                continue;
            }
            let gpus_w = u64::from(model.spec().tdp_w) * u64::from(g);
            for (&free, bucket) in buckets.range(g..) {
                // Nothing in this bucket can beat the best at a higher ask,
                // nor at its ask with more free GPUs (a placed order reports
                // no power refusal, so skipping the search loses nothing).
                let max_ask = best.map_or(order.max_price, |b| b.0.min(order.max_price));
                if bucket.cheapest > max_ask || best.is_some_and(|b| bucket.cheapest == b.0 && free > b.1) {
                    continue;
                }
                let Some((ask, site, id)) = self.first_powered(model, &bucket.nodes, max_ask, g, gpus_w, refused)
                else {
                    continue;
                };
                let candidate = (ask, free, site, id, model);
                if best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
        best.map(|(ask, _, _, id, model)| {
            let provider = self.entry(id).provider;
            (PoolKey { model, ask, provider }, vec![id])
        })
    }

    /// The first node of a bucket, at most `max_ask`, whose site has the power
    /// for `g` more GPUs (`gpus_w` watts, plus overhead on an idle node). A
    /// site that cannot even power the GPUs is skipped whole.
    fn first_powered(
        &self,
        model: GpuModel,
        nodes: &BTreeSet<BucketKey>,
        max_ask: PricePerGpuHour,
        g: u32,
        gpus_w: u64,
        refused: &mut Option<PowerRefusal>,
    ) -> Option<BucketKey> {
        let tier = self.current.map_or(Tier::OnDemand, |c| c.tier);
        let last = (max_ask, SiteId(u64::MAX), NodeId(u64::MAX));
        // None: from the bucket's first node, which needs no key comparison to
        // find (most searches take it: it is the cheapest, and usually powered).
        let mut from: Option<BucketKey> = None;
        loop {
            let head = match from {
                None => nodes.first(),
                Some(from) if from > last => return None,
                // A half-open range descends the tree once, not once per end.
                Some(from) => nodes.range(from..).next(),
            };
            let &(ask, site, id) = head.filter(|key| **key <= last)?;
            if !self.site_ok(site) || !self.spot_ok(site, model) {
                from = Some(next_site(ask, site));
                continue;
            }
            if self.filters(tier) {
                let e = self.entry(id);
                if !self.admits(tier, e.provider, e.model, u64::from(g)) {
                    // The refusal is the provider's: skip its whole site when the site is known to be its.
                    let sites_provider = self.market.site(site).map(|s| s.provider);
                    from = Some(match id.0.checked_add(1) {
                        Some(next) if sites_provider != Some(e.provider) => (ask, site, NodeId(next)),
                        _ => next_site(ask, site),
                    });
                    continue;
                }
            }
            let Some(headroom_w) = self.headroom_w(site) else {
                return Some((ask, site, id));
            };
            let needed_w = self.need_w(id, g);
            if needed_w <= headroom_w {
                return Some((ask, site, id));
            }
            note(
                refused,
                PowerRefusal {
                    site,
                    headroom_w,
                    needed_w,
                    ask,
                },
            );
            from = Some(if headroom_w < gpus_w {
                next_site(ask, site)
            } else {
                match id.0.checked_add(1) {
                    Some(next) => (ask, site, NodeId(next)),
                    None => next_site(ask, site),
                }
            });
        }
    }

    /// Filter + score + select for a gang: among the pools within price with
    /// enough free whole nodes of its size, the best [`GangScore`] with the
    /// domains [`Round::pick_domains`] chooses.
    fn find_gang(
        &self,
        order: &OrderSpec,
        models: &[GpuModel],
        refused: &mut Option<PowerRefusal>,
    ) -> Option<(PoolKey, Vec<NodeId>)> {
        let need = order.nodes;
        let g = order.gpus_per_node;
        let mut best: Option<(GangScore, Vec<NodeId>)> = None;
        for &model in models {
            if !self.model_ok(model, u64::from(need) * u64::from(g)) {
                continue;
            }
            for key in self.whole.gang_pools.range(gang_pools_of(model, g, order.max_price)) {
                // A single-domain placement at a lower ask beats anything later in this model.
                if best.as_ref().is_some_and(|(b, _)| !b.0 && key.ask > b.1) {
                    break;
                }
                let pool = self.whole.pool(key).expect("gang pools have free whole nodes");
                if pool.total < need || !self.admits(order.tier, key.provider, model, u64::from(need) * u64::from(g)) {
                    continue;
                }
                let Some(pick) = self.pick_domains(key, pool, need, refused) else {
                    continue;
                };
                let score = (
                    pick.domains > 1,
                    key.ask,
                    pick.domains,
                    pick.stranded,
                    key.provider,
                    model,
                );
                if best.as_ref().is_none_or(|(b, _)| score < *b) {
                    best = Some((score, pick.nodes));
                }
            }
        }
        best.map(|((_, ask, _, _, provider, model), nodes)| (PoolKey { model, ask, provider }, nodes))
    }

    /// Chooses the domains of one pool for `need` whole nodes: one domain by
    /// best fit if one can hold the gang within its site's power; else the
    /// fewest domains, greedily the fullest, the last by best fit; else, when
    /// that breaks a site's budget, the fullest domains as far as each site's
    /// power goes (correct, not always the fewest). None if power or nodes
    /// run out.
    fn pick_domains(
        &self,
        key: &GangPoolKey,
        pool: &WholeNodes,
        need: u32,
        refused: &mut Option<PowerRefusal>,
    ) -> Option<DomainPick> {
        let gpus_w = u64::from(key.model.spec().tdp_w) * u64::from(key.gpus);
        // Whole nodes run nothing, so each adds the site's overhead.
        let node_w = |site: SiteId| gpus_w + self.overhead_w(site);
        // How many nodes a site can power, None when unlimited.
        let powered = |site: SiteId| self.headroom_w(site).map(|h| h / node_w(site));
        let nodes_of = |site: SiteId, domain, n: u32| {
            let free = &pool.by_domain[&(site, domain)];
            free.iter().take(n as usize).copied().collect::<Vec<NodeId>>()
        };
        let refuse = |refused: &mut Option<PowerRefusal>, site: SiteId, n: u32| {
            note(
                refused,
                PowerRefusal {
                    site,
                    headroom_w: self.headroom_w(site).unwrap_or(0),
                    needed_w: u64::from(n) * node_w(site),
                    ask: key.ask,
                },
            );
        };

        // One domain: the first with enough free whole nodes, fewest first.
        for &(count, site, domain) in pool.by_count.range((need, SiteId(0), DomainId(0))..) {
            if !self.site_ok(site) || !self.spot_ok(site, key.model) {
                continue;
            }
            if powered(site).is_none_or(|p| p >= u64::from(need)) {
                return Some(DomainPick {
                    nodes: nodes_of(site, domain, need),
                    domains: 1,
                    stranded: count - need,
                });
            }
            refuse(refused, site, need);
        }

        // Several domains: the fullest first (lowest site and domain among equals).
        let mut order: Vec<(u32, SiteId, DomainId)> = pool
            .by_count
            .iter()
            .copied()
            .filter(|&(_, site, _)| self.site_ok(site) && self.spot_ok(site, key.model))
            .collect();
        if order.iter().map(|(count, _, _)| u64::from(*count)).sum::<u64>() < u64::from(need) {
            return None;
        }
        order.sort_by_key(|&(count, site, domain)| (Reverse(count), site, domain));
        let mut takes: Vec<(SiteId, DomainId, u32)> = Vec::new();
        let mut remaining = need;
        let mut stranded = 0;
        for (i, &(count, site, domain)) in order.iter().enumerate() {
            if count >= remaining {
                // Best fit for the rest among the domains that hold it, which are
                // `order[i..]` down to the last count ≥ remaining: the smallest such
                // count, and among equal counts the first (lowest site and domain).
                let smallest = order[i..]
                    .iter()
                    .take_while(|(c, _, _)| *c >= remaining)
                    .last()
                    .map(|(c, _, _)| *c)
                    .expect("this domain holds the rest");
                let &(c, s, d) = order[i..].iter().find(|(c, _, _)| *c == smallest).expect("found above");
                takes.push((s, d, remaining));
                stranded = c - remaining;
                remaining = 0;
                break;
            }
            takes.push((site, domain, count));
            remaining -= count;
        }
        debug_assert_eq!(remaining, 0, "a pool with enough nodes fills the gang");
        let mut by_site: BTreeMap<SiteId, u64> = BTreeMap::new();
        for &(site, _, n) in &takes {
            *by_site.entry(site).or_default() += u64::from(n);
        }
        let over = by_site.iter().find(|&(&site, &n)| powered(site).is_some_and(|p| p < n));
        if let Some((&site, &n)) = over {
            refuse(refused, site, n as u32);
            // Power binds: fill the fullest domains as far as each site's power goes.
            takes.clear();
            let mut left: BTreeMap<SiteId, Option<u64>> = BTreeMap::new();
            remaining = need;
            for &(count, site, domain) in &order {
                let site_left = left.entry(site).or_insert_with(|| powered(site));
                let n = site_left
                    .map_or(count, |p| count.min(p.min(u64::from(u32::MAX)) as u32))
                    .min(remaining);
                if n == 0 {
                    continue;
                }
                if let Some(p) = site_left {
                    *p -= u64::from(n);
                }
                takes.push((site, domain, n));
                stranded = count - n;
                remaining -= n;
                if remaining == 0 {
                    break;
                }
            }
            if remaining > 0 {
                return None;
            }
        }
        takes.sort_unstable();
        let nodes = takes
            .iter()
            .flat_map(|&(site, domain, n)| nodes_of(site, domain, n))
            .collect();
        Some(DomainPick {
            nodes,
            domains: takes.len() as u32,
            stranded,
        })
    }

    /// Takes the lowest free GPU indices on each chosen node and returns the placement.
    fn reserve(&mut self, order: &OrderSpec, pool: PoolKey, nodes: &[NodeId]) -> Placement {
        let ends_at = self
            .clock
            .zip(order.duration_estimate_s)
            .map(|(now, d)| now.plus_ms(i64::try_from(d).unwrap_or(i64::MAX).saturating_mul(1000)));
        self.current_ends = ends_at;
        let allocations = nodes
            .iter()
            .map(|&node| Allocation {
                node,
                gpu_indices: self.take(node, order.gpus_per_node),
            })
            .collect();
        // A part of a gang spanning pools holds fewer nodes than the order.
        let gpus = nodes.len() as u64 * u64::from(order.gpus_per_node);
        let placed = self.placed.entry(order.tenant).or_default();
        placed.total += gpus;
        *placed.by_provider.entry(pool.provider).or_insert(0) += gpus;
        let reserved = match self.reserved_mut((pool.provider, pool.model)) {
            // `take` already counted the GPUs out of the pool's free ones.
            Some(r) => {
                let open_before = (r.free + gpus).saturating_sub(r.idle());
                r.place(order.tier, order.tenant, gpus, open_before)
            }
            None => Vec::new(),
        };
        Placement {
            order: order.id,
            tenant: order.tenant,
            bid: order.max_price,
            provider: pool.provider,
            // Reserved work is paid for by its contract.
            price: if order.tier == Tier::Reserved {
                PricePerGpuHour(Micros::ZERO)
            } else {
                pool.ask
            },
            allocations,
            reserved,
            ends_at,
            gang: None,
        }
    }

    /// Takes `count` GPUs of a node for this round: the lowest indices free in
    /// the market and not yet taken in the round. Their watts count against the
    /// site, and the node stops being whole.
    fn take(&mut self, id: NodeId, count: u32) -> Vec<u32> {
        if count == 0 {
            return Vec::new();
        }
        self.generation += 1;
        self.reclaim_scores.get_mut().remove(&id);
        let node = &self.market.nodes[&id];
        let entry = node.indexed.expect("the round only uses online nodes");
        let taken_before = self.taken_on(id);
        let free_before = entry.free - taken_before;
        let claimed = self.claimed_gpus.get(&id).copied().unwrap_or(0);
        let capacity_before = entry.capacity().map(|c| c - taken_before - claimed);
        if self.headroom_w(entry.site).is_some() {
            let needed_w = self.need_w_taken(&entry, taken_before, count);
            *self.added_w.entry(entry.site).or_insert(0) += needed_w;
        }
        // A hidden node (reserved, see `backfill`) is in none of the round's indexes.
        let hidden = self.hidden.contains_key(&id);
        if entry.whole() && taken_before == 0 && !hidden {
            self.whole.remove(id, &entry);
            // The split search is greedy: fewer candidates can change which
            // regions it pairs, so a failure is not known to hold any more.
            if !self.no_split.is_empty() {
                self.no_split.clear();
            }
        }
        if self.clock.is_some() {
            self.round_ends.entry(id).or_default().push((count, self.current_ends));
        }
        // The first `taken_before` free indices are taken already (see `taken`).
        let mut picked = Vec::with_capacity(count as usize);
        picked.extend(
            (0..node.spec.gpus)
                .filter(|i| node.owners[*i as usize].is_none())
                .skip(taken_before as usize)
                .take(count as usize),
        );
        assert_eq!(picked.len(), count as usize, "node {id} has {count} GPUs to take");
        *self.taken.entry(id).or_insert(0) += count;
        if !hidden {
            self.free.update(id, &entry, free_before, free_before - count);
            forget(self.most_free.get_mut());
        }
        *self.taken_by_model.entry(entry.model).or_insert(0) += u64::from(count);
        if let Some(pool) = self.reserved_mut((entry.provider, entry.model)) {
            pool.free -= u64::from(count);
        }
        if let Some(capacity) = capacity_before
            && !hidden
        {
            self.reclaim.update(id, &entry, capacity, capacity - count);
        }
        picked
    }

    /// Claims a lease for this round: its GPUs leave the reclaim index.
    fn claim_lease(&mut self, lease: LeaseId) {
        if !self.claimed.insert(lease) {
            return;
        }
        self.generation += 1;
        for alloc in &self.market.leases[&lease].allocations {
            self.reclaim_scores.get_mut().remove(&alloc.node);
            let node = &self.market.nodes[&alloc.node];
            let Some(entry) = node.indexed else { continue };
            let held = alloc.gpu_indices.iter().filter(|i| **i < node.spec.gpus).count() as u32;
            let capacity = self
                .capacity_on(alloc.node)
                .expect("a node holding a reclaimable lease is in the reclaim index");
            *self.claimed_gpus.entry(alloc.node).or_insert(0) += held;
            // A hidden node (reserved, see `backfill`) left the reclaim index already.
            if !self.hidden.contains_key(&alloc.node) {
                self.reclaim.update(alloc.node, &entry, capacity, capacity - held);
            }
        }
    }

    /// The best way for an on-demand order to get its GPUs through preemption,
    /// or None if even reclaiming every eligible lease would not do.
    fn find_reclaim(&mut self, order: &OrderSpec, shape: Shape, models: &[GpuModel]) -> Option<Reclaim> {
        let personal = self.personal();
        if self.no_reclaim.get(&shape).is_some_and(|p| order.max_price <= *p) {
            return None;
        }
        let found = if order.nodes == 1 {
            self.find_single_reclaim(order, models)
        } else {
            self.find_gang_reclaim(order, models)
        };
        if found.is_none() && !personal {
            let failed = self.no_reclaim.entry(shape).or_insert(order.max_price);
            *failed = (*failed).max(order.max_price);
        }
        found
    }

    /// Scores the first [`RECLAIM_CANDIDATES`] nodes (by ask, then id) whose
    /// free and reclaimable GPUs reach the order, by (victims, GPUs preempted,
    /// ask, id).
    fn find_single_reclaim(&self, order: &OrderSpec, models: &[GpuModel]) -> Option<Reclaim> {
        let g = order.gpus_per_node;
        let last = (order.max_price, SiteId(u64::MAX), NodeId(u64::MAX));
        // Every bucket is sorted by key: merge their heads (in a heap) instead
        // of sorting them all. A node is in one bucket, so heads never tie. A
        // bucket whose cheapest node is out of price adds no run; the others
        // are walked from their first key and stop past `last` (cheaper than
        // a range, which descends the tree to find its end).
        let mut runs = Vec::with_capacity(models.len() * 8);
        for model in models {
            let Some(buckets) = self.reclaim.by_model.get(model) else {
                continue;
            };
            if !self.model_ok(*model, u64::from(g)) {
                continue;
            }
            runs.extend(
                buckets
                    .range(g..)
                    .filter(|(_, bucket)| bucket.cheapest <= order.max_price)
                    .map(|(_, bucket)| bucket.nodes.iter()),
            );
        }
        let mut heads: BinaryHeap<Reverse<(BucketKey, usize)>> = runs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, run)| run.next().filter(|key| **key <= last).map(|&key| Reverse((key, i))))
            .collect();
        let mut best: Option<(ReclaimScore, PricePerGpuHour, NodeId)> = None;
        let mut scored = 0;
        // Nodes refused by a site or provider rule do not count as scored; a
        // bound on all nodes looked at keeps such a search short, except for a
        // reserved order, which must reach its one provider's nodes.
        let mut examined = 0;
        while scored < RECLAIM_CANDIDATES && (self.only_provider.is_some() || examined < RECLAIM_EXAMINED) {
            // The run's next key replaces its head in place: one sift instead of a pop and a push.
            let Some(mut head) = heads.peek_mut() else {
                break;
            };
            let Reverse(((ask, site, id), run)) = *head;
            match runs[run].next() {
                Some(&next) if next <= last => *head = Reverse((next, run)),
                _ => {
                    PeekMut::pop(head);
                }
            }
            examined += 1;
            if !self.site_ok(site) {
                continue;
            }
            if self.filters(order.tier) {
                let e = self.entry(id);
                if !self.admits(order.tier, e.provider, e.model, u64::from(g)) {
                    continue;
                }
            }
            scored += 1;
            let Some(score) = self.reclaim_score(id, g) else {
                continue;
            };
            if best.is_none_or(|b| (score, ask, id) < b) {
                best = Some((score, ask, id));
            }
        }
        let (_, _, id) = best?;
        let reclaim = self.reclaim_on(id, g).expect("scored above");
        Some(Reclaim { nodes: vec![reclaim] })
    }

    /// `(victims, GPUs preempted)` of [`Round::reclaim_on`] for a node that
    /// waits on some lease, None otherwise; remembered until the round changes
    /// the node or claims one of its leases.
    fn reclaim_score(&self, id: NodeId, g: u32) -> Option<ReclaimScore> {
        if self.victims_of.is_some() {
            // A narrowed victim set scores differently: never remembered.
            return self
                .reclaim_on(id, g)
                .filter(NodeReclaim::waits)
                .map(|r| (r.victims.len(), r.victim_gpus));
        }
        let mut scores = self.reclaim_scores.borrow_mut();
        let known = scores.entry(id).or_default();
        if let Some(&(_, score)) = known.iter().find(|(size, _)| *size == g) {
            return score;
        }
        let score = self
            .reclaim_on(id, g)
            .filter(NodeReclaim::waits)
            .map(|r| (r.victims.len(), r.victim_gpus));
        known.push((g, score));
        score
    }

    /// For each pool within price: free whole nodes of the gang's size cost
    /// nothing; the first [`RECLAIM_CANDIDATES`] nodes of that size (by ask,
    /// site, id) whose free and reclaimable GPUs cover the whole node are
    /// scored like single nodes; the pool takes its `nodes` cheapest. Pools
    /// are scored by [`GangReclaimScore`]. Since a gang's nodes have exactly
    /// `gpus_per_node` GPUs, reclaiming that many frees the node whole. Fabric
    /// domains are not preferred here: preemption is rare, and the gang is
    /// placed (by domain) only once its victims end.
    fn find_gang_reclaim(&self, order: &OrderSpec, models: &[GpuModel]) -> Option<Reclaim> {
        let need = order.nodes as usize;
        let g = order.gpus_per_node;
        let mut best: Option<(GangReclaimScore, Reclaim)> = None;
        // A pool without reclaimable nodes cannot help: its free nodes alone did not fit the gang.
        for &model in models {
            for (key, buckets) in self.reclaim.pools_in(pools_of(model, order.max_price)) {
                if !self.admits(order.tier, key.provider, model, need as u64 * u64::from(g)) {
                    continue;
                }
                let whole = self.whole.pool(&GangPoolKey {
                    model,
                    gpus: g,
                    ask: key.ask,
                    provider: key.provider,
                });
                let with_room: Vec<NodeId> = whole.map_or_else(Vec::new, |w| {
                    w.by_domain
                        .iter()
                        .filter(|((site, _), _)| self.site_ok(*site))
                        .flat_map(|(_, nodes)| nodes.iter().copied())
                        .take(need)
                        .collect()
                });
                // Only nodes of exactly the gang's size; their capacity is then at most g.
                let reclaimable: Vec<NodeId> = buckets
                    .get(&g)
                    .into_iter()
                    .flatten()
                    .filter(|&&(_, site, _)| self.site_ok(site))
                    .map(|&(_, _, id)| id)
                    .filter(|&id| self.entry(id).gpus == g && !with_room.contains(&id))
                    .take(RECLAIM_CANDIDATES.max(need))
                    .collect();
                if with_room.len() + reclaimable.len() < need {
                    continue;
                }
                let mut options: Vec<NodeReclaim> = with_room.iter().map(|&id| NodeReclaim::free(id, g)).collect();
                options.extend(reclaimable.iter().filter_map(|&id| self.reclaim_on(id, g)));
                if options.len() < need {
                    continue;
                }
                options.sort_by_key(NodeReclaim::cost);
                options.truncate(need);
                options.sort_by_key(|r| r.node);
                let reclaim = Reclaim { nodes: options };
                if !reclaim.nodes.iter().any(NodeReclaim::waits) {
                    continue;
                }
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
        if missing == 0 {
            return Some(reclaim);
        }
        let scratch = &mut *self.scratch.borrow_mut();
        node.gpus_by_lease(&mut scratch.by_lease);
        scratch.stopping.clear();
        scratch.candidates.clear();
        for &(lease_id, on_node) in &scratch.by_lease {
            if self.claimed.contains(&lease_id) {
                continue;
            }
            let lease = &self.market.leases[&lease_id];
            if lease.stopping {
                scratch.stopping.push((on_node, lease_id));
            } else if lease.tier == Tier::Spot
                && self
                    .victims_of
                    .is_none_or(|holder| lease.reserved.iter().any(|u| u.holder == holder))
            {
                scratch.candidates.push(Candidate {
                    lease: lease_id,
                    on_node,
                    gpus_total: lease.lost_gpus(),
                });
            }
        }
        // Stopping leases cost no new victim; the largest first waits on the fewest.
        scratch
            .stopping
            .sort_unstable_by_key(|&(on_node, lease)| (Reverse(on_node), lease));
        for &(on_node, lease) in &scratch.stopping {
            if missing == 0 {
                break;
            }
            reclaim.stopping.push(lease);
            missing = missing.saturating_sub(on_node);
        }
        reclaim.stopping.sort_unstable();
        if missing > 0 {
            let (victims, victim_gpus) = choose_victims(missing, &mut scratch.candidates)?;
            reclaim.victims = victims;
            reclaim.victim_gpus = victim_gpus;
        }
        Some(reclaim)
    }

    /// Claims what a reclaim plan counts on for the rest of the round and
    /// returns the leases the order now waits for, ascending.
    fn claim(&mut self, reclaim: &Reclaim) -> Vec<LeaseId> {
        // GPUs kept for a waiting order have no estimated end yet.
        self.current_ends = None;
        let mut waiting = BTreeSet::new();
        for n in &reclaim.nodes {
            self.take(n.node, n.from_free);
            waiting.extend(n.stopping.iter().chain(&n.victims).copied());
        }
        debug_assert!(!waiting.is_empty(), "a reclaim plan waits on some lease");
        for &lease in &waiting {
            self.claim_lease(lease);
        }
        waiting.into_iter().collect()
    }

    /// The first reason, in the order of [`Unplaced`]'s variants, that applies.
    fn explain(&self, order: &OrderSpec, accepted: &Accepted, refused: Option<PowerRefusal>) -> Unplaced {
        let models = accepted.models.as_slice();
        // `models` only holds models with an online node, so each is indexed.
        let indexed = || models.iter().filter_map(|m| self.market.indexes.models.get(m));
        if models.is_empty() {
            return Unplaced::NoMatchingNode {
                models: order.models.clone(),
                min_vram_mib: order.min_vram_mib,
            };
        }
        let demand = accepted.demand(order);
        let g = order.gpus_per_node;
        let largest_node_gpus = accepted.largest_node_gpus;
        if largest_node_gpus < g {
            return Unplaced::NodeTooSmall {
                demand,
                largest_node_gpus,
            };
        }
        if order.nodes > 1 && !indexed().any(|m| m.sizes.contains_key(&g)) {
            let node_sizes: BTreeSet<u32> = indexed().flat_map(|m| m.sizes.keys().copied()).collect();
            return Unplaced::GangNodeSize {
                demand,
                node_sizes: node_sizes.into_iter().collect(),
            };
        }
        let cheapest_ask = accepted.cheapest_ask;
        if cheapest_ask > order.max_price {
            return Unplaced::AskAboveMaxPrice { demand, cheapest_ask };
        }
        if order.tier == Tier::OnDemand {
            // Reserved pools whose free GPUs would fit the order but are held for their holders.
            let reserved_idle_gpus: u64 = self
                .reserved
                .iter()
                .filter(|((_, model), pool)| models.contains(model) && pool.open_free() < order.gpus_total())
                .filter(|(_, pool)| pool.free_gpus() >= order.gpus_total())
                .map(|(_, pool)| pool.idle().min(pool.free_gpus()))
                .sum();
            if reserved_idle_gpus > 0 {
                return Unplaced::HeldByReservations {
                    demand,
                    reserved_idle_gpus,
                };
            }
        }
        match self.policy_refusal.get() {
            Some(PolicyRefusal::ShareCap { provider, cap_bps }) => {
                return Unplaced::ProviderShareCap {
                    demand,
                    provider,
                    cap_bps,
                };
            }
            Some(PolicyRefusal::Floor { model, kept_gpus }) => {
                return Unplaced::SmallTenantFloor {
                    demand,
                    model,
                    kept_gpus,
                };
            }
            None => {}
        }
        if let Some(r) = refused {
            return Unplaced::PowerBudget {
                demand,
                site: r.site,
                headroom_w: r.headroom_w,
                needed_w: r.needed_w,
            };
        }
        if order.nodes == 1 {
            let key = (accepted.number, order.max_price);
            if let Some(&most_free_on_one_node) = self.most_free.borrow().get(&key) {
                return Unplaced::NotEnoughFree {
                    demand,
                    most_free_on_one_node,
                };
            }
            let most_free_on_one_node = models
                .iter()
                .filter_map(|m| self.free.get(m))
                .filter_map(|buckets| {
                    // Buckets from the most free down; a bucket's first node is its cheapest.
                    buckets
                        .iter()
                        .rev()
                        .find(|(_, bucket)| bucket.cheapest <= order.max_price)
                })
                .map(|(free, _)| *free)
                .max()
                .unwrap_or(0);
            self.most_free.borrow_mut().insert(key, most_free_on_one_node);
            return Unplaced::NotEnoughFree {
                demand,
                most_free_on_one_node,
            };
        }
        // Free whole nodes of the gang's size within price, and the most in one pool.
        let mut nodes_with_room = 0u32;
        let mut most_in_one_pool = 0u32;
        for &model in models {
            if let Some(asks) = self.whole.by_ask.get(&(model, g)) {
                nodes_with_room += asks.range(..=order.max_price).map(|(_, n)| *n).sum::<u32>();
            }
            for key in self.whole.gang_pools.range(gang_pools_of(model, g, order.max_price)) {
                most_in_one_pool =
                    most_in_one_pool.max(self.whole.pool(key).expect("gang pools have free whole nodes").total);
            }
        }
        // Pools of one node are not in `gang_pools`.
        most_in_one_pool = most_in_one_pool.max(nodes_with_room.min(1));
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

/// Empties a map the round forgets often, without touching its table when it is empty already.
fn forget<K, V>(map: &mut IdMap<K, V>) {
    if !map.is_empty() {
        map.clear();
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

/// The gang pool keys of one model and node size with an ask of at most `max_price`.
fn gang_pools_of(model: GpuModel, gpus: u32, max_price: PricePerGpuHour) -> std::ops::RangeInclusive<GangPoolKey> {
    let lowest = GangPoolKey {
        model,
        gpus,
        ask: PricePerGpuHour(Micros(i128::MIN)),
        provider: ProviderId(0),
    };
    let highest = GangPoolKey {
        model,
        gpus,
        ask: max_price,
        provider: ProviderId(u64::MAX),
    };
    lowest..=highest
}

/// The first bucket key after every node of `site` at `ask`.
fn next_site(ask: PricePerGpuHour, site: SiteId) -> BucketKey {
    match site.0.checked_add(1) {
        Some(next) => (ask, SiteId(next), NodeId(0)),
        None => (PricePerGpuHour(Micros(ask.0.0 + 1)), SiteId(0), NodeId(0)),
    }
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

/// The victims that free at least `missing` GPUs on one node, with the GPUs
/// they hold in all: fewest leases, then fewest GPUs preempted in all, then
/// the least work lost — the newest leases, which have run the shortest
/// (lease ids grow with start time): the set whose newest lease not in the
/// other is newer wins. None if all candidates together do not free enough.
/// Sorts `candidates` newest first; returns the victims in ascending id.
///
/// An exact 0/1 knapsack over "GPUs covered, capped at `missing`": a node has
/// few leases (at most one per GPU), so this is tiny. `best[c]` is the best
/// victim set covering `c` GPUs; candidates are visited in ascending id so each
/// set is built already sorted, and two sets with the same count compare by
/// their ids exactly as the final answer would.
fn choose_victims(missing: u32, candidates: &mut [Candidate]) -> Option<(Vec<LeaseId>, u64)> {
    candidates.sort_unstable_by_key(|c| std::cmp::Reverse(c.lease));
    if candidates.len() <= VictimSet::MAX {
        choose_victims_small(missing, candidates)
    } else {
        choose_victims_any(missing, candidates)
    }
}

/// A victim set as (count, GPUs preempted, ids newest first), ordered as preferred.
type ListedVictims = (usize, u64, Vec<std::cmp::Reverse<LeaseId>>);

/// [`choose_victims`] for any number of candidates sorted newest first: each
/// set is a list of ids, newest first, compared as such with newer ids lower.
fn choose_victims_any(missing: u32, candidates: &[Candidate]) -> Option<(Vec<LeaseId>, u64)> {
    let cap = missing as usize;
    let mut best: Vec<Option<ListedVictims>> = vec![None; cap + 1];
    best[0] = Some((0, 0, Vec::new()));
    for c in candidates.iter() {
        // Descending, so that a lease extends only sets built without it.
        for covered in (0..=cap).rev() {
            let Some((count, gpus, ids)) = &best[covered] else {
                continue;
            };
            let reach = (covered + c.on_node as usize).min(cap);
            let mut with = ids.clone();
            with.push(std::cmp::Reverse(c.lease));
            let candidate = (count + 1, gpus + c.gpus_total, with);
            if best[reach].as_ref().is_none_or(|b| candidate < *b) {
                best[reach] = Some(candidate);
            }
        }
    }
    best[cap].take().map(|(_, gpus, ids)| {
        let mut ids: Vec<LeaseId> = ids.into_iter().map(|r| r.0).collect();
        ids.sort_unstable();
        (ids, gpus)
    })
}

/// A set of victims among at most [`VictimSet::MAX`] candidates sorted newest
/// first: bit `i` is the `i`-th newest lease. Ordered like
/// `(count, gpus, newest ids first)` in [`choose_victims`], without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VictimSet {
    count: u32,
    gpus: u64,
    members: u64,
}

impl VictimSet {
    const MAX: usize = 64;

    /// Whether `self` is strictly preferred to `other`. Between two sets of
    /// equal size and cost, the one holding the newest lease that only one of
    /// them holds wins (the lowest bit, as bits count from the newest).
    fn better(&self, other: &VictimSet) -> bool {
        match (self.count, self.gpus).cmp(&(other.count, other.gpus)) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => {
                let differ = self.members ^ other.members;
                differ != 0 && self.members & differ & differ.wrapping_neg() != 0
            }
        }
    }
}

/// [`choose_victims`] for at most [`VictimSet::MAX`] candidates sorted newest first.
fn choose_victims_small(missing: u32, candidates: &[Candidate]) -> Option<(Vec<LeaseId>, u64)> {
    let cap = missing as usize;
    let mut best: Vec<Option<VictimSet>> = vec![None; cap + 1];
    best[0] = Some(VictimSet {
        count: 0,
        gpus: 0,
        members: 0,
    });
    for (i, c) in candidates.iter().enumerate() {
        // Descending, so that a lease extends only sets built without it.
        for covered in (0..=cap).rev() {
            let Some(set) = best[covered] else {
                continue;
            };
            let reach = (covered + c.on_node as usize).min(cap);
            let with = VictimSet {
                count: set.count + 1,
                gpus: set.gpus + c.gpus_total,
                members: set.members | 1 << i,
            };
            if best[reach].is_none_or(|b| with.better(&b)) {
                best[reach] = Some(with);
            }
        }
    }
    best[cap].map(|set| {
        let mut ids: Vec<LeaseId> = candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| set.members & 1 << i != 0)
            .map(|(_, c)| c.lease)
            .collect();
        ids.sort_unstable();
        (ids, set.gpus)
    })
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
        let mut sorted = candidates.to_vec();
        let got = choose_victims(missing, &mut sorted).map(|(ids, _)| ids);
        let expected = expected.map(|ids| ids.iter().map(|i| LeaseId(*i)).collect::<Vec<_>>());
        assert_eq!(got, expected, "missing {missing} from {candidates:?}");
        assert_eq!(
            choose_victims_any(missing, &sorted).map(|(ids, _)| ids),
            expected,
            "general path, missing {missing} from {candidates:?}"
        );
    }

    #[test]
    fn victims_are_fewest_then_smallest_then_newest() {
        // One lease of 4 beats two of 2.
        check_victims(3, &[cand(1, 2, 2), cand(2, 2, 2), cand(3, 4, 4)], Some(&[3]));
        // Among single victims that suffice, the one preempting fewest GPUs in all.
        check_victims(3, &[cand(1, 4, 4), cand(2, 3, 3)], Some(&[2]));
        // A gang lease frees 4 here but preempts 16 in all: one victim still beats two.
        check_victims(4, &[cand(1, 4, 16), cand(2, 2, 2), cand(3, 2, 2)], Some(&[1]));
        // Equal costs: the newest leases, which lose the least work.
        check_victims(2, &[cand(7, 1, 1), cand(5, 1, 1), cand(6, 1, 1)], Some(&[6, 7]));
        // Not enough in all.
        check_victims(5, &[cand(1, 2, 2), cand(2, 2, 2)], None);
        // Nothing missing needs no victim.
        check_victims(0, &[cand(1, 2, 2)], Some(&[]));
        // Ids decide between sets of equal cost: the newest lease in only one of them.
        check_victims(
            4,
            &[
                cand(1, 1, 1),
                cand(2, 2, 2),
                cand(3, 1, 1),
                cand(4, 2, 2),
                cand(5, 1, 1),
            ],
            Some(&[2, 4]),
        );
        check_victims(
            3,
            &[cand(1, 1, 1), cand(2, 1, 3), cand(3, 2, 2), cand(4, 2, 2)],
            Some(&[1, 4]),
        );
    }

    proptest::proptest! {
        /// The bitset knapsack picks exactly what the list-of-ids knapsack picks.
        #[test]
        fn small_victim_sets_match_the_general_ones(
            missing in 0u32..12,
            leases in proptest::collection::btree_map(1u64..40, (1u32..5, 0u64..6), 0..12),
        ) {
            let mut candidates: Vec<Candidate> = leases
                .iter()
                .map(|(&id, &(on_node, extra))| cand(id, on_node, u64::from(on_node) + extra))
                .collect();
            candidates.sort_by_key(|c| std::cmp::Reverse(c.lease));
            proptest::prop_assert_eq!(
                choose_victims_small(missing, &candidates),
                choose_victims_any(missing, &candidates)
            );
        }
    }
}
