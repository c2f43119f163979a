//! Conservative backfill: a blocked gang gets the nodes where it can start
//! earliest, and a smaller order may start on them only if its duration
//! estimate ends before the gang's reserved start.

use agora_engine::market::{Market, NodeSpec, OrderSpec, Unplaced};
use agora_types::{
    AgentId, DomainId, GpuModel, JobId, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId, SiteId,
    TenantId, Tier, UnixMs,
};

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).unwrap())
}

fn node(id: u64) -> NodeSpec {
    NodeSpec {
        id: NodeId(id),
        provider: ProviderId(1),
        agent: AgentId(1),
        model: GpuModel::resolve("h100").unwrap(),
        gpus: 8,
        ask: price("1.00"),
        site: SiteId(1),
        domain: DomainId(1),
    }
}

fn order(id: u64, nodes: u32, gpus_per_node: u32, duration_s: Option<u64>) -> OrderSpec {
    OrderSpec {
        id: OrderId(id),
        job: JobId(id),
        tenant: TenantId(id),
        tier: Tier::OnDemand,
        max_price: price("2.00"),
        models: Vec::new(),
        min_vram_mib: 0,
        nodes,
        gpus_per_node,
        duration_estimate_s: duration_s,
        checkpointable: false,
        max_latency_ms: None,
    }
}

const T0: UnixMs = UnixMs(1_000_000);

fn at(s: i64) -> UnixMs {
    T0.plus_ms(s * 1000)
}

/// Two 8-GPU nodes, each half used: the lease on node 1 is estimated to end at
/// 100 s, the one on node 2 at 200 s.
fn half_used() -> Market {
    let mut m = Market::new();
    m.upsert_node(node(1));
    m.upsert_node(node(2));
    for (lease, secs) in [(1, 100), (2, 200)] {
        m.add_order(order(100 + lease, 1, 4, Some(secs)));
        let plan = m.clear_at(T0, |_| true);
        assert_eq!(plan.placements[0].ends_at, Some(at(secs as i64)));
        m.start_lease(LeaseId(lease), Tier::OnDemand, &plan.placements[0]);
    }
    m
}

#[test]
fn a_blocked_gang_reserves_nodes_and_only_short_work_backfills_them() {
    let mut m = half_used();
    m.add_order(order(1, 2, 8, Some(3600)));
    m.add_order(order(2, 1, 4, Some(500)));
    m.add_order(order(3, 1, 4, None));
    m.add_order(order(4, 1, 4, Some(150)));
    let plan = m.clear_at(T0, |_| true);
    // The gang can start when both nodes are free: at 200 s.
    assert_eq!(
        plan.unplaced[&OrderId(1)],
        Unplaced::ReservedAhead {
            demand: agora_engine::market::Demand::of(&order(1, 2, 8, Some(3600))),
            start_ms: at(200).0,
            starts_in_s: 200,
            nodes: 2
        }
    );
    // Only the order that ends by then (at 150 s) starts; the long and the unestimated ones wait.
    let placed: Vec<OrderId> = plan.placements.iter().map(|p| p.order).collect();
    assert_eq!(placed, vec![OrderId(4)]);
    assert!(
        plan.unplaced[&OrderId(1)]
            .to_string()
            .contains("2 nodes are reserved for it from about 200 s from now"),
        "{}",
        plan.unplaced[&OrderId(1)]
    );
    assert_eq!(plan.placements[0].ends_at, Some(at(150)));
    assert!(plan.unplaced.contains_key(&OrderId(2)));
    assert!(plan.unplaced.contains_key(&OrderId(3)));

    // Without a clock the round is greedy: the long order takes the free GPUs ahead of the gang.
    let plan = m.clear();
    let placed: Vec<OrderId> = plan.placements.iter().map(|p| p.order).collect();
    assert_eq!(placed, vec![OrderId(2), OrderId(3)]);
}

#[test]
fn the_reservation_holds_as_work_ends_and_the_gang_starts_on_time() {
    let mut m = half_used();
    m.add_order(order(1, 2, 8, Some(3600)));
    m.add_order(order(2, 1, 8, Some(10_000)));
    // At 100 s node 1 is free, but a long single-node job may not take it: the gang's start (200 s) would slip.
    m.end_lease(LeaseId(1));
    let plan = m.clear_at(at(100), |_| true);
    assert!(plan.placements.is_empty(), "{plan:?}");
    assert!(matches!(plan.unplaced[&OrderId(1)], Unplaced::ReservedAhead { .. }));
    // At 200 s both nodes are free: the gang starts first.
    m.end_lease(LeaseId(2));
    let plan = m.clear_at(at(200), |_| true);
    let placed: Vec<OrderId> = plan.placements.iter().map(|p| p.order).collect();
    assert_eq!(placed, vec![OrderId(1)]);
}

#[test]
fn work_without_estimates_never_gets_a_reservation() {
    let mut m = Market::new();
    m.upsert_node(node(1));
    m.add_order(order(100, 1, 4, None));
    let plan = m.clear_at(T0, |_| true);
    m.start_lease(LeaseId(1), Tier::OnDemand, &plan.placements[0]);
    m.add_order(order(1, 1, 8, Some(60)));
    let plan = m.clear_at(T0, |_| true);
    assert!(
        matches!(plan.unplaced[&OrderId(1)], Unplaced::NotEnoughFree { .. }),
        "the running lease may never end, so no start can be promised: {:?}",
        plan.unplaced[&OrderId(1)]
    );
}

#[test]
fn a_lease_past_its_estimate_keeps_the_reservation() {
    let mut m = half_used();
    m.add_order(order(1, 2, 8, Some(3600)));
    m.add_order(order(2, 1, 4, None));
    // At 250 s both leases have overrun their estimates, yet still hold their GPUs.
    let plan = m.clear_at(at(250), |_| true);
    assert!(
        matches!(
            plan.unplaced[&OrderId(1)],
            Unplaced::ReservedAhead {
                starts_in_s: 0,
                nodes: 2,
                ..
            }
        ),
        "{:?}",
        plan.unplaced[&OrderId(1)]
    );
    assert!(
        plan.placements.is_empty(),
        "the unestimated order may not take the gang's nodes"
    );
}
