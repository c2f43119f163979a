//! kill -9 the server while jobs run and submissions are in flight; restart it;
//! every acknowledged submission and ledger entry is there, agents reconnect,
//! running work finishes and the ledger verifies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_proto::api::{JobView, LedgerVerifyView};
use common::{Exchange, manifest};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_nothing_acknowledged() {
    let mut ex = Exchange::start().await;
    let (_, p) = ex.create_provider("alpha").await;
    ex.start_agent(&p, "a", 8, "H100-80GB-SXM", "2.00", "127.0.0.1");
    ex.start_agent(&p, "b", 8, "H100-80GB-SXM", "2.00", "127.0.0.1");
    ex.wait_nodes(2).await;
    let (_, t) = ex.create_tenant("lab", "100000").await;

    // A job that runs across the crash.
    let long = ex
        .submit(
            &t,
            &manifest(
                "across",
                "training",
                "  gpus_per_node: 2",
                "on-demand",
                "3.00",
                "echo before; sleep 4; echo after",
            ),
        )
        .await
        .unwrap();
    ex.wait_logs(&t, long, "before").await;

    // Submitters hammer the server; each acknowledged id is recorded.
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let ex = Arc::new(tokio::sync::Mutex::new(ex));
    let (url, http) = {
        let e = ex.lock().await;
        (e.url.clone(), e.http.clone())
    };
    let mut submitters = Vec::new();
    for s in 0..4 {
        let (acked, url, http, t) = (acked.clone(), url.clone(), http.clone(), t.clone());
        submitters.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("s{s}-{i}");
                let body = manifest(&name, "training", "  gpus_per_node: 1", "on-demand", "3.00", "true");
                let resp = http
                    .post(format!("{url}/api/v1/jobs"))
                    .bearer_auth(&t)
                    .header("content-type", "application/yaml")
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        acked.lock().unwrap().push((v["job_id"].as_u64().unwrap(), name));
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before: LedgerVerifyView = {
        let e = ex.lock().await;
        e.get_ok(&e.admin, "/api/v1/admin/ledger/verify").await
    };
    let mut e = Arc::try_unwrap(ex)
        .ok()
        .expect("only this test holds the exchange")
        .into_inner();
    e.crash_and_restart(1);
    for s in submitters {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "submissions were in flight: {}", acked.len());

    // Every acknowledged submission survived, under its id and name.
    for (id, name) in &acked {
        let j: JobView = e.job(&t, *id).await;
        assert_eq!(&j.name, name);
    }
    // The ledger kept every entry it had before the crash, and still verifies.
    let after: LedgerVerifyView = e.get_ok(&e.admin, "/api/v1/admin/ledger/verify").await;
    assert!(after.ok, "{after:#?}");
    assert!(
        after.transfers >= before.transfers,
        "before {} after {}",
        before.transfers,
        after.transfers
    );
    // The agents reconnect, and the job that ran across the crash finishes and is charged.
    e.wait_nodes(2).await;
    let j = e.wait_ended(&t, long).await;
    assert_eq!(j.state, "succeeded", "{j:#?}\n{}", e.server_log());
    assert!(e.logs(&t, long).await.contains("after"));
    assert!(j.cost > agora_types::Micros::ZERO);
    // And the queue drains: every acknowledged job runs to completion after the restart.
    for (id, _) in acked.iter().rev().take(5) {
        let j = e.wait_ended(&t, *id).await;
        assert_eq!(j.state, "succeeded", "{j:#?}");
    }
    let last: LedgerVerifyView = e.get_ok(&e.admin, "/api/v1/admin/ledger/verify").await;
    assert!(last.ok && last.sum == agora_types::Micros::ZERO, "{last:#?}");
}
