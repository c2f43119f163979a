//! The control loop's money rules, stepped in-process with a simulated agent:
//! a tenant that cannot pay neither takes GPUs nor preempts anyone, and no
//! placement ever escrows nothing.

mod common;

use agora_server::{Server, ServerConfig};
use agora_types::{JobId, Micros, ProviderId, TenantId};
use common::{rounds, submit};

async fn server(min_funds_s: u64) -> (tempfile::TempDir, Server) {
    server_with(|cfg| cfg.min_funds_s = min_funds_s).await
}

/// A bootstrapped server with 30 ms rounds and whatever else `tune` sets.
async fn server_with(tune: impl FnOnce(&mut ServerConfig)) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    cfg.round_interval_ms = 30;
    tune(&mut cfg);
    let server = Server::start(cfg).await.unwrap();
    server.bootstrap(Micros::from_units(1000)).await.unwrap().unwrap();
    (dir, server)
}

/// One heartbeat from `agent` carrying only `logs` for the part it runs.
async fn send_logs(
    core: &agora_server::CoreHandle,
    agent: &common::FakeAgent,
    logs: Vec<agora_proto::agent::LogChunk>,
) {
    let hb = agora_proto::agent::Heartbeat {
        agent_id: agent.id,
        running: agent.running.iter().copied().collect(),
        events: vec![],
        event_ages_ms: vec![],
        more_events: false,
        stopped_by_agent: vec![],
        leaving: false,
        logs,
    };
    let provider = agent.provider;
    core.call(move |t| agora_server::ops::heartbeat(t, provider, hb))
        .await
        .unwrap()
        .unwrap();
}

