//! What the control loop does for each request and each round: validate against
//! the state, then emit events. Reads build API documents from the state.

use std::collections::{BTreeMap, BTreeSet};

use agora_engine::health::{Alert, Concentration, Health, Holdings, Measure};
use agora_engine::lifecycle::{LeaseState, OrderState};
use agora_engine::market::{OrderSpec, Placement, RoundInputs};
use agora_ledger::Account;
use agora_proto::Manifest;
use agora_proto::agent::SiteKind;
use agora_proto::agent::{
    Heartbeat, HeartbeatResponse, LaunchSpec, PartEvent, PartRef, RegisterAgent, RegisterResponse, StopOrder,
};
use agora_proto::api::{
    BalanceView, ConcentrationView, DependencyView, GangView, HealthView, JobView, LeaseView, LedgerVerifyView,
    LogLine, LogsResponse, MarketView, ModelMarket, NodeView, PartView, ProviderView, SiteView, TaskView, TenantView,
};
use agora_store::{LogRecord, LogStream};
use agora_types::{
    AgentId, JobId, JobKind, LeaseId, Micros, OrderId, PricePerGpuHour, ProviderId, SiteId, TenantId, UnixMs,
};

use crate::auth::{Principal, new_token, token_sha256};
use crate::core::Txn;
use crate::error::ApiError;
use crate::events::{Event, StopReason};
use crate::state::{Job, Lease};

/// Limits on names and counts, so no request can grow the state without bound.
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_NODES_PER_AGENT: usize = 1024;
pub const MAX_GPUS_PER_NODE: u32 = 64;
pub const MAX_LOG_PAGE: usize = 5000;
/// 10 GW: well above any site that exists.
pub const MAX_SITE_POWER_KW: u64 = 10_000_000;
pub const MAX_NODE_OVERHEAD_W: u32 = 100_000;
/// The site of nodes that name none: no power limit.
pub const DEFAULT_SITE: &str = "default";

/// An exchange where nothing happens still clears this often, for the clock's sake (see `clearing_round`).
pub const IDLE_ROUND_EVERY_MS: i64 = 10_000;

/// The port gang members rendezvous on is derived from the lease id, so two
/// gangs sharing a master node do not collide (within 1,000 concurrent leases).
const MASTER_PORT_BASE: u64 = 29_500;

pub fn authenticate(txn: &Txn<'_>, token: Option<&str>) -> Result<Principal, ApiError> {
    let token = token.ok_or_else(ApiError::unauthorized)?;
    txn.ex
        .principal_for(&token_sha256(token))
        .ok_or_else(ApiError::unauthorized)
}

