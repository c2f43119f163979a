//! Fault injection: hosts that fail (MTBF), a provider cut off from the
//! exchange for less and for more than its heartbeat timeout, and a server
//! restart, with the invariants checked at every metrics row over several
//! seeds (no GPU held twice, the ledger verifies, every job queued or
//! running, a job succeeds after running exactly its length).

use agora_sim::market;
use agora_sim::scenario::Scenario;

const FAULTY: &str = "
name: faulty
duration: 16h
round: 60s
metrics_every: 30m
snapshot_every_events: 300
providers:
  - name: homelab
    count: 12
    regions: [eu-west, us-east]
    gpu_model: rtx4090
    gpus_per_node: 2
    price: {min: 0.30, max: 0.45}
    agent_mtbf: 8h
    agent_repair: 1h
  - name: cluster
    regions: [us-east]
    gpu_model: h100
    nodes: 4
    gpus_per_node: 8
    price: 2.5
tenants:
  - name: small-lab
    count: 4
    budget: 1000
    arrival_every: 30m
    gpus: [1, 2]
    duration: {min: 10m, max: 2h}
    max_price: 0.60
  # Spot work on the cluster, which the big lab's on-demand gangs preempt
  # (a stop sent while the cluster is cut off reaches it only on return).
  - name: sweeper
    budget: 5000
    arrival_every: 10m
    gpus: [8]
    duration: {min: 10m, max: 40m}
    tier: spot
    max_price: 2.80
    gpu_models: [h100]
  - name: big-lab
    budget: 20000
    arrival_every: 8m
    gpus: [8, 16]
    duration: {min: 10m, max: 40m}
    max_price: 3.00
    gpu_models: [h100]
events:
  # Shorter than the exchange's timeout (3 rounds): nothing is lost, and
  # work that ends meanwhile is reported (and charged) as of when it ended.
  - {at: 3h, partition: {group: cluster, for: 2m}}
  - {at: 4h, partition: {group: cluster, for: 2m}}
  - {at: 5h, partition: {group: cluster, for: 2m}}
  - {at: 6h, partition: {group: cluster, for: 2m}}
  # Longer: the cluster is lost, its work requeued; on return its processes
  # still run and are stopped, and what they reported is not charged twice.
  - {at: 8h, partition: {group: cluster, for: 90m}}
  - {at: 12h, server_restart: true}
";

#[test]
fn invariants_hold_through_host_failures_partitions_and_a_restart() {
    let sc = Scenario::from_yaml(FAULTY).unwrap();
    let failed = market::check(&sc, 1..5);
    assert!(failed.is_empty(), "{failed:?}");

    let out = market::run(&sc, 1, &mut |_| {}).unwrap();
    let s = &out.summary;
    assert!(s.ledger_verified);
    assert!(s.agent_failures > 0, "12 hosts with an 8 h MTBF over 16 h fail: {s:?}");
    assert!(s.jobs.succeeded > 20, "{:?}", s.jobs);
    // Without host failures to blur the count: the long partition takes the
    // cluster's 32 GPUs offline once the exchange gives up on it, and they
    // return with it.
    let mut calm = sc.clone();
    calm.providers[0].agent_mtbf = None;
    let out = market::run(&calm, 1, &mut |_| {}).unwrap();
    assert_eq!(out.summary.agent_failures, 0);
    let online = |minutes: u64| {
        out.timeseries
            .iter()
            .find(|r| r.t_s == minutes * 60)
            .map(|r| r.gpus_online)
            .unwrap()
    };
    assert_eq!(online(8 * 60 + 30) + 32, online(7 * 60 + 30), "lost while cut off");
    assert_eq!(online(10 * 60), online(7 * 60 + 30), "back after the partition");
    // The short one loses nothing.
    assert_eq!(online(3 * 60 + 30), online(2 * 60 + 30));
}

/// Single nodes of one agent's 8-node cluster fail and are repaired while
/// the agent runs on: the work on a failed node is lost and requeued (never
/// counted as done), the node's GPUs leave the market until it is back, and
/// the invariants hold over several seeds.
const NODE_FAULTS: &str = "
name: node-faults
duration: 16h
round: 60s
metrics_every: 10m
snapshot_every_events: 300
providers:
  - name: cluster
    regions: [us-east]
    gpu_model: h100
    nodes: 8
    gpus_per_node: 8
    price: 2.5
    node_mtbf: 6h
    node_repair: 1h
