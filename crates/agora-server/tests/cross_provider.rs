//! A gang spanning providers through the control loop: one lease per
//! provider, each at its own price and escrow, one rank space and one
//! master across them; they run and end as one gang; a restart keeps them.

mod common;

use agora_proto::api::JobView;
use agora_server::{Server, ServerConfig, ops};
use agora_types::{JobId, LeaseId, Micros, PricePerGpuHour, ProviderId, TenantId};
use common::{FakeAgent, rounds, submit};

const GANG: &str = "name: spread\nkind: training\nresources:\n  gpus_per_node: 8\n  nodes: 2\n  cross_provider: {max_latency_ms: 20}\nmax_price_per_gpu_hour: 3\nduration: 1h\ncommand: torchrun\n";

fn config(dir: &std::path::Path, matrix: &str) -> ServerConfig {
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    cfg.round_interval_ms = 30;
    cfg.stop_grace_ms = 100;
    cfg.rules.latency = agora_server::latency::parse(matrix).unwrap();
    cfg
}

struct Setup {
    dir: tempfile::TempDir,
    server: Server,
    west: FakeAgent,
    central: FakeAgent,
}

/// Provider 1 has one 8-GPU node in eu-west at 1.00; provider 2 one in eu-central at 2.00.
async fn setup(matrix: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), matrix)).await.unwrap();
    server.bootstrap(Micros::from_units(1000)).await.unwrap().unwrap();
    let core = &server.core;
    let second = core
        .call(|t| ops::create_provider(t, "central"))
        .await
        .unwrap()
        .unwrap()
        .0;
    let west = common::register_with(core, ProviderId(1), "west", 8, Micros::from_units(1), Some("eu-west")).await;
    let central = common::register_with(core, second, "central", 8, Micros::from_units(2), Some("eu-central")).await;
    Setup {
        dir,
        server,
        west,
        central,
    }
}

async fn view(server: &Server, job: JobId) -> JobView {
    server.core.call(move |t| ops::job_view(t, job)).await.unwrap()
}

