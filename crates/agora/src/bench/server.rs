//! `agora bench server`: how many durable submissions and heartbeats per second
//! the server sustains, with latency percentiles, over real HTTP on loopback.
//! The server runs in this process (its own data dir in a temp dir); the load
//! comes from concurrent HTTP clients in the same process, so on a small
//! machine client and server share the cores — the figures are conservative.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_proto::agent::{Heartbeat, InventorySource, NodeReport, RegisterAgent, RegisterResponse};
use agora_proto::api::{CreatedPrincipal, SubmitResponse};
use agora_types::{GpuModel, Micros};
use anyhow::{Context, anyhow};
use clap::Args;
use serde::Serialize;

use crate::Output;

#[derive(Args, Debug)]
pub(crate) struct ServerBench {
    /// Job submissions to send.
    #[arg(long, default_value_t = 20_000)]
    submissions: usize,
    /// Heartbeats to send.
    #[arg(long, default_value_t = 100_000)]
    heartbeats: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Agents heartbeating (each with one node of 8 GPUs).
    #[arg(long, default_value_t = 100)]
    agents: usize,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[derive(Serialize)]
struct Phase {
    requests: usize,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Serialize)]
struct Report {
    submissions: Phase,
    heartbeats: Phase,
    concurrency: usize,
    agents: usize,
    durable: bool,
}

pub(crate) async fn run(args: ServerBench) -> anyhow::Result<u8> {
    if args.concurrency == 0 || args.agents == 0 {
        return Err(anyhow!("--concurrency and --agents must be at least 1"));
    }
    let dir = tempfile_dir()?;
    let mut cfg = agora_server::ServerConfig::new("127.0.0.1:0".parse()?, dir.clone());
    // Long rounds: this measures the API and the log, not clearing.
    cfg.round_interval_ms = 1000;
    cfg.agent_timeout_ms = 600_000;
    let server = agora_server::Server::start(cfg).await?;
    let admin = server.bootstrap_admin().await?.context("a fresh exchange")?;
    let url = format!("http://{}", server.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let tenant: CreatedPrincipal = post(
        &http,
        &url,
        &admin,
        "/api/v1/admin/tenants",
        &serde_json::json!({"name": "bench", "initial_balance": "1000000000"}),
    )
    .await?;
    let provider: CreatedPrincipal = post(
        &http,
        &url,
        &admin,
        "/api/v1/admin/providers",
        &serde_json::json!({"name": "bench"}),
    )
    .await?;
    let mut agent_ids = Vec::new();
    for i in 0..args.agents {
        let reg = RegisterAgent {
            name: format!("agent-{i}"),
            inventory_source: InventorySource::Declared,
            sites: vec![],
            nodes: vec![NodeReport {
                name: "node-0".into(),
                gpu_model: GpuModel::resolve("L4")?,
                gpus: 8,
                address: "127.0.0.1".into(),
                ask_micros_per_gpu_hour: Micros::from_units(1),
                site: None,
                fabric_domain: None,
            }],
        };
        let r: RegisterResponse = post(&http, &url, &provider.token, "/api/v1/agent/register", &reg).await?;
        agent_ids.push(r.agent_id);
    }
    // Orders for a model nobody offers stay pending: each submission is one durable event.
    let manifest = "name: bench\nkind: training\nresources:\n  gpus_per_node: 8\n  gpu_models: [B200]\nmax_price_per_gpu_hour: 9.00\ncommand: 'true'\n";
    let submissions = phase(args.submissions, args.concurrency, {
        let (http, url, token) = (http.clone(), url.clone(), tenant.token.clone());
        move |_| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let r = http
                    .post(format!("{url}/api/v1/jobs"))
                    .bearer_auth(&token)
                    .header("content-type", "application/yaml")
                    .body(manifest)
                    .send()
                    .await?;
                let status = r.status();
                let _: SubmitResponse = r
                    .json()
                    .await
                    .with_context(|| format!("submission answered {status}"))?;
                Ok(())
            }
        }
    })
    .await?;
    let agent_ids = Arc::new(agent_ids);
    let heartbeats = phase(args.heartbeats, args.concurrency, {
        let (http, url, token) = (http.clone(), url.clone(), provider.token.clone());
        move |i| {
            let (http, url, token, ids) = (http.clone(), url.clone(), token.clone(), agent_ids.clone());
            async move {
                let hb = Heartbeat {
                    agent_id: ids[i % ids.len()],
                    running: vec![],
                    events: vec![],
                    event_ages_ms: vec![],
                    more_events: false,
                    stopped_by_agent: vec![],
                    leaving: false,
                    logs: vec![],
                };
                let r = http
                    .post(format!("{url}/api/v1/agent/heartbeat"))
                    .bearer_auth(&token)
                    .json(&hb)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    return Err(anyhow!("heartbeat answered {}", r.status()));
                }
                r.bytes().await?;
                Ok(())
            }
        }
    })
    .await?;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = Report {
        submissions,
        heartbeats,
        concurrency: args.concurrency,
        agents: args.agents,
        durable: true,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            for (name, p) in [("submissions", &report.submissions), ("heartbeats", &report.heartbeats)] {
                println!(
                    "{name:<12} {:>8} requests  {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
                    p.requests, p.per_s, p.p50_ms, p.p99_ms, p.max_ms
                );
            }
            println!(
                "concurrency {}, {} agents; every submission committed to SQLite (WAL, synchronous=FULL) before its answer",
                report.concurrency, report.agents
            );
        }
    }
    Ok(0)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("agora-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn post<B: Serialize, T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    path: &str,
    body: &B,
) -> anyhow::Result<T> {
    let r = http
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        return Err(anyhow!("{path} answered {status}: {text}"));
    }
    Ok(serde_json::from_str(&text)?)
}

/// Sends `total` requests with `concurrency` in flight and measures each.
async fn phase<F, Fut>(total: usize, concurrency: usize, make: F) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, make) = (next.clone(), make.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                make(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all: Vec<Duration> = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await??);
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Phase {
        requests: all.len(),
        per_s: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    })
}
