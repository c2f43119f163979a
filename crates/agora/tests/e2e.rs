//! End to end over real sockets: `agora serve` and two `agora agent`s as separate
//! OS processes, each agent declaring one node of 8 H100s.

mod common;

use std::collections::BTreeSet;

use agora_proto::api::{JobView, LedgerVerifyView, ProviderView};
use agora_types::{Micros, PricePerGpuHour};
use common::{Exchange, manifest};

const PRICE_A: &str = "2.00";
const PRICE_B: &str = "2.40";

/// An exchange with two providers, one agent each, 8 GPUs each, and one funded tenant.
async fn two_agents() -> (Exchange, String) {
    let mut ex = Exchange::start().await;
    let (_, pa) = ex.create_provider("alpha").await;
    let (_, pb) = ex.create_provider("beta").await;
    ex.start_agent(&pa, "a", 8, "H100-80GB-SXM", PRICE_A, "127.0.0.1");
    ex.start_agent(&pb, "b", 8, "h100", PRICE_B, "127.0.0.1");
    ex.wait_nodes(2).await;
    let (_, tenant) = ex.create_tenant("lab", "1000").await;
    (ex, tenant)
}

/// Same as `two_agents` but both agents belong to one provider (gangs stay on one provider).
async fn one_provider_two_agents() -> (Exchange, String) {
    let mut ex = Exchange::start().await;
    let (_, p) = ex.create_provider("alpha").await;
    ex.start_agent(&p, "a", 8, "H100-80GB-SXM", PRICE_A, "127.0.0.1");
    ex.start_agent(&p, "b", 8, "H100-80GB-SXM", PRICE_A, "127.0.0.1");
    ex.wait_nodes(2).await;
    let (_, tenant) = ex.create_tenant("lab", "1000").await;
    (ex, tenant)
}

