//! The market's indexes of online nodes: free GPUs by model and by pool (what
//! placement searches), and per-model facts (asks, node sizes, pools, nodes
//! with reclaimable GPUs) that preemption and the unplaced reasons read.
//!
//! Each node contributes one [`IndexEntry`]; the market removes the old entry
//! and inserts the new one whenever a node changes, so the indexes never need
//! rebuilding.

use std::collections::{BTreeMap, BTreeSet};

use agora_types::{GpuModel, NodeId, PricePerGpuHour, ProviderId};

use super::AskSummary;

/// What one online node contributes to the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) model: GpuModel,
    pub(crate) ask: PricePerGpuHour,
    pub(crate) provider: ProviderId,
    pub(crate) gpus: u32,
    /// Free GPUs in `0..gpus`.
    pub(crate) free: u32,
    /// Whether a spot lease or a stopping lease holds one of its GPUs.
    pub(crate) reclaimable: bool,
}

/// A provider's online nodes of one model at one ask. Ordered so that a range
/// over one model walks its pools from the cheapest ask up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PoolKey {
    pub(crate) model: GpuModel,
    pub(crate) ask: PricePerGpuHour,
    pub(crate) provider: ProviderId,
}

impl PoolKey {
    fn of(e: &IndexEntry) -> PoolKey {
        PoolKey { model: e.model, ask: e.ask, provider: e.provider }
    }
}

/// Nodes by free-GPU count, then ask, then id. A search for `g` GPUs ranges
/// over the buckets `g..`, and the first entry of a bucket is its cheapest
/// node, so the best node is found in one lookup per bucket.
pub(crate) type Buckets = BTreeMap<u32, BTreeSet<(PricePerGpuHour, NodeId)>>;

/// Online nodes with at least one free GPU. A clearing round works on its own
/// copy and updates it as it places.
#[derive(Debug, Clone, Default)]
pub(crate) struct FreeIndex {
    pub(crate) by_model: BTreeMap<GpuModel, Buckets>,
    pub(crate) by_pool: BTreeMap<PoolKey, Buckets>,
}

impl FreeIndex {
    /// Adds a node with `free` free GPUs (nothing if none are free).
    pub(crate) fn insert(&mut self, id: NodeId, e: &IndexEntry, free: u32) {
        if free == 0 {
            return;
        }
        let key = (e.ask, id);
        self.by_model.entry(e.model).or_default().entry(free).or_default().insert(key);
        self.by_pool.entry(PoolKey::of(e)).or_default().entry(free).or_default().insert(key);
    }

    /// Removes a node that was inserted with `free` free GPUs.
    pub(crate) fn remove(&mut self, id: NodeId, e: &IndexEntry, free: u32) {
        if free == 0 {
            return;
        }
        let key = (e.ask, id);
        remove_bucketed(&mut self.by_model, e.model, free, key);
        remove_bucketed(&mut self.by_pool, PoolKey::of(e), free, key);
    }
}

/// Removes an entry, dropping emptied sets and maps so that ranges never walk empties.
fn remove_bucketed<K: Ord + Copy>(map: &mut BTreeMap<K, Buckets>, k: K, free: u32, key: (PricePerGpuHour, NodeId)) {
    let buckets = map.get_mut(&k).expect("indexed node has its buckets");
    let set = buckets.get_mut(&free).expect("indexed node has its bucket");
    assert!(set.remove(&key), "indexed node is in its bucket");
    if set.is_empty() {
        buckets.remove(&free);
        if buckets.is_empty() {
            map.remove(&k);
        }
    }
}

/// Facts about one model's online nodes, whatever their free GPUs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelNodes {
    /// All online nodes of the model, cheapest first.
    pub(crate) by_ask: BTreeSet<(PricePerGpuHour, NodeId)>,
    /// Node GPU counts as a multiset: the largest node is the last key.
    pub(crate) sizes: BTreeMap<u32, u64>,
    /// Nodes of each pool (ask, provider), for gang preemption.
    pub(crate) pools: BTreeMap<(PricePerGpuHour, ProviderId), BTreeSet<NodeId>>,
    /// Nodes holding a spot or stopping lease, cheapest first: the only nodes
    /// where preemption can find GPUs.
    pub(crate) reclaimable: BTreeSet<(PricePerGpuHour, NodeId)>,
    pub(crate) gpus_total: u64,
    pub(crate) gpus_free: u64,
}

/// Every index of the market.
#[derive(Debug, Clone, Default)]
pub(crate) struct Indexes {
    pub(crate) free: FreeIndex,
    /// Only models with at least one online node have an entry.
    pub(crate) models: BTreeMap<GpuModel, ModelNodes>,
}

impl Indexes {
    pub(crate) fn insert(&mut self, id: NodeId, e: &IndexEntry) {
        self.free.insert(id, e, e.free);
        let m = self.models.entry(e.model).or_default();
        m.by_ask.insert((e.ask, id));
        *m.sizes.entry(e.gpus).or_insert(0) += 1;
        m.pools.entry((e.ask, e.provider)).or_default().insert(id);
        if e.reclaimable {
            m.reclaimable.insert((e.ask, id));
        }
        m.gpus_total += u64::from(e.gpus);
        m.gpus_free += u64::from(e.free);
    }

    pub(crate) fn remove(&mut self, id: NodeId, e: &IndexEntry) {
        self.free.remove(id, e, e.free);
        let m = self.models.get_mut(&e.model).expect("indexed model exists");
        assert!(m.by_ask.remove(&(e.ask, id)), "indexed node is listed by ask");
        let size = m.sizes.get_mut(&e.gpus).expect("indexed node size is counted");
        *size -= 1;
        if *size == 0 {
            m.sizes.remove(&e.gpus);
        }
        let pool = m.pools.get_mut(&(e.ask, e.provider)).expect("indexed node has its pool");
        pool.remove(&id);
        if pool.is_empty() {
            m.pools.remove(&(e.ask, e.provider));
        }
        if e.reclaimable {
            assert!(m.reclaimable.remove(&(e.ask, id)), "reclaimable node is listed");
        }
        m.gpus_total -= u64::from(e.gpus);
        m.gpus_free -= u64::from(e.free);
        if m.by_ask.is_empty() {
            self.models.remove(&e.model);
        }
    }

    pub(crate) fn ask_summaries(&self) -> BTreeMap<GpuModel, AskSummary> {
        self.models
            .iter()
            .map(|(model, m)| {
                let min = m.by_ask.first().expect("indexed models have nodes").0;
                let max = m.by_ask.last().expect("indexed models have nodes").0;
                let summary = AskSummary {
                    min,
                    max,
                    nodes: m.by_ask.len() as u64,
                    gpus_total: m.gpus_total,
                    gpus_free: m.gpus_free,
                };
                (*model, summary)
            })
            .collect()
    }
}