tenants:
  - name: lab
    count: 3
    budget: 20000
    arrival_every: 10m
    gpus: [8, 16]
    duration: {min: 20m, max: 2h}
    max_price: 3.00
    gpu_models: [h100]
";

#[test]
fn nodes_fail_alone_inside_a_running_agent() {
    let sc = Scenario::from_yaml(NODE_FAULTS).unwrap();
    let failed = market::check(&sc, 1..4);
    assert!(failed.is_empty(), "{failed:?}");
    let out = market::run(&sc, 1, &mut |_| {}).unwrap();
    let s = &out.summary;
    assert!(s.ledger_verified);
    assert_eq!(s.agent_failures, 0, "the agent itself never fails");
    assert!(s.node_failures >= 5, "8 nodes with a 6 h MTBF over 16 h: {s:?}");
    assert!(s.leases_lost > 0, "work on a failed node is lost: {s:?}");
    assert!(s.jobs.succeeded > 10, "{:?}", s.jobs);
    let online: Vec<u64> = out.timeseries.iter().map(|r| r.gpus_online).collect();
    assert!(online.iter().all(|g| g % 8 == 0 && *g <= 64), "{online:?}");
    assert!(
        online.iter().any(|g| *g < 64),
        "a failed node leaves the market: {online:?}"
    );
    assert!(
        online.iter().filter(|g| **g == 64).count() > 1,
        "repaired nodes return: {online:?}"
    );
    // Without node failures nothing is lost and every node stays online.
    let mut calm = sc.clone();
    calm.providers[0].node_mtbf = None;
    let out = market::run(&calm, 1, &mut |_| {}).unwrap();
    assert_eq!((out.summary.node_failures, out.summary.leases_lost), (0, 0));
    assert!(out.timeseries.iter().all(|r| r.gpus_online == 64));
}

#[test]
fn fault_settings_name_their_field() {
    let cases = [
        (
            FAULTY.replace("agent_mtbf: 8h", "agent_mtbf: 1s"),
            "providers[0].agent_mtbf",
        ),
        (
            FAULTY.replace("agent_repair: 1h", "agent_repair: 0"),
            "providers[0].agent_repair",
        ),
        (
            FAULTY.replace("agent_repair: 1h", "agent_repair: 1h\n    node_mtbf: 1s"),
            "providers[0].node_mtbf",
        ),
        (
            FAULTY.replace("agent_repair: 1h", "agent_repair: 1h\n    node_repair: 0"),
            "providers[0].node_repair",
        ),
        (
            FAULTY.replacen("group: cluster, for: 2m", "group: nobody, for: 2m", 1),
            "events[0].partition.group",
        ),
        (
            FAULTY.replacen("group: cluster, for: 2m", "group: cluster, for: 0", 1),
            "events[0].partition.for",
        ),
    ];
    for (text, field) in cases {
        let e = Scenario::from_yaml(&text).unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
}

/// The repository's region-outage scenario (a 6 h outage of the biggest
/// region, host failures, a partition, a restart) keeps its invariants, and
/// the outage shows in the capacity online.
#[test]
fn the_region_outage_scenario_keeps_its_invariants() {
    let text = std::fs::read_to_string(format!(
        "{}/../../scenarios/region-outage.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let sc = Scenario::from_yaml(&text).unwrap();
    let failed = market::check(&sc, 1..3);
    assert!(failed.is_empty(), "{failed:?}");
    let out = market::run(&sc, 1, &mut |_| {}).unwrap();
    let online = |h: u64| out.timeseries.iter().find(|r| r.t_s == h * 3600).unwrap().gpus_online;
    // us-east holds the east clusters' 192 GPUs and a third of the homelab's.
    assert!(online(26) + 192 <= online(23), "{} vs {}", online(26), online(23));
    assert!(online(31) + 10 >= online(23), "back after the outage");
    assert!(out.summary.ledger_verified);
}
