//! An orbital site through the control loop: it takes work only inside its
//! window, only checkpointable work, and stops that work a grace period
//! before the window closes (requeued, not failed).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use agora_proto::agent::{InventorySource, NodeReport, RegisterAgent, SiteKind, SiteReport, Window};
use agora_server::{Server, ServerConfig, ops};
use agora_types::{GpuModel, Micros, ProviderId, TenantId};
use common::{FakeAgent, rounds, submit};

fn job(name: &str, checkpointable: bool) -> String {
    format!(
        "name: {name}\nkind: training\nresources:\n  gpus_per_node: 8\nmax_price_per_gpu_hour: 3\n\
         checkpointable: {checkpointable}\ncommand: 'true'\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orbital_site_runs_checkpointable_work_inside_its_window_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    cfg.round_interval_ms = 30;
    cfg.stop_grace_ms = 500;
    let server = Server::start(cfg).await.unwrap();
    server.bootstrap(Micros::from_units(1000)).await.unwrap().unwrap();
    let core = server.core.clone();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Open from a second ago for 2.5 s: available until 0.5 s (the grace) before that.
    let reg = RegisterAgent {
        name: "sat".into(),
        inventory_source: InventorySource::Declared,
        sites: vec![SiteReport {
            name: "leo-1".into(),
            region: "leo".into(),
            power_budget_kw: None,
            node_overhead_w: 0,
            kind: SiteKind::Orbital,
            windows: vec![Window {
                start_ms: now_ms - 1000,
                end_ms: now_ms + 2500,
            }],
        }],
        nodes: vec![NodeReport {
            name: "n0".into(),
            gpu_model: GpuModel::resolve("h100").unwrap(),
            gpus: 8,
            address: "10.0.0.9".into(),
            ask_micros_per_gpu_hour: Micros::from_units(1),
            site: Some("leo-1".into()),
            fabric_domain: None,
        }],
    };
    let r = core
        .call(move |t| ops::register_agent(t, ProviderId(1), reg))
        .await
        .unwrap()
        .unwrap();
    let mut agent = FakeAgent {
        id: r.agent_id,
        provider: ProviderId(1),
        running: BTreeSet::new(),
        events: vec![],
        launched: vec![],
    };

    let plain = submit(&core, TenantId(1), &job("plain", false)).await;
    let resumable = submit(&core, TenantId(1), &job("resumable", true)).await;
    rounds().await;
    agent.beat(&core).await;
    agent.beat(&core).await;
    assert_eq!(common::job_state(&server.core, resumable).await.0, "running");
    assert_eq!(
        common::job_state(&server.core, plain).await.0,
        "pending",
        "orbit takes only checkpointable work"
    );

    // The window closes (less the grace): the work is stopped and requeued; nothing runs there.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    for _ in 0..3 {
        agent.beat(&core).await;
        rounds().await;
    }
    let (s, _) = common::job_state(&server.core, resumable).await;
    assert_eq!(s, "pending", "stopped before the window closed, and requeued");
    let lease = core
        .call(move |t| ops::job_view(t, resumable).tasks[0].leases[0].clone())
        .await
        .unwrap();
    assert_eq!(lease.state, "preempted");
    assert!(agent.running.is_empty());
    let site = core.call(|t| ops::sites(t, Some(ProviderId(1)))).await.unwrap();
    assert_eq!(site[0].kind, SiteKind::Orbital);
    assert!(!site[0].available);

    // A bad window is refused with the field named.
    let bad = RegisterAgent {
        name: "sat2".into(),
        inventory_source: InventorySource::Declared,
        sites: vec![SiteReport {
            name: "leo-2".into(),
            region: "leo".into(),
            power_budget_kw: None,
            node_overhead_w: 0,
            kind: SiteKind::Orbital,
            windows: vec![Window {
                start_ms: now_ms,
                end_ms: now_ms - 1,
            }],
        }],
        nodes: vec![NodeReport {
            name: "n0".into(),
            gpu_model: GpuModel::resolve("h100").unwrap(),
            gpus: 8,
            address: "10.0.0.10".into(),
            ask_micros_per_gpu_hour: Micros::from_units(1),
            site: Some("leo-2".into()),
            fabric_domain: None,
        }],
    };
    let err = core
        .call(move |t| ops::register_agent(t, ProviderId(1), bad))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("sites[0].windows"), "{err:?}");
    server.stop().await;
}
