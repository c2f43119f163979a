//! Snapshot-style tests of clearing rounds: each case is a small market
//! written as lines of text and the plan it must produce, rendered as text.

use agora_engine::market::{
    Allocation, Market, NodeSpec, OrderSpec, Placement, RECLAIM_CANDIDATES, RoundPlan, SiteSpec,
};
use agora_types::{
    AgentId, DomainId, GpuModel, JobId, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId, SiteId,
    TenantId, Tier,
};

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).unwrap())
}

fn tier(text: &str) -> Tier {
    match text {
        "on-demand" => Tier::OnDemand,
        "spot" => Tier::Spot,
        other => panic!("unknown tier {other}"),
    }
}

/// Builds a market from lines:
///
/// - `node <id> p<provider> <model> x<gpus> @<ask> [offline] [site=<id>] [domain=<id>]` (site 1 and
///   domain 1 unless given)
/// - `site <id> p<provider> budget=<W> overhead=<W>` (a site with a power budget)
/// - `order <id> <tier> ≤<max price> <nodes>x<gpus per node> [models=A,B] [vram=<MiB>]`
/// - `lease <id> <tier> <node>:<first>-<last> ...` (a lease held by order 1000+id at the first node's ask)
/// - `stopping <lease id>`
fn market(setup: &str) -> Market {
    let mut m = Market::new();
    for line in setup.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "node" => {
                let id = NodeId(words[1].parse().unwrap());
                let mut spec = NodeSpec {
                    id,
                    provider: ProviderId(words[2].strip_prefix('p').unwrap().parse().unwrap()),
                    agent: AgentId(1),
                    model: GpuModel::resolve(words[3]).unwrap(),
                    gpus: words[4].strip_prefix('x').unwrap().parse().unwrap(),
                    ask: price(words[5].strip_prefix('@').unwrap()),
                    site: SiteId(1),
                    domain: DomainId(1),
                };
                let mut offline = false;
                for option in &words[6..] {
                    match option.split_once('=') {
                        None if *option == "offline" => offline = true,
                        Some(("site", s)) => spec.site = SiteId(s.parse().unwrap()),
                        Some(("domain", d)) => spec.domain = DomainId(d.parse().unwrap()),
                        _ => panic!("unknown node option {option}"),
                    }
                }
                m.upsert_node(spec);
                if offline {
                    m.set_node_online(id, false);
                }
            }
            "site" => {
                let value = |i: usize, key: &str| -> u64 {
                    let (k, v) = words[i].split_once('=').unwrap();
                    assert_eq!(k, key);
                    v.parse().unwrap()
                };
                m.upsert_site(SiteSpec {
                    id: SiteId(words[1].parse().unwrap()),
                    provider: ProviderId(words[2].strip_prefix('p').unwrap().parse().unwrap()),
                    power_budget_w: Some(value(3, "budget")),
                    node_overhead_w: value(4, "overhead") as u32,
                    orbital: false,
                    region: None,
                });
            }
            "order" => {
                let (nodes, gpus_per_node) = words[4].split_once('x').unwrap();
                let mut order = OrderSpec {
                    id: OrderId(words[1].parse().unwrap()),
                    job: JobId(1),
                    tenant: TenantId(1),
                    tier: tier(words[2]),
                    max_price: price(words[3].strip_prefix('≤').unwrap()),
                    models: Vec::new(),
                    min_vram_mib: 0,
                    nodes: nodes.parse().unwrap(),
                    gpus_per_node: gpus_per_node.parse().unwrap(),
                    duration_estimate_s: None,
                    checkpointable: false,
                    max_latency_ms: None,
                };
                for option in &words[5..] {
                    match option.split_once('=').unwrap() {
                        ("models", list) => {
                            order.models = list.split(',').map(|n| GpuModel::resolve(n).unwrap()).collect()
                        }
                        ("vram", mib) => order.min_vram_mib = mib.parse().unwrap(),
                        other => panic!("unknown order option {other:?}"),
                    }
                }
                m.add_order(order);
            }
            "lease" => {
                let id: u64 = words[1].parse().unwrap();
                let allocations: Vec<Allocation> = words[3..]
                    .iter()
                    .map(|part| {
                        let (node, range) = part.split_once(':').unwrap();
                        let (first, last) = range.split_once('-').unwrap();
                        Allocation {
                            node: NodeId(node.parse().unwrap()),
                            gpu_indices: (first.parse().unwrap()..=last.parse().unwrap()).collect(),
                        }
                    })
                    .collect();
                let first = m.node(allocations[0].node).unwrap().spec().clone();
                let placement = Placement {
                    order: OrderId(1000 + id),
                    tenant: TenantId(1000 + id),
                    bid: first.ask,
                    provider: first.provider,
                    price: first.ask,
                    allocations,
                    reserved: Vec::new(),
                    ends_at: None,
                    gang: None,
                };
                m.start_lease(LeaseId(id), tier(words[2]), &placement);
            }
            "stopping" => assert!(m.mark_stopping(LeaseId(words[1].parse().unwrap()))),
            other => panic!("unknown setup line {other}"),
        }
    }
    m
}

