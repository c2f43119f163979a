//! The spot clearing price: one price per class (GPU model, region) each
//! round, and the spot leases it outbids. The server keeps the price history
//! and sends the preemption signals; this module only reads a [`Market`].
//!
//! # Model
//!
//! A *class* ([`SpotClass`]) is (GPU model, region of the node's site, as
//! [`SiteSpec::region`](crate::market::SiteSpec::region) gives it; None for a
//! site without one); a class exists in a round when it has at least one
//! online node.
//!
//! - `floor`: the lowest ask among the class's online nodes.
//! - `supply_gpus`: GPUs `0..gpus` of its online nodes, minus those held by
//!   reserved and on-demand leases (stopping or not: they hold the GPUs until
//!   they end). GPUs held by spot leases count: the auction decides who keeps
//!   them. GPUs of a node that shrank under a lease are never offered again and
//!   do not count anywhere.
//! - Claims on the supply, each with a bid (max price per GPU-hour) and a
//!   weight in GPUs:
//!   - a running, not stopping, spot lease (an *incumbent*) claims its class:
//!     the class of its first allocation's node. Its weight is the GPUs it holds
//!     on online nodes of that class. A gang that spans two regions is priced in
//!     the class of its rank 0 and weighs only its GPUs there; its other GPUs
//!     count in their class's supply but in no demand (a rare shape: a gang is
//!     placed inside one pool).
//!   - a pending spot order claims its `gpus_total()` in *every* class whose
//!     model it accepts ([`OrderSpec::accepts`]: model list and VRAM), whose
//!     floor is within its bid, and whose whole supply could hold it. A
//!     multi-model order is thus counted in each class it could use: an
//!     over-estimate of demand that errs toward a higher price.
//! - `demand_gpus`: the sum of the weights; the class is `scarce` when demand
//!   exceeds supply.
//!
//! # Price
//!
//! Plentiful: the price is the floor. Scarce: claims are ranked by bid, highest
//! first; at equal bids incumbents come before pending orders (a newcomer does
//! not evict an equal bidder), then the lower id (the older lease or order).
//! The *accepted* claims are the longest prefix of that ranking whose GPUs fit
//! in the supply; the price is the lowest bid among them, and never below the
//! floor.
//!
//! A lease is *outbid* ([`SpotQuote::outbids`], listed by [`below_spot_price`])
//! when its bid is below its class's price, or when it bids exactly the price
//! but was ranked after the accepted prefix; [`SpotQuote::rationed_above`]
//! names the last incumbent accepted at that bid. Without that tie rule, a
//! class full of leases that all bid 2.00 would price at 2.00 and keep every
//! lease forever while an order bidding 3.00 waited, since spot orders never
//! preempt in [`Market::clear`]; bids in round figures tie often.
//!
//! Refinements of the first design, each closing a hole:
//! - An order larger than the class's whole supply claims nothing there: it
//!   cannot run in that class whoever is evicted, and would otherwise raise the
//!   price to its bid and evict every lower bidder for nothing.
//! - Incumbents weigh only the GPUs they hold in the class's supply, so they
//!   always fit together, and so does every single claim: the first ranked
//!   claim is always accepted.
//!
//! # Invariants (the property tests check them)
//!
//! - The price and `rationed_above` equal those of the rule above applied the
//!   plain way (one sorted list of every claim), which the test keeps as a model.
//! - `price >= floor`, and `price == floor` whenever `demand_gpus <= supply_gpus`.
//! - The incumbents that are not outbid, plus the pending orders bidding above
//!   the price, fit in the supply: all of them lie in the accepted prefix.
//! - When scarce and above the floor, the price is the bid of a claim of the
//!   class.
//!
//! A lease whose bid is below every ask of its class (the providers raised
//! their asks) is outbid even when capacity is plentiful: no node of the class
//! would take its order now.
//!
//! # Cost
//!
//! The market keeps each class's floor, online and free GPUs as leases start
//! and end, so a round reads one entry per class, not every node; without
//! spot work (no spot lease, no spot order) that is all. With spot work: one
//! pass over the leases (a node and a class lookup per allocation), and one
//! over the pending spot orders (one `accepts` per model and order, then a
//! floor and size check per class of an accepted model). Orders are never ranked one by
//! one: a class keeps their GPUs per bid (and the lowest id at each bid), so a
//! scarce class sorts only its incumbents and its distinct bids. Nothing is
//! quadratic. Measured (`cargo test --release -p agora-engine --test spot
//! quotes_a_fleet -- --nocapture`, on a shared 2-core machine): 30,000 nodes
//! in 20 classes, 24,000 leases and 50,000 pending orders, every class
//! scarce, quote in about 13 ms and list the outbid leases in about 3 ms.
//!
//! Deterministic: classes are kept in a `BTreeMap`, sorts are on total orders,
//! and the result does not depend on the order the market yields orders in; no
//! clock, no RNG.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use agora_types::{GpuModel, LeaseId, NodeId, OrderId, PricePerGpuHour, RegionId, Tier};
use serde::{Deserialize, Serialize};

