//! Market-health policies in the clearing round: the provider share cap (hard
//! refuses, soft prefers) and the small-tenant floor.

use agora_engine::market::{CapMode, Market, NodeSpec, OrderSpec, Policies, Unplaced};
use agora_types::{
    AgentId, DomainId, GpuModel, JobId, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId, SiteId,
    TenantId, Tier,
};

const LAB: TenantId = TenantId(7);
const SMALL: TenantId = TenantId(8);
const A: ProviderId = ProviderId(1);
const B: ProviderId = ProviderId(2);

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).unwrap())
}

fn node(id: u64, provider: ProviderId, ask: &str) -> NodeSpec {
    NodeSpec {
        id: NodeId(id),
        provider,
        agent: AgentId(provider.0),
        model: GpuModel::resolve("h100").unwrap(),
        gpus: 8,
        ask: price(ask),
        site: SiteId(provider.0),
        domain: DomainId(1),
    }
}

fn order(id: u64, tenant: TenantId, nodes: u32) -> OrderSpec {
    OrderSpec {
        id: OrderId(id),
        job: JobId(id),
        tenant,
        tier: Tier::OnDemand,
        max_price: price("5.00"),
        models: Vec::new(),
        min_vram_mib: 0,
        nodes,
        gpus_per_node: 8,
        duration_estimate_s: None,
        checkpointable: false,
        max_latency_ms: None,
    }
}

/// Provider A: 16 nodes at 1.00; provider B: `b_nodes` nodes at 2.00. The lab already runs 64 GPUs at A.
fn market(policies: Policies, b_nodes: u64) -> Market {
    let mut m = Market::new();
    for id in 1..=16 {
        m.upsert_node(node(id, A, "1.00"));
    }
    for id in 0..b_nodes {
        m.upsert_node(node(100 + id, B, "2.00"));
    }
    m.add_order(order(1, LAB, 8));
    let plan = m.clear();
    assert_eq!(plan.placements[0].provider, A);
    m.start_lease(LeaseId(1), Tier::OnDemand, &plan.placements[0]);
    m.set_policies(policies);
    m
}

fn cap(mode: CapMode) -> Policies {
    Policies {
        provider_share_cap_bps: Some(5000),
        provider_share_mode: mode,
        provider_share_min_gpus: 64,
        ..Policies::default()
    }
}

#[test]
fn a_hard_cap_sends_work_to_another_provider_or_refuses_it() {
    // 64 more at A would put all 128 there; at B, 64 of 128 is within 50 %.
    let mut m = market(cap(CapMode::Hard), 8);
    m.add_order(order(2, LAB, 8));
    let plan = m.clear();
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.placements[0].provider, B, "the pricier provider within the cap");

    let mut m = market(cap(CapMode::Hard), 0);
    m.add_order(order(2, LAB, 8));
    let plan = m.clear();
    assert!(plan.placements.is_empty());
    let reason = &plan.unplaced[&OrderId(2)];
    assert_eq!(
        *reason,
        Unplaced::ProviderShareCap {
            demand: agora_engine::market::Demand::of(&order(2, LAB, 8)),
            provider: A,
            cap_bps: 5000
        }
    );
    assert!(
        reason
            .to_string()
            .contains("more than 50.00 % of your GPUs would be on provider 1"),
        "{reason}"
    );
}

#[test]
fn a_soft_cap_prefers_another_provider_but_never_refuses() {
    let mut m = market(cap(CapMode::Soft), 8);
    m.add_order(order(2, LAB, 8));
    assert_eq!(m.clear().placements[0].provider, B);

    let mut m = market(cap(CapMode::Soft), 0);
    m.add_order(order(2, LAB, 8));
    let plan = m.clear();
    assert_eq!(
        plan.placements.len(),
        1,
        "nothing within the cap: the cheapest as usual"
    );
    assert_eq!(plan.placements[0].provider, A);
}

#[test]
fn a_small_tenant_is_never_capped() {
    let mut m = market(cap(CapMode::Hard), 0);
    m.add_order(order(2, SMALL, 1));
    assert_eq!(m.clear().placements.len(), 1);
}

#[test]
fn the_floor_keeps_the_last_gpus_for_small_tenants() {
    // 128 GPUs of H100 at A; 10 % (12 GPUs) kept for tenants under 16 GPUs; the lab holds 64.
    let floor = Policies {
        small_tenant_floor_bps: 1000,
        small_tenant_gpus: 16,
        ..Policies::default()
    };
    let mut m = market(floor, 0);
    // 48 more leave 16 free: allowed. 8 more after that would leave 8 < 12: refused.
    m.add_order(order(2, LAB, 6));
    m.add_order(order(3, LAB, 1));
    m.add_order(order(4, SMALL, 1));
    let plan = m.clear();
    let placed: Vec<OrderId> = plan.placements.iter().map(|p| p.order).collect();
    assert_eq!(placed, vec![OrderId(2), OrderId(4)]);
    let reason = &plan.unplaced[&OrderId(3)];
    assert!(
        matches!(reason, Unplaced::SmallTenantFloor { kept_gpus: 12, .. }),
        "{reason:?}"
    );
    assert!(
        reason.to_string().contains("kept for tenants with few GPUs"),
        "{reason}"
    );
}

#[test]
fn reserved_work_is_exempt() {
    let mut m = market(cap(CapMode::Hard), 0);
    m.set_reservation(LAB, A, GpuModel::resolve("h100").unwrap(), 64);
    let mut o = order(2, LAB, 8);
    o.tier = Tier::Reserved;
    m.add_order(o);
    assert_eq!(m.clear().placements.len(), 1);
}
