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
//!   gang runs at the speed of its slowest GPU. Among pools, the lowest ask wins,
//!   then the best fit (fewest GPUs left over on the chosen nodes), then the
//!   lowest provider and model; inside the pool, the best-fitting nodes, lowest
//!   ids first. Allocations (ranks) are in ascending [`NodeId`] order.
//! - An on-demand order that does not fit on free GPUs may reclaim GPUs of spot
//!   leases: see [`Market::clear`] for how victims are chosen. It is then not
//!   placed in this round; it waits for its victims to end.
//!
//! # Performance
//!
//! Every mutation updates the indexes of the nodes it touches (a few B-tree
//! operations); nothing is rebuilt per round. A round copies the free-GPU
//! index on its first placement (one entry per node with a free GPU), then
//! costs per order a few B-tree lookups per accepted model and free-GPU count;
//! a gang also walks the pools within its price. Preemption looks up nodes by
//! reclaimable capacity and scores at most
//! [`RECLAIM_CANDIDATES`] of them. An order whose
//! shape (models, nodes, GPUs per node) already failed in the round at an
//! equal or higher price skips the search: GPUs only get scarcer within a
//! round.

mod clear;
mod index;
mod unplaced;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use agora_types::{AgentId, GpuModel, JobId, LeaseId, NodeId, OrderId, PricePerGpuHour, ProviderId, TenantId, Tier};
use serde::{Deserialize, Serialize};

pub use clear::RECLAIM_CANDIDATES;
use index::{IndexEntry, Indexes};
pub use unplaced::{Demand, Unplaced};

/// A node as its agent reports it, with the provider's ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: NodeId,
    pub provider: ProviderId,
    pub agent: AgentId,
    pub model: GpuModel,
    pub gpus: u32,
    pub ask: PricePerGpuHour,
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
    pub provider: ProviderId,
    /// The ask of every node of the placement (a placement never mixes asks), which the tenant pays.
    pub price: PricePerGpuHour,
    /// One per node, in rank order: rank 0 is the first.
    pub allocations: Vec<Allocation>,
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
    /// Every pending order that was not placed, with the reason.
    pub unplaced: BTreeMap<OrderId, Unplaced>,
}

/// A lease the market knows: which GPUs it holds and whether it may be preempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub order: OrderId,
    pub tier: Tier,
    pub provider: ProviderId,
    pub price: PricePerGpuHour,
    pub allocations: Vec<Allocation>,
    /// A stop signal was sent: its GPUs are still used, but it is never chosen as a victim again.
    pub stopping: bool,
}

impl Lease {
    pub fn gpus_total(&self) -> u64 {
        self.allocations.iter().map(|a| a.gpu_indices.len() as u64).sum()
    }
}

/// A node and which lease holds each of its GPUs.
#[derive(Debug, Clone)]
pub struct Node {
    spec: NodeSpec,
    online: bool,
    /// The lease holding each GPU index. Longer than `spec.gpus` only when the
    /// node shrank under running leases: those indices are kept until the
    /// lease ends and are never offered again.
    owners: Vec<Option<LeaseId>>,
    /// What this node contributes to the indexes right now, so that removing
    /// it removes exactly what was inserted.
    indexed: Option<IndexEntry>,
}

impl Node {
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
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

