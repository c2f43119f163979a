//! The market's indexes of online nodes: nodes bucketed by free GPUs by model
//! (what single-node placement searches) and by reclaimable capacity by model
//! and by pool (what preemption searches); free whole nodes by pool,
//! node size and fabric domain (what gang placement searches); and per-model
//! facts (asks, node sizes, totals) that the unplaced reasons and the market
//! summary read.
//!
//! Each node contributes one [`IndexEntry`]; the market removes the old entry
//! and inserts the new one whenever a node changes, so the indexes never need
//! rebuilding.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use agora_types::{DomainId, GpuModel, NodeId, PricePerGpuHour, ProviderId, RegionId, SiteId};

use super::AskSummary;

/// What one online node contributes to the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) model: GpuModel,
    pub(crate) ask: PricePerGpuHour,
    pub(crate) provider: ProviderId,
    pub(crate) site: SiteId,
    /// The site's region (None: unknown), which spot prices are quoted by.
    pub(crate) region: Option<RegionId>,
    pub(crate) domain: DomainId,
    pub(crate) gpus: u32,
    /// Free GPUs in `0..gpus`.
    pub(crate) free: u32,
    /// GPUs in `0..gpus` held by spot leases or by leases already stopping:
    /// what an on-demand order could get back through preemption.
    pub(crate) reclaimable: u32,
    /// Some lease holds a GPU, possibly beyond `gpus` on a shrunk node: the node
    /// is not whole, and a new lease adds no site overhead.
    pub(crate) busy: bool,
}

impl IndexEntry {
    /// Whether a gang may take the node: nothing runs on it.
    pub(crate) fn whole(&self) -> bool {
        !self.busy
    }

    /// Whether both entries sit under the same keys wherever they count or
    /// not: everything but free, reclaimable and busy is equal.
    pub(crate) fn same_place(&self, other: &IndexEntry) -> bool {
        (
            self.model,
            self.ask,
            self.provider,
            self.site,
            self.region,
            self.domain,
            self.gpus,
        ) == (
            other.model,
            other.ask,
            other.provider,
            other.site,
            other.region,
            other.domain,
            other.gpus,
        )
    }

    /// The key of the node in the reclaim index, if it has anything to reclaim.
    pub(crate) fn capacity(&self) -> Option<u32> {
        (self.reclaimable > 0).then_some(self.free + self.reclaimable)
    }
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
    pub(crate) fn of(e: &IndexEntry) -> PoolKey {
        PoolKey {
            model: e.model,
            ask: e.ask,
            provider: e.provider,
        }
    }
}

/// A node in a bucket: ask first, so the first entry is the cheapest node; then
/// site, so that the nodes of a site without power are one contiguous run that
/// a search skips with one lookup.
pub(crate) type BucketKey = (PricePerGpuHour, SiteId, NodeId);

/// Nodes by a GPU count, then [`BucketKey`]. A search for `g` GPUs ranges over
/// the buckets `g..`, and the first entry of a bucket is its cheapest node, so
/// the best node is one lookup per bucket.
pub(crate) type Buckets = BTreeMap<u32, BTreeSet<BucketKey>>;

/// Online nodes bucketed by one GPU count, by model: what a single-node
/// search reads. A clearing round reads it through a copy-on-write view (see
/// `view.rs`) that copies only the buckets it changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelIndex {
    pub(crate) by_model: BTreeMap<GpuModel, Buckets>,
}

impl ModelIndex {
    /// Adds a node under `count` (nothing for zero: it has nothing to offer).
    pub(crate) fn insert(&mut self, id: NodeId, e: &IndexEntry, count: u32) {
        if count > 0 {
            insert_bucketed(&mut self.by_model, e.model, count, (e.ask, e.site, id));
        }
    }

    /// Removes a node that was inserted under `count`.
    pub(crate) fn remove(&mut self, id: NodeId, e: &IndexEntry, count: u32) {
        if count > 0 {
            remove_bucketed(&mut self.by_model, e.model, count, (e.ask, e.site, id));
        }
    }

    /// Moves a node from `before` to `after`.
    pub(crate) fn update(&mut self, id: NodeId, e: &IndexEntry, before: u32, after: u32) {
        if before != after {
            self.remove(id, e, before);
            self.insert(id, e, after);
        }
    }
}

/// Online nodes bucketed by one GPU count (reclaimable capacity), by model
/// and by pool: a gang's preemption search walks pools.
#[derive(Debug, Clone, Default)]
pub(crate) struct BucketIndex {
    pub(crate) by_model: ModelIndex,
    pub(crate) by_pool: BTreeMap<PoolKey, Buckets>,
}

