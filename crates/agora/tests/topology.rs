//! Sites, power budgets and fabric domains, end to end: an agent declares them
//! in its config, the exchange places within them and reports power headroom.

mod common;

use std::collections::BTreeSet;

use agora_proto::api::{JobView, NodeView, SiteView};
use common::{Exchange, manifest};

/// Four 8-GPU H100 nodes at site `dc1` (7 kW budget per node-equivalent, 1 kW node overhead)
/// in two fabric domains of two nodes each.
fn inventory(power_budget_kw: u64) -> String {
    let mut s = format!(
        "sites:\n  - name: dc1\n    region: us-east\n    power_budget_kw: {power_budget_kw}\n    node_overhead_w: 1000\nnodes:\n"
    );
    for (i, domain) in ["su-1", "su-1", "su-2", "su-2"].iter().enumerate() {
        s.push_str(&format!(
            "  - name: n{i}\n    gpu_model: H100-80GB-SXM\n    gpus: 8\n    address: 127.0.0.1\n    price_per_gpu_hour: \"2.00\"\n    site: dc1\n    fabric_domain: {domain}\n"
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_node_gang_gets_one_fabric_domain_and_power_caps_the_site() {
    let mut ex = Exchange::start().await;
    let (_, p) = ex.create_provider("cluster").await;
    // Room for two busy nodes: 2 × (8 × 700 W + 1,000 W) = 13.2 kW of a 14 kW budget.
    ex.start_agent_with(&p, "rack", &inventory(14));
    ex.wait_nodes(4).await;
    let (_, t) = ex.create_tenant("lab", "1000").await;
    let nodes: Vec<NodeView> = ex.get_ok(&p, "/api/v1/provider/nodes").await;
    assert!(nodes.iter().all(|n| n.site == "dc1"), "{nodes:#?}");
    let domain_of = |id| nodes.iter().find(|n| n.id == id).unwrap().fabric_domain.clone();

    let gang = ex
        .submit(
            &t,
            &manifest(
                "gang",
                "training",
                "  gpus_per_node: 8\n  nodes: 2",
                "on-demand",
                "3.00",
                "sleep 30",
            ),
        )
        .await
        .unwrap();
    let job = ex
        .wait_job(&t, gang, "running", |j| {
            j.tasks[0].leases.first().is_some_and(|l| l.running_at.is_some())
        })
        .await;
    let domains: BTreeSet<String> = job.tasks[0].leases[0].parts.iter().map(|p| domain_of(p.node)).collect();
    assert_eq!(domains.len(), 1, "a 2-node gang fits one fabric domain: {domains:?}");

    // What the provider sees, through the CLI.
    let out = std::process::Command::new(common::BIN)
        .args(["provider", "sites", "--output", "json"])
        .env("AGORA_URL", &ex.url)
        .env("AGORA_TOKEN", &p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sites: Vec<SiteView> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sites.len(), 1);
    assert_eq!(
        (sites[0].power_used_w, sites[0].power_headroom_w),
        (13_200, Some(800)),
        "{sites:#?}"
    );

    // A third busy node would take the site over its budget: the job waits, saying why.
    let more = ex
        .submit(
            &t,
            &manifest("more", "training", "  gpus_per_node: 8", "on-demand", "3.00", "true"),
        )
        .await
        .unwrap();
    let waiting: JobView = ex.wait_job(&t, more, "explained", |j| j.reason.is_some()).await;
    assert_eq!(waiting.state, "pending");
    let reason = waiting.reason.unwrap();
    assert!(
        reason.contains("site 1 has 800 W of headroom and the order needs 6600 W"),
        "{reason}"
    );

    // When the gang ends, the power is free again and the job runs.
    ex.post_ok::<JobView>(&t, &format!("/api/v1/jobs/{gang}/cancel"), serde_json::json!({}))
        .await;
    let done = ex.wait_ended(&t, more).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
}

/// One provider's agent with one 8-GPU H100 node at a site in `region`.
fn site_in(region: &str, address: &str, price: &str) -> String {
    format!(
        "sites:\n  - name: {region}-dc\n    region: {region}\nnodes:\n  - name: n0\n    gpu_model: H100-80GB-SXM\n    gpus: 8\n    address: {address}\n    price_per_gpu_hour: \"{price}\"\n    site: {region}-dc\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_spans_two_providers_within_the_latency_bound() {
    let matrix_dir = tempfile::tempdir().unwrap();
    let matrix = matrix_dir.path().join("latency.csv");
    std::fs::write(
        &matrix,
        "# region, region, ms\neu-west,eu-central,12\neu-west,us-east,80\n",
    )
    .unwrap();
    let mut args = common::fast_args();
    args.extend(["--latency-matrix".to_string(), matrix.display().to_string()]);
    let mut ex = Exchange::start_with(args).await;
    let (west, w) = ex.create_provider("west").await;
    let (central, c) = ex.create_provider("central").await;
    ex.start_agent_with(&w, "west", &site_in("eu-west", "127.0.0.1", "1.00"));
    ex.start_agent_with(&c, "central", &site_in("eu-central", "127.0.0.2", "2.00"));
    ex.wait_nodes(2).await;
    let (_, t) = ex.create_tenant("lab", "1000").await;

    let yaml = manifest(
        "spread",
        "training",
        "  gpus_per_node: 8\n  nodes: 2\n  cross_provider: {max_latency_ms: 20}",
        "on-demand",
        "3.00",
        "echo rank=$RANK/$WORLD_SIZE node=$NODE_RANK master=$MASTER_ADDR",
    );
    let id = ex.submit(&t, &yaml).await.unwrap();
    let done = ex.wait_ended(&t, id).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let leases = &done.tasks[0].leases;
    let by_provider: Vec<(u64, String, i128)> = leases
        .iter()
        .map(|l| (l.provider.0, l.state.clone(), l.price_per_gpu_hour.0))
        .collect();
    assert_eq!(
        by_provider,
        [
            (west, "succeeded".to_string(), 1_000_000),
            (central, "succeeded".to_string(), 2_000_000)
        ]
    );
    let logs = ex.wait_logs(&t, id, "rank=8/16").await;
    assert!(logs.contains("rank=0/16 node=0 master=127.0.0.1"), "{logs}");
    assert!(logs.contains("rank=8/16 node=1 master=127.0.0.1"), "{logs}");
}
