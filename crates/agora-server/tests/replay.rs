//! Replaying the event log — from the start, or from a snapshot plus the events
//! after it — rebuilds exactly the state the live server has: the same records,
//! the same ledger (balances and hash chain) and the same market.

mod common;

use std::time::Duration;

use agora_server::auth::Principal;
use agora_server::events::Event;
use agora_server::state::Exchange;
use agora_server::{ServerConfig, ops};
use agora_store::{SqliteStore, Store};
use agora_types::{Micros, ProviderId, TenantId};
use common::{rounds, submit};

/// Replays the whole log into a fresh state, ignoring snapshots.
fn replay_log_only(store: &dyn Store) -> Exchange {
    let mut ex = Exchange::new();
    for (_, bytes) in store.read_events(0, usize::MAX).unwrap() {
        ex.apply(&serde_json::from_slice::<Event>(&bytes).unwrap());
    }
    ex
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_snapshots_rebuild_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    cfg.round_interval_ms = 30;
    cfg.settle_interval_ms = 100;
    // Snapshots land in the middle of the scenario, so recovery is snapshot + tail.
    cfg.snapshot_every_events = 7;
    let server = agora_server::Server::start(cfg).await.unwrap();
    server.bootstrap(Micros::from_units(500)).await.unwrap().unwrap();
    let core = server.core.clone();
    let (tenant, provider) = (TenantId(1), ProviderId(1));

    let mut agent = common::register(&core, provider, "fake", 8, Micros::from_units(2)).await;

    let base = "max_price_per_gpu_hour: 3.00\ncommand: 'true'\n";
    submit(
        &core,
        tenant,
        &format!("name: spot-batch\nkind: batch\nresources:\n  gpus_per_node: 2\n  tasks: 4\ntier: spot\n{base}"),
    )
    .await;
    rounds().await;
    agent.beat(&core).await; // starts the four spot tasks: the node is full
    agent.beat(&core).await;
    rounds().await;
    let od = submit(
        &core,
        tenant,
        &format!("name: urgent\nkind: training\nresources:\n  gpus_per_node: 4\n{base}"),
    )
    .await;
    let never = submit(
        &core,
        tenant,
        &format!("name: never\nkind: training\nresources:\n  gpus_per_node: 8\n  gpu_models: [B200]\n{base}"),
    )
    .await;
    rounds().await;
    agent.beat(&core).await; // stops the preempted spot tasks
    agent.beat(&core).await;
    rounds().await;
    agent.beat(&core).await; // starts the on-demand job (and requeued spot work where it fits)
    agent.beat(&core).await;
    core.call(move |t| ops::cancel(t, Principal::Tenant(tenant), never))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await; // usage accrues per whole second; settlements
    agent.exit_all(0);
    agent.beat(&core).await;
    rounds().await;
    agent.beat(&core).await;
    agent.exit_all(3);
    agent.beat(&core).await;
    rounds().await;

    // A reservation contract: reserved work on it, charges whether used or not.
    let lab = core
        .call(|t| ops::create_tenant(t, "lab", Micros::from_units(1000)))
        .await
        .unwrap()
        .unwrap()
        .0;
    let contract = core
        .call(move |t| {
            agora_server::contracts::create(
                t,
                Principal::Tenant(lab),
                agora_proto::api::CreateContract {
                    tenant: None,
                    provider,
                    model: "h100".into(),
                    gpus: 4,
                    start_ms: None,
                    duration_s: 3600,
                    price_per_gpu_hour: None,
                },
            )
        })
        .await
        .unwrap()
        .unwrap();
    let reserved = submit(
        &core,
        lab,
        "name: mine\nkind: training\nresources:\n  gpus_per_node: 4\ntier: reserved\ncommand: 'true'\n",
    )
    .await;
    rounds().await;
    agent.beat(&core).await;
    agent.beat(&core).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    rounds().await;

    let (live, live_plan, applied, live_reservations) = core
        .call(|t| {
            (
                t.ex.snapshot(),
                t.ex.market.clear(),
                t.ex.applied,
                t.ex.market.reservations().clone(),
            )
        })
        .await
        .unwrap();
    let live_ex = Exchange::restore(&live).unwrap();
    // The scenario did what it says: a preemption, a success, a failure, a cancel, settlements.
    let leases: Vec<_> = live_ex.leases.values().map(|l| l.state.as_str()).collect();
    assert!(
        leases.contains(&"preempted") && leases.contains(&"succeeded"),
        "{leases:?}"
    );
    assert_eq!(live_ex.jobs[&od].state.as_str(), "succeeded");
    assert_eq!(live_ex.jobs[&never].state.as_str(), "cancelled");
    assert!(live_ex.ledger.journal().iter().any(|t| t.kind.as_str() == "settle"));
    assert_eq!(live_ex.jobs[&reserved].state.as_str(), "running");
    assert!(
        live_ex
            .ledger
            .contract_charges(contract.id)
            .is_some_and(|c| c.charged > Micros::ZERO),
        "the contract was charged"
    );
    let h100 = agora_types::GpuModel::resolve("h100").unwrap();
    assert_eq!(live_reservations[&(provider, h100)].holders()[&lab].used, 4);

    // A second reader of the same database while the server still runs.
    let store = SqliteStore::open(&dir.path().join("agora.db")).unwrap();
    assert_eq!(store.last_seq().unwrap(), applied);
    let (snap_seq, _) = store
        .latest_snapshot()
        .unwrap()
        .expect("periodic snapshots were written");
    assert!(
        snap_seq > 0 && snap_seq < applied,
        "snapshot at {snap_seq} of {applied}"
    );

    for (how, ex) in [
        ("log only", replay_log_only(&store)),
        ("snapshot + tail", agora_server::core::recover(&store).unwrap()),
    ] {
        assert_eq!(ex.applied, applied, "{how}");
        assert!(
            ex.snapshot() == live,
            "{how}: the rebuilt state differs from the live one"
        );
        assert_eq!(ex.ledger.head(), live_ex.ledger.head(), "{how}");
        assert!(ex.ledger.verify().is_ok(), "{how}");
        assert_eq!(
            ex.market.clear(),
            live_plan,
            "{how}: the rebuilt market decides differently"
        );
        assert_eq!(ex.market.reservations(), &live_reservations, "{how}");
    }
    server.stop().await;
}

/// The names taken by tenants and providers are an index of the state: a
/// restored snapshot knows them as the live state did.
#[test]
fn names_taken_survive_a_restore() {
    let mut ex = Exchange::new();
    let at = agora_types::UnixMs(1_000);
    ex.apply(&Event::TenantCreated {
        tenant: TenantId(1),
        name: "lab".into(),
        at,
    });
    ex.apply(&Event::ProviderCreated {
        provider: ProviderId(1),
        name: "acme".into(),
        at,
    });
    let restored = Exchange::restore(&ex.snapshot()).unwrap();
    for e in [&ex, &restored] {
        assert!(e.tenant_named("lab") && e.provider_named("acme"));
        assert!(!e.tenant_named("acme") && !e.provider_named("lab"));
    }
}
