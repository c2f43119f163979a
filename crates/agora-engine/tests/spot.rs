//! The spot clearing price: floor when plentiful, the marginal accepted bid
//! when scarce, per model and region; which running spot leases it outbids;
//! properties over random markets; and its cost on a fleet-sized market.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use agora_engine::market::{Allocation, Market, NodeSpec, OrderSpec, Placement, SiteSpec};
use agora_engine::spot::{SpotClass, SpotQuote, below_spot_price, spot_class, spot_quotes};
use agora_types::{
    AgentId, DomainId, GpuModel, JobId, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId, RegionId,
    SiteId, TenantId, Tier,
};
use proptest::prelude::*;

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).unwrap())
}

fn h100() -> GpuModel {
    GpuModel::resolve("h100").unwrap()
}

/// Sites 1 and 2 are in `east`, the others in `west`.
fn region(site: SiteId) -> &'static str {
    if site.0 <= 2 { "east" } else { "west" }
}

const EAST: RegionId = RegionId(1);
const WEST: RegionId = RegionId(2);

fn site_in(id: u64, region: RegionId) -> SiteSpec {
    SiteSpec {
        id: SiteId(id),
        provider: ProviderId(1),
        power_budget_w: None,
        node_overhead_w: 0,
        orbital: false,
        region: Some(region),
    }
}

/// A market whose sites 0–63 are in the regions [`region`] names.
fn market() -> Market {
    let mut m = Market::new();
    for id in 0..64 {
        m.upsert_site(site_in(id, if region(SiteId(id)) == "east" { EAST } else { WEST }));
    }
    m
}

/// A class with its region's name.
fn named((model, region): SpotClass) -> (GpuModel, &'static str) {
    let name = match region {
        Some(EAST) => "east",
        Some(WEST) => "west",
        other => panic!("no region {other:?} in these tests"),
    };
    (model, name)
}

fn node_at(id: u64, model: GpuModel, gpus: u32, ask: &str, site: u64) -> NodeSpec {
    NodeSpec {
        id: NodeId(id),
        provider: ProviderId(1),
        agent: AgentId(1),
        model,
        gpus,
        ask: price(ask),
        site: SiteId(site),
        domain: DomainId(1),
    }
}

fn node(id: u64, gpus: u32, ask: &str) -> NodeSpec {
    node_at(id, h100(), gpus, ask, 1)
}

fn order(id: u64, tier: Tier, bid: &str, gpus: u32) -> OrderSpec {
    OrderSpec {
        id: OrderId(id),
        job: JobId(id),
        tenant: TenantId(1),
        tier,
        max_price: price(bid),
        models: Vec::new(),
        min_vram_mib: 0,
        nodes: 1,
        gpus_per_node: gpus,
        duration_estimate_s: None,
        checkpointable: false,
        max_latency_ms: None,
    }
}

/// Starts lease `id` on the lowest free GPUs of each `(node, gpus)`, as if a
/// round had placed an order of that tier and bid there.
fn run(m: &mut Market, id: u64, tier: Tier, bid: &str, on: &[(u64, u32)]) {
    let allocations = on
        .iter()
        .map(|&(n, gpus)| {
            let owners = m.node(NodeId(n)).unwrap().gpu_owners();
            let gpu_indices: Vec<u32> = (0..owners.len() as u32)
                .filter(|&g| owners[g as usize].is_none())
                .take(gpus as usize)
                .collect();
            assert_eq!(gpu_indices.len(), gpus as usize, "node {n} has room");
            Allocation {
                node: NodeId(n),
                gpu_indices,
            }
        })
        .collect();
    let placement = Placement {
        order: OrderId(1_000_000 + id),
        tenant: TenantId(1),
        bid: price(bid),
        provider: ProviderId(1),
        price: m.node(NodeId(on[0].0)).unwrap().spec().ask,
        allocations,
        reserved: Vec::new(),
        ends_at: None,
        gang: None,
    };
    m.start_lease(LeaseId(id), tier, &placement);
}

