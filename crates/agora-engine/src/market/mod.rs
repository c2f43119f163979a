//! The market: nodes with their asks, pending orders and running leases, kept
//! in incremental indexes, and [`Market::clear`], which reads them and returns
//! a [`RoundPlan`] without changing anything.
//!
//! # Model
//!
//! A node has `gpus` GPUs of one model, indexed `0..gpus`, and one ask per
//! GPU-hour. A *pool* is the set of a provider's online nodes of one model at
//! one ask. An order asks for `nodes × gpus_per_node` GPUs of an accepted model
//! with enough VRAM, at an ask no higher than its `max_price`.
//!
//! Topology: a node lies in one *site* (one location with one power budget,
//! see [`SiteSpec`]) and one *fabric domain* (the nodes that share one
//! InfiniBand/Ethernet fabric, e.g. a 32-node scalable unit). A domain is
//! identified by its site and [`DomainId`] inside a pool, so two providers that
//! both number their domains from 1 never share one.
//!
//! Power: a site draws, for every node running at least one lease,
//! `node_overhead_w + tdp_w × GPUs held`. A node whose site was never
//! upserted belongs to an unlimited site with no overhead.
//!
//! # Clearing rules
//!
//! Orders are served in priority order: tier (on-demand first), then higher
//! `max_price`, then lower [`OrderId`] (older). GPUs placed earlier in a round
//! are gone for later orders of the same round.
//!
//! - A single-node order takes the node with the lowest ask, then the best fit
//!   (fewest free GPUs left over, which keeps whole nodes free for gangs), then
//!   the lowest [`NodeId`]; on it, the lowest free GPU indices.
//! - A gang (`nodes > 1`) is placed inside one pool, all or nothing: one
//!   provider as the issue asks, one ask so that the placement's price is one
//!   number the ledger can charge exactly, and one model because a data-parallel
//!   gang runs at the speed of its slowest GPU.
//! - A gang takes *whole nodes of exactly `gpus_per_node` GPUs*: a node with
//!   any GPU in use is no candidate, and a gang asking 4 GPUs per node does not
//!   take an 8-GPU node. Taking it whole would strand 4 GPUs for the gang's
//!   life; taking half of it would put a single-node job beside a rank, sharing
//!   its NVLink, PCIe and NICs, which is what "whole nodes" rules out. Partial
//!   nodes are for single-node orders only.
//! - Inside a pool, a gang that one fabric domain can hold gets exactly one:
//!   the domain left with the fewest free whole nodes after it (best fit, so
//!   the big free domains stay whole for big gangs), then the lowest site and
//!   domain. A larger gang takes the fewest domains: greedily the domains with
//!   the most free whole nodes, the last one by best fit. Inside a domain, the
//!   lowest node ids. Ranks are grouped by domain (site, then domain id), node
//!   ids ascending inside one.
//! - Among pools, a placement in one domain beats any split one: a gang inside
//!   one fabric runs its collectives without crossing the spine, worth more
//!   than any ask difference within the tenant's bid. Then the lowest ask, the
//!   fewest domains, the fewest whole nodes stranded in the last domain, the
//!   lowest provider and model.
//! - No placement takes a site above its power budget, counting what the round
//!   already placed; a single-node order then takes the next node, a gang the
//!   next domain or pool.
//! - An on-demand order that does not fit on free GPUs may reclaim GPUs of spot
//!   leases: see [`Market::clear`] for how victims are chosen. It is then not
//!   placed in this round; it waits for its victims to end.
//!
//! # Performance
//!
//! Every mutation updates the indexes of the nodes it touches (a few B-tree
//! operations, one node lookup per node) and the power drawn at its site;
//! nothing is rebuilt per round. A round reads the market's indexes through
//! copy-on-write views (`view.rs`): a free-GPU bucket (one model and free
//! count), a reclaim pool or a gang pool is copied on the round's first change
//! to it, so a round copies the few buckets and pools it places into, not the
//! indexes of a fleet of 10,000 one-node providers (a copied gang pool
//! shares its fabric domains' node sets until it changes one, and a one-node
//! pool the round empties is not copied at all). Per order it then costs a
//! few B-tree lookups per accepted model and free-GPU count (a bucket's
//! cheapest node is read without a key search; nodes are ordered
//! by ask, then site, so a site without power is skipped in one lookup; each
//! bucket keeps its cheapest ask, so a bucket out of price is skipped without
//! a lookup); a gang
//! walks only the pools with at least two free whole nodes of its size within
//! its price, and in each a domain index ordered by free whole nodes. Preemption looks up nodes by
//! reclaimable capacity and scores at most
//! [`RECLAIM_CANDIDATES`] of them, merging the heads of the capacity buckets
//! within its price rather than sorting them; a node's score is remembered until the round takes its
//! GPUs or claims one of its leases, so consecutive preempting orders rescore
//! only the nodes the previous one changed. An order whose
//! shape (models, nodes, GPUs per node) already failed in the round at an
//! equal or higher price skips the search: GPUs only get scarcer within a
//! round. An order alike in shape and price to the last one that failed,
//! with nothing changed in the round since (a change count bumped by every
//! take, claim, hidden node and reserved-pool change), gets that order's
//! reason without a search or an explanation, unless its tenant, latency
//! bound or duration estimate could matter (policies, splits, backfill). An order's model filter (model list and VRAM floor) is numbered
//! once, when the order is added; a round filters the models and gathers the
//! reasons' per-model facts (largest node, cheapest ask) once per filter. The
//! reasons are appended in service order ([`Reasons`]; only serializing sorts
//! them by id), and the reasons of orders with one model list share it. A
//! round counts the GPUs it takes per node (the taken ones are always a
//! node's first free indices) and remembers the sites it looked up (hashed,
//! the last one at hand).
//! Starting a lease derives its nodes' index entries and power from the old
//! ones instead of walking their GPUs and other leases. Lookups by id that
//! no output iterates (nodes, leases, sites, pending orders' keys, a tenant's
//! pending orders, a round's per-node and per-lease bookkeeping and its
//! memory of failed shapes, which most orders of a busy round end at) go through
//! hash maps with a fixed id hasher (`idmap.rs`), about one cache miss each
//! where a B-tree over 30,000 entries costs four or five; listings in id
//! order walk B-tree sets of the ids. A round remembers the most free GPUs
//! on one node per model filter and price for the unplaced reasons until it
//! next changes its free-GPU view.