fn render(plan: &RoundPlan) -> String {
    let mut out = Vec::new();
    for p in &plan.placements {
        let allocs: Vec<String> = p
            .allocations
            .iter()
            .map(|a| {
                let gpus: Vec<String> = a.gpu_indices.iter().map(ToString::to_string).collect();
                format!("node {} [{}]", a.node, gpus.join(" "))
            })
            .collect();
        out.push(format!(
            "place order {} at {} on provider {}: {}",
            p.order,
            p.price.0,
            p.provider,
            allocs.join(", ")
        ));
    }
    for p in &plan.preemptions {
        out.push(format!("preempt lease {} for order {}", p.lease, p.for_order));
    }
    for (order, reason) in &plan.unplaced {
        out.push(format!("unplaced order {order}: {reason}"));
    }
    out.join("\n")
}

/// Clears the market built from `setup` and compares the rendered plan with `expected`.
fn check(setup: &str, expected: &str) {
    let m = market(setup);
    let plan = m.clear();
    let expected: Vec<&str> = expected.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(render(&plan), expected.join("\n"), "setup:\n{setup}");
    assert_eq!(m.clear(), plan, "clearing twice gives the same plan");
}

#[test]
fn cheapest_node_wins() {
    check(
        "node 1 p1 H100 x8 @2.00
         node 2 p2 H100 x8 @1.50
         node 3 p3 H100 x8 @1.75
         order 1 on-demand ≤2.50 1x4",
        "place order 1 at 1.50 on provider 2: node 2 [0 1 2 3]",
    );
}

#[test]
fn best_fit_among_equal_asks() {
    check(
        "node 1 p1 H100 x8 @2.00
         node 2 p1 H100 x8 @2.00
         node 3 p1 H100 x8 @2.00
         lease 9 on-demand 2:0-5
         lease 8 on-demand 3:0-3
         order 1 on-demand ≤2.00 1x2",
        "place order 1 at 2.00 on provider 1: node 2 [6 7]",
    );
    // Same free count: lowest node id.
    check(
        "node 5 p1 H100 x8 @2.00
         node 4 p2 H100 x8 @2.00
         order 1 spot ≤2.00 1x8",
        "place order 1 at 2.00 on provider 2: node 4 [0 1 2 3 4 5 6 7]",
    );
}

#[test]
fn lowest_free_indices_are_taken() {
    check(
        "node 1 p1 H100 x8 @2.00
         lease 9 on-demand 1:0-1
         lease 8 on-demand 1:4-4
         order 1 on-demand ≤2.00 1x3",
        "place order 1 at 2.00 on provider 1: node 1 [2 3 5]",
    );
}