fn quotes(m: &Market) -> BTreeMap<(GpuModel, &'static str), SpotQuote> {
    spot_quotes(m).into_iter().map(|(class, q)| (named(class), q)).collect()
}

fn east(m: &Market) -> SpotQuote {
    quotes(m)[&(h100(), "east")]
}

fn below(m: &Market) -> Vec<u64> {
    below_spot_price(m, &spot_quotes(m)).into_iter().map(|l| l.0).collect()
}

#[test]
fn plentiful_class_prices_at_the_floor() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.50"));
    m.upsert_node(node(2, 8, "1.00"));
    run(&mut m, 1, Tier::Spot, "3.00", &[(1, 4)]);
    m.add_order(order(1, Tier::Spot, "2.00", 8));
    let q = east(&m);
    assert_eq!(
        q,
        SpotQuote {
            price: price("1.00"),
            floor: price("1.00"),
            supply_gpus: 16,
            demand_gpus: 12,
            scarce: false,
            rationed_above: None,
        }
    );
    assert!(below(&m).is_empty());
}

#[test]
fn scarce_class_prices_at_the_marginal_accepted_bid() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.00"));
    run(&mut m, 1, Tier::Spot, "1.50", &[(1, 4)]);
    run(&mut m, 2, Tier::Spot, "1.20", &[(1, 4)]);
    m.add_order(order(1, Tier::Spot, "2.00", 4));
    // Ranked 2.00 (order), 1.50 (lease 1), 1.20 (lease 2): the first two fill the 8 GPUs.
    let q = east(&m);
    assert!(q.scarce);
    assert_eq!((q.supply_gpus, q.demand_gpus), (8, 12));
    assert_eq!(q.price, price("1.50"));
    assert_eq!(q.rationed_above, None);
    assert_eq!(below(&m), vec![2]);
}

/// A node named before its site is priced without a region until the site
/// is upserted; a site moved to another region takes its nodes (and the GPUs
/// leases hold on them) along.
#[test]
fn a_site_moved_to_another_region_takes_its_nodes_along() {
    let mut m = Market::new();
    m.upsert_node(node_at(1, h100(), 8, "1.00", 7));
    m.upsert_node(node_at(2, h100(), 4, "2.00", 8));
    m.upsert_site(site_in(8, WEST));
    let supply = |m: &Market| -> Vec<(Option<RegionId>, String, u64)> {
        spot_quotes(m)
            .into_iter()
            .map(|((_, region), q)| (region, q.floor.to_string(), q.supply_gpus))
            .collect()
    };
    let (one, two) = (price("1.00").to_string(), price("2.00").to_string());
    assert_eq!(supply(&m), [(None, one.clone(), 8), (Some(WEST), two.clone(), 4)]);
    m.upsert_site(site_in(7, WEST));
    assert_eq!(supply(&m), [(Some(WEST), one.clone(), 12)]);
    run(&mut m, 1, Tier::OnDemand, "3.00", &[(1, 3)]);
    assert_eq!(supply(&m), [(Some(WEST), one.clone(), 9)]);
    m.upsert_site(site_in(7, EAST));
    assert_eq!(supply(&m), [(Some(EAST), one, 5), (Some(WEST), two, 4)]);
}

#[test]
fn two_regions_of_one_model_are_priced_apart() {
    let mut m = market();
    m.upsert_node(node_at(1, h100(), 8, "1.00", 1));
    m.upsert_node(node_at(2, h100(), 8, "1.00", 2));
    m.upsert_node(node_at(3, h100(), 8, "0.80", 3));
    run(&mut m, 1, Tier::Spot, "1.10", &[(1, 8)]);
    run(&mut m, 2, Tier::Spot, "1.20", &[(2, 8)]);
    run(&mut m, 3, Tier::Spot, "1.10", &[(3, 8)]);
    // Only east accepts it: west's floor is lower, but the order needs 16 GPUs and west has 8.
    m.add_order(order(1, Tier::Spot, "2.50", 16));
    let all = quotes(&m);
    assert_eq!(all.len(), 2);
    let (east, west) = (all[&(h100(), "east")], all[&(h100(), "west")]);
    assert_eq!(
        (east.price, east.demand_gpus, east.supply_gpus),
        (price("2.50"), 32, 16)
    );
    assert_eq!((west.price, west.scarce), (price("0.80"), false));
    assert_eq!(below(&m), vec![1, 2], "the west lease bids above its own price");
}