mod clear;
mod idmap;
mod index;
mod policy;
mod reservation;
mod unplaced;
mod view;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use agora_types::{
    AgentId, DomainId, GpuModel, JobId, LeaseId, NodeId, OrderId, PricePerGpuHour, ProviderId, RegionId, SiteId,
    TenantId, Tier, UnixMs,
};
use serde::{Deserialize, Serialize};

pub use clear::{BACKFILL_RESERVATIONS, RECLAIM_CANDIDATES, RECLAIM_EXAMINED};
use idmap::{IdMap, IdSet};
use index::{IndexEntry, Indexes};
pub use policy::{CapMode, Policies, TenantUse};
pub use reservation::{Holding, ReservedPool};
pub use unplaced::{Demand, Reasons, Unplaced};

/// A node as its agent reports it, with the provider's ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: NodeId,
    pub provider: ProviderId,
    pub agent: AgentId,
    pub model: GpuModel,
    pub gpus: u32,
    pub ask: PricePerGpuHour,
    /// Where the node draws its power; see [`SiteSpec`].
    pub site: SiteId,
    /// The fabric domain, meaningful inside the node's provider and site: gangs prefer one.
    pub domain: DomainId,
}

/// A site's power facts. A site that was never upserted is unlimited with no overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSpec {
    pub id: SiteId,
    /// The provider that runs the site, for listings (the market does not check it against its nodes).
    pub provider: ProviderId,
    /// None: unlimited.
    pub power_budget_w: Option<u64>,
    /// What a node draws besides its GPUs (CPUs, memory, NICs, fans) while it runs any lease.
    pub node_overhead_w: u32,
    /// An orbital site takes only checkpointable orders. (Its availability
    /// windows are the caller's: it takes the site's nodes offline outside them.)
    #[serde(default)]
    pub orbital: bool,
    /// Where the site is, for the latency bound of cross-provider gangs
    /// ([`OrderSpec::max_latency_ms`]). None: unknown, and the site's nodes
    /// take no part in such a gang (its latency to the others is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionId>,
}

/// A site's power now, for the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePower {
    /// None: unlimited.
    pub budget_w: Option<u64>,
    /// Over nodes running at least one lease: overhead plus TDP × GPUs held.
    pub used_w: u64,
    /// `budget_w - used_w`, at least 0 (a budget lowered under running leases
    /// leaves none); None when unlimited.
    pub headroom_w: Option<u64>,
}

/// What one order needs. `nodes` and `gpus_per_node` are at least 1 (the API
/// validates shapes; [`Market::add_order`] asserts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSpec {
    pub id: OrderId,
    pub job: JobId,
    pub tenant: TenantId,
    pub tier: Tier,
    pub max_price: PricePerGpuHour,
    /// Accepted models; empty accepts any model.
    pub models: Vec<GpuModel>,
    /// Compared with the model's catalog VRAM.
    pub min_vram_mib: u32,
    /// 1 for single-node work; more is a gang across that many nodes.
    pub nodes: u32,
    pub gpus_per_node: u32,
    /// How long the work is expected to run, from the manifest: backfill lets
    /// it start ahead of a blocked order only if it ends before that order's
    /// reserved start. None: unknown (never backfilled into a reservation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_estimate_s: Option<u64>,
    /// The work survives a stop and restart: only such work runs at orbital sites.
    #[serde(default)]
    pub checkpointable: bool,
    /// A gang that may span providers (io.net-style clusters): when no single
    /// pool holds it, it may take whole nodes of several providers whose
    /// regions are pairwise at most this many milliseconds apart in the
    /// market's latency matrix ([`Market::set_latency`]). None: one pool only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<u32>,
}

impl OrderSpec {
    /// Whether a node of `model` can serve this order, price and room aside.
    pub fn accepts(&self, model: GpuModel) -> bool {
        (self.models.is_empty() || self.models.contains(&model)) && model.spec().vram_mib >= self.min_vram_mib
    }

    /// All the GPUs the order needs, across its nodes.
    pub fn gpus_total(&self) -> u64 {
        u64::from(self.nodes) * u64::from(self.gpus_per_node)
    }
}

/// GPUs of one node given to one rank of a placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub node: NodeId,
    /// Indices in `0..gpus` of that node, ascending.
    pub gpu_indices: Vec<u32>,
}