#[test]
fn price_above_bid_is_never_taken() {
    check(
        "node 1 p1 H100 x16 @3.10
         node 2 p2 H100 x16 @2.60
         order 1 on-demand ≤2.50 1x16 models=H100",
        "unplaced order 1: no provider with 16 free H100-80GB-SXM at ≤ 2.50/GPU-h; cheapest ask 2.60",
    );
    check(
        "node 1 p1 H100 x8 @2.50
         node 2 p1 H100 x8 @2.51
         order 1 on-demand ≤2.50 1x8
         order 2 on-demand ≤2.50 1x8",
        "place order 1 at 2.50 on provider 1: node 1 [0 1 2 3 4 5 6 7]
         unplaced order 2: no provider with 8 free GPUs at ≤ 2.50/GPU-h; none free at that price",
    );
}

#[test]
fn model_and_vram_filters() {
    check(
        "node 1 p1 T4 x8 @0.20
         node 2 p1 A100-40GB x8 @1.00
         node 3 p1 A100-80GB x8 @1.20
         node 4 p1 H100 x8 @2.00
         order 1 on-demand ≤5.00 1x1 models=T4,A100-40GB,H100 vram=80000
         order 2 on-demand ≤5.00 1x1 vram=40000
         order 3 on-demand ≤5.00 1x1 models=T4",
        "place order 1 at 2.00 on provider 1: node 4 [0]
         place order 2 at 1.00 on provider 1: node 2 [0]
         place order 3 at 0.20 on provider 1: node 1 [0]",
    );
}

#[test]
fn offline_nodes_take_no_placement() {
    check(
        "node 1 p1 H100 x8 @1.00 offline
         node 2 p1 H100 x8 @2.00
         order 1 on-demand ≤2.50 1x8",
        "place order 1 at 2.00 on provider 1: node 2 [0 1 2 3 4 5 6 7]",
    );
}

#[test]
fn gang_takes_distinct_nodes_of_one_pool_in_rank_order() {
    check(
        "node 7 p1 H100 x8 @2.00
         node 3 p1 H100 x8 @2.00
         node 5 p1 H100 x8 @2.00
         node 9 p2 H100 x8 @1.00
         lease 1 on-demand 5:0-3
         order 1 on-demand ≤2.50 2x8",
        "place order 1 at 2.00 on provider 1: node 3 [0 1 2 3 4 5 6 7], node 7 [0 1 2 3 4 5 6 7]",
    );
}

#[test]
fn gang_skips_partly_used_nodes_and_nodes_of_another_size() {
    // Node 5 has 4 free GPUs, enough for a rank of 4, but runs a lease; node 6
    // is whole but has 8 GPUs. Only the whole 4-GPU nodes 2 and 4 qualify.
    check(
        "node 2 p1 H100 x4 @2.00
         node 4 p1 H100 x4 @2.00
         node 5 p1 H100 x8 @2.00
         node 6 p1 H100 x8 @2.00
         lease 1 on-demand 5:0-3
         order 1 on-demand ≤2.50 2x4",
        "place order 1 at 2.00 on provider 1: node 2 [0 1 2 3], node 4 [0 1 2 3]",
    );
    // Without whole nodes of its size, a gang is told why.
    check(
        "node 5 p1 H100 x8 @2.00
         node 6 p1 H100 x8 @2.00
         node 7 p1 H100 x4 @2.00
         lease 1 on-demand 6:0-0
         order 1 on-demand ≤2.50 2x4
         order 2 on-demand ≤2.50 2x8
         order 3 on-demand ≤2.50 2x2",
        "unplaced order 1: no provider with 2 free whole nodes of 4 GPUs at ≤ 2.50/GPU-h; only 1 free at that price
         unplaced order 2: no provider with 2 free whole nodes of 8 GPUs at ≤ 2.50/GPU-h; only 1 free at that price
         unplaced order 3: no provider with 2 free whole nodes of 2 GPUs at ≤ 2.50/GPU-h; a gang takes whole nodes \
         of exactly 2 GPUs and the matching nodes have 4, 8",
    );
}