impl BucketIndex {
    /// Adds a node under `count` (nothing for zero: it has nothing to offer).
    pub(crate) fn insert(&mut self, id: NodeId, e: &IndexEntry, count: u32) {
        if count > 0 {
            self.by_model.insert(id, e, count);
            insert_bucketed(&mut self.by_pool, PoolKey::of(e), count, (e.ask, e.site, id));
        }
    }

    /// Removes a node that was inserted under `count`.
    pub(crate) fn remove(&mut self, id: NodeId, e: &IndexEntry, count: u32) {
        if count > 0 {
            self.by_model.remove(id, e, count);
            remove_bucketed(&mut self.by_pool, PoolKey::of(e), count, (e.ask, e.site, id));
        }
    }
}

fn insert_bucketed<K: Ord + Copy>(map: &mut BTreeMap<K, Buckets>, k: K, count: u32, key: BucketKey) {
    map.entry(k).or_default().entry(count).or_default().insert(key);
}

/// Removes an entry, dropping emptied sets and maps so that ranges never walk empties.
fn remove_bucketed<K: Ord + Copy>(map: &mut BTreeMap<K, Buckets>, k: K, count: u32, key: BucketKey) {
    let buckets = map.get_mut(&k).expect("indexed node has its buckets");
    let set = buckets.get_mut(&count).expect("indexed node has its bucket");
    assert!(set.remove(&key), "indexed node is in its bucket");
    if set.is_empty() {
        buckets.remove(&count);
        if buckets.is_empty() {
            map.remove(&k);
        }
    }
}

/// The pool a gang searches: a provider's nodes of one model, one size and one
/// ask. Ordered so that a range over one model and size walks asks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GangPoolKey {
    pub(crate) model: GpuModel,
    pub(crate) gpus: u32,
    pub(crate) ask: PricePerGpuHour,
    pub(crate) provider: ProviderId,
}

impl GangPoolKey {
    pub(crate) fn of(e: &IndexEntry) -> GangPoolKey {
        GangPoolKey {
            model: e.model,
            gpus: e.gpus,
            ask: e.ask,
            provider: e.provider,
        }
    }
}

/// A fabric domain inside a pool: a domain lies in one site.
pub(crate) type DomainKey = (SiteId, DomainId);

/// The free whole nodes of one [`GangPoolKey`], by fabric domain.
#[derive(Debug, Clone, Default)]
pub(crate) struct WholeNodes {
    /// Each domain's set is shared between copies until one changes it: a
    /// round copies a pool on its first change (see `view.rs`), and a pool
    /// of 27,500 nodes then costs a copy of its few hundred domain handles,
    /// not of every node id.
    pub(crate) by_domain: BTreeMap<DomainKey, Arc<BTreeSet<NodeId>>>,
    /// `(free whole nodes, site, domain)` of every domain with one: the best
    /// fit for `n` nodes is the first entry from `(n, ..)`, the emptiest domain
    /// the last.
    pub(crate) by_count: BTreeSet<(u32, SiteId, DomainId)>,
    pub(crate) total: u32,
}

/// Free whole nodes (online, nothing running) for gangs.
#[derive(Debug, Clone, Default)]
pub(crate) struct WholeIndex {
    pub(crate) pools: BTreeMap<GangPoolKey, WholeNodes>,
    /// The pools with at least two free whole nodes, the only ones a gang can
    /// use: a fleet of many one-node providers adds nothing to a gang's walk.
    pub(crate) gang_pools: BTreeSet<GangPoolKey>,
    /// Free whole nodes by model and size, then ask, for the unplaced reasons.
    pub(crate) by_ask: BTreeMap<(GpuModel, u32), BTreeMap<PricePerGpuHour, u32>>,
}

impl WholeIndex {
    pub(crate) fn insert(&mut self, id: NodeId, e: &IndexEntry) {
        let key = GangPoolKey::of(e);
        let pool = self.pools.entry(key).or_default();
        let domain = Arc::make_mut(pool.by_domain.entry((e.site, e.domain)).or_default());
        let before = domain.len() as u32;
        assert!(domain.insert(id), "node {id} is indexed whole once");
        if before > 0 {
            pool.by_count.remove(&(before, e.site, e.domain));
        }
        pool.by_count.insert((before + 1, e.site, e.domain));
        pool.total += 1;
        if pool.total == 2 {
            self.gang_pools.insert(key);
        }
        *self
            .by_ask
            .entry((e.model, e.gpus))
            .or_default()
            .entry(e.ask)
            .or_insert(0) += 1;
    }