pub fn validate_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::invalid(
            field,
            format!("must be 1..={MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

/// Issues a fresh token for `principal` and returns it (shown once).
pub fn issue_token(txn: &mut Txn<'_>, principal: Principal) -> String {
    let token = new_token();
    txn.emit(Event::TokenIssued {
        token_sha256: token_sha256(&token),
        principal,
        at: txn.now,
    });
    token
}

pub fn create_tenant(txn: &mut Txn<'_>, name: &str, initial: Micros) -> Result<(TenantId, String), ApiError> {
    validate_name("name", name)?;
    if txn.ex.tenant_named(name) {
        return Err(ApiError::conflict(format!("a tenant named `{name}` exists")));
    }
    if initial.is_negative() {
        return Err(ApiError::invalid("initial_balance", "must not be negative"));
    }
    let id = txn.ex.next_tenant_id();
    txn.emit(Event::TenantCreated {
        tenant: id,
        name: name.to_string(),
        at: txn.now,
    });
    let token = issue_token(txn, Principal::Tenant(id));
    if initial > Micros::ZERO {
        txn.emit(Event::ToppedUp {
            tenant: id,
            amount: initial,
            idempotency_key: "initial".into(),
            at: txn.now,
        });
    }
    Ok((id, token))
}

pub fn create_provider(txn: &mut Txn<'_>, name: &str) -> Result<(ProviderId, String), ApiError> {
    validate_name("name", name)?;
    if txn.ex.provider_named(name) {
        return Err(ApiError::conflict(format!("a provider named `{name}` exists")));
    }
    let id = txn.ex.next_provider_id();
    txn.emit(Event::ProviderCreated {
        provider: id,
        name: name.to_string(),
        at: txn.now,
    });
    let token = issue_token(txn, Principal::Provider(id));
    Ok((id, token))
}

pub fn top_up(txn: &mut Txn<'_>, tenant: TenantId, amount: Micros, key: &str) -> Result<BalanceView, ApiError> {
    if !txn.ex.tenants.contains_key(&tenant) {
        return Err(ApiError::not_found(format!("tenant {tenant}")));
    }
    if amount <= Micros::ZERO {
        return Err(ApiError::invalid("amount", "must be greater than zero"));
    }
    if amount > Micros::from_units(1_000_000_000) {
        return Err(ApiError::invalid("amount", "must be at most 1,000,000,000"));
    }
    if key.is_empty()
        || key.len() > 64
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(ApiError::invalid(
            "idempotency_key",
            "must be 1..=64 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    let id = agora_ledger::TransferId::new(format!("topup:{tenant}:{key}"));
    match txn.ex.ledger.transfer_by_id(&id) {
        // The same key again is the same top-up: done once, answered again.
        Some(t) if t.amount == amount => {}
        Some(t) => {
            return Err(ApiError::conflict(format!(
                "idempotency_key `{key}` was used for a top-up of {}, not {amount}",
                t.amount
            )));
        }
        None => txn.emit(Event::ToppedUp {
            tenant,
            amount,
            idempotency_key: key.to_string(),
            at: txn.now,
        }),
    }
    Ok(balance(txn, tenant))
}

pub fn balance(txn: &Txn<'_>, tenant: TenantId) -> BalanceView {
    let (available, held) = txn.ex.tenant_funds(tenant);
    BalanceView {
        tenant,
        available,
        held,
    }
}

/// Escrow for a lease: price × GPUs × the duration estimate, or the horizon.
fn hold_for(txn: &Txn<'_>, manifest: &Manifest, price: PricePerGpuHour, gpus: u32) -> Micros {
    let secs = manifest.duration_estimate_s.unwrap_or(txn.cfg.hold_horizon_s);
    price.cost(gpus, secs.min(i64::MAX as u64) as i64)
}

/// The least a tenant must have to place (or submit) work: `min_funds_s` of it.
fn minimum_funds(txn: &Txn<'_>, price: PricePerGpuHour, gpus: u32) -> Micros {
    price.cost(gpus, txn.cfg.min_funds_s.min(i64::MAX as u64) as i64)
}

pub fn submit(txn: &mut Txn<'_>, tenant: TenantId, manifest: Manifest) -> Result<JobId, ApiError> {
    manifest.validate().map_err(ApiError::manifest)?;
    if manifest.kind == JobKind::Service {
        return Err(ApiError::unsupported("kind", "service workloads are not yet supported"));
    }
    let (available, _) = txn.ex.tenant_funds(tenant);
    let per_order_gpus = manifest.resources.gpus_per_node
        * if manifest.kind == JobKind::Training {
            manifest.resources.nodes
        } else {
            1
        };
    let needed = minimum_funds(txn, manifest.max_price_per_gpu_hour, per_order_gpus);
    if available < needed || available <= Micros::ZERO {
        return Err(ApiError::insufficient_funds(format!(
            "available balance {available} is below {} s of this job at its max price ({needed}); top up first",
            txn.cfg.min_funds_s
        )));
    }
    let job = txn.ex.next_job_id();
    let first_order = txn.ex.next_order_id();
    txn.emit(Event::JobSubmitted {
        job,
        tenant,
        manifest: Box::new(manifest),
        first_order,
        at: txn.now,
    });
    Ok(job)
}

/// The job if `who` may see it. Another tenant's job is "not found", never "forbidden",
/// so ids leak nothing.
pub fn visible_job<'a>(txn: &'a Txn<'_>, who: Principal, job: JobId) -> Result<&'a Job, ApiError> {
    let j = txn
        .ex
        .jobs
        .get(&job)
        .ok_or_else(|| ApiError::not_found(format!("job {job}")))?;
    match who {
        Principal::Admin => Ok(j),
        Principal::Tenant(t) if t == j.tenant => Ok(j),
        _ => Err(ApiError::not_found(format!("job {job}"))),
    }
}

pub fn cancel(txn: &mut Txn<'_>, who: Principal, job: JobId) -> Result<JobView, ApiError> {
    let j = visible_job(txn, who, job)?;
    if !j.state.is_terminal() && !j.cancel_requested {
        txn.emit(Event::CancelRequested { job, at: txn.now });
    }
    Ok(job_view(txn, job))
}

pub fn jobs(txn: &Txn<'_>, who: Principal, limit: usize) -> Vec<JobView> {
    let ids: Vec<JobId> = txn
        .ex
        .jobs
        .values()
        .rev()
        .filter(|j| match who {
            Principal::Admin => true,
            Principal::Tenant(t) => j.tenant == t,
            Principal::Provider(_) => false,
        })
        .take(limit)
        .map(|j| j.id)
        .collect();
    ids.into_iter().map(|id| job_view(txn, id)).collect()
}

pub fn job_view(txn: &Txn<'_>, id: JobId) -> JobView {
    let j = &txn.ex.jobs[&id];
    let m = &j.manifest;
    let mut cost = Micros::ZERO;
    let mut exit_code = None;
    let mut reason = None;
    let tasks: Vec<TaskView> = j
        .orders
        .iter()
        .map(|oid| {
            let o = &txn.ex.orders[oid];
            let leases: Vec<LeaseView> = o.leases.iter().map(|l| lease_view(txn, &txn.ex.leases[l])).collect();
            for l in &leases {
                cost += l.charged;
                if exit_code.is_none() {
                    exit_code = l.exit_code;
                }
            }
            let pending_reason = (o.state == OrderState::Pending)
                .then(|| txn.vol.pending_reasons.get(oid).cloned())
                .flatten();
            if reason.is_none() {
                reason = o.failure.clone().or_else(|| pending_reason.clone());
            }
            TaskView {
                order: *oid,
                state: o.state.as_str().to_string(),
                // The parts of a gang spanning providers are one attempt.
                attempts: o
                    .leases
                    .iter()
                    .filter(|l| txn.ex.leases[l].gang.is_none_or(|g| g.index == 0))
                    .count() as u32,
                pending_reason,
                leases,
            }
        })
        .collect();
    JobView {
        id,
        tenant: j.tenant,
        name: m.name.clone(),
        kind: m.kind,
        tier: m.tier,
        state: j.state.as_str().to_string(),
        gpus: m.total_gpus(),
        max_price_per_gpu_hour: m.max_price_per_gpu_hour.0,
        submitted_at: j.submitted_at,
        ended_at: j.ended_at,
        cancel_requested: j.cancel_requested,
        exit_code,
        reason,
        cost,
        tasks,
    }
}

pub fn lease_view(txn: &Txn<'_>, l: &Lease) -> LeaseView {
    LeaseView {
        id: l.id,
        job: l.job,
        provider: l.provider,
        state: l.state.as_str().to_string(),
        price_per_gpu_hour: l.price.0,
        gpus: l.gpus,
        parts: l
            .parts
            .iter()
            .map(|p| PartView {
                rank: p.rank,
                node: p.node,
                gpu_indices: p.gpu_indices.clone(),
                started_at: p.started_at,
                exit_code: p.exit_code,
                signal: p.signal,
            })
            .collect(),
        assigned_at: l.assigned_at,
        running_at: l.running_at,
        ended_at: l.ended_at,
        exit_code: l.exit_code,
        stop_reason: l.stop_reason.map(|r| r.as_str().to_string()),
        charged: txn.ex.lease_charged(l.id),
        funds_short_since: l.funds_short_since,
        gang: l.gang.map(|g| GangView {
            leases: l.gang_leases().collect(),
            first_rank: g.first_rank,
            nodes: g.nodes,
        }),
    }
}

pub fn logs(txn: &Txn<'_>, who: Principal, job: JobId, after: u64, limit: usize) -> Result<LogsResponse, ApiError> {
    let j = visible_job(txn, who, job)?;
    let ended = j.state.is_terminal()
        && j.orders
            .iter()
            .all(|o| txn.ex.orders[o].leases.iter().all(|l| txn.ex.leases[l].is_terminal()));
    let limit = limit.clamp(1, MAX_LOG_PAGE);
    let rows = txn
        .store
        .read_logs(job, after, limit)
        .map_err(|e| ApiError { ..internal(e) })?;
    let next = rows.last().map_or(after, |r| r.seq);
    let complete = ended && rows.len() < limit;
    let lines = rows
        .into_iter()
        .map(|r| LogLine {
            seq: r.seq,
            lease: r.lease,
            rank: r.rank,
            stream: match r.stream {
                LogStream::Stdout => agora_proto::agent::Stream::Stdout,
                LogStream::Stderr => agora_proto::agent::Stream::Stderr,
            },
            data: r.data,
        })
        .collect();
    Ok(LogsResponse {
        job,
        lines,
        next,
        complete,
    })
}

pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message: e.to_string(),
        field: None,
        line: None,
    }
}

pub fn market(txn: &Txn<'_>) -> MarketView {
    let mut models: BTreeMap<_, ModelMarket> = BTreeMap::new();
    for n in txn.ex.nodes.values().filter(|n| n.online) {
        let m = models.entry(n.model).or_insert_with(|| ModelMarket {
            model: n.model,
            nodes: 0,
            gpus_total: 0,
            gpus_free: 0,
            ask_min: None,
            ask_max: None,
            recent_prices: Vec::new(),
            pending_orders: 0,
        });
        m.nodes += 1;
        m.gpus_total += n.gpus;
        m.gpus_free += txn.ex.market.free_gpus(n.id).unwrap_or(0);
        m.ask_min = Some(m.ask_min.map_or(n.ask.0, |a| a.min(n.ask.0)));
        m.ask_max = Some(m.ask_max.map_or(n.ask.0, |a| a.max(n.ask.0)));
    }
    for (model, prices) in &txn.ex.recent_prices {
        if let Some(m) = models.get_mut(model) {
            m.recent_prices = prices.iter().copied().collect();
        }
    }
    for o in txn.ex.orders.values().filter(|o| o.state == OrderState::Pending) {
        for model in &o.spec.models {
            if let Some(m) = models.get_mut(model) {
                m.pending_orders += 1;
            }
        }
    }
    MarketView {
        models: models.into_values().collect(),
        fee_bps: txn.ex.rules.fee_bps,
    }
}

pub fn tenants(txn: &Txn<'_>) -> Vec<TenantView> {
    txn.ex
        .tenants
        .values()
        .map(|t| {
            let (available, held) = txn.ex.tenant_funds(t.id);
            TenantView {
                id: t.id,
                name: t.name.clone(),
                available,
                held,
            }
        })
        .collect()
}

pub fn providers(txn: &Txn<'_>) -> Vec<ProviderView> {
    txn.ex
        .providers
        .values()
        .map(|p| {
            let nodes: Vec<_> = txn.ex.nodes.values().filter(|n| n.provider == p.id).collect();
            ProviderView {
                id: p.id,
                name: p.name.clone(),
                earnings: txn.ex.ledger.balance(&Account::ProviderEarnings(p.id)),
                agents: txn.ex.agents.values().filter(|a| a.provider == p.id).count() as u32,
                nodes: nodes.len() as u32,
                gpus: nodes.iter().map(|n| n.gpus).sum(),
            }
        })
        .collect()
}

pub fn nodes(txn: &Txn<'_>, provider: Option<ProviderId>) -> Vec<NodeView> {
    txn.ex
        .nodes
        .values()
        .filter(|n| provider.is_none_or(|p| p == n.provider))
        .map(|n| NodeView {
            id: n.id,
            provider: n.provider,
            agent: n.agent,
            name: n.name.clone(),
            gpu_model: n.model,
            gpus: n.gpus,
            gpus_free: txn.ex.market.free_gpus(n.id).unwrap_or(0),
            ask: n.ask.0,
            online: n.online,
            site: txn.ex.sites.get(&n.site).map_or_else(String::new, |s| s.name.clone()),
            fabric_domain: n.fabric_domain.clone(),
        })
        .collect()
}

pub fn sites(txn: &Txn<'_>, provider: Option<ProviderId>) -> Vec<SiteView> {
    txn.ex
        .sites
        .values()
        .filter(|s| provider.is_none_or(|p| p == s.provider))
        .map(|s| {
            let power = txn.ex.market.site_power(s.id);
            let nodes: Vec<_> = txn.ex.nodes.values().filter(|n| n.site == s.id).collect();
            SiteView {
                provider: s.provider,
                name: s.name.clone(),
                region: s.region.clone(),
                power_budget_w: s.power_budget_w,
                power_used_w: power.as_ref().map_or(0, |p| p.used_w),
                power_headroom_w: power.and_then(|p| p.headroom_w),
                node_overhead_w: s.node_overhead_w,
                nodes: nodes.len() as u32,
                gpus: nodes.iter().map(|n| n.gpus).sum(),
                kind: s.kind,
                available: s.window_open,
            }
        })
        .collect()
}

pub fn provider_leases(txn: &Txn<'_>, provider: ProviderId, limit: usize) -> Vec<LeaseView> {
    txn.ex
        .leases
        .values()
        .rev()
        .filter(|l| l.provider == provider)
        .take(limit)
        .map(|l| lease_view(txn, l))
        .collect()
}

pub fn verify_ledger(txn: &Txn<'_>) -> LedgerVerifyView {
    let balances: BTreeMap<String, Micros> = txn.ex.ledger.accounts().map(|(a, b)| (a.to_string(), b)).collect();
    let sum = balances.values().fold(Micros::ZERO, |acc, b| acc + *b);
    match txn.ex.ledger.verify() {
        Ok(report) => LedgerVerifyView {
            ok: sum == Micros::ZERO,
            transfers: report.transfers,
            accounts: balances.len() as u64,
            head: hex::encode(txn.ex.ledger.head()),
            sum,
            problems: Vec::new(),
            balances,
        },
        Err(e) => LedgerVerifyView {
            ok: false,
            transfers: txn.ex.ledger.len() as u64,
            accounts: balances.len() as u64,
            head: hex::encode(txn.ex.ledger.head()),
            sum,
            problems: vec![e.to_string()],
            balances,
        },
    }
}

pub fn register_agent(
    txn: &mut Txn<'_>,
    provider: ProviderId,
    req: RegisterAgent,
) -> Result<RegisterResponse, ApiError> {
    validate_name("name", &req.name)?;
    if req.nodes.is_empty() {
        return Err(ApiError::invalid("nodes", "an agent must report at least one node"));
    }
    if req.nodes.len() > MAX_NODES_PER_AGENT {
        return Err(ApiError::invalid(
            "nodes",
            format!("at most {MAX_NODES_PER_AGENT} nodes per agent"),
        ));
    }
    let mut names = BTreeSet::new();
    for (i, n) in req.nodes.iter().enumerate() {
        validate_name(&format!("nodes[{i}].name"), &n.name)?;
        if !names.insert(n.name.as_str()) {
            return Err(ApiError::invalid(
                format!("nodes[{i}].name"),
                format!("duplicate node name `{}`", n.name),
            ));
        }
        if n.gpus == 0 || n.gpus > MAX_GPUS_PER_NODE {
            return Err(ApiError::invalid(
                format!("nodes[{i}].gpus"),
                format!("must be 1..={MAX_GPUS_PER_NODE}"),
            ));
        }
        if n.ask_micros_per_gpu_hour <= Micros::ZERO || n.ask_micros_per_gpu_hour > Micros::from_units(1_000_000) {
            return Err(ApiError::invalid(
                format!("nodes[{i}].ask_micros_per_gpu_hour"),
                "must be greater than zero and at most 1,000,000.00",
            ));
        }
        if n.address.is_empty() || n.address.len() > 253 {
            return Err(ApiError::invalid(
                format!("nodes[{i}].address"),
                "must be 1..=253 characters",
            ));
        }
    }
    let mut site_names = BTreeSet::new();
    for (i, site) in req.sites.iter().enumerate() {
        validate_name(&format!("sites[{i}].name"), &site.name)?;
        validate_name(&format!("sites[{i}].region"), &site.region)?;
        if !site_names.insert(site.name.as_str()) {
            return Err(ApiError::invalid(
                format!("sites[{i}].name"),
                format!("duplicate site name `{}`", site.name),
            ));
        }
        site.check_windows()
            .map_err(|m| ApiError::invalid(format!("sites[{i}].windows"), m))?;
        if site.power_budget_kw.is_some_and(|kw| kw == 0 || kw > MAX_SITE_POWER_KW) {
            return Err(ApiError::invalid(
                format!("sites[{i}].power_budget_kw"),
                format!("must be 1..={MAX_SITE_POWER_KW}"),
            ));
        }
        if site.node_overhead_w > MAX_NODE_OVERHEAD_W {
            return Err(ApiError::invalid(
                format!("sites[{i}].node_overhead_w"),
                format!("must be at most {MAX_NODE_OVERHEAD_W}"),
            ));
        }
    }
    // Where each node is: a site name (declared now or before) and a fabric domain name.
    let mut placement: Vec<(String, String)> = Vec::with_capacity(req.nodes.len());
    for (i, n) in req.nodes.iter().enumerate() {
        let site = n.site.clone().unwrap_or_else(|| DEFAULT_SITE.to_string());
        if n.site.is_some() && !site_names.contains(site.as_str()) && txn.ex.site_named(provider, &site).is_none() {
            return Err(ApiError::invalid(
                format!("nodes[{i}].site"),
                format!("site `{site}` is not declared in `sites`"),
            ));
        }
        let domain = n.fabric_domain.clone().unwrap_or_else(|| req.name.clone());
        validate_name(&format!("nodes[{i}].fabric_domain"), &domain)?;
        placement.push((site, domain));
    }
    let existing_agent = txn.ex.agent_named(provider, &req.name);
    // Everything is checked before anything is emitted: a refused registration changes nothing.
    if let Some(agent) = existing_agent {
        for (i, n) in req.nodes.iter().enumerate() {
            let Some(id) = txn.ex.node_named(agent, &n.name) else {
                continue;
            };
            // A node may not shrink under a lease: the lease's GPU indices must stay valid.
            let held_beyond = txn.ex.market.node(id).is_some_and(|m| {
                m.gpu_owners()
                    .iter()
                    .enumerate()
                    .any(|(gpu, owner)| owner.is_some() && gpu as u32 >= n.gpus)
            });
            if held_beyond {
                return Err(ApiError::conflict(format!(
                    "nodes[{i}]: node `{}` has a lease on a GPU beyond the {} it now reports",
                    n.name, n.gpus
                )));
            }
            // Nor move to another site or fabric domain while its leases run there.
            let cur = &txn.ex.nodes[&id];
            let (site, domain) = &placement[i];
            // (A changed GPU model moves it to another pool too: leases and reservations count per pool.)
            let moved =
                txn.ex.sites[&cur.site].name != *site || cur.fabric_domain != *domain || cur.model != n.gpu_model;
            let leased = txn
                .ex
                .market
                .node(id)
                .is_some_and(|m| m.gpu_owners().iter().any(Option::is_some));
            if moved && leased {
                return Err(ApiError::conflict(format!(
                    "nodes[{i}]: node `{}` cannot change site, fabric domain or GPU model while it runs leases",
                    n.name
                )));
            }
        }
    }
    let agent = existing_agent.unwrap_or_else(|| txn.ex.next_agent_id());
    // Known nodes it reports again stay; known nodes it no longer reports go offline.
    let nodes = req
        .nodes
        .iter()
        .filter_map(|n| existing_agent.and_then(|a| txn.ex.node_named(a, &n.name)))
        .collect();
    txn.emit(Event::AgentRegistered {
        agent,
        provider,
        name: req.name.clone(),
        source: req.inventory_source,
        nodes,
        at: txn.now,
    });
    // Sites new or changed, and the default site when a node needs it.
    let mut sites = req.sites.clone();
    if placement.iter().any(|(site, _)| site == DEFAULT_SITE)
        && !site_names.contains(DEFAULT_SITE)
        && txn.ex.site_named(provider, DEFAULT_SITE).is_none()
    {
        sites.push(agora_proto::agent::SiteReport {
            name: DEFAULT_SITE.into(),
            region: DEFAULT_SITE.into(),
            power_budget_kw: None,
            node_overhead_w: 0,
            kind: agora_proto::agent::SiteKind::Terrestrial,
            windows: Vec::new(),
        });
    }
    for site in sites {
        let power_budget_w = site.power_budget_kw.map(|kw| kw * 1000);
        let existing = txn.ex.site_named(provider, &site.name);
        let unchanged = existing.is_some_and(|id| {
            let cur = &txn.ex.sites[&id];
            cur.region == site.region
                && cur.power_budget_w == power_budget_w
                && cur.node_overhead_w == site.node_overhead_w
                && cur.kind == site.kind
                && cur.windows == site.windows
        });
        if !unchanged {
            txn.emit(Event::SiteReported {
                site: existing.unwrap_or_else(|| txn.ex.next_site_id()),
                provider,
                name: site.name,
                region: site.region,
                power_budget_w,
                node_overhead_w: site.node_overhead_w,
                kind: site.kind,
                windows: site.windows,
                at: txn.now,
            });
        }
    }
    let mut ids = BTreeMap::new();
    for (n, (site_name, domain_name)) in req.nodes.into_iter().zip(placement) {
        let existing = txn.ex.node_named(agent, &n.name);
        let node = existing.unwrap_or_else(|| txn.ex.next_node_id());
        let ask = PricePerGpuHour(n.ask_micros_per_gpu_hour);
        let site = txn
            .ex
            .site_named(provider, &site_name)
            .expect("sites were reported above");
        let domain = txn.ex.domain_named(provider, &domain_name).unwrap_or_else(|new| new);
        let unchanged = existing.is_some_and(|id| {
            let cur = &txn.ex.nodes[&id];
            cur.model == n.gpu_model
                && cur.gpus == n.gpus
                && cur.address == n.address
                && cur.ask == ask
                && cur.site == site
                && cur.domain == domain
        });
        if !unchanged {
            txn.emit(Event::NodeReported {
                node,
                agent,
                provider,
                name: n.name.clone(),
                model: n.gpu_model,
                gpus: n.gpus,
                address: n.address,
                ask,
                site,
                domain,
                fabric_domain: domain_name,
                at: txn.now,
            });
        }
        ids.insert(n.name, node);
    }
    txn.vol.agent_last_seen.insert(agent, txn.now);
    tracing::info!(%agent, %provider, nodes = ids.len(), "agent registered");
    Ok(RegisterResponse {
        agent_id: agent,
        nodes: ids,
        heartbeat_interval_ms: txn.cfg.heartbeat_interval_ms,
    })
}

/// Bytes of log data one heartbeat may carry, all chunks together.
const MAX_HEARTBEAT_LOG_BYTES: usize = 2 * agora_proto::agent::MAX_LOG_BYTES_PER_HEARTBEAT;

pub fn heartbeat(txn: &mut Txn<'_>, provider: ProviderId, hb: Heartbeat) -> Result<HeartbeatResponse, ApiError> {
    let agent = hb.agent_id;
    match txn.ex.agents.get(&agent) {
        Some(a) if a.provider == provider => {}
        _ => return Err(ApiError::not_found(format!("agent {agent}"))),
    }
    if hb.events.len() > 10_000 || hb.running.len() > 100_000 {
        return Err(ApiError::invalid("events", "too many entries in one heartbeat"));
    }
    if hb.logs.iter().map(|c| c.data.len()).sum::<usize>() > MAX_HEARTBEAT_LOG_BYTES {
        return Err(ApiError::too_large("log data in one heartbeat exceeds the limit"));
    }
    if !txn.ex.agents[&agent].online && !hb.leaving {
        // A lost agent came back: the nodes it last reported are offered again.
        let a = &txn.ex.agents[&agent];
        let nodes = a.nodes.iter().copied().filter(|n| txn.ex.nodes[n].reported).collect();
        txn.emit(Event::AgentRegistered {
            agent,
            provider,
            name: a.name.clone(),
            source: a.source,
            nodes,
            at: txn.now,
        });
    }
    txn.vol.agent_last_seen.insert(agent, txn.now);
    let stopped_by_agent: BTreeSet<PartRef> = hb.stopped_by_agent.iter().copied().collect();
    for (i, ev) in hb.events.iter().enumerate() {
        let age_ms = hb.event_ages_ms.get(i).copied().unwrap_or(0);
        part_event(txn, agent, ev, age_ms, &stopped_by_agent);
    }
    let running: BTreeSet<PartRef> = hb.running.iter().copied().collect();
    // With events still queued on the agent, a part missing from `running` may
    // just have an exit not yet reported: conclude nothing this time.
    if !hb.more_events {
        reconcile(txn, agent, &running);
    }
    store_logs(txn, &hb)?;
    if hb.leaving {
        // Its nodes go offline now; whatever it still had is lost and requeued.
        if txn.ex.agents[&agent].online {
            tracing::info!(%agent, "agent leaving");
            txn.emit(Event::AgentLost {
                agent,
                last_seen: txn.now,
                at: txn.now,
            });
        }
        return Ok(HeartbeatResponse::default());
    }
    Ok(instructions(txn, agent, &running))
}

/// Applies one event an agent reported. Delivery is at least once, so an
/// event already applied is ignored; only parts on this agent are accepted.
fn part_event(txn: &mut Txn<'_>, agent: AgentId, ev: &PartEvent, age_ms: u64, stopped_by_agent: &BTreeSet<PartRef>) {
    let part = match ev {
        PartEvent::Started { part } | PartEvent::Exited { part, .. } | PartEvent::StartFailed { part, .. } => *part,
    };
    let Some(l) = txn.ex.leases.get(&part.lease) else {
        tracing::warn!(%agent, lease = %part.lease, "ignoring an event for an unknown lease");
        return;
    };
    let Some(p) = l.parts.get(part.rank as usize).filter(|p| p.agent == agent) else {
        tracing::warn!(%agent, lease = %part.lease, rank = part.rank, "ignoring an event for a part this agent does not own");
        return;
    };
    if l.is_terminal() || p.exited {
        return;
    }
    // Dated when it happened on the agent — a part that ended while the exchange
    // was unreachable is not charged for the outage — but never before the
    // part could have started and never after now.
    let floor = p.started_at.unwrap_or(l.assigned_at);
    let age_ms = i64::try_from(age_ms).unwrap_or(i64::MAX);
    let at = UnixMs(txn.now.0.saturating_sub(age_ms).max(floor.0));
    let (lease, rank) = (part.lease, part.rank);
    let event = match ev {
        PartEvent::Started { .. } if p.started_at.is_none() => Event::PartStarted { lease, rank, at },
        PartEvent::Started { .. } => return,
        PartEvent::Exited { exit_code, .. } if stopped_by_agent.contains(&part) && *exit_code != Some(0) => {
            Event::PartVanished {
                lease,
                rank,
                cause: "its agent stopped it while shutting down".into(),
                at,
            }
        }
        PartEvent::Exited { exit_code, signal, .. } => Event::PartExited {
            lease,
            rank,
            exit_code: *exit_code,
            signal: *signal,
            at,
        },
        PartEvent::StartFailed { error, .. } => Event::PartStartFailed {
            lease,
            rank,
            error: error.chars().take(1000).collect(),
            at,
        },
    };
    txn.emit(event);
}

/// Compares what the agent runs with what the state expects of it: a started
/// part it no longer runs has vanished; a part of a stopping lease it never
/// started has nothing left to stop.
fn reconcile(txn: &mut Txn<'_>, agent: AgentId, running: &BTreeSet<PartRef>) {
    let mut ended = Vec::new();
    for (l, p) in txn.ex.live_parts_of(agent) {
        let part = PartRef {
            lease: l.id,
            rank: p.rank,
        };
        if running.contains(&part) {
            continue;
        }
        if p.started_at.is_some() {
            ended.push(Event::PartVanished {
                lease: l.id,
                rank: p.rank,
                cause: "the process vanished from its agent".into(),
                at: txn.now,
            });
        } else if l.state == LeaseState::Stopping {
            ended.push(Event::PartNotStarted {
                lease: l.id,
                rank: p.rank,
                at: txn.now,
            });
        }
    }
    for event in ended {
        if let Event::PartVanished { lease, rank, .. } = &event {
            tracing::warn!(%lease, rank, %agent, "part vanished from its agent");
        }
        txn.emit(event);
    }
}

fn store_logs(txn: &mut Txn<'_>, hb: &Heartbeat) -> Result<(), ApiError> {
    let mut records = Vec::new();
    // Chunks numbered below what this agent already delivered are repeats of
    // a heartbeat whose answer it never got.
    let next = txn.vol.log_next_seq.get(&hb.agent_id).copied().unwrap_or(0);
    let mut highest = None;
    for c in &hb.logs {
        if let Some(seq) = c.seq {
            if seq < next {
                continue;
            }
            highest = highest.max(Some(seq));
        }
        let Some(l) = txn.ex.leases.get(&c.part.lease) else {
            continue;
        };
        if l.parts.get(c.part.rank as usize).is_none_or(|p| p.agent != hb.agent_id) {
            continue;
        }
        records.push(LogRecord {
            job: l.job,
            lease: l.id,
            rank: c.part.rank,
            stream: match c.stream {
                agora_proto::agent::Stream::Stdout => LogStream::Stdout,
                agora_proto::agent::Stream::Stderr => LogStream::Stderr,
            },
            data: c.data.clone(),
        });
    }
    if records.is_empty() {
        return Ok(());
    }
    txn.store.append_logs(&records).map_err(internal)?;
    if let Some(seq) = highest {
        txn.vol.log_next_seq.insert(hb.agent_id, seq + 1);
    }
    let mut over = BTreeSet::new();
    for r in &records {
        let bytes = txn.vol.log_bytes.entry(r.job).or_insert(0);
        *bytes += r.data.len() as u64;
        if *bytes > txn.cfg.log_retention_bytes_per_job {
            over.insert(r.job);
        }
    }
    for job in over {
        let keep = txn.cfg.log_retention_bytes_per_job;
        txn.store.prune_logs(job, keep).map_err(internal)?;
        txn.vol.log_bytes.insert(job, keep);
    }
    Ok(())
}

/// What the agent must start and stop now.
fn instructions(txn: &Txn<'_>, agent: agora_types::AgentId, running: &BTreeSet<PartRef>) -> HeartbeatResponse {
    let mut resp = HeartbeatResponse::default();
    let grace_ms = txn.cfg.stop_grace_ms;
    for (l, p) in txn.ex.live_parts_of(agent) {
        let part = PartRef {
            lease: l.id,
            rank: p.rank,
        };
        if l.state == LeaseState::Stopping {
            if running.contains(&part) || p.started_at.is_some() {
                let reason = l.stop_reason.map_or("stopped", |r| r.as_str()).to_string();
                resp.stop.push(StopOrder { part, grace_ms, reason });
            }
        } else if p.started_at.is_none() && !running.contains(&part) {
            resp.start.push(launch_spec(txn, l, p.rank));
        }
    }
    // Anything the agent runs that the exchange no longer wants is stopped.
    for part in running {
        let wanted = txn.ex.leases.get(&part.lease).is_some_and(|l| {
            !l.is_terminal()
                && l.parts
                    .get(part.rank as usize)
                    .is_some_and(|p| p.agent == agent && !p.exited)
        });
        if !wanted {
            resp.stop.push(StopOrder {
                part: *part,
                grace_ms,
                reason: "ended".into(),
            });
        }
    }
    resp
}

fn launch_spec(txn: &Txn<'_>, l: &Lease, rank: u32) -> LaunchSpec {
    let job = &txn.ex.jobs[&l.job];
    let m = &job.manifest;
    let part = &l.parts[rank as usize];
    let mut env = m.env.clone();
    let devices: Vec<String> = part.gpu_indices.iter().map(|i| i.to_string()).collect();
    env.insert("CUDA_VISIBLE_DEVICES".into(), devices.join(","));
    env.insert("AGORA_JOB_ID".into(), l.job.to_string());
    env.insert("AGORA_LEASE_ID".into(), l.id.to_string());
    env.insert(
        "AGORA_TASK_INDEX".into(),
        txn.ex.orders[&l.order].task_index.to_string(),
    );
    let nodes = l.gang_nodes();
    if nodes > 1 {
        // torchrun's conventions: one launcher per node, `LOCAL_WORLD_SIZE` workers
        // each. A gang spanning providers counts ranks across its leases, in
        // part order; rank 0 is the first part of its first lease.
        let per_node = part.gpu_indices.len() as u32;
        let first = txn
            .ex
            .leases
            .get(&l.gang_leases().next().expect("a gang has a lease"))
            .unwrap_or(l);
        let master = &txn.ex.nodes[&first.parts[0].node];
        let node_rank = l.node_rank(rank);
        env.insert("MASTER_ADDR".into(), master.address.clone());
        env.insert("MASTER_PORT".into(), (MASTER_PORT_BASE + first.id.0 % 1000).to_string());
        env.insert("WORLD_SIZE".into(), (per_node * nodes).to_string());
        env.insert("RANK".into(), (node_rank * per_node).to_string());
        env.insert("NODE_RANK".into(), node_rank.to_string());
        env.insert("LOCAL_WORLD_SIZE".into(), per_node.to_string());
        env.insert("AGORA_NNODES".into(), nodes.to_string());
    }
    LaunchSpec {
        part: PartRef { lease: l.id, rank },
        job: l.job,
        node: part.node,
        gpu_indices: part.gpu_indices.clone(),
        command: m.command.clone(),
        args: m.args.clone(),
        env,
        workdir: m.workdir.clone(),
    }
}

/// The periodic work of the control loop: a clearing round, settlements,
/// funds checks and agent timeouts.
pub fn tick(txn: &mut Txn<'_>) {
    let started = std::time::Instant::now();
    // Ranks move slowly (they are log2 buckets of GPU-hours): every 10th round is enough.
    if txn.vol.rounds.is_multiple_of(10) {
        rank_tenants(txn);
    }
    crate::contracts::tick(txn);
    orbital_windows(txn);
    clearing_round(txn);
    compute_health(txn);
    settle_and_check_funds(txn);
    expire_agents(txn);
    txn.vol.rounds += 1;
    txn.vol.last_round_us = started.elapsed().as_micros() as u64;
}

/// Fair share: each tenant's rank is ⌊log2(1 + GPU-hours delivered to it over
/// the window)⌋, so a tenant that used 0 GPU-hours comes before one that used
/// 1, which comes before one that used 2–3, 4–7, and so on; FIFO within a rank.
/// Changed ranks are an event, so a replay orders the queue the same way.
fn rank_tenants(txn: &mut Txn<'_>) {
    let now = txn.now;
    let from = UnixMs(now.0 - i64::try_from(txn.cfg.fair_share_window_s).unwrap_or(i64::MAX / 2) * 1000);
    let used = |leases: &mut dyn Iterator<Item = &Lease>| {
        let mut gpu_ms: BTreeMap<TenantId, i128> = BTreeMap::new();
        for l in leases {
            let Some(start) = l.running_at else { continue };
            let end = l.ended_at.unwrap_or(now);
            if end.0 <= from.0 {
                continue;
            }
            let ms = i128::from(end.0.min(now.0) - start.0.max(from.0)).max(0);
            *gpu_ms.entry(l.tenant).or_default() += ms * i128::from(l.gpus);
        }
        gpu_ms
    };
    // Leases live or ended within the window, not every lease ever; those
    // that ended a window before it are forgotten (a margin for a clock
    // set back).
    let forget_before = UnixMs(from.0.saturating_sub(now.0 - from.0));
    let gpu_ms = used(&mut txn.ex.leases_since(from, forget_before));
    debug_assert_eq!(
        gpu_ms,
        used(&mut txn.ex.leases.values()),
        "the window's leases are all counted"
    );
    let mut changed = Vec::new();
    for tenant in txn.ex.tenants.keys() {
        let unit_ms = i128::from(txn.cfg.fair_share_unit_gpu_s.max(1)) * 1000;
        let units = (gpu_ms.get(tenant).copied().unwrap_or(0) / unit_ms).max(0) as u128;
        let rank = 127 - (units + 1).leading_zeros();
        if txn.ex.share_ranks.get(tenant).copied().unwrap_or(0) != rank {
            changed.push((*tenant, rank));
        }
    }
    if !changed.is_empty() {
        txn.emit(Event::ShareRanksSet {
            ranks: changed,
            at: now,
        });
    }
}

/// Whether a tenant can pay for an order at its bid: orders that cannot take
/// no GPUs and preempt nothing in the round, so they never block work that can run.
fn can_pay(txn: &Txn<'_>, order: &OrderSpec) -> Result<(), String> {
    let (available, _) = txn.ex.tenant_funds(order.tenant);
    let gpus = order.nodes.saturating_mul(order.gpus_per_node);
    let needed = minimum_funds(txn, order.max_price, gpus).max(Micros(1));
    if available < needed {
        return Err(format!(
            "waiting for funds: starting it needs at least {needed} at its max price, available {available}"
        ));
    }
    Ok(())
}

fn clearing_round(txn: &mut Txn<'_>) {
    // A round decides from the state, which changes only by events, and from
    // the clock, which only backfill reads (leases running past their
    // estimated end move reservations): with no event since the last round,
    // it would decide the same but for that, so it runs again only every
    // IDLE_ROUND_EVERY_MS.
    if txn.vol.cleared_at_event == Some(txn.ex.applied) && txn.now.0 - txn.vol.cleared_at_ms.0 < IDLE_ROUND_EVERY_MS {
        return;
    }
    txn.vol.cleared_at_ms = txn.now;
    let before = txn.ex.applied;
    crate::spot::price(txn);
    let spot_prices = crate::spot::site_prices(txn.ex, &txn.vol.spot);
    let inputs = RoundInputs {
        now: Some(txn.now),
        spot_prices: Some(&spot_prices),
    };
    let plan = txn.ex.market.clear_round(inputs, |o| {
        can_pay(txn, o)
            .and_then(|()| crate::spot::admits(&txn.vol.spot, o))
            .is_ok()
    });
    let mut reasons: BTreeMap<_, String> = plan.unplaced.iter().map(|(o, r)| (*o, r.to_string())).collect();
    for o in txn.ex.market.pending_orders() {
        if let Err(why) = can_pay(txn, o).and_then(|()| crate::spot::admits(&txn.vol.spot, o)) {
            reasons.insert(o.id, why);
        }
    }
    // The parts of a gang spanning providers come one after the other: they start all or none.
    let mut placements = plan.placements.into_iter().peekable();
    while let Some(first) = placements.next() {
        let mut group = vec![first];
        while let Some(next) = placements.next_if(|p| p.order == group[0].order && p.gang.is_some()) {
            group.push(next);
        }
        start_leases(txn, group, &mut reasons);
    }
    for pre in plan.preemptions {
        // This round's placements may have used the funds that made the order eligible.
        let for_order = &txn.ex.orders[&pre.for_order].spec;
        if let Err(why) = can_pay(txn, for_order) {
            reasons.insert(pre.for_order, why);
            continue;
        }
        tracing::info!(lease = %pre.lease, for_order = %pre.for_order, "preempting spot lease");
        txn.emit(Event::StopRequested {
            lease: pre.lease,
            reason: StopReason::Preempted,
            at: txn.now,
        });
    }
    crate::spot::preempt_outbid(txn);
    if txn.ex.applied != before {
        // What the API shows is the market after this round's placements and stops.
        crate::spot::price(txn);
    }
    txn.vol.pending_reasons = reasons;
    // Only a round that changed nothing is a fixed point: one that placed or
    // preempted may have dropped parts of its plan (funds), which held GPUs
    // other orders could use, so the next round runs again.
    txn.vol.cleared_at_event = (txn.ex.applied == before).then_some(before);
    txn.vol.clears += 1;
}

/// Starts the leases of one order's placement — one, or one per part of a
/// gang spanning providers — if the tenant's funds cover the minimum of each
/// (earlier placements of the round may have used them); else none.
fn start_leases(txn: &mut Txn<'_>, group: Vec<Placement>, reasons: &mut BTreeMap<OrderId, String>) {
    let order = group[0].order;
    let o = &txn.ex.orders[&order];
    let tenant = o.spec.tenant;
    let manifest = &txn.ex.jobs[&o.spec.job].manifest;
    let gpus = |p: &Placement| p.allocations.iter().map(|a| a.gpu_indices.len() as u32).sum::<u32>();
    // At least one micro each, so every lease has an escrow to settle against.
    let minimums: Vec<Micros> = group
        .iter()
        .map(|p| minimum_funds(txn, p.price, gpus(p)).max(Micros(1)))
        .collect();
    let holds: Vec<Micros> = group
        .iter()
        .map(|p| hold_for(txn, manifest, p.price, gpus(p)))
        .collect();
    let (available, _) = txn.ex.tenant_funds(tenant);
    let minimum = Micros(minimums.iter().map(|m| m.0).sum());
    if available < minimum {
        reasons.insert(
            order,
            format!("waiting for funds: starting it needs at least {minimum}, available {available}"),
        );
        return;
    }
    for (i, p) in group.into_iter().enumerate() {
        // Each part holds up to its estimate, leaving the later parts their minimum.
        let (available, _) = txn.ex.tenant_funds(tenant);
        let later = Micros(minimums[i + 1..].iter().map(|m| m.0).sum());
        let hold = holds[i].max(Micros(1)).min(Micros(available.0 - later.0));
        let lease = txn.ex.next_lease_id();
        tracing::info!(%lease, order = %p.order, provider = %p.provider, price = %p.price, gpus = gpus(&p), "placed");
        txn.emit(Event::LeaseStarted {
            lease,
            placement: p,
            hold,
            at: txn.now,
        });
    }
}

/// Concentration of capacity (online GPUs) and of allocated GPUs (live leases).
fn compute_health(txn: &mut Txn<'_>) {
    let mut h = Holdings {
        capacity: txn.ex.online_gpus().clone(),
        ..Holdings::default()
    };
    #[cfg(debug_assertions)]
    {
        let mut counted: BTreeMap<ProviderId, u64> = BTreeMap::new();
        for n in txn.ex.nodes.values().filter(|n| n.online) {
            *counted.entry(n.provider).or_insert(0) += u64::from(n.gpus);
        }
        debug_assert_eq!(h.capacity, counted, "online GPUs by provider kept as nodes change");
    }
    for id in &txn.ex.live_leases {
        let l = &txn.ex.leases[id];
        *h.allocated.entry((l.tenant, l.provider)).or_insert(0) += u64::from(l.gpus);
    }
    let health = Health::compute(&h, txn.vol.health.as_ref());
    for alert in &health.alerts {
        if matches!(alert, Alert::ConcentrationRising { .. }) {
            tracing::warn!(?alert, "market concentration rising");
        }
    }
    txn.vol.health = Some(health);
}

pub fn health(txn: &Txn<'_>, who: Principal) -> HealthView {
    let view = |c: &Concentration| ConcentrationView {
        total: c.total,
        participants: c.participants,
        hhi: c.hhi,
        cr4_bps: c.cr4_bps,
        top_bps: c.top_bps,
    };
    let empty = Health::compute(&Holdings::default(), None);
    let h = txn.vol.health.as_ref().unwrap_or(&empty);
    HealthView {
        capacity_by_provider: view(&h.capacity_by_provider),
        allocated_by_provider: view(&h.allocated_by_provider),
        allocated_by_tenant: view(&h.allocated_by_tenant),
        dependency: h
            .dependency
            .iter()
            .filter(|(t, _)| match who {
                Principal::Admin => true,
                Principal::Tenant(me) => **t == me,
                Principal::Provider(_) => false,
            })
            .map(|(t, (p, bps))| DependencyView {
                tenant: *t,
                provider: *p,
                share_bps: *bps,
            })
            .collect(),
        alerts: h
            .alerts
            .iter()
            .map(|a| match a {
                Alert::HighlyConcentrated { measure, hhi } => {
                    format!("highly_concentrated: {} HHI {hhi} > 1800", measure_name(*measure))
                }
                Alert::ConcentrationRising { measure, from, to } => {
                    format!("concentration_rising: {} HHI {from} → {to}", measure_name(*measure))
                }
            })
            .collect(),
    }
}

fn measure_name(m: Measure) -> &'static str {
    match m {
        Measure::CapacityByProvider => "capacity by provider",
        Measure::AllocatedByProvider => "allocated GPUs by provider",
        Measure::AllocatedByTenant => "allocated GPUs by tenant",
    }
}

fn settle_and_check_funds(txn: &mut Txn<'_>) {
    let now = txn.now;
    let settle_every = txn.cfg.settle_interval_ms as i64;
    let grace = txn.cfg.funds_grace_ms as i64;
    let live: Vec<LeaseId> = txn.ex.live_leases.iter().copied().collect();
    for id in live {
        let l = &txn.ex.leases[&id];
        if l.running_at.is_some() && l.last_settled_at.is_some_and(|t| now.0 - t.0 >= settle_every) {
            txn.emit(Event::Settled { lease: id, at: now });
        }
        let l = &txn.ex.leases[&id];
        if let Some(since) = l.funds_short_since {
            if l.state != LeaseState::Stopping && now.0 - since.0 >= grace {
                tracing::warn!(lease = %id, "ending lease: insufficient funds");
                txn.emit(Event::StopRequested {
                    lease: id,
                    reason: StopReason::InsufficientFunds,
                    at: now,
                });
            } else if txn.vol.warned.insert(id) {
                let (job, secs) = (l.job, (grace - (now.0 - since.0)).max(0) / 1000);
                tracing::warn!(lease = %id, "tenant out of funds; lease warned");
                let record = LogRecord {
                    job,
                    lease: id,
                    rank: 0,
                    stream: LogStream::Stderr,
                    data: format!(
                        "[agora] the balance is exhausted: top up within {secs} s or this lease ends with reason insufficient_funds\n"
                    ),
                };
                if let Err(e) = txn.store.append_logs(&[record]) {
                    tracing::error!(error = %e, "cannot store a funds warning");
                }
            }
        } else {
            txn.vol.warned.remove(&id);
        }
    }
}

/// Orbital sites: available inside their windows, stopping `stop_grace_ms`
/// before a window closes so that work gets its grace signal while the site
/// can still be reached. Crossing either edge is an event; at the closing one
/// the site's running leases are stopped (and requeued, as preemption is).
fn orbital_windows(txn: &mut Txn<'_>) {
    let now = txn.now;
    let grace = txn.cfg.stop_grace_ms as i64;
    let changes: Vec<(SiteId, bool)> = txn
        .ex
        .sites
        .values()
        .filter(|s| s.kind == SiteKind::Orbital)
        .filter_map(|s| {
            let open = s
                .windows
                .iter()
                .any(|w| w.start_ms <= now.0 && now.0 < w.end_ms.saturating_sub(grace));
            (open != s.window_open).then_some((s.id, open))
        })
        .collect();
    for (site, open) in changes {
        tracing::info!(%site, open, "orbital site window");
        txn.emit(Event::SiteWindow { site, open, at: now });
        if open {
            continue;
        }
        let on_site: Vec<LeaseId> = txn
            .ex
            .live_leases
            .iter()
            .filter(|id| {
                let l = &txn.ex.leases[id];
                l.state != LeaseState::Stopping && l.parts.iter().any(|p| txn.ex.nodes[&p.node].site == site)
            })
            .copied()
            .collect();
        for lease in on_site {
            txn.emit(Event::StopRequested {
                lease,
                reason: StopReason::WindowClosing,
                at: now,
            });
        }
    }
}

fn expire_agents(txn: &mut Txn<'_>) {
    let now = txn.now;
    let timeout = txn.cfg.agent_timeout_ms as i64;
    let lost: Vec<_> = txn
        .ex
        .agents
        .values()
        .filter(|a| a.online)
        .filter_map(|a| {
            let last_seen = txn.vol.agent_last_seen.get(&a.id).copied().unwrap_or(now);
            (now.0 - last_seen.0 > timeout).then_some((a.id, last_seen))
        })
        .collect();
    for (agent, last_seen) in lost {
        tracing::warn!(%agent, "agent silent past the timeout; its leases are lost");
        txn.emit(Event::AgentLost {
            agent,
            last_seen,
            at: now,
        });
    }
}
