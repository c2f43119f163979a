//! The agent loop against a tiny fake server over a real socket: registration,
//! re-registration after an outage, event acknowledgement, idempotent starts,
//! stops, and the shutdown that stops every part and reports it.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_agent::AgentConfig;
use agora_proto::agent::{
    Heartbeat, HeartbeatResponse, LaunchSpec, PartEvent, PartRef, RegisterAgent, RegisterResponse, StopOrder, Stream,
};
use agora_types::{AgentId, GpuModel, JobId, LeaseId, Micros, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "agora_test_token";

fn part(lease: u64) -> PartRef {
    PartRef {
        lease: LeaseId(lease),
        rank: 0,
    }
}

fn launch(lease: u64, script: &str) -> LaunchSpec {
    LaunchSpec {
        part: part(lease),
        job: JobId(lease),
        node: NodeId(3),
        gpu_indices: vec![0],
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::from([("CUDA_VISIBLE_DEVICES".to_string(), "0".to_string())]),
        workdir: None,
    }
}

/// What the fake server saw and how it answers. Every heartbeat answer repeats
/// the same three starts, as the real server does until it hears `Started`.
#[derive(Default)]
struct Fake {
    registrations: Vec<RegisterAgent>,
    /// Heartbeats answered 2xx, i.e. acknowledged.
    acknowledged: Vec<Heartbeat>,
    failed_one: bool,
}

impl Fake {
    fn events(&self) -> Vec<PartEvent> {
        self.acknowledged
            .iter()
            .flat_map(|h| h.events.iter().cloned())
            .collect()
    }

    fn answer(&mut self, path: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
        if auth != Some(&format!("Bearer {TOKEN}")) {
            return (
                401,
                r#"{"error":{"code":"unauthorized","message":"unknown token","field":null}}"#.into(),
            );
        }
        match path {
            "/api/v1/agent/register" => {
                self.registrations.push(serde_json::from_slice(body).unwrap());
                let answer = RegisterResponse {
                    agent_id: AgentId(7),
                    nodes: BTreeMap::from([("node-0".to_string(), NodeId(3))]),
                    heartbeat_interval_ms: 100,
                };
                (200, serde_json::to_string(&answer).unwrap())
            }
            "/api/v1/agent/heartbeat" => {
                let heartbeat: Heartbeat = serde_json::from_slice(body).unwrap();
                if !self.failed_one && !heartbeat.events.is_empty() {
                    // The first heartbeat with news is lost: its events and
                    // logs must come again.
                    self.failed_one = true;
                    return (503, r#"{"error":{"code":"unavailable","message":"restarting"}}"#.into());
                }
                self.acknowledged.push(heartbeat);
                let b_started = self.events().contains(&PartEvent::Started { part: part(2) });
                let answer = HeartbeatResponse {
                    start: vec![
                        launch(1, "echo hello; echo oops >&2; exit 3"),
                        launch(2, "sleep 1000"),
                        launch(3, "sleep 1000"),
                    ],
                    stop: if b_started {
                        vec![
                            StopOrder {
                                part: part(2),
                                grace_ms: 5000,
                                reason: "cancelled".into(),
                            },
                            StopOrder {
                                part: part(99),
                                grace_ms: 0,
                                reason: "lost".into(),
                            },
                        ]
                    } else {
                        vec![]
                    },
                };
                (200, serde_json::to_string(&answer).unwrap())
            }
            _ => (404, r#"{"error":{"code":"not_found","message":"no route"}}"#.into()),
        }
    }
}

/// A minimal HTTP/1.1 server: keep-alive, Content-Length bodies, JSON answers.
async fn serve(listener: TcpListener, fake: Arc<Mutex<Fake>>) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::spawn(connection(stream, fake.clone()));
    }
}

async fn connection(mut stream: TcpStream, fake: Arc<Mutex<Fake>>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        while buf.len() < head_end + length {
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let (status, json) = fake
            .lock()
            .unwrap()
            .answer(&path, header("authorization").as_deref(), &body);
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
            json.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn fake_server() -> (String, Arc<Mutex<Fake>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(Mutex::new(Fake::default()));
    tokio::spawn(serve(listener, fake.clone()));
    (url, fake)
}

fn config(server: &str, token: &str) -> AgentConfig {
    let mut c = AgentConfig::single_node(
        server,
        Some(token.to_string()),
        "test-agent",
        GpuModel::resolve("h100").unwrap(),
        NonZeroU32::new(1).unwrap(),
        Micros(2_000_000),
    );
    c.tuning.max_retry_backoff = Duration::from_millis(300);
    c.tuning.shutdown_grace = Duration::from_secs(3);
    c.tuning.request_timeout = Duration::from_secs(5);
    c
}

#[tokio::test]
async fn the_loop_runs_parts_and_reports_every_event_once() {
    let (url, fake) = fake_server().await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agora_agent::run(config(&url, TOKEN), async {
        let _ = stop_rx.await;
    }));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = fake.lock().unwrap().events();
        let exited = |lease| {
            events
                .iter()
                .any(|e| matches!(e, PartEvent::Exited { part: p, .. } if *p == part(lease)))
        };
        if exited(1) && exited(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "parts 1 and 2 not reported exited; events so far: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let fake = fake.lock().unwrap();
    assert!(fake.failed_one);
    assert_eq!(fake.registrations.len(), 2, "registers again after the 503");
    assert!(
        fake.registrations
            .iter()
            .all(|r| r.name == "test-agent" && r.nodes[0].gpus == 1)
    );
    assert!(fake.acknowledged.iter().all(|h| h.agent_id == AgentId(7)));

    // Every event arrives exactly once, each part's in order, although the
    // starts were repeated in every answer and one heartbeat was lost.
    let events = fake.events();
    let of = |lease| {
        events
            .iter()
            .filter(|e| event_part(e) == part(lease))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(1),
        [
            PartEvent::Started { part: part(1) },
            PartEvent::Exited {
                part: part(1),
                exit_code: Some(3),
                signal: None
            }
        ]
    );
    assert_eq!(
        of(2),
        [
            PartEvent::Started { part: part(2) },
            PartEvent::Exited {
                part: part(2),
                exit_code: None,
                signal: Some(15)
            }
        ]
    );
    // Part 3 was running at shutdown: SIGTERMed, reported in the final heartbeat.
    assert_eq!(
        of(3),
        [
            PartEvent::Started { part: part(3) },
            PartEvent::Exited {
                part: part(3),
                exit_code: None,
                signal: Some(15)
            }
        ]
    );
    assert_eq!(events.len(), 6, "{events:?}");
    assert!(fake.acknowledged.last().unwrap().running.is_empty());

    let log = |stream| {
        fake.acknowledged
            .iter()
            .flat_map(|h| h.logs.iter())
            .filter(|c| c.part == part(1) && c.stream == stream)
            .map(|c| c.data.as_str())
            .collect::<String>()
    };
    assert_eq!(log(Stream::Stdout), "hello\n");
    assert_eq!(log(Stream::Stderr), "oops\n");
}

#[tokio::test]
async fn a_refused_token_at_registration_is_fatal() {
    let (url, fake) = fake_server().await;
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        agora_agent::run(config(&url, "wrong"), std::future::pending::<()>()),
    )
    .await
    .expect("a refused token ends the agent");
    let err = format!("{:#}", result.unwrap_err());
    assert!(
        err.contains("refused the provider token") && err.contains("unknown token"),
        "{err}"
    );
    assert!(fake.lock().unwrap().registrations.is_empty());
}

#[tokio::test]
async fn the_agent_keeps_retrying_until_the_server_answers() {
    // Reserve a port, close it, and only start serving on it later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agora_agent::run(config(&url, TOKEN), async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let fake = Arc::new(Mutex::new(Fake::default()));
    tokio::spawn(serve(listener, fake.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.lock().unwrap().acknowledged.is_empty() {
        assert!(Instant::now() < deadline, "the agent never reached the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!fake.lock().unwrap().registrations.is_empty());
}

fn event_part(e: &PartEvent) -> PartRef {
    match e {
        PartEvent::Started { part } | PartEvent::Exited { part, .. } | PartEvent::StartFailed { part, .. } => *part,
    }
}