/// Where one order goes. The caller applies it with [`Market::start_lease`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub order: OrderId,
    /// The order's tenant and bid, which the lease keeps: the spot price and
    /// the market-health policies read them.
    pub tenant: TenantId,
    pub bid: PricePerGpuHour,
    pub provider: ProviderId,
    /// What the tenant pays per GPU-hour: the ask of every node of the
    /// placement (a placement never mixes asks), or zero for reserved work,
    /// which its contract pays for.
    pub price: PricePerGpuHour,
    /// One per node, in rank order: rank 0 is the first.
    pub allocations: Vec<Allocation>,
    /// Reserved capacity the placement occupies: a reserved-tier placement
    /// uses its own tenant's reservation; a spot placement may resell idle
    /// reserved GPUs of other tenants, who are credited for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<ReservedUse>,
    /// When the lease is expected to end: the round's clock plus the order's
    /// duration estimate (None without either). Backfill plans with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<UnixMs>,
    /// Set when the order's gang spans pools: this placement is one part, and
    /// the round emits the others right after it, in part order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangPart>,
}

/// One pool's part of a gang that spans pools (see [`OrderSpec::max_latency_ms`]).
/// Each part is its own lease, with its own provider and price; the caller
/// runs the parts as one gang: they start together, and when one ends
/// without success the others are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GangPart {
    /// This part's position, from 0, among `parts` parts.
    pub index: u32,
    pub parts: u32,
    /// The gang-wide rank of this part's first node: its allocations are
    /// ranks `first_rank..first_rank + allocations.len()`.
    pub first_rank: u32,
    /// Nodes of the whole gang.
    pub nodes: u32,
    /// GPUs of the whole gang: what preempting any part loses.
    pub gpus_total: u64,
}

/// GPUs of one holder's reservation (at the placement's provider and model) that a placement occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedUse {
    pub holder: TenantId,
    pub gpus: u32,
}

impl Placement {
    pub fn gpus_total(&self) -> u64 {
        self.allocations.iter().map(|a| a.gpu_indices.len() as u64).sum()
    }
}

/// A spot lease that must be signalled to stop so that an on-demand order can
/// take its GPUs in a later round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preemption {
    pub lease: LeaseId,
    pub for_order: OrderId,
}

/// The decisions of one clearing round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundPlan {
    /// In service order; no GPU appears twice.
    pub placements: Vec<Placement>,
    /// In service order; no lease appears twice.
    pub preemptions: Vec<Preemption>,
    /// Every pending order that was not placed, with the reason, in service
    /// order; serialized as a map by order id.
    pub unplaced: Reasons,
}

/// What a round takes from outside the market besides which orders are eligible.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundInputs<'a> {
    /// When the round runs; see [`Market::clear_at`]. None: no estimated ends, no backfill.
    pub now: Option<UnixMs>,
    /// The spot price of each (site, model) where it is above the floor (see
    /// [`crate::spot`]): a spot order takes no GPU where its bid is below it,
    /// so it is never placed where it would be outbid at once. None or
    /// absent entries: no limit beyond the ask.
    pub spot_prices: Option<&'a BTreeMap<(SiteId, GpuModel), PricePerGpuHour>>,
}

/// A lease the market knows: which GPUs it holds and whether it may be preempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub order: OrderId,
    pub tier: Tier,
    pub tenant: TenantId,
    /// The order's max price per GPU-hour.
    pub bid: PricePerGpuHour,
    pub provider: ProviderId,
    pub price: PricePerGpuHour,
    pub allocations: Vec<Allocation>,
    /// See [`Placement::reserved`].
    pub reserved: Vec<ReservedUse>,
    /// See [`Placement::ends_at`].
    pub ends_at: Option<UnixMs>,
    /// See [`Placement::gang`].
    pub gang: Option<GangPart>,
    /// A stop signal was sent: its GPUs are still used, but it is never chosen as a victim again.
    pub stopping: bool,
}

impl Lease {
    pub fn gpus_total(&self) -> u64 {
        self.allocations.iter().map(|a| a.gpu_indices.len() as u64).sum()
    }

    /// The GPUs whose work is lost when this lease is preempted: its own, or
    /// its whole gang's when it is one part of a gang spanning pools (the
    /// caller stops the other parts with it).
    pub fn lost_gpus(&self) -> u64 {
        self.gang.map_or_else(|| self.gpus_total(), |g| g.gpus_total)
    }
}

/// A node and which lease holds each of its GPUs.
#[derive(Debug, Clone)]
pub struct Node {
    spec: NodeSpec,
    online: bool,
    /// The region of the node's site, as last upserted (None: unknown).
    region: Option<RegionId>,
    /// The lease holding each GPU index. Longer than `spec.gpus` only when the
    /// node shrank under running leases: those indices are kept until the
    /// lease ends and are never offered again.
    owners: Vec<Option<LeaseId>>,
    /// What this node contributes to the indexes right now, so that removing
    /// it removes exactly what was inserted.
    indexed: Option<IndexEntry>,
    /// What this node adds to its site's power right now (online or not: a
    /// lease runs until the caller ends it), so that moving or changing the
    /// node takes back exactly what it added.
    drawn: Draw,
}

/// One node's share of its site's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Draw {
    site: SiteId,
    /// Runs at least one lease, so it draws the site's node overhead.
    busy: bool,
    /// TDP × GPUs held, including GPUs beyond a shrunk node's count.
    gpus_w: u64,
}