    pub(crate) fn remove(&mut self, id: NodeId, e: &IndexEntry) {
        let key = GangPoolKey::of(e);
        let pool = self.pools.get_mut(&key).expect("whole node has its pool");
        pool.remove(id, e);
        if pool.total == 1 {
            self.gang_pools.remove(&key);
        } else if pool.total == 0 {
            self.pools.remove(&key);
        }
        uncount_ask(&mut self.by_ask, e);
    }
}

impl WholeNodes {
    /// Removes a free whole node of this pool.
    pub(crate) fn remove(&mut self, id: NodeId, e: &IndexEntry) {
        let domain = Arc::make_mut(
            self.by_domain
                .get_mut(&(e.site, e.domain))
                .expect("whole node has its domain"),
        );
        assert!(domain.remove(&id), "whole node {id} is in its domain");
        let after = domain.len() as u32;
        assert!(self.by_count.remove(&(after + 1, e.site, e.domain)));
        if after > 0 {
            self.by_count.insert((after, e.site, e.domain));
        } else {
            self.by_domain.remove(&(e.site, e.domain));
        }
        self.total -= 1;
    }
}

/// Takes a free whole node out of [`WholeIndex::by_ask`].
pub(crate) fn uncount_ask(by_ask: &mut BTreeMap<(GpuModel, u32), BTreeMap<PricePerGpuHour, u32>>, e: &IndexEntry) {
    let asks = by_ask.get_mut(&(e.model, e.gpus)).expect("whole node is counted");
    let count = asks.get_mut(&e.ask).expect("whole node is counted at its ask");
    *count -= 1;
    if *count == 0 {
        asks.remove(&e.ask);
        if asks.is_empty() {
            by_ask.remove(&(e.model, e.gpus));
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
    pub(crate) gpus_total: u64,
    pub(crate) gpus_free: u64,
    /// The model's online nodes region by region: what spot quotes read
    /// every round, without walking the nodes.
    pub(crate) by_region: BTreeMap<Option<RegionId>, ClassTally>,
}

/// The online nodes of one model in one region (a spot class).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClassTally {
    /// The nodes' asks as a multiset: the floor is the first key.
    asks: BTreeMap<PricePerGpuHour, u32>,
    pub(crate) gpus_total: u64,
    pub(crate) gpus_free: u64,
}

impl ClassTally {
    pub(crate) fn floor(&self) -> PricePerGpuHour {
        *self.asks.keys().next().expect("a tallied class has a node")
    }
}

/// Every index of the market.
#[derive(Debug, Clone, Default)]
pub(crate) struct Indexes {
    /// Keyed by free GPUs; nodes with none are absent. By model only: no
    /// search walks free GPUs by pool (gangs read the whole-node index).
    pub(crate) free: ModelIndex,
    /// Keyed by free + reclaimable GPUs; only nodes with reclaimable GPUs.
    pub(crate) reclaim: BucketIndex,
    /// Only nodes with nothing running.
    pub(crate) whole: WholeIndex,
    /// Only models with at least one online node have an entry.
    pub(crate) models: BTreeMap<GpuModel, ModelNodes>,
}

impl Indexes {
    pub(crate) fn insert(&mut self, id: NodeId, e: &IndexEntry) {
        self.free.insert(id, e, e.free);
        if let Some(capacity) = e.capacity() {
            self.reclaim.insert(id, e, capacity);
        }
        if e.whole() {
            self.whole.insert(id, e);
        }
        let m = self.models.entry(e.model).or_default();
        m.by_ask.insert((e.ask, id));
        *m.sizes.entry(e.gpus).or_insert(0) += 1;
        m.gpus_total += u64::from(e.gpus);
        m.gpus_free += u64::from(e.free);
        let class = m.by_region.entry(e.region).or_default();
        *class.asks.entry(e.ask).or_insert(0) += 1;
        class.gpus_total += u64::from(e.gpus);
        class.gpus_free += u64::from(e.free);
    }

    pub(crate) fn remove(&mut self, id: NodeId, e: &IndexEntry) {
        self.free.remove(id, e, e.free);
        if let Some(capacity) = e.capacity() {
            self.reclaim.remove(id, e, capacity);
        }
        if e.whole() {
            self.whole.remove(id, e);
        }
        let m = self.models.get_mut(&e.model).expect("indexed model exists");
        assert!(m.by_ask.remove(&(e.ask, id)), "indexed node is listed by ask");
        let size = m.sizes.get_mut(&e.gpus).expect("indexed node size is counted");
        *size -= 1;
        if *size == 0 {
            m.sizes.remove(&e.gpus);
        }
        m.gpus_total -= u64::from(e.gpus);
        m.gpus_free -= u64::from(e.free);
        let class = m.by_region.get_mut(&e.region).expect("indexed node's class is tallied");
        let asks = class.asks.get_mut(&e.ask).expect("indexed node's ask is tallied");
        *asks -= 1;
        if *asks == 0 {
            class.asks.remove(&e.ask);
        }
        class.gpus_total -= u64::from(e.gpus);
        class.gpus_free -= u64::from(e.free);
        if class.asks.is_empty() {
            m.by_region.remove(&e.region);
        }
        if m.by_ask.is_empty() {
            self.models.remove(&e.model);
        }
    }

    /// Replaces a node's entry (None: not indexed), touching only the indexes
    /// whose keys changed: a lease starting or ending on a node changes its
    /// free and reclaimable GPUs, not its model, ask or place.
    pub(crate) fn update(&mut self, id: NodeId, old: Option<&IndexEntry>, new: Option<&IndexEntry>) {
        match (old, new) {
            (Some(old), Some(new)) if old.same_place(new) => {
                self.free.update(id, new, old.free, new.free);
                if old.capacity() != new.capacity() {
                    if let Some(capacity) = old.capacity() {
                        self.reclaim.remove(id, old, capacity);
                    }
                    if let Some(capacity) = new.capacity() {
                        self.reclaim.insert(id, new, capacity);
                    }
                }
                match (old.whole(), new.whole()) {
                    (true, false) => self.whole.remove(id, old),
                    (false, true) => self.whole.insert(id, new),
                    _ => {}
                }
                let m = self.models.get_mut(&new.model).expect("indexed model exists");
                m.gpus_free = m.gpus_free - u64::from(old.free) + u64::from(new.free);
                if old.free != new.free {
                    let class = m
                        .by_region
                        .get_mut(&new.region)
                        .expect("indexed node's class is tallied");
                    class.gpus_free = class.gpus_free - u64::from(old.free) + u64::from(new.free);
                }
            }
            _ => {
                if let Some(old) = old {
                    self.remove(id, old);
                }
                if let Some(new) = new {
                    self.insert(id, new);
                }
            }
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

#[cfg(test)]
mod tests {
    use agora_types::Micros;
    use proptest::prelude::*;

    use super::*;

    /// An entry for node `i` of a small fleet: `place` picks the model, ask, site and domain.
    fn entry(place: u8, gpus: u32, free: u32, reclaimable: u32, busy: bool) -> IndexEntry {
        let models: Vec<GpuModel> = GpuModel::all().take(2).collect();
        IndexEntry {
            model: models[usize::from(place % 2)],
            ask: PricePerGpuHour(Micros(i128::from(place / 2 % 2) * 1_000_000)),
            provider: ProviderId(1),
            site: SiteId(u64::from(place / 4 % 2)),
            region: Some(RegionId(u64::from(place / 4 % 2))),
            domain: DomainId(1),
            gpus,
            free: free.min(gpus),
            reclaimable: reclaimable.min(gpus - free.min(gpus)),
            busy: busy || free < gpus,
        }
    }

    fn entry_gen() -> impl Strategy<Value = Option<IndexEntry>> {
        prop::option::weighted(
            0.9,
            (0u8..8, 1u32..9, 0u32..9, 0u32..9, any::<bool>())
                .prop_map(|(place, gpus, free, reclaimable, busy)| entry(place, gpus, free, reclaimable, busy)),
        )
    }

    proptest! {
        /// Updating a node's entry in place leaves the same indexes as removing
        /// the old entry and inserting the new one.
        #[test]
        fn update_matches_remove_then_insert(steps in prop::collection::vec((0u64..4, entry_gen()), 1..40)) {
            let mut updated = Indexes::default();
            let mut rebuilt = Indexes::default();
            let mut current: BTreeMap<NodeId, IndexEntry> = BTreeMap::new();
            for (node, new) in steps {
                let id = NodeId(node);
                let old = current.get(&id).copied();
                updated.update(id, old.as_ref(), new.as_ref());
                if let Some(old) = old {
                    rebuilt.remove(id, &old);
                }
                if let Some(new) = new {
                    rebuilt.insert(id, &new);
                    current.insert(id, new);
                } else {
                    current.remove(&id);
                }
                prop_assert_eq!(format!("{updated:?}"), format!("{rebuilt:?}"));
            }
        }
    }
}
