//! A clearing round's views of the market's indexes: the round reads the
//! market's indexes as they were and changes only its own copies of the parts
//! it touches. A bucket (one model and GPU count), a reclaim pool or a gang
//! pool is copied on the round's first change to it, so a round that places a
//! few thousand orders copies a few buckets and pools, not the whole indexes
//! (which, with 10,000 one-node providers, are mostly many small pools).
//!
//! A copied gang pool shares its fabric domains' node sets with the market's
//! index until the round changes one (see [`WholeNodes::by_domain`]).
//!
//! Within a round, pools and gang pools only lose nodes (GPUs are taken, never
//! given back), so a view never needs a key the market's index lacks: a pool
//! emptied by the round stays in the view, empty, and readers skip it.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use agora_types::{GpuModel, NodeId, PricePerGpuHour};

use super::index::{
    BucketIndex, BucketKey, Buckets, GangPoolKey, IndexEntry, ModelIndex, PoolKey, WholeIndex, WholeNodes, uncount_ask,
};

/// One model's buckets by GPU count, each copied on first change.
pub(crate) type BucketsView<'m> = BTreeMap<u32, Bucket<'m>>;

/// The nodes of one model with one GPU count, with the cheapest ask among
/// them kept at hand: the unplaced reasons ask "the most free GPUs at this
/// price" once per order, which then reads no tree.
#[derive(Debug)]
pub(crate) struct Bucket<'m> {
    pub(crate) cheapest: PricePerGpuHour,
    pub(crate) nodes: Cow<'m, BTreeSet<BucketKey>>,
}

impl<'m> Bucket<'m> {
    fn of(nodes: Cow<'m, BTreeSet<BucketKey>>) -> Bucket<'m> {
        let cheapest = nodes.first().expect("indexes hold no empty bucket").0;
        Bucket { cheapest, nodes }
    }
}

/// A [`ModelIndex`] as a round sees it.
#[derive(Debug)]
pub(crate) struct ModelView<'m> {
    by_model: BTreeMap<GpuModel, BucketsView<'m>>,
}

impl<'m> ModelView<'m> {
    /// Borrows every bucket: one entry per model and GPU count.
    pub(crate) fn of(index: &'m ModelIndex) -> ModelView<'m> {
        let by_model = index
            .by_model
            .iter()
            .map(|(model, buckets)| {
                let view = buckets
                    .iter()
                    .map(|(count, set)| (*count, Bucket::of(Cow::Borrowed(set))))
                    .collect();
                (*model, view)
            })
            .collect();
        ModelView { by_model }
    }

    pub(crate) fn get(&self, model: &GpuModel) -> Option<&BucketsView<'m>> {
        self.by_model.get(model)
    }

    /// Moves a node from `before` to `after` (zero: not indexed), dropping
    /// emptied buckets so that ranges never walk empties.
    pub(crate) fn update(&mut self, id: NodeId, e: &IndexEntry, before: u32, after: u32) {
        if before == after {
            return;
        }
        let key = (e.ask, e.site, id);
        if before > 0 {
            let buckets = self.by_model.get_mut(&e.model).expect("indexed node has its buckets");
            let bucket = buckets.get_mut(&before).expect("indexed node has its bucket");
            let nodes = bucket.nodes.to_mut();
            assert!(nodes.remove(&key), "indexed node is in its bucket");
            match nodes.first() {
                Some(first) => bucket.cheapest = first.0,
                None => {
                    buckets.remove(&before);
                    if buckets.is_empty() {
                        self.by_model.remove(&e.model);
                    }
                }
            }
        }
        if after > 0 {
            let buckets = self.by_model.entry(e.model).or_default();
            match buckets.get_mut(&after) {
                Some(bucket) => {
                    bucket.nodes.to_mut().insert(key);
                    bucket.cheapest = bucket.cheapest.min(e.ask);
                }
                None => {
                    buckets.insert(after, Bucket::of(Cow::Owned(BTreeSet::from([key]))));
                }
            }
        }
    }
}

