//! Reserved capacity: reserved-tier work runs on its tenant's reservation at
//! no per-hour price, on-demand work never sits on idle reserved GPUs, spot
//! work resells them (recorded for the holder's credit), and the holder
//! reclaims them through preemption.

use agora_engine::market::{Holding, Market, NodeSpec, OrderSpec, Placement, ReservedUse, Unplaced};
use agora_types::{
    AgentId, DomainId, GpuModel, JobId, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId, SiteId,
    TenantId, Tier,
};
use proptest::prelude::*;

const LAB: TenantId = TenantId(7);
const OTHER: TenantId = TenantId(8);
const BIG: ProviderId = ProviderId(1);
const SMALL: ProviderId = ProviderId(2);

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).unwrap())
}

fn h100() -> GpuModel {
    GpuModel::resolve("h100").unwrap()
}

fn node(id: u64, provider: ProviderId, ask: &str) -> NodeSpec {
    NodeSpec {
        id: NodeId(id),
        provider,
        agent: AgentId(provider.0),
        model: h100(),
        gpus: 8,
        ask: price(ask),
        site: SiteId(provider.0),
        domain: DomainId(1),
    }
}

fn order(id: u64, tenant: TenantId, tier: Tier, max: &str, nodes: u32, gpus_per_node: u32) -> OrderSpec {
    OrderSpec {
        id: OrderId(id),
        job: JobId(id),
        tenant,
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

/// Two 8-GPU nodes at the big provider (asking 3.00) and one at a small one (1.00); the lab holds 8 GPUs at the big one.
fn market() -> Market {
    let mut m = Market::new();
    m.upsert_node(node(1, BIG, "3.00"));
    m.upsert_node(node(2, BIG, "3.00"));
    m.upsert_node(node(3, SMALL, "1.00"));
    m.set_reservation(LAB, BIG, h100(), 8);
    m
}

fn holding(m: &Market, tenant: TenantId) -> Holding {
    m.reservations()[&(BIG, h100())].holders()[&tenant]
}

fn only_placement(m: &Market) -> Placement {
    let plan = m.clear();
    assert_eq!(plan.placements.len(), 1, "{plan:?}");
    plan.placements[0].clone()
}

#[test]
fn reserved_work_runs_on_its_reservation_at_no_price() {
    let mut m = market();
    // Its bid is zero and a cheaper provider exists: neither matters to reserved work.
    m.add_order(order(1, LAB, Tier::Reserved, "0", 1, 8));
    let p = only_placement(&m);
    assert_eq!(p.provider, BIG);
    assert_eq!(p.price, PricePerGpuHour(Micros::ZERO));
    assert_eq!(p.reserved, vec![ReservedUse { holder: LAB, gpus: 8 }]);
    m.start_lease(LeaseId(1), Tier::Reserved, &p);
    assert_eq!(
        holding(&m, LAB),
        Holding {
            gpus: 8,
            used: 8,
            resold: 0
        }
    );

    // The reservation is full now: more reserved work waits, with the reason.
    m.add_order(order(2, LAB, Tier::Reserved, "0", 1, 4));
    let plan = m.clear();
    assert!(plan.placements.is_empty());
    let reason = &plan.unplaced[&OrderId(2)];
    assert!(
        matches!(
            reason,
            Unplaced::ReservationFull {
                reserved_gpus: 8,
                used_gpus: 8,
                ..
            }
        ),
        "{reason:?}"
    );
    assert_eq!(
        reason.to_string(),
        "your reservation of 8 GPUs has 8 in use; 4 more do not fit"
    );

    // Ending the lease gives the room back.
    m.end_lease(LeaseId(1));
    assert_eq!(holding(&m, LAB).used, 0);
}

#[test]
fn reserved_work_without_a_reservation_is_told_so() {
    let mut m = market();
    m.add_order(order(1, OTHER, Tier::Reserved, "5.00", 1, 8));
    let plan = m.clear();
    assert!(plan.placements.is_empty());
    let reason = &plan.unplaced[&OrderId(1)];
    assert!(matches!(reason, Unplaced::NoReservation { .. }), "{reason:?}");
    assert!(
        reason.to_string().contains("no active reservation contract"),
        "{reason}"
    );
}

#[test]
fn on_demand_work_never_takes_idle_reserved_gpus() {
    let mut m = market();
    m.upsert_node(node(3, SMALL, "9.00"));
    // 16 free at the big provider, 8 of them reserved: a 16-GPU gang does not fit there.
    m.add_order(order(1, OTHER, Tier::OnDemand, "5.00", 2, 8));
    let plan = m.clear();
    assert!(plan.placements.is_empty(), "{plan:?}");
    let reason = &plan.unplaced[&OrderId(1)];
    assert!(matches!(reason, Unplaced::HeldByReservations { .. }), "{reason:?}");

    // Eight fit on the unreserved half; the next eight do not.
    m.add_order(order(2, OTHER, Tier::OnDemand, "5.00", 1, 8));
    m.add_order(order(3, OTHER, Tier::OnDemand, "5.00", 1, 8));
    let plan = m.clear();
    let placed: Vec<OrderId> = plan.placements.iter().map(|p| p.order).collect();
    assert_eq!(placed, vec![OrderId(2)]);
    assert!(plan.placements[0].reserved.is_empty());
    assert!(matches!(
        plan.unplaced[&OrderId(3)],
        Unplaced::HeldByReservations { .. }
    ));
}

#[test]
fn spot_work_resells_idle_reserved_gpus_and_the_holder_reclaims_them() {
    let mut m = market();
    m.upsert_node(node(3, SMALL, "9.00"));
    // A 16-GPU spot gang takes both big nodes: 8 unreserved, 8 resold from the lab.
    m.add_order(order(1, OTHER, Tier::Spot, "5.00", 2, 8));
    let p = only_placement(&m);
    assert_eq!(p.price, price("3.00"));
    assert_eq!(p.reserved, vec![ReservedUse { holder: LAB, gpus: 8 }]);
    m.start_lease(LeaseId(1), Tier::Spot, &p);
    assert_eq!(holding(&m, LAB).resold, 8);
    assert_eq!(holding(&m, LAB).idle(), 0);

    // The lab needs its GPUs: its reserved order preempts the spot gang.
    m.add_order(order(2, LAB, Tier::Reserved, "0", 1, 8));
    let plan = m.clear();
    assert!(plan.placements.is_empty());
    assert_eq!(plan.preemptions.len(), 1);
    assert_eq!(plan.preemptions[0].lease, LeaseId(1));
    assert_eq!(
        plan.unplaced[&OrderId(2)],
        Unplaced::WaitingForPreemption {
            leases: vec![LeaseId(1)]
        }
    );
    m.mark_stopping(LeaseId(1));
    m.end_lease(LeaseId(1));
    assert_eq!(holding(&m, LAB).resold, 0);
    let p = only_placement(&m);
    assert_eq!(p.order, OrderId(2));
    assert_eq!(p.reserved, vec![ReservedUse { holder: LAB, gpus: 8 }]);
}

#[test]
fn a_spot_order_within_open_capacity_resells_nothing() {
    let mut m = market();
    m.add_order(order(1, OTHER, Tier::Spot, "5.00", 1, 8));
    // The cheap small node wins; nothing reserved is touched.
    let p = only_placement(&m);
    assert_eq!(p.provider, SMALL);
    assert!(p.reserved.is_empty());
    m.start_lease(LeaseId(1), Tier::Spot, &p);
    m.add_order(order(2, OTHER, Tier::Spot, "5.00", 1, 8));
    let p = only_placement(&m);
    assert_eq!(p.provider, BIG);
    assert!(p.reserved.is_empty(), "8 unreserved GPUs were free at the big provider");
}

#[test]
fn a_reserved_gang_takes_whole_nodes_at_its_provider() {
    let mut m = market();
    m.set_reservation(LAB, BIG, h100(), 16);
    m.add_order(order(1, LAB, Tier::Reserved, "0", 2, 8));
    let p = only_placement(&m);
    assert_eq!(p.provider, BIG);
    assert_eq!(p.allocations.len(), 2);
    assert_eq!(p.reserved, vec![ReservedUse { holder: LAB, gpus: 16 }]);
}

#[test]
fn reserved_orders_come_before_on_demand_in_a_round() {
    let mut m = market();
    // Both want the reserved half; the on-demand order is older and bids more.
    m.add_order(order(1, OTHER, Tier::OnDemand, "9.00", 2, 8));
    m.add_order(order(2, LAB, Tier::Reserved, "0", 1, 8));
    let plan = m.clear();
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.placements[0].order, OrderId(2));
}

proptest! {
    /// Whatever leases start and end, the pool's counters equal a recount
    /// from scratch, and on-demand leases never exceed the unreserved GPUs.
    #[test]
    fn counters_follow_the_leases(steps in proptest::collection::vec((0u8..4, 1u32..=8, 0u8..2), 1..40)) {
        let mut m = Market::new();
        for id in 1..=4 {
            m.upsert_node(node(id, BIG, "2.00"));
        }
        m.set_reservation(LAB, BIG, h100(), 12);
        m.set_reservation(OTHER, BIG, h100(), 4);
        let mut next = 1u64;
        let mut live: Vec<LeaseId> = Vec::new();
        for (kind, gpus, end) in steps {
            if end == 1 && !live.is_empty() {
                let lease = live.remove(gpus as usize % live.len());
                m.end_lease(lease);
            } else {
                let (tenant, tier) = match kind {
                    0 => (LAB, Tier::Reserved),
                    1 => (OTHER, Tier::Reserved),
                    2 => (TenantId(9), Tier::OnDemand),
                    _ => (TenantId(9), Tier::Spot),
                };
                m.add_order(order(next, tenant, tier, "5.00", 1, gpus));
                let plan = m.clear();
                for p in &plan.placements {
                    m.start_lease(LeaseId(next), tier, p);
                    live.push(LeaseId(next));
                }
                m.remove_order(OrderId(next));
                next += 1;
            }
            let incremental = m.reservations().clone();
            let mut recounted = m.clone();
            recounted.set_reservation(LAB, BIG, h100(), 12);
            prop_assert_eq!(&incremental, recounted.reservations());
            let pool = &incremental[&(BIG, h100())];
            let on_demand: u64 = m.leases().filter(|l| l.tier == Tier::OnDemand).map(|l| l.gpus_total()).sum();
            prop_assert!(on_demand <= 32 - 16, "on-demand holds {} of 16 unreserved GPUs", on_demand);
            for h in pool.holders().values() {
                prop_assert!(h.used <= h.gpus);
                prop_assert!(h.used + h.resold <= h.gpus);
            }
            let free: u64 = m.nodes().map(|n| u64::from(n.free_gpus())).sum();
            prop_assert_eq!(pool.free_gpus(), free);
        }
    }
}

#[test]
fn a_spot_order_is_not_refused_for_what_on_demand_may_not_take() {
    // The same shape fails on-demand (the free half is reserved) but fits as spot, in one round.
    let mut m = market();
    m.upsert_node(node(3, SMALL, "9.00"));
    m.add_order(order(1, OTHER, Tier::OnDemand, "8.00", 1, 8));
    m.add_order(order(2, OTHER, Tier::OnDemand, "8.00", 1, 8));
    m.add_order(order(3, OTHER, Tier::Spot, "5.00", 1, 8));
    let plan = m.clear();
    let placed: Vec<OrderId> = plan.placements.iter().map(|p| p.order).collect();
    assert_eq!(placed, vec![OrderId(1), OrderId(3)]);
    assert_eq!(plan.placements[1].reserved, vec![ReservedUse { holder: LAB, gpus: 8 }]);
}

#[test]
fn two_reserved_orders_do_not_preempt_for_one_reservation() {
    // Both big nodes run other tenants' spot work; the lab holds 8 and asks twice for 8.
    let mut m = market();
    m.upsert_node(node(3, SMALL, "9.00"));
    for (lease, id) in [(1, 10), (2, 11)] {
        m.add_order(order(id, OTHER, Tier::Spot, "5.00", 1, 8));
        let p = only_placement(&m);
        m.start_lease(LeaseId(lease), Tier::Spot, &p);
    }
    m.add_order(order(1, LAB, Tier::Reserved, "0", 1, 8));
    m.add_order(order(2, LAB, Tier::Reserved, "0", 1, 8));
    let plan = m.clear();
    assert_eq!(plan.preemptions.len(), 1, "only one of them can ever run: {plan:?}");
    assert!(matches!(plan.unplaced[&OrderId(2)], Unplaced::ReservationFull { .. }));
}
