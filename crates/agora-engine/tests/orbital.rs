//! Orbital sites take only checkpointable work (their windows are the
//! caller's: it takes their nodes offline outside them).

use agora_engine::market::{Market, NodeSpec, OrderSpec, SiteSpec};
use agora_types::{
    AgentId, DomainId, GpuModel, JobId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId, SiteId, TenantId, Tier,
};

const GROUND: SiteId = SiteId(1);
const ORBIT: SiteId = SiteId(2);

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).unwrap())
}

fn node(id: u64, site: SiteId, ask: &str) -> NodeSpec {
    NodeSpec {
        id: NodeId(id),
        provider: ProviderId(1),
        agent: AgentId(1),
        model: GpuModel::resolve("h100").unwrap(),
        gpus: 8,
        ask: price(ask),
        site,
        domain: DomainId(site.0),
    }
}

fn order(id: u64, nodes: u32, checkpointable: bool) -> OrderSpec {
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
        checkpointable,
        max_latency_ms: None,
    }
}

/// One ground node at 2.00; two cheaper orbital nodes at 1.00.
fn market() -> Market {
    let mut m = Market::new();
    for (id, orbital) in [(GROUND, false), (ORBIT, true)] {
        m.upsert_site(SiteSpec {
            id,
            provider: ProviderId(1),
            power_budget_w: None,
            node_overhead_w: 0,
            orbital,
            region: None,
        });
    }
    m.upsert_node(node(1, GROUND, "2.00"));
    m.upsert_node(node(2, ORBIT, "1.00"));
    m.upsert_node(node(3, ORBIT, "1.00"));
    m
}

#[test]
fn only_checkpointable_work_goes_to_orbit() {
    let mut m = market();
    m.add_order(order(1, 1, false));
    let plan = m.clear();
    assert_eq!(
        plan.placements[0].allocations[0].node,
        NodeId(1),
        "ground, though dearer"
    );

    let mut m = market();
    m.add_order(order(1, 1, true));
    let plan = m.clear();
    assert_eq!(
        plan.placements[0].allocations[0].node,
        NodeId(2),
        "the cheaper orbital node"
    );
}

#[test]
fn a_gang_that_is_not_checkpointable_never_spans_orbit() {
    let mut m = market();
    m.add_order(order(1, 2, false));
    let plan = m.clear();
    assert!(plan.placements.is_empty(), "only one ground node: {plan:?}");

    m.add_order(order(2, 2, true));
    let plan = m.clear();
    let placed = &plan.placements[0];
    assert_eq!(placed.order, OrderId(2));
    let nodes: Vec<NodeId> = placed.allocations.iter().map(|a| a.node).collect();
    assert_eq!(nodes, vec![NodeId(2), NodeId(3)]);
}

#[test]
fn spot_orders_stay_out_of_classes_priced_above_their_bid() {
    use agora_engine::market::RoundInputs;
    use std::collections::BTreeMap;
    let mut m = market();
    let mut o = order(1, 1, true);
    o.tier = Tier::Spot;
    o.max_price = price("3.00");
    m.add_order(o);
    // Orbit's class is priced at 4.00 (scarce), the ground's is not priced.
    let h100 = GpuModel::resolve("h100").unwrap();
    let prices = BTreeMap::from([((ORBIT, h100), price("4.00"))]);
    let inputs = RoundInputs {
        now: None,
        spot_prices: Some(&prices),
    };
    let plan = m.clear_round(inputs, |_| true);
    assert_eq!(
        plan.placements[0].allocations[0].node,
        NodeId(1),
        "not where it would be outbid at once"
    );
    // Without the prices the cheaper orbital node wins.
    assert_eq!(m.clear().placements[0].allocations[0].node, NodeId(2));
}