/// A [`BucketIndex`] as a round sees it: by model per bucket, by pool per pool.
#[derive(Debug)]
pub(crate) struct BucketView<'m> {
    pub(crate) by_model: ModelView<'m>,
    base_pools: &'m BTreeMap<PoolKey, Buckets>,
    /// Pools the round changed (possibly emptied).
    pools: BTreeMap<PoolKey, Buckets>,
}

impl<'m> BucketView<'m> {
    pub(crate) fn of(index: &'m BucketIndex) -> BucketView<'m> {
        BucketView {
            by_model: ModelView::of(&index.by_model),
            base_pools: &index.by_pool,
            pools: BTreeMap::new(),
        }
    }

    /// The non-empty pools in `range`, in key order.
    pub(crate) fn pools_in(
        &self,
        range: std::ops::RangeInclusive<PoolKey>,
    ) -> impl Iterator<Item = (&PoolKey, &Buckets)> + '_ {
        self.base_pools
            .range(range)
            .map(|(key, base)| (key, self.pools.get(key).unwrap_or(base)))
            .filter(|(_, buckets)| !buckets.is_empty())
    }

    /// Moves a node from `before` to `after` (zero: not indexed).
    pub(crate) fn update(&mut self, id: NodeId, e: &IndexEntry, before: u32, after: u32) {
        if before == after {
            return;
        }
        self.by_model.update(id, e, before, after);
        let pool_key = PoolKey::of(e);
        let base = self.base_pools;
        let buckets = self.pools.entry(pool_key).or_insert_with(|| {
            base.get(&pool_key)
                .cloned()
                .expect("a node the round changes is in its pool")
        });
        let key = (e.ask, e.site, id);
        if before > 0 {
            let set = buckets.get_mut(&before).expect("indexed node has its bucket");
            assert!(set.remove(&key), "indexed node is in its bucket");
            if set.is_empty() {
                buckets.remove(&before);
            }
        }
        if after > 0 {
            buckets.entry(after).or_default().insert(key);
        }
    }
}

/// A [`WholeIndex`] as a round sees it: pools copied on first change.
#[derive(Debug)]
pub(crate) struct WholeView<'m> {
    base: &'m WholeIndex,
    /// Pools the round took nodes from (possibly emptied).
    pools: BTreeMap<GangPoolKey, WholeNodes>,
    pub(crate) gang_pools: Cow<'m, BTreeSet<GangPoolKey>>,
    pub(crate) by_ask: Cow<'m, BTreeMap<(GpuModel, u32), BTreeMap<PricePerGpuHour, u32>>>,
}

impl<'m> WholeView<'m> {
    pub(crate) fn of(index: &'m WholeIndex) -> WholeView<'m> {
        WholeView {
            base: index,
            pools: BTreeMap::new(),
            gang_pools: Cow::Borrowed(&index.gang_pools),
            by_ask: Cow::Borrowed(&index.by_ask),
        }
    }

    /// A pool with at least one free whole node.
    pub(crate) fn pool(&self, key: &GangPoolKey) -> Option<&WholeNodes> {
        match self.pools.get(key) {
            Some(pool) => (pool.total > 0).then_some(pool),
            None => self.base.pools.get(key),
        }
    }

    /// The pools in `range` with at least one free whole node, in key order.
    /// (A round only takes nodes, so every pool it copied is in the market's index.)
    pub(crate) fn pools_in(
        &self,
        range: std::ops::RangeInclusive<GangPoolKey>,
    ) -> impl Iterator<Item = (&GangPoolKey, &WholeNodes)> {
        self.base
            .pools
            .range(range)
            .filter_map(|(key, _)| self.pool(key).map(|pool| (key, pool)))
    }

    /// Takes a free whole node.
    pub(crate) fn remove(&mut self, id: NodeId, e: &IndexEntry) {
        let key = GangPoolKey::of(e);
        let base = self.base;
        match self.pools.entry(key) {
            Entry::Occupied(mut copied) => {
                let pool = copied.get_mut();
                pool.remove(id, e);
                if pool.total == 1 {
                    self.gang_pools.to_mut().remove(&key);
                }
            }
            Entry::Vacant(vacant) => {
                let pool = base.pools.get(&key).expect("whole node has its pool");
                if pool.total == 1 {
                    // A one-node pool (most small providers' are) ends empty:
                    // nothing of it needs copying.
                    vacant.insert(WholeNodes::default());
                } else {
                    let copy = vacant.insert(pool.clone());
                    copy.remove(id, e);
                    if copy.total == 1 {
                        self.gang_pools.to_mut().remove(&key);
                    }
                }
            }
        }
        uncount_ask(self.by_ask.to_mut(), e);
    }
}

#[cfg(test)]
mod tests {
    use agora_types::{DomainId, Micros, ProviderId, SiteId};
    use proptest::prelude::*;

