//! The market's mutations step by step: applying plans, preemption to
//! placement across rounds, node changes under leases, and the summaries.

use agora_engine::market::{AskSummary, Market, NodeSpec, OrderSpec, Unplaced};
use agora_types::{
    AgentId, DomainId, GpuModel, JobId, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId, SiteId,
    TenantId, Tier,
};

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).unwrap())
}

fn node(id: u64, model: &str, gpus: u32, ask: &str) -> NodeSpec {
    NodeSpec {
        id: NodeId(id),
        provider: ProviderId(1),
        agent: AgentId(1),
        model: GpuModel::resolve(model).unwrap(),
        gpus,
        ask: price(ask),
        site: SiteId(1),
        domain: DomainId(1),
    }
}

fn order(id: u64, tier: Tier, max: &str, nodes: u32, gpus_per_node: u32) -> OrderSpec {
    OrderSpec {
        id: OrderId(id),
        job: JobId(id),
        tenant: TenantId(1),
        tier,
        max_price: price(max),
        models: Vec::new(),
        min_vram_mib: 0,
        nodes,
        gpus_per_node,
        duration_estimate_s: None,
        checkpointable: false,
        max_latency_ms: None,
    }
}

#[test]
fn preempted_gpus_go_to_the_on_demand_order_once_freed() {
    let mut m = Market::new();
    m.upsert_node(node(1, "h100", 8, "1.00"));
    m.add_order(order(1, Tier::Spot, "2.00", 1, 8));
    let plan = m.clear();
    m.start_lease(LeaseId(1), Tier::Spot, &plan.placements[0]);
    assert_eq!(
        m.pending_orders().count(),
        0,
        "a started lease takes its order out of the pending set"
    );

    m.add_order(order(2, Tier::OnDemand, "1.00", 1, 8));
    let plan = m.clear();
    assert_eq!(plan.preemptions.len(), 1);
    assert_eq!(plan.preemptions[0].lease, LeaseId(1));
    m.mark_stopping(LeaseId(1));

    // While the victim drains, the order waits and nothing new is preempted.
    let plan = m.clear();
    assert!(plan.preemptions.is_empty());
    assert_eq!(
        plan.unplaced[&OrderId(2)],
        Unplaced::WaitingForPreemption {
            leases: vec![LeaseId(1)]
        }
    );

    let ended = m.end_lease(LeaseId(1)).unwrap();
    assert!(ended.stopping);
    assert!(m.end_lease(LeaseId(1)).is_none(), "ending twice is harmless");
    let plan = m.clear();
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.placements[0].order, OrderId(2));
    assert_eq!(
        plan.placements[0].allocations[0].gpu_indices,
        (0..8).collect::<Vec<u32>>()
    );
}

#[test]
fn a_node_keeps_its_leases_when_its_ask_or_size_changes() {
    let mut m = Market::new();
    m.upsert_node(node(1, "h100", 8, "1.00"));
    m.add_order(order(1, Tier::OnDemand, "1.00", 1, 2));
    let plan = m.clear();
    m.start_lease(LeaseId(1), Tier::OnDemand, &plan.placements[0]);
    let mut lease = m.lease(LeaseId(1)).unwrap().clone();
    assert_eq!(lease.allocations[0].gpu_indices, vec![0, 1]);

    // Shrink below the held GPUs: the lease keeps them, the node offers none.
    m.upsert_node(node(1, "h100", 1, "2.00"));
    assert_eq!(m.free_gpus(NodeId(1)), Some(0));
    assert_eq!(
        m.node(NodeId(1)).unwrap().gpu_owners(),
        &[Some(LeaseId(1)), Some(LeaseId(1))]
    );
    lease.allocations = m.lease(LeaseId(1)).unwrap().allocations.clone();
    assert_eq!(lease.allocations[0].gpu_indices, vec![0, 1]);

    m.end_lease(LeaseId(1));
    assert_eq!(
        m.node(NodeId(1)).unwrap().gpu_owners(),
        &[None],
        "the shrunk node forgets GPUs beyond its size"
    );
    m.add_order(order(2, Tier::OnDemand, "2.00", 1, 1));
    let plan = m.clear();
    assert_eq!(plan.placements[0].price, price("2.00"));
}

#[test]
fn offline_removed_and_replaced_orders() {
    let mut m = Market::new();
    m.upsert_node(node(1, "h100", 8, "1.00"));
    assert!(m.set_node_online(NodeId(1), false));
    assert!(!m.set_node_online(NodeId(9), false));
    m.add_order(order(1, Tier::OnDemand, "5.00", 1, 1));
    let plan = m.clear();
    assert!(
        matches!(plan.unplaced[&OrderId(1)], Unplaced::NoMatchingNode { .. }),
        "{:?}",
        plan
    );

    m.set_node_online(NodeId(1), true);
    // Replacing a pending order keeps one entry, with the new spec.
    m.add_order(order(1, Tier::OnDemand, "0.50", 1, 1));
    assert_eq!(m.pending_orders().count(), 1);
    assert!(matches!(
        m.clear().unplaced[&OrderId(1)],
        Unplaced::AskAboveMaxPrice { .. }
    ));
    assert_eq!(m.remove_order(OrderId(1)).map(|o| o.id), Some(OrderId(1)));
    assert!(m.remove_order(OrderId(1)).is_none());
    assert_eq!(m.clear(), Default::default());
}

