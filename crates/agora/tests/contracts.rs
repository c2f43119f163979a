//! Reservation contracts and the spot board through the CLI, against a real
//! server and agent: create, list, run reserved work on it, end it.

mod common;

use agora_proto::api::{ContractView, JobView, SpotView};
use common::Exchange;

fn cli(ex: &Exchange, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .args(args)
        .env("AGORA_URL", &ex.url)
        .env("AGORA_TOKEN", token)
        .output()
        .unwrap()
}

fn json<T: serde::de::DeserializeOwned>(out: std::process::Output) -> T {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reserves_runs_reserved_work_and_ends_the_contract() {
    let mut ex = Exchange::start().await;
    let (provider, p) = ex.create_provider("cloud").await;
    ex.start_agent(&p, "box", 8, "H100-80GB-SXM", "2.00", "127.0.0.1");
    ex.wait_nodes(1).await;
    let (_, t) = ex.create_tenant("lab", "1000").await;

    let provider = provider.to_string();
    let created: ContractView = json(cli(
        &ex,
        &t,
        &[
            "contract",
            "create",
            "--provider",
            &provider,
            "--model",
            "h100",
            "--gpus",
            "4",
            "--hours",
            "2",
            "-o",
            "json",
        ],
    ));
    assert_eq!(created.state, "active");
    assert_eq!(created.gpus, 4);
    // 4 GPUs × 2.00 × 2 h.
    assert_eq!(created.term_cost.to_string(), "16.00");
    // Over the provider's capacity: a clear error, exit 1.
    let out = cli(
        &ex,
        &t,
        &[
            "contract",
            "create",
            "--provider",
            &provider,
            "--model",
            "h100",
            "--gpus",
            "8",
            "--hours",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already reserved"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let job = ex
        .submit(
            &t,
            "name: mine\nkind: training\nresources:\n  gpus_per_node: 4\ntier: reserved\nduration: 1h\ncommand: sleep\nargs: ['30']\n",
        )
        .await
        .unwrap();
    let running: JobView = ex.wait_job(&t, job, "running", |j| j.state == "running").await;
    assert_eq!(running.tasks[0].leases[0].price_per_gpu_hour, agora_types::Micros::ZERO);
    let listed: Vec<ContractView> = json(cli(&ex, &t, &["contract", "list", "-o", "json"]));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].holding.used_gpus, 4);

    let spot: Vec<SpotView> = json(cli(&ex, &t, &["spot", "--model", "h100", "-o", "json"]));
    assert_eq!(spot.len(), 1, "{spot:?}");
    assert_eq!(spot[0].supply_gpus, 4, "the reserved lease's GPUs are not spot supply");

    let id = created.id.to_string();
    let ended: ContractView = json(cli(&ex, &t, &["contract", "end", &id, "-o", "json"]));
    assert_eq!(ended.state, "ended");
    assert_eq!(ended.end_reason.as_deref(), Some("ended_by_tenant"));
    // Its reserved job lost its footing: stopped and back in the queue, saying why.
    let waiting = ex
        .wait_job(&t, job, "requeued", |j| {
            j.reason
                .as_deref()
                .is_some_and(|r| r.contains("no active reservation contract"))
        })
        .await;
    assert_eq!(waiting.state, "pending");
}