/// A site's power bookkeeping: the overhead is applied on read, so changing a
/// site's overhead never walks its nodes.
#[derive(Debug, Clone, Default)]
struct SiteState {
    /// None until upserted: unlimited, no overhead.
    spec: Option<SiteSpec>,
    /// Nodes that name this site; a site neither upserted nor named is forgotten.
    nodes: u64,
    busy_nodes: u64,
    gpus_w: u64,
}

impl SiteState {
    fn overhead_w(&self) -> u64 {
        self.spec.as_ref().map_or(0, |s| u64::from(s.node_overhead_w))
    }

    fn budget_w(&self) -> Option<u64> {
        self.spec.as_ref().and_then(|s| s.power_budget_w)
    }

    fn used_w(&self) -> u64 {
        self.busy_nodes * self.overhead_w() + self.gpus_w
    }

    fn power(&self) -> SitePower {
        let used_w = self.used_w();
        let budget_w = self.budget_w();
        SitePower {
            budget_w,
            used_w,
            headroom_w: budget_w.map(|b| b.saturating_sub(used_w)),
        }
    }
}

impl Node {
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// The region of the node's site (None: unknown or no site upserted).
    pub fn region(&self) -> Option<RegionId> {
        self.region
    }

    pub fn online(&self) -> bool {
        self.online
    }

    /// The lease holding each GPU index (see the note on shrunk nodes on the field).
    pub fn gpu_owners(&self) -> &[Option<LeaseId>] {
        &self.owners
    }

    /// GPUs in `0..gpus` held by no lease (offline or not).
    pub fn free_gpus(&self) -> u32 {
        self.owners[..self.spec.gpus as usize]
            .iter()
            .filter(|o| o.is_none())
            .count() as u32
    }

    /// How many GPUs (in `0..gpus`) each lease holds on this node, by ascending
    /// lease id, written into `out` (cleared first) so that a round's
    /// preemption search reuses one buffer.
    fn gpus_by_lease(&self, out: &mut Vec<(LeaseId, u32)>) {
        out.clear();
        out.extend(self.owners[..self.spec.gpus as usize].iter().flatten().map(|l| (*l, 1)));
        out.sort_unstable();
        out.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
    }
}

/// Asks and capacity of one model's online nodes, for `agora market`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskSummary {
    pub min: PricePerGpuHour,
    pub max: PricePerGpuHour,
    pub nodes: u64,
    pub gpus_total: u64,
    pub gpus_free: u64,
}

/// Service order of pending orders: tier, then higher bid, then the tenant's
/// fair-share rank (less recent use first), then older id.
type QueueKey = (Tier, Reverse<PricePerGpuHour>, u32, OrderId);

/// A pending order with the number of its model filter.
#[derive(Debug, Clone)]
struct Queued {
    spec: OrderSpec,
    filter: u32,
}

/// Model filters numbered in the order first seen. A number is never reused
/// or forgotten: the distinct filters are few (a VRAM floor and a list of
/// catalog models), and a stable number lets a round keep one accepted-model
/// list per filter in a vector.
#[derive(Debug, Clone, Default)]
struct Filters {
    /// Number by VRAM floor, then model list.
    numbers: BTreeMap<u32, BTreeMap<Vec<GpuModel>, u32>>,
    /// `(VRAM floor, model list)` by number; the list is shared by the
    /// reasons of the orders that have it.
    list: Vec<(u32, Arc<[GpuModel]>)>,
}

impl Filters {
    fn number(&mut self, order: &OrderSpec) -> u32 {
        let by_models = self.numbers.entry(order.min_vram_mib).or_default();
        // Looked up by slice: adding an order with a known filter allocates nothing.
        if let Some(&n) = by_models.get(order.models.as_slice()) {
            return n;
        }
        let n = self.list.len() as u32;
        self.list.push((order.min_vram_mib, Arc::from(order.models.as_slice())));
        by_models.insert(order.models.clone(), n);
        n
    }
}

/// The market state. See the module documentation for the rules.
#[derive(Debug, Clone, Default)]
pub struct Market {
    /// By id, for lookups; `node_ids` keeps the id order that listings use.
    nodes: IdMap<NodeId, Node>,
    /// Every node's id, ascending (nodes are never removed).
    node_ids: BTreeSet<NodeId>,
    /// Where each pending order sits in `queue`.
    orders: IdMap<OrderId, QueueKey>,
    /// Pending orders in service order, so a round never sorts, and walks them
    /// without a lookup per order.
    queue: BTreeMap<QueueKey, Queued>,
    /// Every distinct model filter (VRAM floor, model list) a pending order
    /// ever had, numbered once when the order is added, so that a round
    /// groups orders by filter without comparing model lists.
    filters: Filters,
    /// Fair-share rank per tenant (absent: 0, the front); see [`Market::set_share_rank`].
    share_rank: BTreeMap<TenantId, u32>,
    /// Pending orders per tenant, to re-rank them when the tenant's rank changes.
    /// Hashed: only looked up, and re-keying does not depend on the order.
    pending_by_tenant: IdMap<TenantId, IdSet<OrderId>>,
    /// By id, for lookups; `lease_ids` keeps the id order that listings use.
    leases: IdMap<LeaseId, Lease>,
    /// Every running lease's id, ascending.
    lease_ids: BTreeSet<LeaseId>,
    indexes: Indexes,
    sites: IdMap<SiteId, SiteState>,
    /// Reserved capacity by (provider, model); see [`reservation`].
    reservations: BTreeMap<(ProviderId, GpuModel), ReservedPool>,
    /// Market-health policies; see [`policy`].
    policies: Policies,
    /// GPUs held per tenant, for the policies.
    tenant_use: BTreeMap<TenantId, TenantUse>,
    /// Sites that take only checkpointable orders.
    orbital_sites: BTreeSet<SiteId>,
    /// Leases with an estimated end: without any, backfill can promise no start.
    estimated_leases: u64,
    /// Leases of the spot tier, stopping or not: without any (and without
    /// pending spot orders) every spot quote is its class's floor.
    spot_leases: u64,
    /// Round-trip latency between regions, each pair once as (lower, higher);
    /// see [`Market::set_latency`].
    latency_ms: BTreeMap<(RegionId, RegionId), u32>,
}