#[test]
fn gang_that_fits_one_domain_gets_exactly_one() {
    // Nodes 1, 2 (domain 1) and 3, 4 (domain 2): lowest ids would split the gang.
    check(
        "node 1 p1 H100 x8 @2.00 domain=1
         node 2 p1 H100 x8 @2.00 domain=2
         node 3 p1 H100 x8 @2.00 domain=1
         node 4 p1 H100 x8 @2.00 domain=2
         order 1 on-demand ≤2.50 2x8",
        "place order 1 at 2.00 on provider 1: node 1 [0 1 2 3 4 5 6 7], node 3 [0 1 2 3 4 5 6 7]",
    );
    // One domain beats a lower ask: pool p2 is cheaper but split over two domains.
    check(
        "node 1 p1 H100 x8 @2.00 domain=1
         node 2 p1 H100 x8 @2.00 domain=1
         node 3 p2 H100 x8 @1.00 domain=1
         node 4 p2 H100 x8 @1.00 domain=2
         order 1 on-demand ≤2.50 2x8",
        "place order 1 at 2.00 on provider 1: node 1 [0 1 2 3 4 5 6 7], node 2 [0 1 2 3 4 5 6 7]",
    );
}

#[test]
fn gang_takes_the_best_fit_domain() {
    // Domain 1 has 4 free whole nodes, domain 2 has 2, domain 3 has 3: a gang of
    // 2 takes domain 2 (none stranded); then a gang of 3 takes domain 3, and the
    // big domain 1 stays whole for a gang of 4.
    check(
        "node 1 p1 H100 x8 @2.00 domain=1
         node 2 p1 H100 x8 @2.00 domain=1
         node 3 p1 H100 x8 @2.00 domain=1
         node 4 p1 H100 x8 @2.00 domain=1
         node 5 p1 H100 x8 @2.00 domain=2
         node 6 p1 H100 x8 @2.00 domain=2
         node 7 p1 H100 x8 @2.00 domain=3
         node 8 p1 H100 x8 @2.00 domain=3
         node 9 p1 H100 x8 @2.00 domain=3
         order 1 on-demand ≤2.50 2x8
         order 2 on-demand ≤2.40 3x8
         order 3 on-demand ≤2.30 4x8",
        "place order 1 at 2.00 on provider 1: node 5 [0 1 2 3 4 5 6 7], node 6 [0 1 2 3 4 5 6 7]
         place order 2 at 2.00 on provider 1: node 7 [0 1 2 3 4 5 6 7], node 8 [0 1 2 3 4 5 6 7], \
         node 9 [0 1 2 3 4 5 6 7]
         place order 3 at 2.00 on provider 1: node 1 [0 1 2 3 4 5 6 7], node 2 [0 1 2 3 4 5 6 7], \
         node 3 [0 1 2 3 4 5 6 7], node 4 [0 1 2 3 4 5 6 7]",
    );
}

#[test]
fn larger_gang_takes_the_fewest_domains() {
    // Free whole nodes: domain 1 has 1, domain 2 has 3, domain 3 has 2, domain 4
    // has 2. A gang of 5 takes domain 2 whole (the most), then best fit for the
    // last 2: domain 3 (lowest among the 2-node domains), not domain 1 plus
    // another. Ranks are grouped by domain.
    check(
        "node 1 p1 H100 x4 @2.00 domain=1
         node 2 p1 H100 x4 @2.00 domain=2
         node 3 p1 H100 x4 @2.00 domain=2
         node 4 p1 H100 x4 @2.00 domain=2
         node 5 p1 H100 x4 @2.00 domain=3
         node 6 p1 H100 x4 @2.00 domain=4
         node 7 p1 H100 x4 @2.00 domain=4
         node 8 p1 H100 x4 @2.00 domain=3
         order 1 on-demand ≤2.50 5x4",
        "place order 1 at 2.00 on provider 1: node 2 [0 1 2 3], node 3 [0 1 2 3], node 4 [0 1 2 3], \
         node 5 [0 1 2 3], node 8 [0 1 2 3]",
    );
}

