//! Authorization and bad input over real HTTP: tenants are isolated, roles are
//! enforced, bad tokens are refused, and malformed requests get a 4xx that names
//! the field — never a 5xx.

mod common;

use common::{Exchange, manifest};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_roles_enforced() {
    let mut ex = Exchange::start().await;
    let (_, p) = ex.create_provider("alpha").await;
    ex.start_agent(&p, "a", 8, "H100-80GB-SXM", "2.00", "127.0.0.1");
    ex.wait_nodes(1).await;
    let (_, a) = ex.create_tenant("lab-a", "100").await;
    let (_, b) = ex.create_tenant("lab-b", "100").await;
    let job = ex
        .submit(
            &a,
            &manifest(
                "secret",
                "training",
                "  gpus_per_node: 1",
                "on-demand",
                "3.00",
                "echo private; sleep 30",
            ),
        )
        .await
        .unwrap();
    ex.wait_logs(&a, job, "private").await;

    // Tenant B cannot see, read or cancel A's job: 404, as if it did not exist.
    for (method, path) in [
        (Method::GET, format!("/api/v1/jobs/{job}")),
        (Method::GET, format!("/api/v1/jobs/{job}/logs")),
        (Method::POST, format!("/api/v1/jobs/{job}/cancel")),
    ] {
        let (status, body) = ex.request(method.clone(), &b, &path, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (_, list) = ex.request(Method::GET, &b, "/api/v1/jobs", None).await;
    assert_eq!(list.as_array().unwrap().len(), 0, "B lists none of A's jobs");
    // Market health is public, but a tenant's dependency on providers is its own.
    let (_, health) = ex.request(Method::GET, &b, "/api/v1/market/health", None).await;
    assert_eq!(health["dependency"], json!([]), "{health}");
    let (_, health) = ex.request(Method::GET, &a, "/api/v1/market/health", None).await;
    assert_eq!(
        health["dependency"],
        json!([{"tenant": 1, "provider": 1, "share_bps": 10_000}]),
        "{health}"
    );
    assert_eq!(health["allocated_by_tenant"]["hhi"], 10_000);
    let (_, bal) = ex.request(Method::GET, &b, "/api/v1/balance", None).await;
    assert_eq!(bal["available"], 100_000_000, "B sees its own balance only");

    // Tenants and providers get 403 on admin routes; tenants on provider routes.
    for token in [&a, &p] {
        for path in [
            "/api/v1/admin/tenants",
            "/api/v1/admin/ledger/verify",
            "/api/v1/admin/nodes",
        ] {
            let (status, body) = ex.request(Method::GET, token, path, None).await;
            assert_eq!(status, 403, "{path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
    let (status, _) = ex.request(Method::GET, &a, "/api/v1/provider/nodes", None).await;
    assert_eq!(status, 403);
    let (status, _) = ex
        .request(
            Method::POST,
            &p,
            "/api/v1/jobs",
            Some(("application/yaml", b"name: x".to_vec())),
        )
        .await;
    assert_eq!(status, 403, "a provider cannot submit, whatever it sends");
    let (status, _) = ex
        .request(
            Method::POST,
            "bad-token",
            "/api/v1/jobs",
            Some(("application/yaml", b"name: x".to_vec())),
        )
        .await;
    assert_eq!(status, 401, "a bad token is refused before the manifest is read");

    // A provider sees only its own nodes and leases.
    let (_, p2) = ex.create_provider("beta").await;
    let (_, nodes) = ex.request(Method::GET, &p2, "/api/v1/provider/nodes", None).await;
    assert_eq!(nodes.as_array().unwrap().len(), 0);
    let (_, leases) = ex.request(Method::GET, &p2, "/api/v1/provider/leases", None).await;
    assert_eq!(leases.as_array().unwrap().len(), 0);
    let (_, leases) = ex.request(Method::GET, &p, "/api/v1/provider/leases", None).await;
    assert_eq!(leases.as_array().unwrap().len(), 1);

    // Bad or missing tokens: 401.
    for token in ["", "agora_0000", "not-a-token"] {
        let (status, body) = ex.request(Method::GET, token, "/api/v1/jobs", None).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // The owner can cancel.
    let (status, _) = ex
        .request(Method::POST, &a, &format!("/api/v1/jobs/{job}/cancel"), None)
        .await;
    assert_eq!(status, 200);
}

/// One bad request: what is sent and which field the 4xx must name.
struct Bad {
    what: &'static str,
    body: String,
    field: Option<&'static str>,
    status: u16,
}

fn bad(what: &'static str, body: impl Into<String>, field: Option<&'static str>, status: u16) -> Bad {
    Bad {
        what,
        body: body.into(),
        field,
        status,
    }
}

const GOOD: &str =
    "name: ok\nkind: training\nresources:\n  gpus_per_node: 1\nmax_price_per_gpu_hour: 3.00\ncommand: 'true'\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_naming_the_field() {
    let ex = Exchange::start().await;
    let (_, t) = ex.create_tenant("lab", "100").await;
    assert!(ex.submit(&t, GOOD).await.is_ok(), "the baseline manifest is accepted");
    let cases = [
        bad("malformed YAML", "name: [unclosed\nkind: training\n", None, 400),
        bad(
            "unknown top-level field",
            format!("{GOOD}colour: blue\n"),
            Some("colour"),
            400,
        ),
        bad(
            "unknown resources field",
            GOOD.replace("  gpus_per_node: 1", "  gpus_per_node: 1\n  cpus: 4"),
            Some("resources.cpus"),
            400,
        ),
        bad(
            "zero GPUs",
            GOOD.replace("gpus_per_node: 1", "gpus_per_node: 0"),
            Some("resources.gpus_per_node"),
            400,
        ),
        bad(
            "huge GPUs",
            GOOD.replace("gpus_per_node: 1", "gpus_per_node: 99999999999999999999"),
            Some("resources.gpus_per_node"),
            400,
        ),
        bad(
            "negative price",
            GOOD.replace("3.00", "-1"),
            Some("max_price_per_gpu_hour"),
            400,
        ),
        bad(
            "service not yet supported",
            GOOD.replace("training", "service"),
            Some("kind"),
            400,
        ),
        bad(
            "oversized body",
            format!("{GOOD}# {}\n", "x".repeat(300 * 1024)),
            None,
            413,
        ),
        bad(
            "binary garbage",
            String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x01]).into_owned(),
            None,
            400,
        ),
    ];
    for c in &cases {
        let (status, body) = ex
            .request(
                Method::POST,
                &t,
                "/api/v1/jobs",
                Some(("application/yaml", c.body.clone().into_bytes())),
            )
            .await;
        assert_eq!(status, c.status, "{}: {body}", c.what);
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{}: {body}",
            c.what
        );
        if let Some(field) = c.field {
            assert_eq!(body["error"]["field"], field, "{}: {body}", c.what);
        }
    }
    // The line of a YAML error is reported.
    let (_, body) = ex
        .request(
            Method::POST,
            &t,
            "/api/v1/jobs",
            Some((
                "application/yaml",
                GOOD.replace("gpus_per_node: 1", "gpus_per_node: 0").into_bytes(),
            )),
        )
        .await;
    assert_eq!(body["error"]["line"], 4, "{body}");

    // JSON routes name the field too.
    let json_cases = [
        ("/api/v1/admin/tenants", json!({"name": "x", "colour": 1}), "colour"),
        ("/api/v1/admin/tenants", json!({"name": "bad name!"}), "name"),
        (
            "/api/v1/admin/tenants",
            json!({"name": "y", "initial_balance": "-5"}),
            "initial_balance",
        ),
        ("/api/v1/admin/tenants", json!({}), "name"),
        (
            "/api/v1/admin/tenants/1/topup",
            json!({"amount": "0", "idempotency_key": "k"}),
            "amount",
        ),
        (
            "/api/v1/admin/tenants/1/topup",
            json!({"amount": "1.0000001", "idempotency_key": "k"}),
            "amount",
        ),
        ("/api/v1/admin/tokens", json!({"role": "wizard"}), "role"),
    ];
    for (path, body, field) in json_cases {
        let (status, resp) = ex
            .request(
                Method::POST,
                &ex.admin,
                path,
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await;
        assert_eq!(status, 400, "{path} {body}: {resp}");
        assert_eq!(resp["error"]["field"], field, "{path} {body}: {resp}");
    }
    // Ids in paths, unknown routes, insufficient funds.
    let (status, resp) = ex.request(Method::GET, &t, "/api/v1/jobs/not-a-number", None).await;
    assert_eq!((status, resp["error"]["field"].as_str()), (400, Some("id")));
    let (status, _) = ex.request(Method::GET, &t, "/api/v1/jobs/99999999", None).await;
    assert_eq!(status, 404);
    let (status, _) = ex.request(Method::GET, &t, "/api/v1/nope", None).await;
    assert_eq!(status, 404);
    let (_, poor) = ex.create_tenant("poor", "0").await;
    let (status, resp) = ex
        .request(
            Method::POST,
            &poor,
            "/api/v1/jobs",
            Some(("application/yaml", GOOD.as_bytes().to_vec())),
        )
        .await;
    assert_eq!(
        (status, resp["error"]["code"].as_str()),
        (402, Some("insufficient_funds")),
        "{resp}"
    );
    // Agent protocol: garbage and invalid inventories.
    let (_, p) = ex.create_provider("prov").await;
    let (status, resp) = ex.request(Method::POST, &p, "/api/v1/agent/register", Some(("application/json", br#"{"name":"a","inventory_source":"declared","nodes":[{"name":"n","gpu_model":"h100","gpus":0,"address":"x","ask_micros_per_gpu_hour":1}]}"#.to_vec()))).await;
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (400, Some("nodes[0].gpus")),
        "{resp}"
    );
    let (status, resp) = ex.request(Method::POST, &p, "/api/v1/agent/register", Some(("application/json", br#"{"name":"a","inventory_source":"declared","nodes":[{"name":"n","gpu_model":"h1000","gpus":1,"address":"x","ask_micros_per_gpu_hour":1}]}"#.to_vec()))).await;
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error"]["message"].as_str().unwrap().contains("did you mean"),
        "{resp}"
    );
    let (status, _) = ex
        .request(
            Method::POST,
            &p,
            "/api/v1/agent/heartbeat",
            Some(("application/json", b"{".to_vec())),
        )
        .await;
    assert_eq!(status, 400);
    // Query strings, methods and sizes get JSON errors too.
    let (status, resp) = ex.request(Method::GET, &t, "/api/v1/jobs?limit=abc", None).await;
    assert_eq!(
        (status, resp["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{resp}"
    );
    let (status, resp) = ex.request(Method::GET, &t, "/api/v1/jobs?colour=blue", None).await;
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (400, Some("colour")),
        "{resp}"
    );
    let (status, resp) = ex.request(Method::DELETE, &t, "/api/v1/jobs", None).await;
    assert_eq!(
        (status, resp["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{resp}"
    );
    // Over the body limit: a 413, unless the server's answer and close race the
    // client still sending (HTTP/1.1 allows that); either way it stays up. The
    // server closes that connection without reading the body, so it goes
    // through a client of its own: a pooled connection the server closed
    // would fail the next request of the shared client (IncompleteMessage).
    let huge = vec![b' '; 5 * 1024 * 1024];
    let once = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let sent = once
        .post(format!("{}/api/v1/agent/heartbeat", ex.url))
        .bearer_auth(&p)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (413, Some("payload_too_large")),
                "{body}"
            );
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let (status, _) = ex.request(Method::GET, &p, "/api/v1/health", None).await;
    assert_eq!(status, 200, "the server survives an oversized body");
    // Top-ups: a key is one top-up; reusing it for another amount is a conflict; keys are checked.
    let top_up = |amount: &str, key: &str| {
        json!({"amount": amount, "idempotency_key": key})
            .to_string()
            .into_bytes()
    };
    for _ in 0..2 {
        let (status, resp) = ex
            .request(
                Method::POST,
                &ex.admin,
                "/api/v1/admin/tenants/1/topup",
                Some(("application/json", top_up("5", "invoice-1"))),
            )
            .await;
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["available"], 105_000_000, "the same key tops up once: {resp}");
    }
    let (status, resp) = ex
        .request(
            Method::POST,
            &ex.admin,
            "/api/v1/admin/tenants/1/topup",
            Some(("application/json", top_up("6", "invoice-1"))),
        )
        .await;
    assert_eq!(
        (status, resp["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{resp}"
    );
    let (status, resp) = ex
        .request(
            Method::POST,
            &ex.admin,
            "/api/v1/admin/tenants/1/topup",
            Some(("application/json", top_up("1", "bell\u{7}"))),
        )
        .await;
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (400, Some("idempotency_key")),
        "{resp}"
    );
    let (status, resp) = ex
        .request(
            Method::POST,
            &ex.admin,
            "/api/v1/admin/tenants/1/topup",
            Some(("application/json", top_up("1", &"k".repeat(200)))),
        )
        .await;
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (400, Some("idempotency_key")),
        "{resp}"
    );
    // Nothing above was a server error, and the server is still healthy.
    let (status, _) = ex.request(Method::GET, &t, "/api/v1/health", None).await;
    assert_eq!(status, 200);
    assert!(!ex.server_log().contains("panicked"), "{}", ex.server_log());
}
