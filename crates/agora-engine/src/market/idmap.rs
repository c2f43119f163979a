//! Hash maps and sets keyed by the market's integer ids, for lookups that no
//! output ever iterates: a round's per-node and per-lease bookkeeping and the
//! market's id → entry maps. A B-tree lookup among 30,000 nodes walks four or
//! five nodes of the tree, each a cache miss; a hash lookup is about one.
//!
//! The hasher is fixed (a SplitMix64 finalizer over the id's integer), so the
//! same calls always build the same tables: nothing here depends on a random
//! seed. Maps of these types must never be iterated where the order reaches
//! an output (plans, reasons, listings): use a `BTreeMap` there.
//!
//! # Performance
//!
//! One multiply-xorshift round per key; no allocation besides the table.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // SplitMix64's finalizer: every input bit reaches the high bits the table reads.
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A hash map keyed by an id; see the module documentation.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A hash set of ids; see the module documentation.
pub(crate) type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;