#[test]
fn power_budget_refuses_a_placement_with_the_reason() {
    // Site 1: 2,000 W, 100 W per busy node. An 8 × H100 node needs 100 + 8 × 700 W.
    check(
        "site 1 p1 budget=2000 overhead=100
         node 1 p1 H100 x8 @1.00 site=1
         order 1 on-demand ≤2.00 1x8
         order 2 on-demand ≤2.00 1x2",
        "place order 2 at 1.00 on provider 1: node 1 [0 1]
         unplaced order 1: no provider with 8 free GPUs at ≤ 2.00/GPU-h within power; site 1 has 2000 W of \
         headroom and the order needs 5700 W",
    );
    // A cheaper node without power is passed over for one with it.
    check(
        "site 1 p1 budget=2000 overhead=100
         node 1 p1 H100 x8 @1.00 site=1
         node 2 p2 H100 x8 @1.50 site=2
         order 1 on-demand ≤2.00 1x8",
        "place order 1 at 1.50 on provider 2: node 2 [0 1 2 3 4 5 6 7]",
    );
    // A gang's whole nodes count too.
    check(
        "site 1 p1 budget=10000 overhead=0
         node 1 p1 H100 x8 @1.00 site=1
         node 2 p1 H100 x8 @1.00 site=1
         order 1 on-demand ≤2.00 2x8",
        "unplaced order 1: no provider with 2 free whole nodes of 8 GPUs at ≤ 2.00/GPU-h within power; site 1 has \
         10000 W of headroom and the order needs 11200 W",
    );
}

#[test]
fn power_is_counted_across_placements_in_one_round() {
    // 3,000 W and 700 W per H100: four GPUs fit, the fifth does not, on any node of the site.
    check(
        "site 1 p1 budget=3000 overhead=0
         node 1 p1 H100 x8 @1.00 site=1
         node 2 p1 H100 x8 @1.00 site=1
         order 1 on-demand ≤2.00 1x2
         order 2 on-demand ≤1.90 1x2
         order 3 on-demand ≤1.80 1x1",
        "place order 1 at 1.00 on provider 1: node 1 [0 1]
         place order 2 at 1.00 on provider 1: node 1 [2 3]
         unplaced order 3: no provider with 1 free GPUs at ≤ 1.80/GPU-h within power; site 1 has 200 W of \
         headroom and the order needs 700 W",
    );
    // Leases already running count as well.
    check(
        "site 1 p1 budget=3000 overhead=0
         node 1 p1 H100 x8 @1.00 site=1
         lease 9 on-demand 1:0-3
         order 1 on-demand ≤2.00 1x1",
        "unplaced order 1: no provider with 1 free GPUs at ≤ 2.00/GPU-h within power; site 1 has 200 W of \
         headroom and the order needs 700 W",
    );
}

