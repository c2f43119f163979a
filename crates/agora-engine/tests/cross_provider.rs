//! Gangs that span providers: only when the order opts in, only when no
//! single pool holds the gang, and only across regions pairwise within the
//! order's latency bound.

use std::collections::BTreeMap;

use agora_engine::market::{Market, NodeSpec, OrderSpec, Placement, SiteSpec, Unplaced};
use agora_types::{
    AgentId, DomainId, GpuModel, JobId, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId, RegionId,
    SiteId, TenantId, Tier,
};
use proptest::prelude::*;

const WEST: RegionId = RegionId(1);
const CENTRAL: RegionId = RegionId(2);
const EAST: RegionId = RegionId(3);

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).unwrap())
}

fn h100() -> GpuModel {
    GpuModel::resolve("h100").unwrap()
}

/// Provider `p` runs one site (id `p`) in `region` with `nodes` whole 8-GPU
/// H100 nodes at `ask`, numbered from `p * 100`.
fn provider(m: &mut Market, p: u64, region: Option<RegionId>, nodes: u64, ask: &str) {
    m.upsert_site(SiteSpec {
        id: SiteId(p),
        provider: ProviderId(p),
        power_budget_w: None,
        node_overhead_w: 0,
        orbital: false,
        region,
    });
    for i in 0..nodes {
        m.upsert_node(NodeSpec {
            id: NodeId(p * 100 + i),
            provider: ProviderId(p),
            agent: AgentId(p),
            model: h100(),
            gpus: 8,
            ask: price(ask),
            site: SiteId(p),
            domain: DomainId(1),
        });
    }
}

fn gang(id: u64, nodes: u32, max_latency_ms: Option<u32>) -> OrderSpec {
    OrderSpec {
        id: OrderId(id),
        job: JobId(id),
        tenant: TenantId(1),
        tier: Tier::OnDemand,
        max_price: price("5.00"),
        models: Vec::new(),
        min_vram_mib: 0,
        nodes,
        gpus_per_node: 8,
        duration_estimate_s: None,
        checkpointable: false,
        max_latency_ms,
    }
}

/// West and central are 10 ms apart; east is 70 ms from central, 80 from west.
fn europe_and_us() -> Market {
    let mut m = Market::new();
    m.set_latency([(WEST, CENTRAL, 10), (CENTRAL, EAST, 70), (EAST, WEST, 80)]);
    provider(&mut m, 1, Some(WEST), 2, "2.00");
    provider(&mut m, 2, Some(CENTRAL), 2, "2.50");
    provider(&mut m, 3, Some(EAST), 3, "1.00");
    m
}

fn nodes_of(p: &Placement) -> Vec<u64> {
    p.allocations.iter().map(|a| a.node.0).collect()
}

#[test]
fn a_gang_no_provider_holds_spans_providers_within_the_bound() {
    let mut m = europe_and_us();
    m.add_order(gang(1, 4, Some(20)));
    let plan = m.clear();
    assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
    let parts = &plan.placements;
    assert_eq!(parts.len(), 2, "{parts:?}");
    // East is cheapest but 80 ms from west and 70 from central: the gang is west + central.
    assert_eq!((parts[0].provider, parts[0].price), (ProviderId(1), price("2.00")));
    assert_eq!((parts[1].provider, parts[1].price), (ProviderId(2), price("2.50")));
    assert_eq!(nodes_of(&parts[0]), [100, 101]);
    assert_eq!(nodes_of(&parts[1]), [200, 201]);
    for (i, p) in parts.iter().enumerate() {
        let g = p.gang.expect("each part knows its gang");
        assert_eq!((g.index, g.parts, g.first_rank), (i as u32, 2, 2 * i as u32));
        assert_eq!((g.nodes, g.gpus_total), (4, 32));
        assert!(
            p.allocations
                .iter()
                .all(|a| a.gpu_indices == (0..8).collect::<Vec<u32>>())
        );
    }
    // Each part is its own lease; the order stops being pending with the first.
    m.start_lease(LeaseId(1), Tier::OnDemand, &parts[0]);
    m.start_lease(LeaseId(2), Tier::OnDemand, &parts[1]);
    assert_eq!(m.pending_orders().count(), 0);
    assert_eq!(
        m.lease(LeaseId(2)).unwrap().lost_gpus(),
        32,
        "preempting a part loses the whole gang"
    );
}

