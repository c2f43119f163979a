//! Reservation contracts through the control loop: admission checks, the
//! reserved tier, resale of idle reserved GPUs as spot with the holder
//! credited, reclaim by preemption, charges whether used or not, an early
//! end, and a restart that restores it all.

mod common;

use std::time::Duration;

use agora_ledger::Account;
use agora_proto::api::{ContractView, CreateContract};
use agora_server::auth::Principal;
use agora_server::{Server, ServerConfig, contracts, ops};
use agora_types::{ContractId, JobId, Micros, ProviderId, TenantId};
use common::{rounds, submit};

const PROVIDER: ProviderId = ProviderId(1);
const DEMO: TenantId = TenantId(1);

fn config(dir: &std::path::Path) -> ServerConfig {
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    cfg.round_interval_ms = 30;
    cfg.settle_interval_ms = 200;
    cfg.stop_grace_ms = 100;
    cfg
}

fn request(gpus: u32) -> CreateContract {
    CreateContract {
        tenant: None,
        provider: PROVIDER,
        model: "h100".into(),
        gpus,
        start_ms: None,
        duration_s: 3600,
        price_per_gpu_hour: None,
    }
}

async fn create(server: &Server, who: Principal, req: CreateContract) -> Result<ContractView, (u16, String)> {
    server
        .core
        .call(move |t| contracts::create(t, who, req))
        .await
        .unwrap()
        .map_err(|e| (e.status.as_u16(), e.message.clone()))
}

async fn contract(server: &Server, id: ContractId) -> ContractView {
    server
        .core
        .call(move |t| contracts::get(t, Principal::Admin, id))
        .await
        .unwrap()
        .unwrap()
}

async fn job(server: &Server, job: JobId) -> agora_proto::api::JobView {
    server.core.call(move |t| ops::job_view(t, job)).await.unwrap()
}

fn spec(tier: &str, nodes: u32) -> String {
    format!(
        "name: {tier}\nkind: training\nresources:\n  gpus_per_node: 8\n  nodes: {nodes}\ntier: {tier}\n\
         max_price_per_gpu_hour: 3\ncommand: 'true'\n"
    )
}