use crate::market::{Lease, Market, OrderSpec};

/// A GPU model in a region (None: sites without a region).
pub type SpotClass = (GpuModel, Option<RegionId>);

/// One class's spot market in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpotQuote {
    /// The clearing price of the class.
    pub price: PricePerGpuHour,
    /// The lowest ask among the class's online nodes: the price when capacity is plentiful.
    pub floor: PricePerGpuHour,
    /// Online GPUs of the class minus GPUs held by non-spot leases.
    pub supply_gpus: u64,
    /// GPUs of running (not stopping) spot leases of the class plus pending
    /// spot orders that could use it (see the module documentation).
    pub demand_gpus: u64,
    /// `demand_gpus > supply_gpus`.
    pub scarce: bool,
    /// Set when the supply ran out inside a run of incumbents that all bid
    /// exactly `price`: the last of them that was accepted. Running spot leases
    /// of the class bidding exactly `price` with a higher id are outbid too,
    /// so that equal bids do not stall a higher bidder (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationed_above: Option<LeaseId>,
}

impl SpotQuote {
    /// Whether a running spot lease of this class, with this id and bid, must
    /// make way: its bid is below the price, or equal to it and rationed out.
    pub fn outbids(&self, lease: LeaseId, bid: PricePerGpuHour) -> bool {
        bid < self.price || (bid == self.price && self.rationed_above.is_some_and(|last| lease > last))
    }
}

/// The spot quote of every class (GPU model, region) with an online node.
pub fn spot_quotes(market: &Market) -> BTreeMap<SpotClass, SpotQuote> {
    let mut book = Book::new(market);
    if market.has_spot_work() {
        book.add_leases(market);
        book.add_orders(market);
    } else {
        // No spot lease and no spot order: every GPU held is held by non-spot
        // work, the supply is what is free, nothing is demanded, and the
        // price is the floor — without walking the leases.
        for class in &mut book.classes {
            class.supply_gpus = class.free_gpus;
        }
    }
    book.quotes()
}

/// Running, not stopping, spot leases that their class's quote outbids
/// ([`SpotQuote::outbids`]: bid below the price, or at it and rationed out),
/// ascending id. A lease whose class has no quote is not listed.
pub fn below_spot_price(market: &Market, quotes: &BTreeMap<SpotClass, SpotQuote>) -> Vec<LeaseId> {
    if !market.has_spot_leases() {
        return Vec::new();
    }
    market
        .leases()
        .filter(|l| l.tier == Tier::Spot && !l.stopping)
        .filter(|l| {
            spot_class(market, l)
                .and_then(|class| quotes.get(&class))
                .is_some_and(|q| q.outbids(l.id, l.bid))
        })
        .map(|l| l.id)
        .collect()
}

/// The class a lease is priced in: that of its first allocation's node.
pub fn spot_class(market: &Market, lease: &Lease) -> Option<SpotClass> {
    let node = market.node(lease.allocations.first()?.node)?;
    Some((node.spec().model, node.region()))
}

/// A running, not stopping, spot lease's claim on its class.
#[derive(Debug, Clone, Copy)]
struct Incumbent {
    id: LeaseId,
    bid: PricePerGpuHour,
    gpus: u64,
}

/// Pending orders' claims on a class at one bid. Orders are not kept one by
/// one: the ranking needs only each bid's total and, at the bid where the
/// supply runs out, whether the first order (lowest id) still fits.
#[derive(Debug, Clone, Copy)]
struct OrderLevel {
    bid: PricePerGpuHour,
    gpus: u64,
    /// The lowest order id at this bid, and its GPUs.
    first: (OrderId, u64),
}

