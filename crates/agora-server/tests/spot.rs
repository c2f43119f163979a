//! The spot price through the control loop: plentiful capacity prices at the
//! floor; a higher spot bid makes the class scarce, raises the price to it,
//! preempts the lease it outbids and waits the outbid order; the history
//! shows both prices.

mod common;

use agora_server::{Server, ServerConfig, ops, spot};
use agora_types::{GpuModel, Micros, PricePerGpuHour, ProviderId, TenantId};
use common::{rounds, submit};

fn spot_job(bid: &str) -> String {
    format!(
        "name: spot\nkind: training\nresources:\n  gpus_per_node: 8\ntier: spot\nmax_price_per_gpu_hour: {bid}\ncommand: 'true'\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_spot_bid_raises_the_price_and_outbids_the_running_lease() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    cfg.round_interval_ms = 30;
    cfg.stop_grace_ms = 100;
    let server = Server::start(cfg).await.unwrap();
    server.bootstrap(Micros::from_units(1000)).await.unwrap().unwrap();
    let core = server.core.clone();
    let mut agent = common::register(&core, ProviderId(1), "a", 8, Micros::from_units(1)).await;
    let h100 = GpuModel::resolve("h100").unwrap();
    let price = |units: i64| PricePerGpuHour(Micros::from_units(units));
    let quotes = || async {
        server
            .core
            .call(move |t| spot::view(&t.vol.spot, Some(h100), None))
            .await
            .unwrap()
    };

    let low = submit(&core, TenantId(1), &spot_job("2")).await;
    rounds().await;
    agent.beat(&core).await;
    agent.beat(&core).await;
    assert_eq!(common::job_state(&server.core, low).await.0, "running");
    rounds().await;
    let q = quotes().await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].price, price(1), "plentiful: the floor");
    assert!(!q[0].scarce);

    let lab = core
        .call(|t| ops::create_tenant(t, "lab", Micros::from_units(1000)))
        .await
        .unwrap()
        .unwrap()
        .0;
    let high = submit(&core, lab, &spot_job("3")).await;
    rounds().await;
    let q = quotes().await;
    assert!(
        q[0].history.iter().any(|p| p.price == price(3)),
        "the price rose to the new bid: {q:?}"
    );
    // The outbid lease gets its stop signal; once it ends, the higher bid runs.
    for _ in 0..3 {
        agent.beat(&core).await;
        rounds().await;
    }
    assert_eq!(common::job_state(&server.core, high).await.0, "running");
    let (low_state, reason) = common::job_state(&server.core, low).await;
    assert_eq!(low_state, "pending");
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("spot price of H100-80GB-SXM")),
        "{reason:?}"
    );
    // Now the lab's lease runs at 3 and the outbid order waits at 2: scarce, priced at 3.
    // (While the outbid lease was stopping, its GPUs were supply again and the price fell back to the floor.)
    let q = quotes().await;
    assert_eq!(q[0].price, price(3), "scarce: the lowest accepted bid: {q:?}");
    assert!(q[0].scarce);
    assert_eq!(q[0].demand_gpus, 16);
    let history: Vec<PricePerGpuHour> = q[0].history.iter().map(|p| p.price).collect();
    assert_eq!(history[..2], [price(1), price(3)]);
    assert_eq!(history.last(), Some(&price(3)));
    let view = core.call(move |t| ops::job_view(t, low)).await.unwrap();
    assert_eq!(view.tasks[0].leases[0].state, "preempted");
    server.stop().await;
}
