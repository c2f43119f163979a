//! The market simulator end to end on a small scenario: the same seed gives
//! the same bytes, the money adds up, and every job is accounted for.

use agora_sim::market;
use agora_sim::scenario::Scenario;

fn scenario() -> Scenario {
    let text = std::fs::read_to_string(format!(
        "{}/../../scenarios/small-market.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the repository's small scenario");
    let mut sc = Scenario::from_yaml(&text).expect("valid");
    // A shorter run keeps the test quick; the outage and the price cut still happen.
    sc.duration.0 = 36 * 3600;
    sc
}

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_same_seed_gives_byte_identical_outputs_and_the_money_adds_up() {
    let sc = scenario();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = market::run(&sc, 7, &mut |_| {}).unwrap();
    first.write(a.path()).unwrap();
    market::run(&sc, 7, &mut |_| {}).unwrap().write(b.path()).unwrap();
    let (fa, fb) = (files(a.path()), files(b.path()));
    let names: Vec<&str> = fa.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "hhi.png",
            "hhi.svg",
            "jobs.csv",
            "prices.png",
            "prices.svg",
            "spot.csv",
            "summary.json",
            "timeseries.csv",
            "utilization.png",
            "utilization.svg",
            "wait_cdf.png",
            "wait_cdf.svg"
        ]
    );
    // The PNGs are pictures of the right size.
    let png = &fa.iter().find(|(n, _)| n == "hhi.png").unwrap().1;
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 960, "width");
    assert_eq!(fa, fb, "same seed, same bytes");

    let other = market::run(&sc, 8, &mut |_| {}).unwrap();
    assert_ne!(other.jobs, first.jobs, "another seed, another run");

    let s = &first.summary;
    assert!(s.ledger_verified);
    let j = &s.jobs;
    assert!(j.submitted > 100, "{j:?}");
    assert_eq!(j.submitted, j.refused + j.succeeded + j.failed + j.unfinished);
    assert_eq!(first.jobs.len() as u64, j.submitted - j.refused);
    // What tenants spent is what providers earned plus the exchange's fee.
    let spent: i128 = s.tenant_classes.iter().map(|c| c.spend.0).sum();
    let earned: i128 = s.provider_classes.iter().map(|c| c.revenue.0).sum();
    assert_eq!(spent, earned + s.fees.0);
    // The rows are hourly and the clusters join at 6 h.
    assert_eq!(first.timeseries.len(), 37);
    assert!(first.timeseries[6].gpus_online > first.timeseries[5].gpus_online);
    // The outage at 24 h takes eu-west's homelab GPUs offline for a while.
    let online = |h: usize| first.timeseries[h].gpus_online;
    assert!(online(25) < online(23), "{} vs {}", online(25), online(23));
    assert_eq!(online(35), online(23), "back after the outage");
}

#[test]
fn invariants_hold_over_several_seeds_through_an_outage_and_a_restart() {
    let mut sc = scenario();
    sc.duration.0 = 32 * 3600;
    assert!(
        sc.events.iter().any(|e| e.server_restart),
        "the scenario restarts the server"
    );
    let failed = market::check(&sc, 1..4);
    assert!(failed.is_empty(), "{failed:?}");
}