#[test]
fn stopping_and_on_demand_leases_are_never_listed() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.00"));
    run(&mut m, 1, Tier::Spot, "1.10", &[(1, 2)]);
    run(&mut m, 2, Tier::Spot, "1.10", &[(1, 2)]);
    run(&mut m, 3, Tier::OnDemand, "1.10", &[(1, 2)]);
    m.add_order(order(1, Tier::Spot, "3.00", 6));
    assert_eq!(east(&m).price, price("3.00"));
    assert_eq!(below(&m), vec![1, 2]);
    m.mark_stopping(LeaseId(1));
    // Lease 1's 2 GPUs now count only as supply: demand 2 + 6 = 8 > 6 still.
    let q = east(&m);
    assert_eq!((q.supply_gpus, q.demand_gpus, q.price), (6, 8, price("3.00")));
    assert_eq!(below(&m), vec![2]);
}

#[test]
fn supply_excludes_gpus_of_on_demand_and_reserved_leases() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.00"));
    run(&mut m, 1, Tier::OnDemand, "1.00", &[(1, 4)]);
    run(&mut m, 2, Tier::Reserved, "1.00", &[(1, 2)]);
    m.add_order(order(1, Tier::Spot, "1.40", 2));
    let q = east(&m);
    assert_eq!((q.supply_gpus, q.demand_gpus, q.price), (2, 2, price("1.00")));
    // A stopping on-demand lease still holds its GPUs.
    m.mark_stopping(LeaseId(1));
    m.add_order(order(2, Tier::Spot, "1.30", 2));
    let q = east(&m);
    assert_eq!((q.supply_gpus, q.demand_gpus, q.scarce), (2, 4, true));
    assert_eq!(q.price, price("1.40"));
}

#[test]
fn offline_nodes_count_in_neither_floor_nor_supply() {
    let mut m = market();
    m.upsert_node(node(1, 8, "2.00"));
    m.upsert_node(node(2, 8, "1.00"));
    m.upsert_node(node_at(3, h100(), 8, "1.00", 3));
    run(&mut m, 1, Tier::Spot, "2.50", &[(2, 4)]);
    m.set_node_online(NodeId(2), false);
    m.set_node_online(NodeId(3), false);
    let all = quotes(&m);
    assert!(
        !all.contains_key(&(h100(), "west")),
        "a class with no online node has no quote"
    );
    let q = all[&(h100(), "east")];
    // The lease on the offline node weighs nothing: its GPUs are not in the supply.
    assert_eq!((q.floor, q.supply_gpus, q.demand_gpus), (price("2.00"), 8, 0));
    assert!(below(&m).is_empty());
}

/// Regression: with the price at the lowest accepted bid and "below" strict,
/// incumbents tied at that bid all stayed, and the higher bidder never ran.
#[test]
fn equal_bids_do_not_stall_a_higher_spot_bidder() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.00"));
    run(&mut m, 1, Tier::Spot, "2.00", &[(1, 4)]);
    run(&mut m, 2, Tier::Spot, "2.00", &[(1, 4)]);
    m.add_order(order(1, Tier::Spot, "3.00", 4));
    let q = east(&m);
    assert_eq!((q.price, q.rationed_above), (price("2.00"), Some(LeaseId(1))));
    assert_eq!(below(&m), vec![2], "the newer of the tied leases makes way");
}