fn gpus(n: u32) -> String {
    format!("  gpus_per_node: {n}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gpu_job_sees_two_distinct_gpus_and_is_charged_exactly() {
    let (ex, t) = two_agents().await;
    let id = ex
        .submit(
            &t,
            &manifest(
                "two",
                "training",
                &gpus(2),
                "on-demand",
                "3.00",
                "echo visible=$CUDA_VISIBLE_DEVICES; sleep 2",
            ),
        )
        .await
        .unwrap();
    let job = ex.wait_ended(&t, id).await;
    assert_eq!(job.state, "succeeded", "{job:#?}");
    let logs = ex.logs(&t, id).await;
    let line = logs
        .lines()
        .find(|l| l.starts_with("visible="))
        .expect("the job printed its GPUs");
    let indices: BTreeSet<&str> = line.trim_start_matches("visible=").split(',').collect();
    assert_eq!(indices.len(), 2, "two distinct GPU indices: {line}");

    // The cheapest ask wins: provider alpha at 2.00.
    let lease = &job.tasks[0].leases[0];
    assert_eq!(lease.price_per_gpu_hour, Micros::parse_decimal(PRICE_A).unwrap());
    // Charged = price × GPUs × whole seconds run, to the micro-unit.
    let secs = lease.ended_at.unwrap().seconds_since(lease.running_at.unwrap());
    assert!((1..=6).contains(&secs), "the job slept 2 s; charged for {secs} s");
    let expected = PricePerGpuHour(lease.price_per_gpu_hour).cost(2, secs);
    assert_eq!(lease.charged, expected);
    assert_eq!(job.cost, expected);

    // Fees equal the take rate (500 bps), the provider gets the rest, the ledger verifies.
    let providers: Vec<ProviderView> = ex.get_ok(&ex.admin, "/api/v1/admin/providers").await;
    let alpha = providers.iter().find(|p| p.name == "alpha").unwrap();
    let fee = Micros(expected.0 * 500 / 10_000);
    assert_eq!(alpha.earnings, expected - fee);
    let v: LedgerVerifyView = ex.get_ok(&ex.admin, "/api/v1/admin/ledger/verify").await;
    assert!(v.ok, "{v:#?}");
    assert_eq!(v.sum, Micros::ZERO);
    assert_eq!(v.balances["exchange:fees"], fee);
    let bal: agora_proto::api::BalanceView = ex.get_ok(&t, "/api/v1/balance").await;
    assert_eq!(bal.available, Micros::from_units(1000) - expected);
    // Two providers of 8 GPUs each: capacity HHI 5,000, highly concentrated.
    let health: agora_proto::api::HealthView = ex.get_ok(&t, "/api/v1/market/health").await;
    assert_eq!(
        (health.capacity_by_provider.hhi, health.capacity_by_provider.total),
        (5_000, 16)
    );
    assert_eq!(health.capacity_by_provider.cr4_bps, 10_000);
    assert!(
        health
            .alerts
            .iter()
            .any(|a| a.starts_with("highly_concentrated: capacity by provider")),
        "{:?}",
        health.alerts
    );
    assert_eq!(bal.held, Micros::ZERO, "the unused hold was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gang_of_two_nodes_sees_consistent_rendezvous() {
    let (ex, t) = one_provider_two_agents().await;
    let res = format!("{}\n  nodes: 2", gpus(8));
    let script = "echo \"rdv node=$NODE_RANK rank=$RANK world=$WORLD_SIZE local=$LOCAL_WORLD_SIZE master=$MASTER_ADDR:$MASTER_PORT gpus=$CUDA_VISIBLE_DEVICES\"";
    let id = ex
        .submit(&t, &manifest("gang", "training", &res, "on-demand", "3.00", script))
        .await
        .unwrap();
    let job = ex.wait_ended(&t, id).await;
    assert_eq!(job.state, "succeeded", "{job:#?}");
    let lease = &job.tasks[0].leases[0];
    let nodes: BTreeSet<_> = lease.parts.iter().map(|p| p.node).collect();
    assert_eq!(nodes.len(), 2, "the gang spans both nodes");
    let logs = ex.logs(&t, id).await;
    let mut lines: Vec<&str> = logs.lines().filter(|l| l.starts_with("rdv ")).collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{logs}");
    let port = format!("master=127.0.0.1:{}", 29_500 + lease.id.0 % 1000);
    assert_eq!(
        lines[0],
        format!("rdv node=0 rank=0 world=16 local=8 {port} gpus=0,1,2,3,4,5,6,7")
    );
    assert_eq!(
        lines[1],
        format!("rdv node=1 rank=8 world=16 local=8 {port} gpus=0,1,2,3,4,5,6,7")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_job_is_preempted_by_on_demand() {
    let (ex, t) = two_agents().await;
    // Spot work fills all 16 GPUs; it reports SIGTERM when it gets one.
    let spot_script = "trap 'echo got-sigterm; exit 143' TERM; echo spot-running; while true; do sleep 0.1; done";
    let mut spot = Vec::new();
    for i in 0..2 {
        let id = ex
            .submit(
                &t,
                &manifest(&format!("spot{i}"), "training", &gpus(8), "spot", "5.00", spot_script),
            )
            .await
            .unwrap();
        ex.wait_logs(&t, id, "spot-running").await;
        spot.push(id);
    }
    let od = ex
        .submit(
            &t,
            &manifest(
                "urgent",
                "training",
                &gpus(8),
                "on-demand",
                "5.00",
                "echo on-demand-ran",
            ),
        )
        .await
        .unwrap();
    let job = ex.wait_ended(&t, od).await;
    assert_eq!(job.state, "succeeded", "{job:#?}");
    // Exactly one spot job lost its lease to preemption, saw SIGTERM, and went back to the queue.
    let views: Vec<JobView> = futures_join(&ex, &t, &spot).await;
    let preempted: Vec<&JobView> = views
        .iter()
        .filter(|j| j.tasks[0].leases.iter().any(|l| l.state == "preempted"))
        .collect();
    assert_eq!(preempted.len(), 1, "{views:#?}");
    let victim = preempted[0];
    assert_eq!(victim.tasks[0].leases[0].stop_reason.as_deref(), Some("preempted"));
    assert!(
        ex.logs(&t, victim.id.0).await.contains("got-sigterm"),
        "the spot job got the grace signal"
    );
    assert!(victim.tasks[0].attempts >= 1);
    // The preempted lease ran on the node the on-demand job then used.
    assert_eq!(
        victim.tasks[0].leases[0].parts[0].node,
        job.tasks[0].leases[0].parts[0].node
    );
    for id in spot {
        ex.post_ok::<JobView>(&t, &format!("/api/v1/jobs/{id}/cancel"), serde_json::json!({}))
            .await;
    }
}

/// Waits until the job runs, then hands over the agent process running it (to
/// kill or stop) and its node. Agents `a` and `b` own `a-node` and `b-node`.
async fn agent_running(ex: &mut Exchange, t: &str, job: u64) -> (agora_types::NodeId, std::process::Child) {
    let running = ex
        .wait_job(t, job, "running", |j| {
            j.tasks[0].leases.first().is_some_and(|l| l.running_at.is_some())
        })
        .await;
    let node = running.tasks[0].leases[0].parts[0].node;
    let nodes: Vec<agora_proto::api::NodeView> = ex.get_ok(&ex.admin, "/api/v1/admin/nodes").await;
    let index = if nodes.iter().find(|n| n.id == node).unwrap().name == "a-node" {
        0
    } else {
        1
    };
    (node, ex.agents.remove(index))
}

async fn futures_join(ex: &Exchange, t: &str, ids: &[u64]) -> Vec<JobView> {
    let mut out = Vec::new();
    for id in ids {
        out.push(ex.job(t, *id).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_exiting_3_fails_with_exit_code_3() {
    let (ex, t) = two_agents().await;
    let id = ex
        .submit(
            &t,
            &manifest(
                "three",
                "training",
                &gpus(1),
                "on-demand",
                "3.00",
                "echo failing >&2; exit 3",
            ),
        )
        .await
        .unwrap();
    let job = ex.wait_ended(&t, id).await;
    assert_eq!(job.state, "failed");
    assert_eq!(job.exit_code, Some(3));
    assert_eq!(job.tasks[0].leases[0].state, "failed");
    assert_eq!(job.reason.as_deref(), Some("exited with code 3"));
    assert!(ex.logs(&t, id).await.contains("failing"), "stderr is captured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_job_and_withdraws_a_pending_one() {
    let (ex, t) = two_agents().await;
    let running = ex
        .submit(
            &t,
            &manifest(
                "long",
                "training",
                &gpus(4),
                "on-demand",
                "3.00",
                "echo started; sleep 1000",
            ),
        )
        .await
        .unwrap();
    ex.wait_logs(&t, running, "started").await;
    // 16 GPUs of one node cannot exist: this one stays pending with a reason.
    let pending = ex
        .submit(
            &t,
            &manifest(
                "never",
                "training",
                &format!("{}\n  nodes: 3", gpus(8)),
                "on-demand",
                "3.00",
                "true",
            ),
        )
        .await
        .unwrap();
    let p = ex.wait_job(&t, pending, "explained", |j| j.reason.is_some()).await;
    assert_eq!(p.state, "pending");
    assert!(
        p.reason.as_deref().unwrap().contains("3 free whole nodes of 8 GPUs"),
        "{:?}",
        p.reason
    );

    for id in [running, pending] {
        ex.post_ok::<JobView>(&t, &format!("/api/v1/jobs/{id}/cancel"), serde_json::json!({}))
            .await;
    }
    let r = ex.wait_ended(&t, running).await;
    assert_eq!(r.state, "cancelled");
    assert_eq!(r.tasks[0].leases[0].state, "cancelled");
    assert!(r.tasks[0].leases[0].parts[0].signal.is_some() || r.tasks[0].leases[0].parts[0].exit_code.is_some());
    let p = ex.wait_ended(&t, pending).await;
    assert_eq!(p.state, "cancelled");
    assert!(p.tasks[0].leases.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_agent_leases_are_requeued_elsewhere() {
    let (mut ex, t) = one_provider_two_agents().await;
    let id = ex
        .submit(
            &t,
            &manifest(
                "survivor",
                "training",
                &gpus(8),
                "on-demand",
                "3.00",
                "echo attempt; sleep 3; echo finished",
            ),
        )
        .await
        .unwrap();
    let (node, mut agent) = agent_running(&mut ex, &t, id).await;
    // kill -9 the agent that runs it.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let job = ex.wait_ended(&t, id).await;
    assert_eq!(job.state, "succeeded", "{job:#?}");
    let leases = &job.tasks[0].leases;
    assert_eq!(leases.len(), 2, "{leases:#?}");
    assert_eq!(leases[0].state, "lost");
    assert_eq!(leases[1].state, "succeeded");
    assert_ne!(leases[1].parts[0].node, node, "the retry ran on the surviving node");
    // The lost lease is charged only up to when it was declared lost, the retry in full.
    let v: LedgerVerifyView = ex.get_ok(&ex.admin, "/api/v1/admin/ledger/verify").await;
    assert!(v.ok, "{v:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_out_of_funds_is_warned_then_ended() {
    let mut args = common::fast_args();
    args.extend(["--funds-grace-ms", "2000", "--min-funds-s", "1"].map(String::from));
    let mut ex = Exchange::start_with(args).await;
    let (_, p) = ex.create_provider("pricey").await;
    // 3,600.00 per GPU-hour: one GPU costs 1.00 a second.
    ex.start_agent(&p, "a", 8, "H100-80GB-SXM", "3600", "127.0.0.1");
    ex.wait_nodes(1).await;
    let (_, t) = ex.create_tenant("small-lab", "3.00").await;
    let id = ex
        .submit(
            &t,
            &manifest(
                "burn",
                "training",
                &gpus(1),
                "on-demand",
                "3600",
                "echo burning; sleep 1000",
            ),
        )
        .await
        .unwrap();
    let logs = ex.wait_logs(&t, id, "balance is exhausted").await;
    assert!(logs.contains("insufficient_funds"), "{logs}");
    let job = ex.wait_ended(&t, id).await;
    assert_eq!(job.state, "failed", "{job:#?}");
    let lease = &job.tasks[0].leases[0];
    assert_eq!(lease.stop_reason.as_deref(), Some("insufficient_funds"));
    assert!(
        job.reason.as_deref().unwrap().starts_with("insufficient_funds"),
        "{:?}",
        job.reason
    );
    // It was charged everything it had, never more; nothing is left held.
    assert_eq!(job.cost, Micros::from_units(3));
    let bal: agora_proto::api::BalanceView = ex.get_ok(&t, "/api/v1/balance").await;
    assert_eq!((bal.available, bal.held), (Micros::ZERO, Micros::ZERO));
    // New work is refused with a clear error.
    let (status, err) = ex
        .submit(&t, &manifest("more", "training", &gpus(1), "on-demand", "3600", "true"))
        .await
        .unwrap_err();
    assert_eq!((status, err.error.code.as_str()), (402, "insufficient_funds"));
    let v: LedgerVerifyView = ex.get_ok(&ex.admin, "/api/v1/admin/ledger/verify").await;
    assert!(v.ok, "{v:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_agent_has_its_work_requeued_not_failed() {
    let (mut ex, t) = one_provider_two_agents().await;
    let id = ex
        .submit(
            &t,
            &manifest(
                "moved",
                "training",
                &gpus(8),
                "on-demand",
                "3.00",
                "echo attempt; sleep 3; echo finished",
            ),
        )
        .await
        .unwrap();
    let (node, mut agent) = agent_running(&mut ex, &t, id).await;
    // SIGTERM: the agent stops its parts and reports that it did so itself.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    agent.wait().unwrap();
    let job = ex.wait_ended(&t, id).await;
    assert_eq!(job.state, "succeeded", "{job:#?}");
    let leases = &job.tasks[0].leases;
    assert_eq!(leases.len(), 2, "{leases:#?}");
    assert_eq!(
        leases[0].state, "lost",
        "the provider's shutdown is not the tenant's failure"
    );
    assert_ne!(leases[1].parts[0].node, node);
}