    /// How many GPUs (in `0..gpus`) each lease holds on this node.
    fn gpus_by_lease(&self) -> BTreeMap<LeaseId, u32> {
        let mut out = BTreeMap::new();
        for lease in self.owners[..self.spec.gpus as usize].iter().flatten() {
            *out.entry(*lease).or_insert(0) += 1;
        }
        out
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

/// Service order of pending orders: tier, then higher bid, then older id.
type QueueKey = (Tier, Reverse<PricePerGpuHour>, OrderId);

fn queue_key(order: &OrderSpec) -> QueueKey {
    (order.tier, Reverse(order.max_price), order.id)
}

/// The market state. See the module documentation for the rules.
#[derive(Debug, Clone, Default)]
pub struct Market {
    nodes: BTreeMap<NodeId, Node>,
    orders: BTreeMap<OrderId, OrderSpec>,
    /// Pending orders in service order, so a round never sorts.
    queue: BTreeSet<QueueKey>,
    leases: BTreeMap<LeaseId, Lease>,
    indexes: Indexes,
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
        match self.nodes.get_mut(&id) {
            Some(node) => {
                node.spec = spec;
                resize_owners(node);
            }
            None => {
                let owners = vec![None; spec.gpus as usize];
                self.nodes.insert(
                    id,
                    Node {
                        spec,
                        online: true,
                        owners,
                        indexed: None,
                    },
                );
            }
        }
        self.refresh(id);
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
        self.queue.insert(queue_key(&order));
        self.orders.insert(order.id, order);
    }

    /// Withdraws a pending order; returns it, or None if it was not pending.
    pub fn remove_order(&mut self, order: OrderId) -> Option<OrderSpec> {
        let spec = self.orders.remove(&order)?;
        self.queue.remove(&queue_key(&spec));
        Some(spec)
    }

    /// Applies a placement: its GPUs become held by `lease` and its order stops
    /// being pending.
    ///
    /// # Panics
    ///
    /// If the lease id is in use, a node is unknown, or a GPU index is out of
    /// range or already held: the caller applied a stale or foreign plan.
    pub fn start_lease(&mut self, lease: LeaseId, tier: Tier, placement: &Placement) {
        assert!(!self.leases.contains_key(&lease), "lease {lease} started twice");
        assert!(
            !placement.allocations.is_empty(),
            "placement of order {} has no allocation",
            placement.order
        );
        for alloc in &placement.allocations {
            let node = self
                .nodes
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
        }
        self.remove_order(placement.order);
        self.leases.insert(
            lease,
            Lease {
                id: lease,
                order: placement.order,
                tier,
                provider: placement.provider,
                price: placement.price,
                allocations: placement.allocations.clone(),
                stopping: false,
            },
        );
        for alloc in &placement.allocations {
            self.refresh(alloc.node);
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

    pub fn node(&self, node: NodeId) -> Option<&Node> {
        self.nodes.get(&node)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Free GPUs of a node (`0..gpus` held by no lease), or None for an unknown node.
    pub fn free_gpus(&self, node: NodeId) -> Option<u32> {
        self.nodes.get(&node).map(Node::free_gpus)
    }

    pub fn order(&self, order: OrderId) -> Option<&OrderSpec> {
        self.orders.get(&order)
    }

    /// Pending orders in service order.
    pub fn pending_orders(&self) -> impl Iterator<Item = &OrderSpec> {
        self.queue.iter().map(|(_, _, id)| &self.orders[id])
    }

    pub fn lease(&self, lease: LeaseId) -> Option<&Lease> {
        self.leases.get(&lease)
    }

    /// Leases in id order.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
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
    /// preempted whole, across all its nodes), then the lowest lease ids. The
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
        clear::clear(self, |_| true)
    }

    /// [`Market::clear`] over only the pending orders `eligible` accepts; the
    /// others take no GPUs, preempt nothing and get no reason in the plan. The
    /// caller uses it for rules outside the market, such as a tenant that
    /// cannot pay, so an order that cannot start never blocks one that can.
    pub fn clear_with(&self, eligible: impl Fn(&OrderSpec) -> bool) -> RoundPlan {
        clear::clear(self, eligible)
    }

    /// Brings the indexes in line with a node's current state.
    fn refresh(&mut self, id: NodeId) {
        let node = &self.nodes[&id];
        let entry = self.entry_of(node);
        if entry == node.indexed {
            return;
        }
        if let Some(old) = node.indexed {
            self.indexes.remove(id, &old);
        }
        if let Some(new) = entry {
            self.indexes.insert(id, &new);
        }
        self.nodes.get_mut(&id).expect("refreshed node exists").indexed = entry;
    }

    /// What a node contributes to the indexes: nothing while offline.
    fn entry_of(&self, node: &Node) -> Option<IndexEntry> {
        if !node.online {
            return None;
        }
        let reclaimable = node.owners[..node.spec.gpus as usize]
            .iter()
            .flatten()
            .filter(|l| {
                let lease = &self.leases[l];
                lease.tier == Tier::Spot || lease.stopping
            })
            .count() as u32;
        Some(IndexEntry {
            model: node.spec.model,
            ask: node.spec.ask,
            provider: node.spec.provider,
            gpus: node.spec.gpus,
            free: node.free_gpus(),
            reclaimable,
        })
    }
}

/// Keeps `owners` exactly `max(gpus, last held index + 1)` long.
fn resize_owners(node: &mut Node) {
    let held_len = node.owners.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    node.owners.resize(held_len.max(node.spec.gpus as usize), None);
}