#[test]
fn asks_by_model_summarises_online_nodes() {
    let mut m = Market::new();
    m.upsert_node(node(1, "h100", 8, "2.00"));
    m.upsert_node(node(2, "h100", 4, "3.00"));
    m.upsert_node(node(3, "h100", 8, "0.10"));
    m.upsert_node(node(4, "a100", 8, "1.00"));
    m.set_node_online(NodeId(3), false);
    m.add_order(order(1, Tier::OnDemand, "5.00", 1, 3));
    let plan = m.clear();
    m.start_lease(LeaseId(1), Tier::OnDemand, &plan.placements[0]);

    let asks = m.asks_by_model();
    let h100 = GpuModel::resolve("h100").unwrap();
    let a100 = GpuModel::resolve("a100").unwrap();
    assert_eq!(asks.keys().copied().collect::<Vec<_>>(), {
        let mut k = vec![h100, a100];
        k.sort();
        k
    });
    assert_eq!(
        asks[&h100],
        AskSummary {
            min: price("2.00"),
            max: price("3.00"),
            nodes: 2,
            gpus_total: 12,
            gpus_free: 12
        }
    );
    // The order went to the cheapest online node: the A100 at 1.00.
    assert_eq!(
        asks[&a100],
        AskSummary {
            min: price("1.00"),
            max: price("1.00"),
            nodes: 1,
            gpus_total: 8,
            gpus_free: 5
        }
    );
}

#[test]
fn plans_serialize_for_the_event_log() {
    let mut m = Market::new();
    m.upsert_node(node(1, "h100", 8, "1.00"));
    m.add_order(order(1, Tier::OnDemand, "2.00", 1, 2));
    m.add_order(order(2, Tier::OnDemand, "0.50", 1, 2));
    let plan = m.clear();
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.contains(r#"{"ask_above_max_price":"#), "{json}");
    assert_eq!(serde_json::from_str::<agora_engine::RoundPlan>(&json).unwrap(), plan);
}

#[test]
fn an_ineligible_order_takes_no_gpus_and_preempts_nothing() {
    let mut m = Market::new();
    m.upsert_node(node(1, "h100", 8, "1.00"));
    m.add_order(order(1, Tier::Spot, "2.00", 1, 8));
    let plan = m.clear();
    m.start_lease(LeaseId(1), Tier::Spot, &plan.placements[0]);
    // An on-demand order that may not run (say, its tenant cannot pay) would preempt the spot lease.
    m.add_order(order(2, Tier::OnDemand, "3.00", 1, 8));
    assert_eq!(m.clear().preemptions.len(), 1);
    let plan = m.clear_with(|o| o.id != OrderId(2));
    assert!(plan.preemptions.is_empty() && plan.placements.is_empty());
    assert!(!plan.unplaced.contains_key(&OrderId(2)));
    // With the node free, the ineligible order leaves it to the next one in line.
    m.end_lease(LeaseId(1));
    m.add_order(order(3, Tier::Spot, "2.00", 1, 8));
    let plan = m.clear_with(|o| o.id != OrderId(2));
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.placements[0].order, OrderId(3));
}

#[test]
fn within_a_tier_and_bid_the_tenant_with_less_recent_use_goes_first() {
    let mut m = Market::new();
    m.upsert_node(node(1, "h100", 8, "1.00"));
    let mut heavy = order(1, Tier::OnDemand, "2.00", 1, 8);
    heavy.tenant = TenantId(1);
    let mut light = order(2, Tier::OnDemand, "2.00", 1, 8);
    light.tenant = TenantId(2);
    m.add_order(heavy);
    m.add_order(light);
    // FIFO while both are unranked: the older order wins the node.
    assert_eq!(m.clear().placements[0].order, OrderId(1));
    // Tenant 1 used more recently: its pending order is re-ranked behind tenant 2's.
    m.set_share_rank(TenantId(1), 3);
    assert_eq!(m.clear().placements[0].order, OrderId(2));
    assert_eq!(m.share_rank(TenantId(1)), 3);
    // A higher bid still goes first, whatever the rank.
    let mut rich = order(3, Tier::OnDemand, "2.50", 1, 8);
    rich.tenant = TenantId(1);
    m.add_order(rich);
    assert_eq!(m.clear().placements[0].order, OrderId(3));
    // Back to rank 0: FIFO again.
    m.remove_order(OrderId(3));
    m.set_share_rank(TenantId(1), 0);
    assert_eq!(m.clear().placements[0].order, OrderId(1));
}

/// Orders alike (shape and price) that fail get the same reason while the
/// round changes nothing, and a fresh one once it does: a placement between
/// them changes what the next one is told.
#[test]
fn alike_orders_share_a_reason_until_the_round_changes() {
    let mut m = Market::new();
    m.upsert_node(node(1, "h100", 8, "1.00"));
    m.upsert_node(node(2, "h100", 4, "1.00"));
    // Node 1 keeps 2 GPUs free.
    m.add_order(order(1, Tier::OnDemand, "5.00", 1, 6));
    let plan = m.clear();
    m.start_lease(LeaseId(1), Tier::OnDemand, &plan.placements[0]);
    // In service order: 6 GPUs (no node has them), 6 again, 3 (fits node 2), 6, 6.
    for (id, gpus) in [(2, 6), (3, 6), (4, 3), (5, 6), (6, 6)] {
        m.add_order(order(id, Tier::OnDemand, "3.00", 1, gpus));
    }
    let plan = m.clear();
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.placements[0].order, OrderId(4));
    let most_free = |id: u64| match plan.unplaced.get(&OrderId(id)) {
        Some(Unplaced::NotEnoughFree {
            most_free_on_one_node, ..
        }) => *most_free_on_one_node,
        other => panic!("order {id}: {other:?}"),
    };
    assert_eq!((most_free(2), most_free(3)), (4, 4), "node 2 is free before order 4");
    assert_eq!(
        (most_free(5), most_free(6)),
        (2, 2),
        "then node 1's 2 GPUs are the most"
    );
}