    use super::*;

    /// Node `i` of a small fleet: two models, two asks, two domains, 8 GPUs, all free.
    fn entry(i: u64) -> IndexEntry {
        let models: Vec<GpuModel> = GpuModel::all().take(2).collect();
        IndexEntry {
            model: models[(i % 2) as usize],
            ask: PricePerGpuHour(Micros(i128::from((i / 2 % 2) as u8) * 1_000_000)),
            provider: ProviderId(i / 4 % 2),
            site: SiteId(0),
            region: None,
            domain: DomainId(i / 8 % 2),
            gpus: 8,
            free: 8,
            reclaimable: 0,
            busy: false,
        }
    }

    fn flatten(view: &ModelView<'_>) -> Vec<(GpuModel, u32, PricePerGpuHour, Vec<BucketKey>)> {
        view.by_model
            .iter()
            .flat_map(|(model, buckets)| {
                buckets
                    .iter()
                    .map(|(count, b)| (*model, *count, b.cheapest, b.nodes.iter().copied().collect()))
            })
            .collect()
    }

    proptest! {
        /// Taking GPUs through the views leaves what taking them in a copy of
        /// the market's indexes leaves: the same buckets with their cheapest
        /// asks, and the same free whole nodes.
        #[test]
        fn views_match_a_changed_copy(takes in prop::collection::vec((0u64..16, 1u32..4), 1..40)) {
            let mut free = ModelIndex::default();
            let mut whole = WholeIndex::default();
            for i in 0..16 {
                free.insert(NodeId(i), &entry(i), 8);
                whole.insert(NodeId(i), &entry(i));
            }
            let (mut free_copy, mut whole_copy) = (free.clone(), whole.clone());
            let mut free_view = ModelView::of(&free);
            let mut whole_view = WholeView::of(&whole);
            let mut left = [8u32; 16];
            for (node, g) in takes {
                let e = entry(node);
                let before = left[node as usize];
                let after = before.saturating_sub(g);
                if before == 8 && after < 8 {
                    whole_copy.remove(NodeId(node), &e);
                    whole_view.remove(NodeId(node), &e);
                }
                free_copy.update(NodeId(node), &e, before, after);
                free_view.update(NodeId(node), &e, before, after);
                left[node as usize] = after;
            }
            prop_assert_eq!(flatten(&free_view), flatten(&ModelView::of(&free_copy)));
            prop_assert_eq!(&*whole_view.gang_pools, &whole_copy.gang_pools);
            prop_assert_eq!(&*whole_view.by_ask, &whole_copy.by_ask);
            for i in 0..16 {
                let key = GangPoolKey::of(&entry(i));
                let view_pool = whole_view.pool(&key).map(|p| (p.total, p.by_count.clone(), p.by_domain.clone()));
                let copy_pool = whole_copy.pools.get(&key).map(|p| (p.total, p.by_count.clone(), p.by_domain.clone()));
                prop_assert_eq!(view_pool, copy_pool);
            }
        }
    }
}