/// Everything the demo tenant's job printed, as stored.
async fn job_output(core: &agora_server::CoreHandle, job: JobId) -> String {
    let logs = core
        .call(move |t| agora_server::ops::logs(t, agora_server::auth::Principal::Tenant(TenantId(1)), job, 0, 100))
        .await
        .unwrap()
        .unwrap();
    logs.lines.into_iter().map(|l| l.data).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfunded_order_neither_starts_nor_preempts() {
    let (_dir, server) = server(60).await;
    let core = server.core.clone();
    let mut big = common::register(&core, ProviderId(1), "big", 8, Micros::from_units(2)).await;
    let mut small = common::register(&core, ProviderId(1), "small", 1, Micros::from_units(2)).await;
    // The demo tenant fills the 8-GPU node with spot work.
    let spot = submit(&core, TenantId(1), "name: spot\nkind: training\nresources:\n  gpus_per_node: 8\ntier: spot\nmax_price_per_gpu_hour: 3\ncommand: 'true'\n").await;
    rounds().await;
    big.beat(&core).await;
    big.beat(&core).await;
    assert_eq!(common::job_state(&server.core, spot).await.0, "running");
    // Another tenant can pay one minute of an 8-GPU on-demand job (8 × 2.00/h × 60 s = 0.266666) …
    let tenant = core
        .call(|t| agora_server::ops::create_tenant(t, "lab", Micros::parse_decimal("0.30").unwrap()))
        .await
        .unwrap()
        .unwrap()
        .0;
    // … but its higher-bid one-GPU job, placed first in the same round, escrows all of it.
    // (Both are submitted in one step of the control loop: a round between them would
    // place the first and leave too little to submit the second.)
    let [drain, urgent] = common::submit_together(
        &core,
        tenant,
        [
            "name: drain\nkind: training\nresources:\n  gpus_per_node: 1\nmax_price_per_gpu_hour: 2.5\ncommand: 'true'\n",
            "name: urgent\nkind: training\nresources:\n  gpus_per_node: 8\nmax_price_per_gpu_hour: 2\ncommand: 'true'\n",
        ],
    )
    .await;
    rounds().await;
    rounds().await;
    small.beat(&core).await;
    big.beat(&core).await;
    assert_eq!(common::job_state(&server.core, drain).await.0, "running");
    let (state, reason) = common::job_state(&server.core, urgent).await;
    assert_eq!(state, "pending");
    assert!(
        reason.as_deref().is_some_and(|r| r.starts_with("waiting for funds")),
        "{reason:?}"
    );
    // Nobody was preempted for an order that cannot start.
    let spot_lease = core
        .call(move |t| agora_server::ops::job_view(t, spot).tasks[0].leases[0].state.clone())
        .await
        .unwrap();
    assert_eq!(spot_lease, "running");
    assert!(big.running.len() == 1, "the spot part still runs");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_funds_are_all_held_waits_instead_of_escrowing_nothing() {
    // With no minimum, only a zero balance stops a placement.
    let (_dir, server) = server(0).await;
    let core = server.core.clone();
    let mut agent = common::register(&core, ProviderId(1), "fake", 8, Micros::from_units(2)).await;
    let tenant = core
        .call(|t| agora_server::ops::create_tenant(t, "small", Micros::parse_decimal("0.50").unwrap()))
        .await
        .unwrap()
        .unwrap()
        .0;
    // Each job's hold (1 GPU × 2.00/h × 1 h = 2.00) exceeds the balance: the first takes all of it.
    let spec = "kind: training\nresources:\n  gpus_per_node: 1\nmax_price_per_gpu_hour: 2\ncommand: 'true'\n";
    // Both in one step of the control loop: a round between them would place the first and leave nothing to submit with.
    let (first, second) = (format!("name: first\n{spec}"), format!("name: second\n{spec}"));
    let [first, second] = common::submit_together(&core, tenant, [first.as_str(), second.as_str()]).await;
    rounds().await;
    rounds().await;
    assert_eq!(common::job_state(&server.core, first).await.0, "running");
    let (state, reason) = common::job_state(&server.core, second).await;
    assert_eq!(state, "pending");
    assert!(
        reason.as_deref().is_some_and(|r| r.starts_with("waiting for funds")),
        "{reason:?}"
    );
    // When the first ends, its unused hold returns and the second runs.
    agent.beat(&core).await;
    agent.exit_all(0);
    agent.beat(&core).await;
    rounds().await;
    rounds().await;
    assert_eq!(common::job_state(&server.core, first).await.0, "succeeded");
    assert_eq!(common::job_state(&server.core, second).await.0, "running");
    let verify = core.call(|t| t.ex.ledger.verify().is_ok()).await.unwrap();
    assert!(verify);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_chunks_delivered_twice_are_stored_once() {
    use agora_proto::agent::{LogChunk, PartRef, Stream};
    let (_dir, server) = server(60).await;
    let core = server.core.clone();
    let mut agent = common::register(&core, ProviderId(1), "fake", 8, Micros::from_units(2)).await;
    let job = submit(
        &core,
        TenantId(1),
        "name: chatty\nkind: training\nresources:\n  gpus_per_node: 1\nmax_price_per_gpu_hour: 3\ncommand: 'true'\n",
    )
    .await;
    rounds().await;
    agent.beat(&core).await;
    agent.beat(&core).await;
    let part: PartRef = *agent.running.iter().next().expect("the part runs");
    let chunk = |seq: u64, data: &str| LogChunk {
        part,
        stream: Stream::Stdout,
        data: data.into(),
        seq: Some(seq),
    };
    // The second and third heartbeats repeat chunks the first already delivered.
    for logs in [
        vec![chunk(0, "a"), chunk(1, "b")],
        vec![chunk(0, "a"), chunk(1, "b")],
        vec![chunk(1, "b"), chunk(2, "c")],
    ] {
        send_logs(&core, &agent, logs).await;
    }
    let text = job_output(&core, job).await;
    assert_eq!(text, "abc");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_share_serves_the_tenant_with_less_recent_use_first() {
    // Count use in GPU-seconds so a test can accumulate some.
    let (_dir, server) = server_with(|cfg| cfg.fair_share_unit_gpu_s = 1).await;
    let core = server.core.clone();
    let mut agent = common::register(&core, ProviderId(1), "fake", 8, Micros::from_units(2)).await;
    let other = core
        .call(|t| agora_server::ops::create_tenant(t, "other", Micros::from_units(1000)))
        .await
        .unwrap()
        .unwrap()
        .0;
    let job = |name: &str| {
        format!(
            "name: {name}\nkind: training\nresources:\n  gpus_per_node: 8\nmax_price_per_gpu_hour: 3\ncommand: 'true'\n"
        )
    };
    // The demo tenant runs for a while and builds up use.
    let first = submit(&core, TenantId(1), &job("first")).await;
    rounds().await;
    agent.beat(&core).await;
    agent.beat(&core).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // Both tenants queue a job for the busy node, the demo tenant first.
    let again = submit(&core, TenantId(1), &job("again")).await;
    let theirs = submit(&core, other, &job("theirs")).await;
    rounds().await;
    rounds().await;
    rounds().await;
    agent.exit_all(0);
    agent.beat(&core).await;
    rounds().await;
    rounds().await;
    assert_eq!(common::job_state(&server.core, first).await.0, "succeeded");
    // Same tier, same bid: the tenant with less recent use goes first although it came later.
    assert_eq!(common::job_state(&server.core, theirs).await.0, "running");
    assert_eq!(common::job_state(&server.core, again).await.0, "pending");
    let rank = core
        .call(|t| t.ex.share_ranks.get(&TenantId(1)).copied())
        .await
        .unwrap();
    assert!(rank.is_some_and(|r| r >= 1), "{rank:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_exchange_skips_its_clearing_rounds() {
    let (_dir, server) = server(60).await;
    let core = server.core.clone();
    let mut agent = common::register(&core, ProviderId(1), "fake", 8, Micros::from_units(2)).await;
    rounds().await;
    let (clears, ticks) = core.call(|t| (t.vol.clears, t.vol.rounds)).await.unwrap();
    rounds().await;
    rounds().await;
    let (clears_later, ticks_later) = core.call(|t| (t.vol.clears, t.vol.rounds)).await.unwrap();
    assert!(ticks_later > ticks + 3, "rounds went on: {ticks} → {ticks_later}");
    assert_eq!(clears_later, clears, "nothing changed, nothing cleared");
    // A submission is an event: the next round clears and places it.
    let job = submit(
        &core,
        TenantId(1),
        "name: wake\nkind: training\nresources:\n  gpus_per_node: 1\nmax_price_per_gpu_hour: 3\ncommand: 'true'\n",
    )
    .await;
    rounds().await;
    agent.beat(&core).await;
    assert_eq!(common::job_state(&server.core, job).await.0, "running");
    assert!(core.call(|t| t.vol.clears).await.unwrap() > clears_later);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fabric_domain_keeps_its_id_through_moves_and_snapshots() {
    use agora_proto::agent::{InventorySource, NodeReport, RegisterAgent};
    use agora_types::{DomainId, GpuModel};
    let (_dir, server) = server(60).await;
    let core = server.core.clone();
    let reg = |domains: [&str; 2]| RegisterAgent {
        name: "rack".into(),
        inventory_source: InventorySource::Declared,
        sites: vec![],
        nodes: domains
            .iter()
            .enumerate()
            .map(|(i, d)| NodeReport {
                name: format!("n{i}"),
                gpu_model: GpuModel::resolve("h100").unwrap(),
                gpus: 8,
                address: "10.0.0.1".into(),
                ask_micros_per_gpu_hour: Micros::from_units(2),
                site: None,
                fabric_domain: Some(d.to_string()),
            })
            .collect(),
    };
    let domain_of =
        |name: &'static str| move |t: &mut agora_server::core::Txn<'_>| t.ex.domain_named(ProviderId(1), name);
    let r = reg(["a", "b"]);
    core.call(move |t| agora_server::ops::register_agent(t, ProviderId(1), r))
        .await
        .unwrap()
        .unwrap();
    // Both nodes move to `a`: `b` has no node left, yet keeps its id.
    let r = reg(["a", "a"]);
    core.call(move |t| agora_server::ops::register_agent(t, ProviderId(1), r))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(core.call(domain_of("b")).await.unwrap(), Ok(DomainId(2)));
    // Through a snapshot too, and a new name gets a new id.
    let restored = core
        .call(|t| agora_server::state::Exchange::restore(&t.ex.snapshot()).unwrap())
        .await
        .unwrap();
    assert_eq!(restored.domain_named(ProviderId(1), "b"), Ok(DomainId(2)));
    assert_eq!(restored.domain_named(ProviderId(1), "c"), Err(DomainId(3)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_output_beyond_the_retention_is_pruned_oldest_first() {
    use agora_proto::agent::{LogChunk, PartRef, Stream};
    let (_dir, server) = server_with(|cfg| cfg.log_retention_bytes_per_job = 10).await;
    let core = server.core.clone();
    let mut agent = common::register(&core, ProviderId(1), "fake", 8, Micros::from_units(2)).await;
    let job = submit(
        &core,
        TenantId(1),
        "name: loud\nkind: training\nresources:\n  gpus_per_node: 1\nmax_price_per_gpu_hour: 3\ncommand: 'true'\n",
    )
    .await;
    rounds().await;
    agent.beat(&core).await;
    agent.beat(&core).await;
    let part: PartRef = *agent.running.iter().next().expect("the part runs");
    for (seq, data) in ["aaaaa", "bbbbb", "ccccc"].iter().enumerate() {
        let chunk = LogChunk {
            part,
            stream: Stream::Stdout,
            data: data.to_string(),
            seq: Some(seq as u64),
        };
        send_logs(&core, &agent, vec![chunk]).await;
    }
    let text = job_output(&core, job).await;
    assert_eq!(text, "bbbbbccccc", "10 bytes kept, the newest");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_health_policies_reach_the_engine_and_survive_a_restart() {
    use agora_engine::market::CapMode;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    cfg.rules.policies.provider_share_mode = CapMode::Hard;
    cfg.rules.policies.small_tenant_floor_bps = 1234;
    let expected = cfg.rules.policies;
    let server = Server::start(cfg).await.unwrap();
    let now = server.core.call(|t| *t.ex.market.policies()).await.unwrap();
    assert_eq!(now, expected);
    server.stop().await;
    // Restarted with the defaults, the exchange records the change and the engine follows.
    let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    let defaults = cfg.rules.policies;
    assert_eq!(defaults.provider_share_cap_bps, Some(5000));
    let server = Server::start(cfg).await.unwrap();
    let now = server.core.call(|t| *t.ex.market.policies()).await.unwrap();
    assert_eq!(now, defaults);
    server.stop().await;
}