#[test]
fn a_wider_bound_buys_the_cheaper_set() {
    let mut m = europe_and_us();
    m.add_order(gang(1, 4, Some(100)));
    let plan = m.clear();
    let parts: Vec<(ProviderId, Vec<u64>)> = plan.placements.iter().map(|p| (p.provider, nodes_of(p))).collect();
    // Three nodes at 1.00 in the east and one at 2.00 in the west: 5.00 per GPU-hour of nodes, the least.
    assert_eq!(
        parts,
        [(ProviderId(3), vec![300, 301, 302]), (ProviderId(1), vec![100])]
    );
    assert_eq!(plan.placements[1].gang.unwrap().first_rank, 3);
}

#[test]
fn without_the_opt_in_a_gang_stays_in_one_pool() {
    let mut m = europe_and_us();
    m.add_order(gang(1, 4, None));
    let plan = m.clear();
    assert!(plan.placements.is_empty());
    assert!(
        matches!(plan.unplaced[&OrderId(1)], Unplaced::GangSplit { .. }),
        "{:?}",
        plan.unplaced
    );
}

#[test]
fn one_pool_comes_first_even_when_dearer() {
    let mut m = Market::new();
    m.set_latency([(WEST, CENTRAL, 10)]);
    provider(&mut m, 1, Some(WEST), 4, "3.00");
    provider(&mut m, 2, Some(WEST), 2, "1.00");
    provider(&mut m, 3, Some(CENTRAL), 2, "1.00");
    m.add_order(gang(1, 4, Some(20)));
    let plan = m.clear();
    assert_eq!(plan.placements.len(), 1, "{:?}", plan.placements);
    assert_eq!(plan.placements[0].provider, ProviderId(1));
    assert_eq!(plan.placements[0].gang, None);
}

#[test]
fn every_two_regions_must_be_within_the_bound() {
    // A–B and B–C are 10 ms, A–C is 30: with a 15 ms bound no gang takes A and C.
    let (a, b, c) = (RegionId(1), RegionId(2), RegionId(3));
    let mut m = Market::new();
    m.set_latency([(a, b, 10), (b, c, 10), (a, c, 30)]);
    provider(&mut m, 1, Some(a), 2, "1.00");
    provider(&mut m, 2, Some(b), 2, "1.00");
    provider(&mut m, 3, Some(c), 2, "1.00");
    m.add_order(gang(1, 6, Some(15)));
    let plan = m.clear();
    assert!(plan.placements.is_empty(), "{:?}", plan.placements);
    let reason = &plan.unplaced[&OrderId(1)];
    assert_eq!(
        *reason,
        Unplaced::LatencyBound {
            demand: agora_engine::market::Demand::of(&gang(1, 6, Some(15))),
            max_latency_ms: 15,
            nodes_with_room: 6,
            most_within_bound: 4,
        }
    );
    assert!(
        reason
            .to_string()
            .ends_with("6 free at that price across providers but at most 4 in regions within 15 ms of each other"),
        "{reason}"
    );

    m.add_order(gang(1, 6, Some(30)));
    let plan = m.clear();
    assert_eq!(plan.placements.len(), 3, "{:?}", plan.unplaced);
}

#[test]
fn sites_without_a_region_or_a_known_latency_never_pair() {
    let mut m = Market::new();
    m.set_latency([(WEST, CENTRAL, 10)]);
    provider(&mut m, 1, Some(WEST), 2, "1.00");
    provider(&mut m, 2, None, 2, "1.00");
    provider(&mut m, 3, Some(EAST), 2, "1.00");
    m.add_order(gang(1, 4, Some(1000)));
    let plan = m.clear();
    assert!(plan.placements.is_empty(), "{:?}", plan.placements);
    assert!(matches!(
        plan.unplaced[&OrderId(1)],
        Unplaced::LatencyBound {
            most_within_bound: 2,
            ..
        }
    ));
    // The same region is 0 ms from itself.
    provider(&mut m, 4, Some(WEST), 2, "1.00");
    let plan = m.clear();
    let providers: Vec<ProviderId> = plan.placements.iter().map(|p| p.provider).collect();
    assert_eq!(providers, [ProviderId(1), ProviderId(4)]);
}