/// What the ranking last accepted.
#[derive(Debug, Clone, Copy)]
enum Accepted {
    Lease(LeaseId, PricePerGpuHour),
    Order(PricePerGpuHour),
}

/// One class being tallied.
#[derive(Debug, Default)]
struct Class {
    floor: PricePerGpuHour,
    online_gpus: u64,
    /// Free GPUs of online nodes (what the supply is when no spot work exists).
    free_gpus: u64,
    non_spot_gpus: u64,
    /// Set once the leases are tallied, before any order is.
    supply_gpus: u64,
    demand_gpus: u64,
    incumbents: Vec<Incumbent>,
    /// One entry per run of equal bids in the order the orders came; merged and
    /// sorted when the class is quoted, so that no order of the orders is assumed.
    order_levels: Vec<OrderLevel>,
}

impl Class {
    fn set_supply(&mut self) {
        self.supply_gpus = self
            .online_gpus
            .checked_sub(self.non_spot_gpus)
            .expect("non-spot leases hold only GPUs of online nodes counted in the class");
    }

    /// Whether a pending order with this bid and size claims this class.
    fn admits(&self, bid: PricePerGpuHour, gpus: u64) -> bool {
        self.floor <= bid && gpus <= self.supply_gpus
    }

    fn add_order(&mut self, order: &OrderSpec) {
        let (bid, gpus) = (order.max_price, order.gpus_total());
        self.demand_gpus += gpus;
        match self.order_levels.last_mut() {
            Some(level) if level.bid == bid => merge_level(level, gpus, (order.id, gpus)),
            _ => self.order_levels.push(OrderLevel {
                bid,
                gpus,
                first: (order.id, gpus),
            }),
        }
    }

    fn quote(mut self) -> SpotQuote {
        let floor = self.floor;
        let supply_gpus = self.supply_gpus;
        let scarce = self.demand_gpus > supply_gpus;
        let mut quote = SpotQuote {
            price: floor,
            floor,
            supply_gpus,
            demand_gpus: self.demand_gpus,
            scarce,
            rationed_above: None,
        };
        if !scarce {
            return quote;
        }
        // Lease ids are unique, so the unstable sort is deterministic.
        self.incumbents.sort_unstable_by_key(|c| (Reverse(c.bid), c.id));
        self.order_levels.sort_by_key(|l| Reverse(l.bid));
        self.order_levels.dedup_by(|later, kept| {
            let same = later.bid == kept.bid;
            if same {
                merge_level(kept, later.gpus, later.first);
            }
            same
        });
        let (last, rejected_lease) = self.rank();
        let marginal_bid = match last {
            Accepted::Lease(_, bid) | Accepted::Order(bid) => bid,
        };
        if marginal_bid >= floor {
            quote.price = marginal_bid;
            // Incumbents rank before orders at equal bids, so a rejected
            // incumbent at the marginal bid follows an accepted one.
            quote.rationed_above = match (last, rejected_lease) {
                (Accepted::Lease(id, bid), Some(next)) if next == bid => Some(id),
                _ => None,
            };
        }
        quote
    }

    /// Walks the claims in rank order (bid from the highest, incumbents by
    /// id, then orders by id) while they fit in the supply. Returns the last
    /// accepted claim and, when the first rejected one is a lease, its bid.
    fn rank(&self) -> (Accepted, Option<PricePerGpuHour>) {
        let supply = self.supply_gpus;
        let (mut leases, mut levels) = (self.incumbents.iter().peekable(), self.order_levels.iter().peekable());
        let (mut used, mut last) = (0u64, None);
        loop {
            let bid = match (leases.peek(), levels.peek()) {
                (Some(l), Some(o)) => l.bid.max(o.bid),
                (Some(l), None) => l.bid,
                (None, Some(o)) => o.bid,
                (None, None) => panic!("a scarce class's claims do not fit together"),
            };
            while let Some(lease) = leases.next_if(|l| l.bid == bid) {
                if used + lease.gpus > supply {
                    let last = last.expect("every claim fits in the supply alone");
                    return (last, Some(bid));
                }
                used += lease.gpus;
                last = Some(Accepted::Lease(lease.id, bid));
            }
            if let Some(level) = levels.next_if(|o| o.bid == bid) {
                if used + level.gpus > supply {
                    // The supply runs out among these orders: the price is
                    // their bid if the first of them still fits.
                    if used + level.first.1 <= supply {
                        last = Some(Accepted::Order(bid));
                    }
                    return (last.expect("every claim fits in the supply alone"), None);
                }
                used += level.gpus;
                last = Some(Accepted::Order(bid));
            }
        }
    }
}