#[test]
fn node_overhead_is_counted_once_per_busy_node() {
    // 1,000 W of overhead per busy node, 3,200 W budget, node 1 already busy
    // (1,700 W): its next two GPUs add 700 W each, no second overhead; the
    // third no longer fits anywhere.
    check(
        "site 1 p1 budget=3200 overhead=1000
         node 1 p1 H100 x8 @1.00 site=1
         node 2 p1 H100 x8 @1.00 site=1
         lease 9 on-demand 1:0-0
         order 1 on-demand ≤2.00 1x1
         order 2 on-demand ≤1.90 1x1
         order 3 on-demand ≤1.80 1x1",
        "place order 1 at 1.00 on provider 1: node 1 [1]
         place order 2 at 1.00 on provider 1: node 1 [2]
         unplaced order 3: no provider with 1 free GPUs at ≤ 1.80/GPU-h within power; site 1 has 100 W of \
         headroom and the order needs 700 W",
    );
    // A gang's nodes each pay the overhead: 2 × (500 + 8 × 700) W.
    check(
        "site 1 p1 budget=12200 overhead=500
         node 1 p1 H100 x8 @1.00 site=1
         node 2 p1 H100 x8 @1.00 site=1
         order 1 on-demand ≤2.00 2x8",
        "place order 1 at 1.00 on provider 1: node 1 [0 1 2 3 4 5 6 7], node 2 [0 1 2 3 4 5 6 7]",
    );
    check(
        "site 1 p1 budget=12199 overhead=500
         node 1 p1 H100 x8 @1.00 site=1
         node 2 p1 H100 x8 @1.00 site=1
         order 1 on-demand ≤2.00 2x8",
        "unplaced order 1: no provider with 2 free whole nodes of 8 GPUs at ≤ 2.00/GPU-h within power; site 1 has \
         12199 W of headroom and the order needs 12200 W",
    );
    // An idle node pays the overhead: 1,000 + 700 W does not fit in 1,500 W.
    check(
        "site 1 p1 budget=1500 overhead=1000
         node 1 p1 H100 x8 @1.00 site=1
         order 1 on-demand ≤2.00 1x1",
        "unplaced order 1: no provider with 1 free GPUs at ≤ 2.00/GPU-h within power; site 1 has 1500 W of \
         headroom and the order needs 1700 W",
    );
}

#[test]
fn on_demand_is_served_before_spot() {
    check(
        "node 1 p1 H100 x8 @1.00
         order 1 spot ≤9.00 1x8
         order 2 on-demand ≤1.00 1x8",
        "place order 2 at 1.00 on provider 1: node 1 [0 1 2 3 4 5 6 7]
         unplaced order 1: no provider with 8 free GPUs at ≤ 9.00/GPU-h; none free at that price",
    );
}

#[test]
fn higher_bid_is_served_before_lower_then_older() {
    check(
        "node 1 p1 H100 x8 @1.00
         order 1 spot ≤1.50 1x8
         order 2 spot ≤2.00 1x8",
        "place order 2 at 1.00 on provider 1: node 1 [0 1 2 3 4 5 6 7]
         unplaced order 1: no provider with 8 free GPUs at ≤ 1.50/GPU-h; none free at that price",
    );
    check(
        "node 1 p1 H100 x8 @1.00
         order 4 spot ≤2.00 1x8
         order 3 spot ≤2.00 1x8",
        "place order 3 at 1.00 on provider 1: node 1 [0 1 2 3 4 5 6 7]
         unplaced order 4: no provider with 8 free GPUs at ≤ 2.00/GPU-h; none free at that price",
    );
}

#[test]
fn on_demand_preempts_a_spot_lease() {
    check(
        "node 1 p1 H100 x8 @1.00
         lease 9 spot 1:0-7
         order 1 on-demand ≤1.00 1x8",
        "preempt lease 9 for order 1
         unplaced order 1: waiting for lease 9 to stop",
    );
}

#[test]
fn spot_never_preempts_spot_and_on_demand_leases_are_never_victims() {
    check(
        "node 1 p1 H100 x8 @1.00
         lease 9 spot 1:0-7
         order 1 spot ≤9.00 1x8",
        "unplaced order 1: no provider with 8 free GPUs at ≤ 9.00/GPU-h; none free at that price",
    );
    check(
        "node 1 p1 H100 x8 @1.00
         lease 9 on-demand 1:0-7
         order 1 on-demand ≤9.00 1x8",
        "unplaced order 1: no provider with 8 free GPUs at ≤ 9.00/GPU-h; none free at that price",
    );
}