impl Market {
    pub fn new() -> Market {
        Market::default()
    }

    /// Adds a node (online), or changes an existing one. An existing node keeps
    /// its leases and its online flag; if it shrank under a lease, the GPUs
    /// beyond the new count stay held until the lease ends.
    pub fn upsert_node(&mut self, spec: NodeSpec) {
        let id = spec.id;
        let region = self.site(spec.site).and_then(|s| s.region);
        match self.nodes.get_mut(&id) {
            Some(node) => {
                node.spec = spec;
                node.region = region;
                resize_owners(node);
            }
            None => {
                let owners = vec![None; spec.gpus as usize];
                let drawn = Draw {
                    site: spec.site,
                    busy: false,
                    gpus_w: 0,
                };
                self.sites.entry(spec.site).or_default().nodes += 1;
                self.node_ids.insert(id);
                self.nodes.insert(
                    id,
                    Node {
                        spec,
                        online: true,
                        region,
                        owners,
                        indexed: None,
                        drawn,
                    },
                );
            }
        }
        self.refresh(id);
    }

    /// Adds or changes a site's power facts. A lowered budget ends no lease:
    /// the site just takes no placement until its use falls under the budget.
    pub fn upsert_site(&mut self, spec: SiteSpec) {
        if spec.orbital {
            self.orbital_sites.insert(spec.id);
        } else {
            self.orbital_sites.remove(&spec.id);
        }
        let (id, region) = (spec.id, spec.region);
        let before = self.site(id).and_then(|s| s.region);
        self.sites.entry(id).or_default().spec = Some(spec);
        if region != before {
            // Rare (an operator moves a site): find its nodes by walking them all.
            let moved: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.spec.site == id)
                .map(|(id, _)| *id)
                .collect();
            for node in moved {
                self.nodes.get_mut(&node).expect("listed").region = region;
                self.refresh(node);
            }
        }
    }

    /// Sets the latency matrix that bounds cross-provider gangs: milliseconds
    /// between two regions, either way round. A region is 0 ms from itself
    /// unless given; a pair not given is unknown, and no gang spans it.
    pub fn set_latency(&mut self, pairs: impl IntoIterator<Item = (RegionId, RegionId, u32)>) {
        self.latency_ms = pairs.into_iter().map(|(a, b, ms)| ((a.min(b), a.max(b)), ms)).collect();
    }

    /// The latency between two regions, if known (see [`Market::set_latency`]).
    pub fn latency_ms(&self, a: RegionId, b: RegionId) -> Option<u32> {
        match self.latency_ms.get(&(a.min(b), a.max(b))) {
            Some(&ms) => Some(ms),
            None => (a == b).then_some(0),
        }
    }

    /// A site as upserted, or None if it never was.
    pub fn site(&self, site: SiteId) -> Option<&SiteSpec> {
        self.sites.get(&site).and_then(|s| s.spec.as_ref())
    }

    /// A site's power now, or None for a site neither upserted nor named by a node.
    pub fn site_power(&self, site: SiteId) -> Option<SitePower> {
        self.sites.get(&site).map(SiteState::power)
    }

    /// Every known site's power, by id.
    pub fn site_powers(&self) -> BTreeMap<SiteId, SitePower> {
        self.sites.iter().map(|(id, s)| (*id, s.power())).collect()
    }

    /// Offline nodes take no placements and are never chosen for preemption;
    /// their leases stay until the caller ends them. Returns false for an unknown node.
    pub fn set_node_online(&mut self, node: NodeId, online: bool) -> bool {
        let Some(n) = self.nodes.get_mut(&node) else {
            return false;
        };
        n.online = online;
        self.refresh(node);
        true
    }

    /// Makes an order pending (replacing a pending order with the same id).
    pub fn add_order(&mut self, order: OrderSpec) {
        assert!(
            order.nodes >= 1 && order.gpus_per_node >= 1,
            "order {} asks for no GPUs",
            order.id
        );
        self.remove_order(order.id);
        let key = self.queue_key(&order);
        self.orders.insert(order.id, key);
        self.pending_by_tenant.entry(order.tenant).or_default().insert(order.id);
        let filter = self.filters.number(&order);
        self.queue.insert(key, Queued { spec: order, filter });
    }

    fn queue_key(&self, order: &OrderSpec) -> QueueKey {
        let rank = self.share_rank.get(&order.tenant).copied().unwrap_or(0);
        (order.tier, Reverse(order.max_price), rank, order.id)
    }

    /// Withdraws a pending order; returns it, or None if it was not pending.
    pub fn remove_order(&mut self, order: OrderId) -> Option<OrderSpec> {
        let key = self.orders.remove(&order)?;
        let spec = self.queue.remove(&key).expect("a pending order is queued").spec;
        if let Some(set) = self.pending_by_tenant.get_mut(&spec.tenant) {
            set.remove(&order);
            if set.is_empty() {
                self.pending_by_tenant.remove(&spec.tenant);
            }
        }
        Some(spec)
    }

    /// Sets a tenant's fair-share rank: within a tier and a bid, orders of
    /// tenants with a lower rank are served first (the caller ranks tenants by
    /// their recent GPU-hours over their weight; coarse ranks keep FIFO inside
    /// a rank). Re-keys only that tenant's pending orders.
    pub fn set_share_rank(&mut self, tenant: TenantId, rank: u32) {
        let old = self.share_rank.get(&tenant).copied().unwrap_or(0);
        if old == rank {
            return;
        }
        if rank == 0 {
            self.share_rank.remove(&tenant);
        } else {
            self.share_rank.insert(tenant, rank);
        }
        let ids: Vec<OrderId> = self
            .pending_by_tenant
            .get(&tenant)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            let key = self.orders[&id];
            let queued = self.queue.remove(&key).expect("a pending order is queued");
            let new_key = self.queue_key(&queued.spec);
            self.orders.insert(id, new_key);
            self.queue.insert(new_key, queued);
        }
    }

    pub fn share_rank(&self, tenant: TenantId) -> u32 {
        self.share_rank.get(&tenant).copied().unwrap_or(0)
    }

    /// Applies a placement: its GPUs become held by `lease` and its order stops
    /// being pending.
    ///
    /// # Panics
    ///
    /// If the lease id is in use, a node is unknown, or a GPU index is out of
    /// range or already held: the caller applied a stale or foreign plan.
    pub fn start_lease(&mut self, lease: LeaseId, tier: Tier, placement: &Placement) {
        self.start_lease_owned(lease, tier, placement.clone());
    }

    /// [`Market::start_lease`] for a caller done with the placement: its
    /// allocations move into the lease instead of being copied (a copy is a
    /// few allocations per lease, a good part of starting one).
    pub fn start_lease_owned(&mut self, lease: LeaseId, tier: Tier, placement: Placement) {
        assert!(!self.leases.contains_key(&lease), "lease {lease} started twice");
        assert!(
            !placement.allocations.is_empty(),
            "placement of order {} has no allocation",
            placement.order
        );
        self.remove_order(placement.order);
        let started = Lease {
            id: lease,
            order: placement.order,
            tier,
            tenant: placement.tenant,
            bid: placement.bid,
            provider: placement.provider,
            price: placement.price,
            allocations: placement.allocations,
            reserved: placement.reserved,
            ends_at: placement.ends_at,
            gang: placement.gang,
            stopping: false,
        };
        self.reserved_lease_changed(&started, 1);
        self.count_tenant_use(&started, 1);
        self.estimated_leases += u64::from(started.ends_at.is_some());
        self.spot_leases += u64::from(started.tier == Tier::Spot);
        self.lease_ids.insert(lease);
        let Market {
            nodes,
            leases,
            indexes,
            sites,
            reservations,
            ..
        } = self;
        let started = leases.entry(lease).insert_entry(started).into_mut();
        for alloc in &started.allocations {
            let node = nodes
                .get_mut(&alloc.node)
                .unwrap_or_else(|| panic!("lease {lease}: unknown node {}", alloc.node));
            for &gpu in &alloc.gpu_indices {
                assert!(
                    gpu < node.spec.gpus,
                    "lease {lease}: node {} has no GPU {gpu}",
                    alloc.node
                );
                let owner = &mut node.owners[gpu as usize];
                assert!(
                    owner.is_none(),
                    "lease {lease}: GPU {gpu} of node {} is held by lease {}",
                    alloc.node,
                    owner.unwrap()
                );
                *owner = Some(lease);
            }
            started_on(
                alloc.node,
                node,
                tier,
                alloc.gpu_indices.len() as u32,
                indexes,
                sites,
                reservations,
            );
        }
        #[cfg(debug_assertions)]
        for alloc in &self.leases[&lease].allocations {
            let node = &self.nodes[&alloc.node];
            debug_assert_eq!(
                node.indexed,
                entry_of(node, &self.leases),
                "node {} indexed as it is",
                alloc.node
            );
        }
    }

    /// Records that a stop signal (preemption or cancel) was sent to a lease:
    /// its GPUs stay held, and no round chooses it as a victim again. Returns
    /// false for an unknown lease.
    pub fn mark_stopping(&mut self, lease: LeaseId) -> bool {
        let Some(l) = self.leases.get_mut(&lease) else {
            return false;
        };
        l.stopping = true;
        let nodes: Vec<NodeId> = l.allocations.iter().map(|a| a.node).collect();
        for node in nodes {
            self.refresh(node);
        }
        true
    }

    /// Frees a lease's GPUs; returns the lease, or None if it was unknown
    /// (ending twice is harmless).
    pub fn end_lease(&mut self, lease: LeaseId) -> Option<Lease> {
        let l = self.leases.remove(&lease)?;
        self.lease_ids.remove(&lease);
        self.reserved_lease_changed(&l, -1);
        self.count_tenant_use(&l, -1);
        self.estimated_leases -= u64::from(l.ends_at.is_some());
        self.spot_leases -= u64::from(l.tier == Tier::Spot);
        for alloc in &l.allocations {
            let node = self.nodes.get_mut(&alloc.node).expect("a lease's nodes exist");
            for &gpu in &alloc.gpu_indices {
                let owner = &mut node.owners[gpu as usize];
                assert_eq!(
                    *owner,
                    Some(lease),
                    "GPU {gpu} of node {} was held by lease {lease}",
                    alloc.node
                );
                *owner = None;
            }
            resize_owners(node);
        }
        for alloc in &l.allocations {
            self.refresh(alloc.node);
        }
        Some(l)
    }

    /// Whether any lease is of the spot tier, or any pending order.
    pub fn has_spot_work(&self) -> bool {
        self.spot_leases > 0
            || self
                .queue
                .keys()
                .next_back()
                .is_some_and(|(tier, ..)| *tier == Tier::Spot)
    }

    /// Online nodes of each model in each region (their floor ask and GPUs),
    /// by model, then region: kept as leases start and end, so that pricing
    /// every round reads one entry per class, not every node.
    pub(crate) fn class_tallies(&self) -> impl Iterator<Item = (GpuModel, Option<RegionId>, &index::ClassTally)> {
        self.indexes
            .models
            .iter()
            .flat_map(|(model, m)| m.by_region.iter().map(move |(region, tally)| (*model, *region, tally)))
    }

    /// Whether any lease, stopping or not, is of the spot tier.
    pub fn has_spot_leases(&self) -> bool {
        self.spot_leases > 0
    }

    pub fn node(&self, node: NodeId) -> Option<&Node> {
        self.nodes.get(&node)
    }

    /// Nodes in id order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.node_ids.iter().map(|id| &self.nodes[id])
    }

    /// Free GPUs of a node (`0..gpus` held by no lease), or None for an unknown node.
    pub fn free_gpus(&self, node: NodeId) -> Option<u32> {
        self.nodes.get(&node).map(Node::free_gpus)
    }

    pub fn order(&self, order: OrderId) -> Option<&OrderSpec> {
        self.orders.get(&order).map(|key| &self.queue[key].spec)
    }

    /// Pending orders in service order.
    pub fn pending_orders(&self) -> impl Iterator<Item = &OrderSpec> {
        self.queue.values().map(|q| &q.spec)
    }

    pub fn lease(&self, lease: LeaseId) -> Option<&Lease> {
        self.leases.get(&lease)
    }

    /// Leases in id order.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.lease_ids.iter().map(|id| &self.leases[id])
    }

    /// Asks and capacity of online nodes, per model.
    pub fn asks_by_model(&self) -> BTreeMap<GpuModel, AskSummary> {
        self.indexes.ask_summaries()
    }

    /// Runs one clearing round and returns its plan; changes nothing.
    ///
    /// Preemption: an on-demand order that cannot be placed on free GPUs looks
    /// for GPUs it could reclaim on feasible nodes (online, accepted model and
    /// VRAM, ask within its bid). On each such node it counts, in this order,
    /// the GPUs free now, the GPUs of leases already stopping (they free up
    /// without a new victim), and then the GPUs of running spot leases, chosen
    /// as the fewest leases, then the fewest GPUs preempted in all (a lease is
    /// preempted whole, across all its nodes), then the newest leases (the
    /// least work lost: lease ids grow with start time). The
    /// node (or, for a gang, the pool and its nodes) with the fewest victims,
    /// then fewest GPUs preempted, then lowest ask, then lowest id wins, among
    /// the first [`RECLAIM_CANDIDATES`] feasible nodes by ask then id (per
    /// pool, for a gang), which bounds the cost of a round. The order is not
    /// placed; it is reported as
    /// [`Unplaced::WaitingForPreemption`], and the free GPUs it counts on and
    /// the leases it waits for are claimed for the rest of the round so that no
    /// later order takes them or preempts for them again. Spot orders never
    /// preempt.
    pub fn clear(&self) -> RoundPlan {
        clear::clear(self, RoundInputs::default(), |_| true)
    }

    /// [`Market::clear`] over only the pending orders `eligible` accepts; the
    /// others take no GPUs, preempt nothing and get no reason in the plan. The
    /// caller uses it for rules outside the market, such as a tenant that
    /// cannot pay, so an order that cannot start never blocks one that can.
    pub fn clear_with(&self, eligible: impl Fn(&OrderSpec) -> bool) -> RoundPlan {
        clear::clear(self, RoundInputs::default(), eligible)
    }

    /// [`Market::clear_with`] with what the round takes from outside the market.
    pub fn clear_round(&self, inputs: RoundInputs<'_>, eligible: impl Fn(&OrderSpec) -> bool) -> RoundPlan {
        clear::clear(self, inputs, eligible)
    }

    /// [`Market::clear_with`] for a round that runs at `now` (the engine never
    /// reads a clock): its placements carry their estimated end
    /// ([`Placement::ends_at`]), and it plans conservative backfill — the
    /// first [`BACKFILL_RESERVATIONS`] orders that find no room get the nodes
    /// where they could start earliest by the running leases' estimated ends,
    /// and later orders use those nodes only if their duration estimate ends
    /// before the reservation starts ([`Unplaced::ReservedAhead`]).
    pub fn clear_at(&self, now: UnixMs, eligible: impl Fn(&OrderSpec) -> bool) -> RoundPlan {
        let inputs = RoundInputs {
            now: Some(now),
            ..RoundInputs::default()
        };
        clear::clear(self, inputs, eligible)
    }

    /// Brings the indexes and the site power in line with a node's current state.
    fn refresh(&mut self, id: NodeId) {
        let Market {
            nodes,
            leases,
            indexes,
            sites,
            reservations,
            ..
        } = self;
        let node = nodes.get_mut(&id).expect("refreshed node exists");
        refresh_node(id, node, leases, indexes, sites, reservations);
    }
}