fn merge_level(level: &mut OrderLevel, gpus: u64, first: (OrderId, u64)) {
    level.gpus += gpus;
    if first.0 < level.first.0 {
        level.first = first;
    }
}

/// The tally of one round: the classes, from the market's tallies.
struct Book {
    index: BTreeMap<SpotClass, usize>,
    classes: Vec<Class>,
    /// Per model, the classes that have an online node, so an order checks
    /// `accepts` once per model rather than once per class.
    by_model: BTreeMap<GpuModel, Vec<usize>>,
}

impl Book {
    fn new(market: &Market) -> Book {
        let mut index = BTreeMap::new();
        let mut classes: Vec<Class> = Vec::new();
        let mut by_model: BTreeMap<GpuModel, Vec<usize>> = BTreeMap::new();
        for (model, region, tally) in market.class_tallies() {
            by_model.entry(model).or_default().push(classes.len());
            index.insert((model, region), classes.len());
            classes.push(Class {
                floor: tally.floor(),
                online_gpus: tally.gpus_total,
                free_gpus: tally.gpus_free,
                ..Class::default()
            });
        }
        Book {
            index,
            classes,
            by_model,
        }
    }

    /// The class of an online node, with its GPU count; None for an offline or unknown node.
    fn node(&self, market: &Market, id: NodeId) -> Option<(usize, u32)> {
        let node = market.node(id).filter(|n| n.online())?;
        let class = self.index.get(&(node.spec().model, node.region()))?;
        Some((*class, node.spec().gpus))
    }

    /// Non-spot leases take GPUs out of the supply; running spot leases become incumbents.
    fn add_leases(&mut self, market: &Market) {
        for lease in market.leases() {
            let spot = lease.tier == Tier::Spot;
            if spot && lease.stopping {
                // Its GPUs are on their way back to the supply.
                continue;
            }
            if lease.allocations.is_empty() {
                continue;
            }
            // The class of the first node, online or not (None: no online
            // node of that model in that region, and so no quote to join).
            let home = spot_class(market, lease).and_then(|class| self.index.get(&class).copied());
            let mut home_gpus = 0;
            for alloc in &lease.allocations {
                let Some((class, gpus)) = self.node(market, alloc.node) else {
                    continue;
                };
                // Indices past a shrunk node's count are never offered again.
                let held = alloc.gpu_indices.iter().filter(|&&g| g < gpus).count() as u64;
                if !spot {
                    self.classes[class].non_spot_gpus += held;
                } else if Some(class) == home {
                    home_gpus += held;
                }
            }
            if let (true, Some(home)) = (spot, home) {
                let class = &mut self.classes[home];
                class.demand_gpus += home_gpus;
                class.incumbents.push(Incumbent {
                    id: lease.id,
                    bid: lease.bid,
                    gpus: home_gpus,
                });
            }
        }
        for class in &mut self.classes {
            class.set_supply();
        }
    }

    /// Adds every pending spot order to each class it claims.
    fn add_orders(&mut self, market: &Market) {
        for order in market.pending_orders().filter(|o| o.tier == Tier::Spot) {
            let gpus = order.gpus_total();
            for (&model, classes) in &self.by_model {
                if !order.accepts(model) {
                    continue;
                }
                for &class in classes {
                    let class = &mut self.classes[class];
                    if class.admits(order.max_price, gpus) {
                        class.add_order(order);
                    }
                }
            }
        }
    }

    fn quotes(self) -> BTreeMap<SpotClass, SpotQuote> {
        // Classes were numbered in the index's own order (model, then region).
        self.index
            .into_keys()
            .zip(self.classes.into_iter().map(Class::quote))
            .collect()
    }
}