#[test]
fn preemption_prefers_fewest_victims_then_fewest_gpus() {
    // Node 1 needs two victims, node 2 one of 8 GPUs, node 3 one of 6 GPUs: node 3, despite its higher ask.
    check(
        "node 1 p1 H100 x8 @1.00
         node 2 p1 H100 x8 @1.00
         node 3 p1 H100 x8 @1.50
         lease 11 spot 1:0-3
         lease 12 spot 1:4-7
         lease 21 spot 2:0-7
         lease 31 on-demand 3:0-1
         lease 32 spot 3:2-7
         order 1 on-demand ≤2.00 1x6",
        "preempt lease 32 for order 1
         unplaced order 1: waiting for lease 32 to stop",
    );
    // Free GPUs count: 2 free + a 2-GPU victim beats a 4-GPU victim.
    check(
        "node 1 p1 H100 x4 @1.00
         node 2 p1 H100 x4 @1.00
         lease 11 spot 1:0-3
         lease 21 spot 2:0-1
         order 1 on-demand ≤2.00 1x4",
        "preempt lease 21 for order 1
         unplaced order 1: waiting for lease 21 to stop",
    );
}

#[test]
fn preemption_scores_only_the_cheapest_candidates() {
    // `cheap` nodes at 1.00 each need two victims; node 500 at 1.50 needs one.
    // Within the candidate limit every node is scored and node 500 wins; past
    // it, only the cheapest RECLAIM_CANDIDATES are scored.
    let setup = |cheap: u64| {
        let mut lines = vec![
            "node 500 p1 H100 x8 @1.50".to_string(),
            "lease 500 spot 500:0-7".to_string(),
        ];
        for i in 1..=cheap {
            lines.push(format!("node {i} p1 H100 x8 @1.00"));
            lines.push(format!("lease {} spot {i}:0-3", 2 * i));
            lines.push(format!("lease {} spot {i}:4-7", 2 * i + 1));
        }
        lines.push("order 1 on-demand ≤2.00 1x8".to_string());
        lines.join("\n")
    };
    let limit = RECLAIM_CANDIDATES as u64;
    check(
        &setup(limit - 1),
        "preempt lease 500 for order 1
         unplaced order 1: waiting for lease 500 to stop",
    );
    check(
        &setup(limit),
        "preempt lease 2 for order 1
         preempt lease 3 for order 1
         unplaced order 1: waiting for leases 2, 3 to stop",
    );
}

#[test]
fn a_preempted_gang_lease_is_preempted_whole() {
    check(
        "node 1 p1 H100 x8 @1.00
         node 2 p1 H100 x8 @1.00
         lease 9 spot 1:0-7 2:0-7
         order 1 on-demand ≤1.00 1x8
         order 2 on-demand ≤1.00 1x8",
        "preempt lease 9 for order 1
         unplaced order 1: waiting for lease 9 to stop
         unplaced order 2: no provider with 8 free GPUs at ≤ 1.00/GPU-h; none free at that price",
    );
}

#[test]
fn a_stopping_lease_is_never_a_victim_twice() {
    // The order that already caused the stop waits for it and preempts nothing new.
    check(
        "node 1 p1 H100 x8 @1.00
         lease 9 spot 1:0-7
         stopping 9
         order 1 on-demand ≤1.00 1x8",
        "unplaced order 1: waiting for lease 9 to stop",
    );
    // Two orders, two victims on one node: each gets its own.
    check(
        "node 1 p1 H100 x8 @1.00
         lease 9 spot 1:0-3
         lease 10 spot 1:4-7
         order 1 on-demand ≤1.00 1x4
         order 2 on-demand ≤1.00 1x4",
        // The first order takes the newest lease (the least work lost), the second the other.
        "preempt lease 10 for order 1
         preempt lease 9 for order 2
         unplaced order 1: waiting for lease 10 to stop
         unplaced order 2: waiting for lease 9 to stop",
    );
    // Two on-demand orders, one spot lease: only the first counts on it.
    check(
        "node 1 p1 H100 x8 @1.00
         lease 9 spot 1:0-7
         order 1 on-demand ≤1.00 1x8
         order 2 on-demand ≤1.00 1x8",
        "preempt lease 9 for order 1
         unplaced order 1: waiting for lease 9 to stop
         unplaced order 2: no provider with 8 free GPUs at ≤ 1.00/GPU-h; none free at that price",
    );
}