#[test]
fn an_incumbent_keeps_its_gpus_against_an_equal_newcomer() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.00"));
    run(&mut m, 1, Tier::Spot, "2.00", &[(1, 8)]);
    m.add_order(order(1, Tier::Spot, "2.00", 8));
    let q = east(&m);
    assert!(q.scarce);
    assert_eq!((q.price, q.rationed_above), (price("2.00"), None));
    assert!(below(&m).is_empty());
}

#[test]
fn an_order_larger_than_the_class_claims_nothing_there() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.00"));
    run(&mut m, 1, Tier::Spot, "1.10", &[(1, 8)]);
    let mut gang = order(1, Tier::Spot, "9.00", 8);
    gang.nodes = 2;
    m.add_order(gang);
    let q = east(&m);
    assert_eq!((q.demand_gpus, q.price), (8, price("1.00")));
    assert!(below(&m).is_empty());
}

#[test]
fn orders_bidding_under_the_floor_add_no_demand() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.00"));
    run(&mut m, 1, Tier::Spot, "1.10", &[(1, 8)]);
    m.add_order(order(1, Tier::Spot, "0.90", 8));
    let q = east(&m);
    assert_eq!((q.demand_gpus, q.scarce), (8, false));
}

#[test]
fn a_lease_bidding_under_a_raised_floor_is_outbid_even_when_plentiful() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.00"));
    run(&mut m, 1, Tier::Spot, "1.50", &[(1, 2)]);
    m.upsert_node(node(1, 8, "2.00"));
    let q = east(&m);
    assert_eq!((q.price, q.scarce), (price("2.00"), false));
    assert_eq!(below(&m), vec![1]);
}

#[test]
fn a_marginal_bid_under_the_floor_prices_at_the_floor() {
    let mut m = market();
    m.upsert_node(node(1, 8, "1.00"));
    run(&mut m, 1, Tier::Spot, "1.50", &[(1, 4)]);
    run(&mut m, 2, Tier::Spot, "1.00", &[(1, 2)]);
    m.upsert_node(node(1, 8, "2.00"));
    m.add_order(order(1, Tier::Spot, "2.50", 4));
    // Ranked 2.50, 1.50, 1.00: the first two fill the 8 GPUs, but 1.50 is under the ask.
    let q = east(&m);
    assert_eq!((q.scarce, q.price), (true, price("2.00")));
    assert_eq!(below(&m), vec![1, 2]);
}

#[test]
fn a_multi_model_order_is_counted_in_every_class_it_could_use() {
    let mut m = market();
    let a100 = GpuModel::resolve("a100-80gb").unwrap();
    let l4 = GpuModel::resolve("l4").unwrap();
    m.upsert_node(node_at(1, h100(), 8, "2.00", 1));
    m.upsert_node(node_at(2, a100, 8, "1.00", 1));
    m.upsert_node(node_at(3, l4, 8, "0.50", 1));
    let mut o = order(1, Tier::Spot, "3.00", 4);
    // Any model with 40 GB or more: the L4 (24 GB) cannot serve it.
    o.min_vram_mib = 40_000;
    m.add_order(o);
    let all = quotes(&m);
    assert_eq!(all[&(h100(), "east")].demand_gpus, 4);
    assert_eq!(all[&(a100, "east")].demand_gpus, 4);
    assert_eq!(all[&(l4, "east")].demand_gpus, 0);
}

#[test]
fn a_gang_lease_is_priced_in_the_class_of_its_first_node() {
    let mut m = market();
    m.upsert_node(node_at(1, h100(), 8, "1.00", 3));
    m.upsert_node(node_at(2, h100(), 8, "1.00", 1));
    run(&mut m, 1, Tier::Spot, "1.20", &[(1, 8), (2, 8)]);
    let lease = m.lease(LeaseId(1)).unwrap();
    assert_eq!(spot_class(&m, lease).map(named), Some((h100(), "west")));
    let all = quotes(&m);
    assert_eq!(all[&(h100(), "west")].demand_gpus, 8);
    assert_eq!(all[&(h100(), "east")].demand_gpus, 0);
}