async fn beat_both(s: &mut Setup) {
    s.west.beat(&s.server.core).await;
    s.central.beat(&s.server.core).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_spans_two_providers_and_runs_as_one() {
    let mut s = setup("eu-west,eu-central,10\n").await;
    let job = submit(&s.server.core, TenantId(1), GANG).await;
    rounds().await;
    beat_both(&mut s).await;

    // One lease per provider, each at its own ask, with its own escrow.
    let v = view(&s.server, job).await;
    let leases = &v.tasks[0].leases;
    assert_eq!(leases.len(), 2, "{v:?}");
    assert_eq!(v.tasks[0].attempts, 1);
    let by = |i: usize| {
        (
            leases[i].provider,
            PricePerGpuHour(leases[i].price_per_gpu_hour),
            leases[i].gpus,
        )
    };
    assert_eq!(by(0), (ProviderId(1), PricePerGpuHour(Micros::from_units(1)), 8));
    assert_eq!(by(1), (ProviderId(2), PricePerGpuHour(Micros::from_units(2)), 8));
    let ids: Vec<LeaseId> = leases.iter().map(|l| l.id).collect();
    for (i, l) in leases.iter().enumerate() {
        let gang = l.gang.as_ref().expect("a gang part");
        assert_eq!((&gang.leases, gang.first_rank, gang.nodes), (&ids, i as u32, 2));
    }
    let holds = s
        .server
        .core
        .call(move |t| {
            ids.iter()
                .map(|l| t.ex.ledger.hold_of(*l).map(|h| (h.provider, h.held)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
    // An hour of 8 GPUs at each provider's price.
    assert_eq!(
        holds,
        [
            Some((ProviderId(1), Micros::from_units(8))),
            Some((ProviderId(2), Micros::from_units(16)))
        ]
    );

    // One rank space and one master across both providers.
    let (w, c) = (&s.west.launched[0].env, &s.central.launched[0].env);
    for (env, rank, node_rank) in [(w, "0", "0"), (c, "8", "1")] {
        assert_eq!(env["MASTER_ADDR"], "west.example");
        assert_eq!(env["WORLD_SIZE"], "16");
        assert_eq!(env["RANK"], rank);
        assert_eq!(env["NODE_RANK"], node_rank);
        assert_eq!(env["AGORA_NNODES"], "2");
    }
    assert_eq!(w["MASTER_PORT"], c["MASTER_PORT"]);

    beat_both(&mut s).await;
    assert_eq!(view(&s.server, job).await.state, "running");

    // A restart rebuilds both leases as one gang.
    let before = view(&s.server, job).await;
    s.server.stop().await;
    s.server = Server::start(config(s.dir.path(), "eu-west,eu-central,10\n"))
        .await
        .unwrap();
    let after = view(&s.server, job).await;
    assert_eq!(before.tasks, after.tasks);

    // The first provider's part finishes first: the job runs until the second's does.
    s.west.exit_all(0);
    beat_both(&mut s).await;
    rounds().await;
    let v = view(&s.server, job).await;
    assert_eq!(
        (v.state.as_str(), v.tasks[0].leases[0].state.as_str()),
        ("running", "succeeded")
    );
    s.central.exit_all(0);
    beat_both(&mut s).await;
    rounds().await;
    assert_eq!(view(&s.server, job).await.state, "succeeded");
    let ok = s.server.core.call(|t| t.ex.ledger.verify().is_ok()).await.unwrap();
    assert!(ok);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_part_stops_the_other_provider_and_fails_the_job() {
    let mut s = setup("eu-west,eu-central,10\n").await;
    let job = submit(&s.server.core, TenantId(1), GANG).await;
    rounds().await;
    beat_both(&mut s).await;
    beat_both(&mut s).await;
    s.central.exit_all(3);
    // The west part gets its stop signal and ends by it.
    for _ in 0..3 {
        beat_both(&mut s).await;
        rounds().await;
    }
    let v = view(&s.server, job).await;
    assert_eq!(v.state, "failed", "{v:?}");
    assert_eq!(v.reason.as_deref(), Some("exited with code 3"));
    let states: Vec<(&str, Option<&str>)> = v.tasks[0]
        .leases
        .iter()
        .map(|l| (l.state.as_str(), l.stop_reason.as_deref()))
        .collect();
    assert_eq!(states, [("failed", Some("peer_failed")), ("failed", None)]);
    assert!(s.west.running.is_empty());
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_every_provider_s_part() {
    let mut s = setup("eu-west,eu-central,10\n").await;
    let job = submit(&s.server.core, TenantId(1), GANG).await;
    rounds().await;
    beat_both(&mut s).await;
    beat_both(&mut s).await;
    s.server
        .core
        .call(move |t| ops::cancel(t, agora_server::auth::Principal::Admin, job))
        .await
        .unwrap()
        .unwrap();
    for _ in 0..3 {
        beat_both(&mut s).await;
        rounds().await;
    }
    let v = view(&s.server, job).await;
    assert_eq!(v.state, "cancelled");
    assert!(v.tasks[0].leases.iter().all(|l| l.state == "cancelled"), "{v:?}");
    assert!(s.west.running.is_empty() && s.central.running.is_empty());
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_too_far_apart_keep_the_gang_waiting_with_the_reason() {
    let s = setup("eu-west,eu-central,45\n").await;
    let job = submit(&s.server.core, TenantId(1), GANG).await;
    rounds().await;
    let v = view(&s.server, job).await;
    assert_eq!(v.state, "pending");
    let reason = v.reason.unwrap_or_default();
    assert!(
        reason.ends_with("2 free at that price across providers but at most 1 in regions within 20 ms of each other"),
        "{reason}"
    );
    s.server.stop().await;
}