#[test]
fn gpus_kept_for_a_waiting_order_are_not_given_to_spot() {
    check(
        "node 1 p1 H100 x8 @1.00
         lease 9 spot 1:0-3
         order 1 on-demand ≤1.00 1x8
         order 2 spot ≤5.00 1x4",
        "preempt lease 9 for order 1
         unplaced order 1: waiting for lease 9 to stop
         unplaced order 2: no provider with 4 free GPUs at ≤ 5.00/GPU-h; none free at that price",
    );
}

#[test]
fn gang_preemption_takes_one_pool() {
    check(
        "node 1 p1 H100 x8 @1.00
         node 2 p1 H100 x8 @1.00
         node 3 p2 H100 x8 @1.00
         lease 11 spot 1:0-7
         lease 21 spot 2:0-3
         lease 31 spot 3:0-0
         order 1 on-demand ≤1.00 2x8",
        "preempt lease 11 for order 1
         preempt lease 21 for order 1
         unplaced order 1: waiting for leases 11, 21 to stop",
    );
}

#[test]
fn unplaced_reason_texts() {
    check(
        "node 1 p1 T4 x4 @0.50
         node 2 p1 H100 x8 @2.00
         node 3 p1 A100-80GB x8 @1.00 offline
         order 1 on-demand ≤5.00 1x1 models=A100-80GB
         order 2 on-demand ≤5.00 1x1 models=T4 vram=20000
         order 3 on-demand ≤5.00 1x1 vram=200000
         order 4 on-demand ≤5.00 1x16 models=H100
         order 5 on-demand ≤5.00 1x16
         order 6 on-demand ≤1.00 1x8 models=H100
         order 7 on-demand ≤1.00 1x2 vram=40000",
        "unplaced order 1: no online node of model A100-80GB
         unplaced order 2: no online node of model T4 with ≥ 20000 MiB VRAM
         unplaced order 3: no online node with ≥ 200000 MiB VRAM
         unplaced order 4: no node has 16 H100-80GB-SXM; the largest has 8
         unplaced order 5: no node has 16 GPUs; the largest has 8
         unplaced order 6: no provider with 8 free H100-80GB-SXM at ≤ 1.00/GPU-h; cheapest ask 2.00
         unplaced order 7: no provider with 2 free GPUs with ≥ 40000 MiB at ≤ 1.00/GPU-h; cheapest ask 2.00",
    );
    check(
        "node 1 p1 H100 x8 @2.00
         node 2 p1 H100 x8 @2.00
         node 3 p1 H100 x8 @3.00
         lease 9 on-demand 1:0-5
         lease 8 on-demand 2:0-6
         order 1 on-demand ≤2.50 1x4 models=H100,A100-80GB",
        "unplaced order 1: no provider with 4 free H100-80GB-SXM or A100-80GB at ≤ 2.50/GPU-h; \
         at most 2 free on one node at that price",
    );
    check(
        "node 1 p1 H100 x8 @2.00
         node 2 p1 H100 x8 @2.00
         node 3 p1 H100 x8 @2.00
         lease 9 on-demand 1:0-5
         order 1 on-demand ≤2.50 3x8
         order 2 on-demand ≤2.50 4x2",
        "unplaced order 1: no provider with 3 free whole nodes of 8 GPUs at ≤ 2.50/GPU-h; only 2 free at that price
         unplaced order 2: no provider with 4 free whole nodes of 2 GPUs at ≤ 2.50/GPU-h; a gang takes whole nodes \
         of exactly 2 GPUs and the matching nodes have 8",
    );
}

#[test]
fn the_issue_example_reads_as_written() {
    check(
        "node 1 p1 H100 x16 @3.10
         order 1 on-demand ≤2.50 1x16 models=H100",
        "unplaced order 1: no provider with 16 free H100-80GB-SXM at ≤ 2.50/GPU-h; cheapest ask 3.10",
    );
}