/// [`Market::refresh`] on a node already looked up.
fn refresh_node(
    id: NodeId,
    node: &mut Node,
    leases: &IdMap<LeaseId, Lease>,
    indexes: &mut Indexes,
    sites: &mut IdMap<SiteId, SiteState>,
    reservations: &mut BTreeMap<(ProviderId, GpuModel), ReservedPool>,
) {
    let held = node.owners.iter().flatten().count() as u64;
    let drawn = Draw {
        site: node.spec.site,
        busy: held > 0,
        gpus_w: held * u64::from(node.spec.model.spec().tdp_w),
    };
    let entry = entry_of(node, leases);
    if drawn != node.drawn {
        move_draw(sites, node.drawn, drawn);
        node.drawn = drawn;
    }
    if entry != node.indexed {
        indexes.update(id, node.indexed.as_ref(), entry.as_ref());
        reservation::free_changed(reservations, node.indexed.as_ref(), entry.as_ref());
        node.indexed = entry;
    }
}

/// [`refresh_node`] after a lease of `tier` took `gpus` more GPUs (below the
/// node's count) of a node: its entry and draw follow from the old ones,
/// without walking its GPUs or looking up its other leases.
fn started_on(
    id: NodeId,
    node: &mut Node,
    tier: Tier,
    gpus: u32,
    indexes: &mut Indexes,
    sites: &mut IdMap<SiteId, SiteState>,
    reservations: &mut BTreeMap<(ProviderId, GpuModel), ReservedPool>,
) {
    let old = node.drawn;
    let gpus_w = u64::from(gpus) * u64::from(node.spec.model.spec().tdp_w);
    let site = sites.get_mut(&old.site).expect("a node's site is known");
    site.busy_nodes += u64::from(!old.busy);
    site.gpus_w += gpus_w;
    node.drawn = Draw {
        site: old.site,
        busy: true,
        gpus_w: old.gpus_w + gpus_w,
    };
    // A new lease is not stopping: it counts as reclaimable if it is spot.
    let entry = node.indexed.map(|e| IndexEntry {
        free: e.free - gpus,
        reclaimable: e.reclaimable + if tier == Tier::Spot { gpus } else { 0 },
        busy: true,
        ..e
    });
    if entry != node.indexed {
        indexes.update(id, node.indexed.as_ref(), entry.as_ref());
        reservation::free_changed(reservations, node.indexed.as_ref(), entry.as_ref());
        node.indexed = entry;
    }
}

