//! Hash maps and sets keyed by the market's integer ids, for lookups that no
//! output ever iterates: a round's per-node and per-lease bookkeeping and the
//! market's id → entry maps. A B-tree lookup among 30,000 nodes walks four or
//! five nodes of the tree, each a cache miss; a hash lookup is about one.
//!
//! Composite keys (a round's memory of failed search shapes) hash their
//! integer fields one after the other with the same round.
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

    // The integers of composite keys (a round's search shapes, prices) each
    // take one round too, rather than one per byte.
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }

    fn write_i128(&mut self, n: i128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

/// A hash map keyed by an id or by a small composite key; see the module documentation.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A hash set of ids; see the module documentation.
pub(crate) type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;