// ---- properties ----

const MODELS: [&str; 2] = ["H100-80GB-SXM", "A100-40GB"];
const ASKS: [i128; 3] = [1_000_000, 1_500_000, 2_000_000];
const BIDS: [i128; 5] = [500_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000];

#[derive(Debug, Clone)]
struct NodeGen {
    model: usize,
    gpus: u32,
    ask: usize,
    site: u64,
}

#[derive(Debug, Clone)]
struct OrderGen {
    tier: u8,
    bid: usize,
    models: u8,
    nodes: u32,
    gpus_per_node: u32,
}

#[derive(Debug, Clone)]
struct MarketGen {
    nodes: Vec<NodeGen>,
    /// Placed by a round and started; then some leases stop, some nodes go offline or reprice.
    placed: Vec<OrderGen>,
    pending: Vec<OrderGen>,
    stopping: u64,
    offline: u64,
    reprice: Vec<(usize, usize)>,
}

fn order_gen() -> impl Strategy<Value = OrderGen> {
    (
        0u8..4,
        0..BIDS.len(),
        0u8..4,
        prop_oneof![4 => Just(1u32), 1 => 2u32..=3],
        1u32..=8,
    )
        .prop_map(|(tier, bid, models, nodes, gpus_per_node)| OrderGen {
            tier,
            bid,
            models,
            nodes,
            gpus_per_node,
        })
}

fn market_gen() -> impl Strategy<Value = MarketGen> {
    (
        prop::collection::vec(
            (
                0..MODELS.len(),
                prop_oneof![Just(8u32), 1u32..=8],
                0..ASKS.len(),
                1u64..=4,
            )
                .prop_map(|(model, gpus, ask, site)| NodeGen { model, gpus, ask, site }),
            1..10,
        ),
        prop::collection::vec(order_gen(), 0..20),
        prop::collection::vec(order_gen(), 0..20),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec((0usize..10, 0..ASKS.len()), 0..3),
    )
        .prop_map(|(nodes, placed, pending, stopping, offline, reprice)| MarketGen {
            nodes,
            placed,
            pending,
            stopping,
            // Most nodes stay online.
            offline: offline & (offline >> 3),
            reprice,
        })
}

fn node_spec(i: usize, g: &NodeGen) -> NodeSpec {
    NodeSpec {
        id: NodeId(i as u64 + 1),
        provider: ProviderId(1),
        agent: AgentId(1),
        model: GpuModel::resolve(MODELS[g.model]).unwrap(),
        gpus: g.gpus,
        ask: PricePerGpuHour(Micros(ASKS[g.ask])),
        site: SiteId(g.site),
        domain: DomainId(1),
    }
}

fn order_spec(id: u64, g: &OrderGen) -> OrderSpec {
    OrderSpec {
        id: OrderId(id),
        job: JobId(id),
        tenant: TenantId(1),
        // Mostly spot, so that classes get scarce.
        tier: if g.tier == 0 { Tier::OnDemand } else { Tier::Spot },
        max_price: PricePerGpuHour(Micros(BIDS[g.bid])),
        models: (0..MODELS.len())
            .filter(|i| g.models & (1 << i) != 0)
            .map(|i| GpuModel::resolve(MODELS[i]).unwrap())
            .collect(),
        min_vram_mib: 0,
        nodes: g.nodes,
        gpus_per_node: g.gpus_per_node,
        duration_estimate_s: None,
        checkpointable: false,
        max_latency_ms: None,
    }
}