/// Takes a node's old share of power from its old site and adds the new one.
fn move_draw(sites: &mut IdMap<SiteId, SiteState>, old: Draw, new: Draw) {
    let site = sites.get_mut(&old.site).expect("a node's site is known");
    site.busy_nodes -= u64::from(old.busy);
    site.gpus_w -= old.gpus_w;
    if new.site != old.site {
        site.nodes -= 1;
        if site.nodes == 0 && site.spec.is_none() {
            sites.remove(&old.site);
        }
        sites.entry(new.site).or_default().nodes += 1;
    }
    let site = sites.get_mut(&new.site).expect("just ensured");
    site.busy_nodes += u64::from(new.busy);
    site.gpus_w += new.gpus_w;
}

/// What a node contributes to the indexes: nothing while offline.
fn entry_of(node: &Node, leases: &IdMap<LeaseId, Lease>) -> Option<IndexEntry> {
    if !node.online {
        return None;
    }
    // A lease usually holds a run of GPUs: look each run's lease up once.
    let mut last: Option<(LeaseId, bool)> = None;
    let mut reclaimable = 0;
    for &lease_id in node.owners[..node.spec.gpus as usize].iter().flatten() {
        let counts = match last {
            Some((id, counts)) if id == lease_id => counts,
            _ => {
                let lease = &leases[&lease_id];
                let counts = lease.tier == Tier::Spot || lease.stopping;
                last = Some((lease_id, counts));
                counts
            }
        };
        reclaimable += u32::from(counts);
    }
    Some(IndexEntry {
        model: node.spec.model,
        ask: node.spec.ask,
        provider: node.spec.provider,
        site: node.spec.site,
        region: node.region,
        domain: node.spec.domain,
        gpus: node.spec.gpus,
        free: node.free_gpus(),
        reclaimable,
        busy: node.owners.iter().any(Option::is_some),
    })
}

/// Keeps `owners` exactly `max(gpus, last held index + 1)` long.
fn resize_owners(node: &mut Node) {
    let held_len = node.owners.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    node.owners.resize(held_len.max(node.spec.gpus as usize), None);
}