/// A bootstrapped server with two 8-GPU nodes at 2.00/GPU-h (agents `a` and
/// `b` of provider 1), the demo tenant, and a tenant `lab` with 10,000.
struct Setup {
    dir: tempfile::TempDir,
    server: Server,
    core: agora_server::CoreHandle,
    a: common::FakeAgent,
    b: common::FakeAgent,
    lab: TenantId,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path())).await.unwrap();
    server.bootstrap(Micros::from_units(1000)).await.unwrap().unwrap();
    let core = server.core.clone();
    let a = common::register(&core, PROVIDER, "a", 8, Micros::from_units(2)).await;
    let b = common::register(&core, PROVIDER, "b", 8, Micros::from_units(2)).await;
    let lab = core
        .call(|t| ops::create_tenant(t, "lab", Micros::from_units(10_000)))
        .await
        .unwrap()
        .unwrap()
        .0;
    Setup {
        dir,
        server,
        core,
        a,
        b,
        lab,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_is_used_resold_reclaimed_charged_and_restored() {
    let Setup {
        dir,
        server,
        core,
        mut a,
        mut b,
        lab,
    } = setup().await;
    let as_lab = Principal::Tenant(lab);

    // Admission: the provider's capacity, and the cap on one tenant's share of a model (80 % of 16).
    let (status, msg) = create(&server, as_lab, request(17)).await.unwrap_err();
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("16 H100-80GB-SXM online"), "{msg}");
    let (status, msg) = create(&server, as_lab, request(13)).await.unwrap_err();
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("at most 80.0 %"), "{msg}");
    let mut cheap = request(8);
    cheap.price_per_gpu_hour = Some("1.00".into());
    let (status, msg) = create(&server, as_lab, cheap).await.unwrap_err();
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("below the provider's ask"), "{msg}");
    let (status, _) = create(&server, Principal::Provider(PROVIDER), request(8))
        .await
        .unwrap_err();
    assert_eq!(status, 403);

    let c = create(&server, as_lab, request(8)).await.unwrap();
    assert_eq!(c.state, "active");
    assert_eq!(
        c.price_per_gpu_hour.0,
        Micros::from_units(2),
        "the provider's ask by default"
    );
    assert_eq!(c.term_cost, Micros::from_units(16), "8 GPUs × 2.00 × 1 h");
    assert_eq!(c.holding.gpus, 8);

    // On-demand work of others may not sit on the reserved half.
    let on_demand = submit(&core, DEMO, &spec("on-demand", 2)).await;
    rounds().await;
    let v = job(&server, on_demand).await;
    assert_eq!(v.state, "pending");
    assert!(
        v.reason.as_deref().is_some_and(|r| r.contains("reserved by contracts")),
        "{v:?}"
    );
    core.call(move |t| ops::cancel(t, Principal::Tenant(DEMO), on_demand))
        .await
        .unwrap()
        .unwrap();

    // Spot work may: 8 GPUs of its gang are resold from the lab's reservation.
    let spot = submit(&core, DEMO, &spec("spot", 2)).await;
    rounds().await;
    a.beat(&core).await;
    b.beat(&core).await;
    a.beat(&core).await;
    b.beat(&core).await;
    assert_eq!(job(&server, spot).await.state, "running");
    assert_eq!(contract(&server, c.id).await.holding.resold_gpus, 8);

    // Time passes: the contract is charged, and the spot lease's settlement credits the lab.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    a.beat(&core).await;
    b.beat(&core).await;
    let v = contract(&server, c.id).await;
    assert!(v.charged > Micros::ZERO, "charged whether used or not: {v:?}");
    assert!(v.holding.resale_credited > Micros::ZERO, "resale credited: {v:?}");

    // The lab needs its GPUs: its reserved job preempts the spot gang, then runs at no per-hour price.
    let reserved = submit(
        &core,
        lab,
        "name: mine\nkind: training\nresources:\n  gpus_per_node: 8\ntier: reserved\ncommand: 'true'\n",
    )
    .await;
    rounds().await;
    for _ in 0..3 {
        a.beat(&core).await;
        b.beat(&core).await;
        rounds().await;
    }
    let spot_view = job(&server, spot).await;
    assert_ne!(spot_view.state, "running", "the spot gang was preempted: {spot_view:?}");
    let mine = job(&server, reserved).await;
    assert_eq!(mine.state, "running", "{mine:?}");
    let lease = &mine.tasks[0].leases[0];
    assert_eq!(lease.price_per_gpu_hour, Micros::ZERO);
    assert_eq!(contract(&server, c.id).await.holding.used_gpus, 8);

    // The lab ends the contract early: charged for the term served, its reserved work stopped and requeued.
    let ended = core
        .call(move |t| contracts::end(t, as_lab, c.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, "ended");
    assert_eq!(ended.end_reason.as_deref(), Some("ended_by_tenant"));
    let served_s = (ended.ended_at_ms.unwrap() - ended.start_ms) / 1000;
    assert_eq!(ended.charged, ended.price_per_gpu_hour.cost(8, served_s));
    for _ in 0..3 {
        a.beat(&core).await;
        b.beat(&core).await;
        rounds().await;
    }
    let mine = job(&server, reserved).await;
    assert_eq!(mine.state, "pending", "{mine:?}");
    assert!(
        mine.reason
            .as_deref()
            .is_some_and(|r| r.contains("no active reservation contract")),
        "{mine:?}"
    );
    let again = core.call(move |t| contracts::end(t, as_lab, c.id)).await.unwrap();
    assert_eq!(again.unwrap_err().status.as_u16(), 409, "a contract ends once");

    // Money: the ledger verifies, and the provider's earnings are contract plus spot minus resale credits.
    let (ok, lab_available) = core
        .call(move |t| {
            (
                t.ex.ledger.verify().is_ok(),
                t.ex.ledger.balance(&Account::TenantAvailable(lab)),
            )
        })
        .await
        .unwrap();
    assert!(ok);
    let v = contract(&server, c.id).await;
    assert_eq!(
        lab_available,
        Micros::from_units(10_000) - v.charged + v.holding.resale_credited,
        "the lab paid its contract and got its resale credit; its reserved lease cost nothing"
    );

    // A restart rebuilds the contract and the market's holdings from the log.
    let before = core
        .call(|t| (contracts::list(t, Principal::Admin), t.ex.market.reservations().clone()))
        .await
        .unwrap();
    server.stop().await;
    let server = Server::start(config(dir.path())).await.unwrap();
    let after = server
        .core
        .call(|t| (contracts::list(t, Principal::Admin), t.ex.market.reservations().clone()))
        .await
        .unwrap();
    assert_eq!(before, after);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resale_credit_stops_when_the_contract_ends() {
    let Setup {
        dir: _dir,
        server,
        core,
        mut a,
        mut b,
        lab,
    } = setup().await;
    let c = create(&server, Principal::Tenant(lab), request(8)).await.unwrap();
    // A spot gang resells the lab's idle reservation.
    let spot = submit(&core, DEMO, &spec("spot", 2)).await;
    rounds().await;
    for _ in 0..2 {
        a.beat(&core).await;
        b.beat(&core).await;
    }
    assert_eq!(job(&server, spot).await.state, "running");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    a.beat(&core).await;
    assert!(contract(&server, c.id).await.holding.resale_credited > Micros::ZERO);

    core.call(move |t| contracts::end(t, Principal::Tenant(lab), c.id))
        .await
        .unwrap()
        .unwrap();
    let credited_and_charged = || async {
        let lease = server
            .core
            .call(move |t| ops::job_view(t, spot).tasks[0].leases[0].id)
            .await
            .unwrap();
        let credited = server
            .core
            .call(move |t| t.ex.ledger.resale_credited(lease, lab))
            .await
            .unwrap();
        let charged = server.core.call(move |t| t.ex.lease_charged(lease)).await.unwrap();
        (credited, charged)
    };
    // After the end, settlements go on charging the spot gang; the lab's credit stops growing.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (credited, charged) = credited_and_charged().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (credited_later, charged_later) = credited_and_charged().await;
    assert!(
        charged_later > charged,
        "the spot gang still runs and pays: {charged} → {charged_later}"
    );
    assert_eq!(credited_later, credited, "no resale credit after the reservation ended");
    assert!(core.call(|t| t.ex.ledger.verify().is_ok()).await.unwrap());
    server.stop().await;
}