fn build(g: &MarketGen) -> Market {
    let mut m = market();
    for (i, n) in g.nodes.iter().enumerate() {
        m.upsert_node(node_spec(i, n));
    }
    for (i, o) in g.placed.iter().enumerate() {
        m.add_order(order_spec(i as u64 + 1, o));
    }
    let plan = m.clear();
    for (i, p) in plan.placements.iter().enumerate() {
        let tier = m.order(p.order).unwrap().tier;
        m.start_lease(LeaseId(i as u64 + 1), tier, p);
    }
    // Unplaced orders of the first round stay pending.
    let ids: Vec<LeaseId> = m.leases().map(|l| l.id).collect();
    for (i, id) in ids.into_iter().enumerate() {
        if g.stopping & (1 << (i % 64)) != 0 && i % 3 == 0 {
            m.mark_stopping(id);
        }
    }
    for i in 0..g.nodes.len() {
        if g.offline & (1 << i) != 0 {
            m.set_node_online(NodeId(i as u64 + 1), false);
        }
    }
    for &(i, ask) in &g.reprice {
        if let Some(n) = g.nodes.get(i) {
            let mut spec = node_spec(i, n);
            spec.ask = PricePerGpuHour(Micros(ASKS[ask]));
            m.upsert_node(spec);
        }
    }
    for (i, o) in g.pending.iter().enumerate() {
        m.add_order(order_spec(1_000 + i as u64, o));
    }
    m
}

