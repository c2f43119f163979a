//! The CLI's commands: each reads the API and prints a table or the JSON document.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agora_proto::api::{
    BalanceView, CreatedPrincipal, IssuedToken, JobView, LeaseView, LedgerVerifyView, LogsResponse, MarketView,
    NodeView, ProviderView, SubmitResponse, TenantView,
};
use agora_types::{Micros, UnixMs};
use anyhow::{Context, anyhow};
use clap::Subcommand;
use serde::Serialize;

use crate::client::Client;
use crate::{Conn, EXIT_JOB_FAILED, Output, ServerArgs, table};

#[derive(Subcommand, Debug)]
pub(crate) enum ProviderCommand {
    /// Your nodes, their GPUs and asks.
    Nodes {
        #[command(flatten)]
        conn: Conn,
    },
    /// Leases on your nodes, newest first.
    Leases {
        #[command(flatten)]
        conn: Conn,
    },
    /// Your sites: power budget, power in use, headroom.
    Sites {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AdminCommand {
    /// Create a tenant and print its token.
    ///
    /// Example: agora admin create-tenant lab-a --balance 1000
    CreateTenant {
        name: String,
        /// Initial balance (decimal).
        #[arg(long)]
        balance: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Create a provider and print its token.
    CreateProvider {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Issue another token for a principal.
    ///
    /// Example: agora admin issue-token tenant --id 2
    IssueToken {
        /// admin, tenant or provider
        role: String,
        #[arg(long)]
        id: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add funds to a tenant's balance (idempotent per key).
    ///
    /// Example: agora admin top-up 2 500 --key invoice-17
    TopUp {
        tenant: u64,
        amount: String,
        /// Idempotency key; the same key tops up once. Default: a fresh key.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List tenants with their balances.
    Tenants {
        #[command(flatten)]
        conn: Conn,
    },
    /// List providers with their earnings.
    Providers {
        #[command(flatten)]
        conn: Conn,
    },
    /// List every node of the exchange.
    Nodes {
        #[command(flatten)]
        conn: Conn,
    },
    /// List every site with its power budget and headroom.
    Sites {
        #[command(flatten)]
        conn: Conn,
    },
    /// Ledger commands.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum LedgerCommand {
    /// Recompute the hash chain and every balance; check that all balances sum to zero.
    Verify {
        #[command(flatten)]
        conn: Conn,
    },
}

pub(crate) fn client(conn: &Conn) -> anyhow::Result<Client> {
    Client::new(&conn.url, conn.token.clone())
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<u8> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(0)
}

fn now() -> UnixMs {
    UnixMs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

pub(crate) fn server_config(args: &ServerArgs) -> anyhow::Result<agora_server::ServerConfig> {
    let mut cfg = agora_server::ServerConfig::new(args.listen, args.data_dir.clone());
    cfg.round_interval_ms = args.round_interval_ms;
    cfg.heartbeat_interval_ms = args.heartbeat_interval_ms;
    cfg.agent_timeout_ms = args.agent_timeout_ms;
    cfg.stop_grace_ms = args.stop_grace_ms;
    cfg.funds_grace_ms = args.funds_grace_ms;
    cfg.settle_interval_ms = args.settle_interval_ms;
    cfg.hold_horizon_s = args.hold_horizon_s;
    cfg.min_funds_s = args.min_funds_s;
    cfg.log_retention_bytes_per_job = args.log_retention_mib.saturating_mul(1024 * 1024);
    cfg.rules.fee_bps = args.fee_bps;
    cfg.rules.max_retries = args.max_retries;
    cfg.rules.max_reserved_share_bps = args.max_reserved_share_bps.min(10_000);
    cfg.rules.policies = agora_engine::market::Policies {
        provider_share_cap_bps: (args.provider_share_cap_bps > 0).then_some(args.provider_share_cap_bps.min(10_000)),
        provider_share_mode: match args.provider_share_mode {
            crate::ShareMode::Soft => agora_engine::market::CapMode::Soft,
            crate::ShareMode::Hard => agora_engine::market::CapMode::Hard,
        },
        provider_share_min_gpus: args.provider_share_min_gpus,
        small_tenant_floor_bps: args.small_tenant_floor_bps.min(10_000),
        small_tenant_gpus: args.small_tenant_gpus,
    };
    if let Some(path) = &args.latency_matrix {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        cfg.rules.latency = agora_server::latency::parse(&text).with_context(|| path.display().to_string())?;
    }
    Ok(cfg)
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

pub(crate) async fn serve(args: ServerArgs) -> anyhow::Result<u8> {
    if args.fee_bps > 10_000 {
        return Err(anyhow!("--fee-bps must be at most 10000"));
    }
    let server = agora_server::Server::start(server_config(&args)?).await?;
    if let Some(token) = server.bootstrap_admin().await? {
        let path = args.data_dir.join("admin.token");
        crate::up::write_private(&path, &format!("{token}\n"))?;
        println!("A new exchange: the admin token (also in {}):\n{token}", path.display());
    }
    println!("serving on http://{}", server.addr);
    shutdown_signal().await;
    eprintln!("stopping…");
    server.stop().await;
    Ok(0)
}

pub(crate) async fn agent(config: PathBuf, server: Option<String>, token: Option<String>) -> anyhow::Result<u8> {
    let mut cfg = agora_agent::AgentConfig::from_yaml_file(&config)?;
    if let Some(s) = server {
        cfg.server = s.trim_end_matches('/').to_string();
    }
    if token.is_some() {
        cfg.token = token;
    }
    agora_agent::run(cfg, shutdown_signal()).await?;
    Ok(0)
}

pub(crate) async fn submit(conn: &Conn, file: &Path, wait: bool) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let c = client(conn)?;
    let r: SubmitResponse = c.post_yaml("/api/v1/jobs", text).await?;
    if !wait {
        return match conn.output {
            Output::Json => print_json(&r),
            Output::Table => {
                println!("{}", r.job_id);
                Ok(0)
            }
        };
    }
    if conn.output == Output::Table {
        eprintln!("submitted job {}", r.job_id);
    }
    let job = follow(&c, &r.job_id.to_string(), conn.output == Output::Table).await?;
    let code = if job.state == "succeeded" { 0 } else { EXIT_JOB_FAILED };
    match conn.output {
        Output::Json => {
            print_json(&job)?;
        }
        Output::Table => {
            let why = job.reason.clone().map(|r| format!(" ({r})")).unwrap_or_default();
            println!("job {} {}{why}; cost {}", job.id, job.state, job.cost);
        }
    }
    Ok(code)
}

/// Polls a job until it ends, with a progress line on a terminal.
async fn follow(c: &Client, id: &str, progress: bool) -> anyhow::Result<JobView> {
    let bar = if progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    loop {
        let job: JobView = c.get(&format!("/api/v1/jobs/{id}")).await?;
        if let Some(b) = &bar {
            let detail = job.reason.clone().unwrap_or_default();
            b.set_message(format!(
                "job {} {} · {} GPUs · cost {} {detail}",
                job.id, job.state, job.gpus, job.cost
            ));
        }
        if matches!(job.state.as_str(), "succeeded" | "failed" | "cancelled") {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn jobs(conn: &Conn, limit: usize) -> anyhow::Result<u8> {
    let jobs: Vec<JobView> = client(conn)?.get(&format!("/api/v1/jobs?limit={limit}")).await?;
    if conn.output == Output::Json {
        return print_json(&jobs);
    }
    let now = now();
    let mut t = table::new(&["id", "name", "kind", "tier", "gpus", "state", "age", "cost", "reason"]);
    for j in &jobs {
        t.add_row(vec![
            j.id.to_string(),
            j.name.clone(),
            j.kind.as_str().to_string(),
            j.tier.to_string(),
            j.gpus.to_string(),
            j.state.clone(),
            table::span(j.submitted_at, j.ended_at, now),
            table::money(j.cost),
            j.reason.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

pub(crate) async fn job(conn: &Conn, id: &str) -> anyhow::Result<u8> {
    let j: JobView = client(conn)?.get(&format!("/api/v1/jobs/{}", id.trim())).await?;
    if conn.output == Output::Json {
        return print_json(&j);
    }
    println!(
        "job {} `{}` ({} {}, {} GPUs at ≤ {}/GPU-h)",
        j.id,
        j.name,
        j.tier,
        j.kind.as_str(),
        j.gpus,
        j.max_price_per_gpu_hour
    );
    println!(
        "state: {}{}",
        j.state,
        if j.cancel_requested && j.ended_at.is_none() {
            " (cancelling)"
        } else {
            ""
        }
    );
    if let Some(code) = j.exit_code {
        println!("exit code: {code}");
    }
    if let Some(r) = &j.reason {
        println!("reason: {r}");
    }
    println!("cost: {}", j.cost);
    let now = now();
    let mut t = table::new(&[
        "task",
        "state",
        "lease",
        "provider",
        "nodes:gpus",
        "price/gpu-h",
        "lease state",
        "ran",
        "charged",
    ]);
    for (i, task) in j.tasks.iter().enumerate() {
        if task.leases.is_empty() {
            t.add_row(vec![
                i.to_string(),
                task.state.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                task.pending_reason.clone().unwrap_or_default(),
                "-".into(),
                "-".into(),
            ]);
        }
        for l in &task.leases {
            t.add_row(lease_row(i, &task.state, l, now));
        }
    }
    println!("{t}");
    Ok(0)
}

fn lease_row(task: usize, task_state: &str, l: &LeaseView, now: UnixMs) -> Vec<String> {
    let placement: Vec<String> = l
        .parts
        .iter()
        .map(|p| {
            format!(
                "{}:{}",
                p.node,
                p.gpu_indices
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    let state = match (&l.stop_reason, l.exit_code) {
        (Some(r), _) => format!("{} ({r})", l.state),
        (None, Some(c)) => format!("{} (exit {c})", l.state),
        _ => l.state.clone(),
    };
    // One provider's part of a gang spanning providers: which of how many.
    let lease = match &l.gang {
        Some(g) => {
            let part = g.leases.iter().position(|id| *id == l.id).map_or(0, |i| i + 1);
            format!("{} (part {part}/{})", l.id, g.leases.len())
        }
        None => l.id.to_string(),
    };
    vec![
        task.to_string(),
        task_state.to_string(),
        lease,
        l.provider.to_string(),
        placement.join(" "),
        table::money(l.price_per_gpu_hour),
        state,
        l.running_at
            .map_or_else(|| "-".into(), |r| table::span(r, l.ended_at, now)),
        table::money(l.charged),
    ]
}

pub(crate) async fn logs(conn: &Conn, id: &str, follow: bool) -> anyhow::Result<u8> {
    use std::io::Write;
    let c = client(conn)?;
    let mut after = 0u64;
    loop {
        let wait = if follow { 10_000 } else { 0 };
        let r: LogsResponse = c
            .get(&format!(
                "/api/v1/jobs/{}/logs?after={after}&limit=5000&wait_ms={wait}",
                id.trim()
            ))
            .await?;
        if conn.output == Output::Json {
            for line in &r.lines {
                println!("{}", serde_json::to_string(line)?);
            }
        } else {
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            for line in &r.lines {
                match line.stream {
                    agora_proto::agent::Stream::Stdout => out.write_all(line.data.as_bytes())?,
                    agora_proto::agent::Stream::Stderr => err.write_all(line.data.as_bytes())?,
                }
            }
            out.flush()?;
        }
        after = r.next;
        if r.complete || (!follow && r.lines.len() < 5000) {
            return Ok(0);
        }
    }
}

pub(crate) async fn cancel(conn: &Conn, id: &str) -> anyhow::Result<u8> {
    let j: JobView = client(conn)?
        .post(&format!("/api/v1/jobs/{}/cancel", id.trim()), &serde_json::json!({}))
        .await?;
    match conn.output {
        Output::Json => print_json(&j),
        Output::Table => {
            println!(
                "job {} {}",
                j.id,
                if j.ended_at.is_some() {
                    j.state.clone()
                } else {
                    "cancelling".to_string()
                }
            );
            Ok(0)
        }
    }
}

pub(crate) async fn balance(conn: &Conn) -> anyhow::Result<u8> {
    let b: BalanceView = client(conn)?.get("/api/v1/balance").await?;
    if conn.output == Output::Json {
        return print_json(&b);
    }
    let mut t = table::new(&["tenant", "available", "held"]);
    t.add_row(vec![
        b.tenant.to_string(),
        table::money(b.available),
        table::money(b.held),
    ]);
    println!("{t}");
    Ok(0)
}

pub(crate) async fn market(conn: &Conn) -> anyhow::Result<u8> {
    let m: MarketView = client(conn)?.get("/api/v1/market").await?;
    if conn.output == Output::Json {
        return print_json(&m);
    }
    let mut t = table::new(&[
        "model",
        "nodes",
        "gpus",
        "free",
        "ask min",
        "ask max",
        "recent prices",
        "pending",
    ]);
    for r in &m.models {
        let recent: Vec<String> = r.recent_prices.iter().take(5).map(|p| p.to_string()).collect();
        t.add_row(vec![
            r.model.to_string(),
            r.nodes.to_string(),
            r.gpus_total.to_string(),
            r.gpus_free.to_string(),
            table::opt_money(r.ask_min),
            table::opt_money(r.ask_max),
            recent.join(" "),
            r.pending_orders.to_string(),
        ]);
    }
    println!("{t}");
    println!(
        "prices per GPU-hour; exchange fee {}.{:02} %",
        m.fee_bps / 100,
        m.fee_bps % 100
    );
    Ok(0)
}

pub(crate) async fn spot(conn: &Conn, model: Option<String>, region: Option<String>) -> anyhow::Result<u8> {
    let mut query = Vec::new();
    if let Some(m) = &model {
        query.push(format!("model={}", urlencoding(m)));
    }
    if let Some(r) = &region {
        query.push(format!("region={}", urlencoding(r)));
    }
    let path = if query.is_empty() {
        "/api/v1/market/spot".to_string()
    } else {
        format!("/api/v1/market/spot?{}", query.join("&"))
    };
    let views: Vec<agora_proto::api::SpotView> = client(conn)?.get(&path).await?;
    if conn.output == Output::Json {
        return print_json(&views);
    }
    let mut t = table::new(&[
        "model", "region", "price", "floor", "supply", "demand", "scarce", "changes",
    ]);
    for v in &views {
        t.add_row(vec![
            v.model.name().to_string(),
            v.region.clone(),
            v.price.to_string(),
            v.floor.to_string(),
            v.supply_gpus.to_string(),
            v.demand_gpus.to_string(),
            if v.scarce { "yes" } else { "no" }.to_string(),
            v.history.len().to_string(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

/// Percent-encodes a query value (names are short; everything but unreserved characters is escaped).
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) async fn health(conn: &Conn) -> anyhow::Result<u8> {
    let h: agora_proto::api::HealthView = client(conn)?.get("/api/v1/market/health").await?;
    if conn.output == Output::Json {
        return print_json(&h);
    }
    let pct = |bps: u32| format!("{}.{:02} %", bps / 100, bps % 100);
    let mut t = table::new(&["measure", "gpus", "participants", "hhi", "cr4", "largest"]);
    for (name, c) in [
        ("capacity by provider", &h.capacity_by_provider),
        ("allocated by provider", &h.allocated_by_provider),
        ("allocated by tenant", &h.allocated_by_tenant),
    ] {
        t.add_row(vec![
            name.to_string(),
            c.total.to_string(),
            c.participants.to_string(),
            c.hhi.to_string(),
            pct(c.cr4_bps),
            pct(c.top_bps),
        ]);
    }
    println!("{t}");
    for d in &h.dependency {
        println!(
            "tenant {} depends on provider {} for {} of its GPUs",
            d.tenant,
            d.provider,
            pct(d.share_bps)
        );
    }
    for a in &h.alerts {
        println!("alert: {a}");
    }
    Ok(0)
}

fn print_nodes(conn: &Conn, nodes: &[NodeView]) -> anyhow::Result<u8> {
    if conn.output == Output::Json {
        return print_json(&nodes);
    }
    let mut t = table::new(&[
        "node", "provider", "agent", "name", "model", "gpus", "free", "ask", "online",
    ]);
    for n in nodes {
        t.add_row(vec![
            n.id.to_string(),
            n.provider.to_string(),
            n.agent.to_string(),
            n.name.clone(),
            n.gpu_model.to_string(),
            n.gpus.to_string(),
            n.gpus_free.to_string(),
            table::money(n.ask),
            n.online.to_string(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

fn print_sites(conn: &Conn, sites: &[agora_proto::api::SiteView]) -> anyhow::Result<u8> {
    if conn.output == Output::Json {
        return print_json(&sites);
    }
    let kw = |w: Option<u64>| w.map_or_else(|| "-".to_string(), |w| format!("{:.1}", w as f64 / 1000.0));
    let mut t = table::new(&[
        "provider",
        "site",
        "region",
        "nodes",
        "gpus",
        "budget kW",
        "used kW",
        "headroom kW",
        "kind",
        "available",
    ]);
    for s in sites {
        let kind = match s.kind {
            agora_proto::agent::SiteKind::Terrestrial => "terrestrial",
            agora_proto::agent::SiteKind::Orbital => "orbital",
        };
        t.add_row(vec![
            s.provider.to_string(),
            s.name.clone(),
            s.region.clone(),
            s.nodes.to_string(),
            s.gpus.to_string(),
            kw(s.power_budget_w),
            kw(Some(s.power_used_w)),
            kw(s.power_headroom_w),
            kind.to_string(),
            if s.available { "yes" } else { "no" }.to_string(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

pub(crate) async fn provider(cmd: ProviderCommand) -> anyhow::Result<u8> {
    match cmd {
        ProviderCommand::Sites { conn } => {
            let sites: Vec<agora_proto::api::SiteView> = client(&conn)?.get("/api/v1/provider/sites").await?;
            print_sites(&conn, &sites)
        }
        ProviderCommand::Nodes { conn } => {
            let nodes: Vec<NodeView> = client(&conn)?.get("/api/v1/provider/nodes").await?;
            print_nodes(&conn, &nodes)
        }
        ProviderCommand::Leases { conn } => {
            let leases: Vec<LeaseView> = client(&conn)?.get("/api/v1/provider/leases").await?;
            if conn.output == Output::Json {
                return print_json(&leases);
            }
            let now = now();
            let mut t = table::new(&["lease", "job", "gpus", "price/gpu-h", "state", "ran", "charged"]);
            for l in &leases {
                t.add_row(vec![
                    l.id.to_string(),
                    l.job.to_string(),
                    l.gpus.to_string(),
                    table::money(l.price_per_gpu_hour),
                    l.state.clone(),
                    l.running_at
                        .map_or_else(|| "-".into(), |r| table::span(r, l.ended_at, now)),
                    table::money(l.charged),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
    }
}

fn print_created(conn: &Conn, p: &CreatedPrincipal) -> anyhow::Result<u8> {
    if conn.output == Output::Json {
        return print_json(p);
    }
    println!(
        "{} {} `{}` created; its token (shown once):\n{}",
        p.role, p.id, p.name, p.token
    );
    Ok(0)
}

pub(crate) async fn admin(cmd: AdminCommand) -> anyhow::Result<u8> {
    match cmd {
        AdminCommand::CreateTenant { name, balance, conn } => {
            let p: CreatedPrincipal = client(&conn)?
                .post(
                    "/api/v1/admin/tenants",
                    &agora_proto::api::CreateTenant {
                        name,
                        initial_balance: balance,
                    },
                )
                .await?;
            print_created(&conn, &p)
        }
        AdminCommand::CreateProvider { name, conn } => {
            let p: CreatedPrincipal = client(&conn)?
                .post("/api/v1/admin/providers", &agora_proto::api::CreateProvider { name })
                .await?;
            print_created(&conn, &p)
        }
        AdminCommand::IssueToken { role, id, conn } => {
            let t: IssuedToken = client(&conn)?
                .post("/api/v1/admin/tokens", &agora_proto::api::IssueToken { role, id })
                .await?;
            if conn.output == Output::Json {
                return print_json(&t);
            }
            println!("{}", t.token);
            Ok(0)
        }
        AdminCommand::TopUp {
            tenant,
            amount,
            key,
            conn,
        } => {
            let key = key.unwrap_or_else(|| format!("cli-{}", now().0));
            let b: BalanceView = client(&conn)?
                .post(
                    &format!("/api/v1/admin/tenants/{tenant}/topup"),
                    &agora_proto::api::TopUp {
                        amount,
                        idempotency_key: key,
                    },
                )
                .await?;
            if conn.output == Output::Json {
                return print_json(&b);
            }
            println!("tenant {}: available {}, held {}", b.tenant, b.available, b.held);
            Ok(0)
        }
        AdminCommand::Tenants { conn } => {
            let ts: Vec<TenantView> = client(&conn)?.get("/api/v1/admin/tenants").await?;
            if conn.output == Output::Json {
                return print_json(&ts);
            }
            let mut t = table::new(&["tenant", "name", "available", "held"]);
            for x in &ts {
                t.add_row(vec![
                    x.id.to_string(),
                    x.name.clone(),
                    table::money(x.available),
                    table::money(x.held),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        AdminCommand::Providers { conn } => {
            let ps: Vec<ProviderView> = client(&conn)?.get("/api/v1/admin/providers").await?;
            if conn.output == Output::Json {
                return print_json(&ps);
            }
            let mut t = table::new(&["provider", "name", "agents", "nodes", "gpus", "earnings"]);
            for x in &ps {
                t.add_row(vec![
                    x.id.to_string(),
                    x.name.clone(),
                    x.agents.to_string(),
                    x.nodes.to_string(),
                    x.gpus.to_string(),
                    table::money(x.earnings),
                ]);
            }
            println!("{t}");
            Ok(0)
        }
        AdminCommand::Sites { conn } => {
            let sites: Vec<agora_proto::api::SiteView> = client(&conn)?.get("/api/v1/admin/sites").await?;
            print_sites(&conn, &sites)
        }
        AdminCommand::Nodes { conn } => {
            let nodes: Vec<NodeView> = client(&conn)?.get("/api/v1/admin/nodes").await?;
            print_nodes(&conn, &nodes)
        }
        AdminCommand::Ledger {
            command: LedgerCommand::Verify { conn },
        } => {
            let v: LedgerVerifyView = client(&conn)?.get("/api/v1/admin/ledger/verify").await?;
            if conn.output == Output::Json {
                print_json(&v)?;
            } else {
                println!(
                    "ledger {}: {} transfers over {} accounts, sum {}, head {}",
                    if v.ok { "verified" } else { "FAILED" },
                    v.transfers,
                    v.accounts,
                    v.sum,
                    v.head
                );
                for p in &v.problems {
                    println!("problem: {p}");
                }
            }
            Ok(if v.ok { 0 } else { crate::EXIT_ERROR })
        }
    }
}

/// Money parsed from a flag, naming the flag on error.
pub(crate) fn parse_money(flag: &str, text: &str) -> anyhow::Result<Micros> {
    Micros::parse_decimal(text).map_err(|e| anyhow!("{flag}: {e}"))
}