#[test]
fn preemption_counts_the_whole_gang_a_part_belongs_to() {
    let mut m = Market::new();
    m.set_latency([(WEST, CENTRAL, 10)]);
    provider(&mut m, 1, Some(WEST), 3, "1.00");
    provider(&mut m, 2, Some(CENTRAL), 2, "1.00");
    // A spot gang over both providers (3 nodes of the first, 1 of the second), then a plain spot node.
    let mut spread = gang(1, 4, Some(20));
    spread.tier = Tier::Spot;
    m.add_order(spread);
    let plan = m.clear();
    assert_eq!(plan.placements.len(), 2, "{:?}", plan.unplaced);
    for (i, p) in plan.placements.iter().enumerate() {
        m.start_lease(LeaseId(1 + i as u64), Tier::Spot, p);
    }
    let mut plain = gang(2, 1, None);
    plain.tier = Tier::Spot;
    m.add_order(plain);
    let plan = m.clear();
    assert_eq!(nodes_of(&plan.placements[0]), [201]);
    m.start_lease(LeaseId(3), Tier::Spot, &plan.placements[0]);
    // An on-demand node: the plain lease loses 8 GPUs of work, any gang part
    // 32 (counted by GPUs on the node alone, the lowest node would go).
    m.add_order(gang(3, 1, None));
    let plan = m.clear();
    let victims: Vec<LeaseId> = plan.preemptions.iter().map(|p| p.lease).collect();
    assert_eq!(victims, [LeaseId(3)]);
}

#[derive(Debug, Clone)]
struct Fleet {
    /// Per provider: region (0 = none), nodes, ask index.
    providers: Vec<(u64, u64, usize)>,
    /// Latency between regions 1..=4, for the pairs below the diagonal.
    latency: [u32; 6],
    /// Gangs: nodes and bound.
    gangs: Vec<(u32, u32)>,
}

fn fleet() -> impl Strategy<Value = Fleet> {
    (
        prop::collection::vec((0u64..=4, 1u64..=3, 0usize..3), 1..10),
        prop::array::uniform6(0u32..60),
        prop::collection::vec((2u32..=8, 1u32..60), 1..6),
    )
        .prop_map(|(providers, latency, gangs)| Fleet {
            providers,
            latency,
            gangs,
        })
}

proptest! {
    /// Whatever the fleet and the bounds: the parts of a split gang hold
    /// exactly its nodes, ranks run through them in order, every two regions
    /// used are within the bound, and no GPU is given twice (`start_lease`
    /// would panic).
    #[test]
    fn split_gangs_respect_their_bound(f in fleet()) {
        let mut m = Market::new();
        let pairs = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)];
        let matrix: BTreeMap<(u64, u64), u32> = pairs.iter().zip(f.latency).map(|(&p, ms)| (p, ms)).collect();
        m.set_latency(matrix.iter().map(|(&(a, b), &ms)| (RegionId(a), RegionId(b), ms)));
        let asks = ["1.00", "2.00", "3.00"];
        for (i, &(region, nodes, ask)) in f.providers.iter().enumerate() {
            provider(&mut m, i as u64 + 1, (region > 0).then_some(RegionId(region)), nodes, asks[ask]);
        }
        let region_of = |node: NodeId| f.providers[(node.0 / 100 - 1) as usize].0;
        for (i, &(nodes, bound)) in f.gangs.iter().enumerate() {
            m.add_order(gang(i as u64 + 1, nodes, Some(bound)));
        }
        let plan = m.clear();
        let mut lease = 0;
        let mut by_order: BTreeMap<OrderId, Vec<&Placement>> = BTreeMap::new();
        for p in &plan.placements {
            by_order.entry(p.order).or_default().push(p);
            lease += 1;
            m.start_lease(LeaseId(lease), Tier::OnDemand, p);
        }
        for (order, parts) in by_order {
            let (nodes, bound) = f.gangs[(order.0 - 1) as usize];
            let all: Vec<NodeId> = parts.iter().flat_map(|p| p.allocations.iter().map(|a| a.node)).collect();
            prop_assert_eq!(all.len() as u32, nodes);
            if parts.len() == 1 {
                prop_assert_eq!(parts[0].gang, None);
                continue;
            }
            let mut rank = 0;
            for (i, p) in parts.iter().enumerate() {
                let g = p.gang.unwrap();
                prop_assert_eq!((g.index, g.parts, g.first_rank, g.nodes), (i as u32, parts.len() as u32, rank, nodes));
                rank += p.allocations.len() as u32;
            }
            let regions: std::collections::BTreeSet<u64> = all.iter().map(|n| region_of(*n)).collect();
            prop_assert!(!regions.contains(&0), "a site without a region took part");
            for &a in &regions {
                for &b in &regions {
                    if a < b {
                        prop_assert!(matrix[&(a, b)] <= bound, "{a}–{b} is {} ms > {bound}", matrix[&(a, b)]);
                    }
                }
            }
        }
    }
}