/// The GPUs a lease holds on online nodes of a class, counted GPU by GPU from the nodes' owners.
fn held_in(m: &Market, lease: LeaseId, class: &(GpuModel, &'static str)) -> u64 {
    m.nodes()
        .filter(|n| n.online() && (n.spec().model, region(n.spec().site)) == *class)
        .map(|n| {
            n.gpu_owners()[..n.spec().gpus as usize]
                .iter()
                .filter(|o| **o == Some(lease))
                .count() as u64
        })
        .sum()
}

/// The price rule as the module documentation states it, the plain way: every
/// claim in one list, sorted, and the longest prefix that fits.
fn ranked_price(
    floor: PricePerGpuHour,
    supply: u64,
    incumbents: &[(LeaseId, PricePerGpuHour, u64)],
    pending: &[(PricePerGpuHour, u64, OrderId)],
) -> (PricePerGpuHour, Option<LeaseId>) {
    // (bid, 0 for a lease or 1 for an order, id, GPUs)
    let mut claims: Vec<(PricePerGpuHour, u8, u64, u64)> = incumbents
        .iter()
        .map(|&(id, bid, gpus)| (bid, 0, id.0, gpus))
        .chain(pending.iter().map(|&(bid, gpus, id)| (bid, 1, id.0, gpus)))
        .collect();
    claims.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut used = 0;
    let mut accepted = 0;
    while accepted < claims.len() && used + claims[accepted].3 <= supply {
        used += claims[accepted].3;
        accepted += 1;
    }
    let last = claims[accepted - 1];
    if last.0 < floor {
        return (floor, None);
    }
    let next = claims[accepted];
    let rationed = (last.1 == 0 && next.1 == 0 && next.0 == last.0).then_some(LeaseId(last.2));
    (last.0, rationed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_price_clears_every_class(g in market_gen()) {
        let m = build(&g);
        let quotes = quotes(&m);
        prop_assert_eq!(&spot_quotes(&m), &spot_quotes(&m.clone()), "same market, same quotes");
        let below: BTreeSet<LeaseId> = below_spot_price(&m, &spot_quotes(&m)).into_iter().collect();

        // Classes recomputed GPU by GPU: online GPUs, floor, and non-spot GPUs.
        let mut expected: BTreeMap<(GpuModel, &'static str), (PricePerGpuHour, u64)> = BTreeMap::new();
        for n in m.nodes().filter(|n| n.online()) {
            let s = n.spec();
            let non_spot = n.gpu_owners()[..s.gpus as usize]
                .iter()
                .flatten()
                .filter(|l| m.lease(**l).unwrap().tier != Tier::Spot)
                .count() as u64;
            let e = expected.entry((s.model, region(s.site))).or_insert((s.ask, 0));
            e.0 = e.0.min(s.ask);
            e.1 += u64::from(s.gpus) - non_spot;
        }
        prop_assert_eq!(quotes.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());

        for (class, q) in &quotes {
            let (floor, supply) = expected[class];
            prop_assert_eq!((q.floor, q.supply_gpus), (floor, supply), "class {:?}", class);
            prop_assert!(q.price >= q.floor);
            prop_assert_eq!(q.scarce, q.demand_gpus > q.supply_gpus);
            if !q.scarce {
                prop_assert_eq!(q.price, q.floor);
                prop_assert_eq!(q.rationed_above, None);
            }

            let incumbents: Vec<(LeaseId, PricePerGpuHour, u64)> = m
                .leases()
                .filter(|l| l.tier == Tier::Spot && !l.stopping)
                .filter(|l| spot_class(&m, l).map(named).as_ref() == Some(class))
                .map(|l| (l.id, l.bid, held_in(&m, l.id, class)))
                .collect();
            let pending: Vec<(PricePerGpuHour, u64, OrderId)> = m
                .pending_orders()
                .filter(|o| o.tier == Tier::Spot && o.accepts(class.0) && o.max_price >= floor)
                .filter(|o| o.gpus_total() <= supply)
                .map(|o| (o.max_price, o.gpus_total(), o.id))
                .collect();
            let demand: u64 = incumbents.iter().map(|i| i.2).sum::<u64>() + pending.iter().map(|p| p.1).sum::<u64>();
            prop_assert_eq!(q.demand_gpus, demand);

            if q.scarce {
                prop_assert_eq!((q.price, q.rationed_above), ranked_price(floor, supply, &incumbents, &pending));
            }

            // The leases that stay and the orders bidding above the price fit in the supply.
            let kept: u64 = incumbents.iter().filter(|i| !below.contains(&i.0)).map(|i| i.2).sum();
            let above: u64 = pending.iter().filter(|p| p.0 > q.price).map(|p| p.1).sum();
            prop_assert!(kept + above <= supply, "kept {} + above {} > supply {}", kept, above, supply);

            // Outbid means under the price, or at it and rationed.
            for &(id, bid, _) in &incumbents {
                prop_assert_eq!(below.contains(&id), bid < q.price || (bid == q.price && q.rationed_above.is_some_and(|r| id > r)));
            }
            if q.scarce && q.price > q.floor {
                let bid_of_a_claim = incumbents.iter().any(|i| i.1 == q.price) || pending.iter().any(|p| p.0 == q.price);
                prop_assert!(bid_of_a_claim, "price {} is nobody's bid", q.price);
            }
        }
        for id in &below {
            let l = m.lease(*id).unwrap();
            prop_assert!(l.tier == Tier::Spot && !l.stopping);
        }
    }
}

// ---- cost ----

/// Not a benchmark: it prints the time of one round's quotes on a market of
/// the size the server runs every round, and checks the outcome is sane.
#[test]
fn quotes_a_fleet_sized_market_in_one_pass() {
    let models: Vec<GpuModel> = ["H100-80GB-SXM", "A100-80GB", "A100-40GB", "L40S"]
        .iter()
        .map(|n| GpuModel::resolve(n).unwrap())
        .collect();
    let mut m = market();
    let nodes = 30_000u64;
    for i in 0..nodes {
        m.upsert_node(NodeSpec {
            id: NodeId(i + 1),
            provider: ProviderId(i % 50 + 1),
            agent: AgentId(i + 1),
            model: models[(i % 4) as usize],
            gpus: 8,
            ask: PricePerGpuHour(Micros(1_000_000 + (i % 7) as i128 * 100_000)),
            // 40 sites in 5 regions.
            site: SiteId(i % 40 + 1),
            domain: DomainId(i % 16),
        });
    }
    // 20,000 leases of 4 GPUs: on every third node two spot leases, on every
    // fifth one an on-demand lease.
    let mut lease = 0u64;
    for n in 0..nodes {
        let ask = m.node(NodeId(n + 1)).unwrap().spec().ask;
        let tiers: &[Tier] = match n {
            n if n % 3 == 0 => &[Tier::Spot, Tier::Spot],
            n if n % 5 == 0 => &[Tier::OnDemand],
            _ => &[],
        };
        for (k, &tier) in tiers.iter().enumerate() {
            lease += 1;
            let placement = Placement {
                order: OrderId(10_000_000 + lease),
                tenant: TenantId(lease % 100 + 1),
                bid: PricePerGpuHour(Micros(1_000_000 + (lease % 23) as i128 * 100_000)),
                provider: ProviderId(n % 50 + 1),
                price: ask,
                allocations: vec![Allocation {
                    node: NodeId(n + 1),
                    gpu_indices: (k as u32 * 4..k as u32 * 4 + 4).collect(),
                }],
                reserved: Vec::new(),
                ends_at: None,
                gang: None,
            };
            m.start_lease(LeaseId(lease), tier, &placement);
        }
    }
    for i in 0..50_000u64 {
        let mut o = order(i + 1, if i % 4 == 0 { Tier::OnDemand } else { Tier::Spot }, "1.00", 8);
        o.max_price = PricePerGpuHour(Micros(800_000 + (i % 29) as i128 * 100_000));
        o.models = match i % 3 {
            0 => Vec::new(),
            1 => vec![models[(i % 4) as usize]],
            _ => vec![models[0], models[1]],
        };
        o.nodes = if i % 10 == 0 { 4 } else { 1 };
        m.add_order(o);
    }
    for id in 1..=40 {
        m.upsert_site(site_in(id, RegionId(id % 5 + 1)));
    }

    let started = Instant::now();
    let quotes = spot_quotes(&m);
    let quoted = started.elapsed();
    let below = below_spot_price(&m, &quotes);
    let listed = started.elapsed() - quoted;
    println!(
        "spot on {nodes} nodes, {lease} leases, 50000 orders: spot_quotes {quoted:?}, below_spot_price {listed:?}; \
         {} classes, {} scarce, {} leases outbid",
        quotes.len(),
        quotes.values().filter(|q| q.scarce).count(),
        below.len()
    );
    assert_eq!(quotes.len(), 20, "4 models × 5 regions");
    assert!(
        quotes.values().all(|q| q.scarce && q.price >= q.floor),
        "50,000 orders outnumber the fleet"
    );
    assert!(!below.is_empty() && below.windows(2).all(|w| w[0] < w[1]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Without spot leases or spot orders (the quotes then skip the leases):
    /// each class's quote is its floor, its supply the free GPUs of its online
    /// nodes counted GPU by GPU, and nothing is outbid.
    #[test]
    fn without_spot_work_every_quote_is_the_floor(mut g in market_gen()) {
        for o in g.placed.iter_mut().chain(g.pending.iter_mut()) {
            o.tier = 0;
        }
        let m = build(&g);
        prop_assert!(!m.has_spot_work());
        let quotes = quotes(&m);
        let mut expected: BTreeMap<(GpuModel, &'static str), (PricePerGpuHour, u64)> = BTreeMap::new();
        for n in m.nodes().filter(|n| n.online()) {
            let s = n.spec();
            let free = n.gpu_owners()[..s.gpus as usize].iter().filter(|o| o.is_none()).count() as u64;
            let e = expected.entry((s.model, region(s.site))).or_insert((s.ask, 0));
            e.0 = e.0.min(s.ask);
            e.1 += free;
        }
        prop_assert_eq!(quotes.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        for (class, q) in &quotes {
            let (floor, supply) = expected[class];
            prop_assert_eq!((q.price, q.floor, q.supply_gpus, q.demand_gpus), (floor, floor, supply, 0));
            prop_assert!(!q.scarce && q.rationed_above.is_none());
        }
        prop_assert!(below_spot_price(&m, &spot_quotes(&m)).is_empty());
    }
}
