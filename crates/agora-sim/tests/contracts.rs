//! A reservation contract in a scenario: the lab's reserved-tier jobs run
//! on its reservation, idle reserved GPUs are resold as spot, the contract
//! is charged whether used or not, and the invariants hold.

use agora_sim::market;
use agora_sim::scenario::Scenario;

const RESERVED: &str = "
name: reserved
duration: 1d
round: 60s
metrics_every: 1h
snapshot_every_events: 400
max_reserved_share_bps: 9000
providers:
  - name: cluster
    regions: [us-east]
    gpu_model: h100
    nodes: 8
    gpus_per_node: 8
    price: 2.5
tenants:
  - name: lab
    budget: 100000
    arrival_every: 2h
    gpus: [8, 16]
    duration: {min: 30m, max: 2h}
    tier: reserved
    max_price: 3.00
    gpu_models: [h100]
  - name: sweeper
    count: 2
    budget: 5000
    arrival_every: 20m
    gpus: [1, 2, 4]
    duration: {min: 1h, max: 4h}
    tier: spot
    max_price: 2.60
contracts:
  - {tenant_group: lab, provider_group: cluster, gpus: 48, at: 1h, for: 20h, price: 2.00}
";

#[test]
fn a_contract_runs_its_labs_work_and_resells_the_rest() {
    let sc = Scenario::from_yaml(RESERVED).unwrap();
    let failed = market::check(&sc, 1..3);
    assert!(failed.is_empty(), "{failed:?}");
    let out = market::run(&sc, 1, &mut |_| {}).unwrap();
    assert!(out.summary.ledger_verified);
    let lab: Vec<&market::JobRow> = out.jobs.iter().filter(|j| j.tenant_group == "lab").collect();
    let sweeper: Vec<&market::JobRow> = out.jobs.iter().filter(|j| j.tenant_group == "sweeper").collect();
    assert!(lab.iter().any(|j| j.state == "succeeded"), "{lab:?}");
    assert!(sweeper.iter().filter(|j| j.state == "succeeded").count() > 10);
    // Spot work ran on idle reserved GPUs.
    assert!(out.summary.resold_gpu_hours > 10.0, "{:?}", out.summary);
    // Reserved work is paid by the contract, not per lease.
    assert!(lab.iter().all(|j| j.cost.0 == 0), "{lab:?}");
    // The contract is charged whether used or not: 48 GPUs × 20 h × 2.00 by the end of its term.
    let spend: i128 = out.summary.tenant_classes.iter().map(|c| c.spend.0).sum();
    let sweepers: i128 = sweeper.iter().map(|j| j.cost.0).sum();
    assert_eq!(
        out.summary.contract_charges.0,
        48 * 20 * 2_000_000,
        "the contract's whole term"
    );
    assert_eq!(
        spend - sweepers,
        out.summary.contract_charges.0,
        "the lab spent its contract"
    );
}

#[test]
fn contract_settings_name_their_field() {
    let cases = [
        (
            RESERVED
                .replace("tenant_group: lab", "tenant_group: nobody")
                .replace("tier: reserved", "tier: on-demand"),
            "contracts[0].tenant_group",
        ),
        (
            RESERVED.replace(
                "contracts:\n  - {tenant_group: lab",
                "contracts:\n  - {tenant_group: sweeper",
            ),
            "tenants[0].tier",
        ),
        (
            RESERVED.replace("provider_group: cluster", "provider_group: nobody"),
            "contracts[0].provider_group",
        ),
        (RESERVED.replace("gpus: 48", "gpus: 65"), "contracts[0].gpus"),
        (RESERVED.replace("price: 2.00", "price: 0"), "contracts[0].price"),
        (
            RESERVED.replace("max_reserved_share_bps: 9000", "max_reserved_share_bps: 0"),
            "max_reserved_share_bps",
        ),
    ];
    for (text, field) in cases {
        let e = Scenario::from_yaml(&text).unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
}
