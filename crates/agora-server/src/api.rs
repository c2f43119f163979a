//! The HTTP API: routes, authentication and request parsing. Handlers parse and
//! bound their input, then run one closure on the control loop, which checks the
//! caller's token and does the work; the answer comes back once it is durable.

use std::time::Duration;

use agora_proto::Manifest;
use agora_proto::agent::{Heartbeat, RegisterAgent};
use agora_proto::api::{
    CreateContract, CreateProvider, CreateTenant, CreatedPrincipal, IssueToken, IssuedToken, SubmitResponse, TopUp,
    WhoAmI,
};
use agora_proto::manifest::MAX_MANIFEST_BYTES;
use agora_types::{ContractId, JobId, Micros, ProviderId, TenantId};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::core::{CoreHandle, Txn};
use crate::error::ApiError;
use crate::{contracts, ops};

/// Largest request body accepted on any route. Heartbeats carry log output
/// (bounded by the agent protocol), everything else is far smaller.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub core: CoreHandle,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/jobs", post(submit).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{id}/logs", get(job_logs))
        .route("/api/v1/balance", get(balance))
        .route("/api/v1/contracts", post(create_contract).get(list_contracts))
        .route("/api/v1/contracts/{id}", get(get_contract))
        .route("/api/v1/contracts/{id}/end", post(end_contract))
        .route("/api/v1/market", get(market))
        .route("/api/v1/market/health", get(market_health))
        .route("/api/v1/market/spot", get(market_spot))
        .route("/api/v1/provider/nodes", get(provider_nodes))
        .route("/api/v1/provider/leases", get(provider_leases))
        .route("/api/v1/provider/sites", get(provider_sites))
        .route("/api/v1/admin/sites", get(admin_sites))
        .route("/api/v1/agent/register", post(agent_register))
        .route("/api/v1/agent/heartbeat", post(agent_heartbeat))
        .route("/api/v1/admin/tenants", post(create_tenant).get(list_tenants))
        .route("/api/v1/admin/tenants/{id}/topup", post(top_up))
        .route("/api/v1/admin/providers", post(create_provider).get(list_providers))
        .route("/api/v1/admin/tokens", post(issue_token))
        .route("/api/v1/admin/nodes", get(admin_nodes))
        .route("/api/v1/admin/ledger/verify", get(verify_ledger))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

type ApiResult = Result<Response, ApiError>;

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
}

/// Runs `f` on the control loop as the caller of `headers`.
async fn as_caller<R: Send + 'static>(
    state: &AppState,
    headers: &HeaderMap,
    f: impl FnOnce(&mut Txn<'_>, Principal) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    let token = bearer(headers);
    state
        .core
        .call(move |txn| ops::authenticate(txn, token.as_deref()).and_then(|p| f(txn, p)))
        .await?
}

/// Runs `f` on the control loop if the caller is an admin.
async fn as_admin<R: Send + 'static>(
    state: &AppState,
    headers: &HeaderMap,
    f: impl FnOnce(&mut Txn<'_>) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    as_caller(state, headers, move |txn, p| {
        admin(p)?;
        f(txn)
    })
    .await
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> ApiResult {
    Ok((status, axum::Json(value)).into_response())
}

/// Parses a JSON body, naming the field at fault where serde says which.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        match field_in_message(&msg) {
            Some(field) => ApiError::invalid(field, msg),
            None => ApiError::invalid_body(format!("invalid JSON body: {msg}")),
        }
    })
}

/// serde's messages name a field as "unknown field `x`" or "missing field `x`".
fn field_in_message(msg: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `"] {
        if let Some(rest) = msg.split(marker).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

fn tenant_of(p: Principal) -> Result<TenantId, ApiError> {
    match p {
        Principal::Tenant(t) => Ok(t),
        _ => Err(ApiError::forbidden("act as a tenant")),
    }
}

fn provider_of(p: Principal) -> Result<ProviderId, ApiError> {
    match p {
        Principal::Provider(id) => Ok(id),
        _ => Err(ApiError::forbidden("act as a provider")),
    }
}

fn admin(p: Principal) -> Result<(), ApiError> {
    match p {
        Principal::Admin => Ok(()),
        _ => Err(ApiError::forbidden("use admin routes")),
    }
}

fn parse_id(field: &str, text: &str) -> Result<u64, ApiError> {
    text.trim().parse().map_err(|_| {
        ApiError::invalid(
            field,
            format!("`{}` is not an id", text.chars().take(40).collect::<String>()),
        )
    })
}

/// Healthy means the control loop answers, not just the HTTP listener.
async fn health(State(s): State<AppState>) -> ApiResult {
    let events = s.core.call(|txn| txn.ex.applied).await?;
    json(StatusCode::OK, &serde_json::json!({"status": "ok", "events": events}))
}

async fn whoami(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let p = as_caller(&s, &headers, |_, p| Ok(p)).await?;
    json(
        StatusCode::OK,
        &WhoAmI {
            role: p.role().to_string(),
            id: p.id(),
        },
    )
}

async fn submit(State(s): State<AppState>, headers: HeaderMap, raw: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = read_body(raw)?;
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(ApiError::too_large(format!(
            "a manifest is at most {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Parsing happens here, off the control loop; the token is checked there.
    let parsed = if is_json {
        parse_json::<Manifest>(&body).and_then(|m| m.validate().map(|()| m).map_err(ApiError::manifest))
    } else {
        std::str::from_utf8(&body)
            .map_err(|_| ApiError::invalid_body("the manifest is not UTF-8"))
            .and_then(|text| Manifest::from_yaml(text).map_err(ApiError::manifest))
    };
    let manifest = match parsed {
        Ok(m) => m,
        Err(e) => {
            // Who may not submit at all learns that first, not what is wrong with the manifest.
            as_caller(&s, &headers, |_, p| tenant_of(p)).await?;
            return Err(e);
        }
    };
    let job_id = as_caller(&s, &headers, move |txn, p| ops::submit(txn, tenant_of(p)?, manifest)).await?;
    json(StatusCode::CREATED, &SubmitResponse { job_id })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

/// Query strings are parsed here so a bad one gets the API's JSON error.
fn query<T: DeserializeOwned>(raw: Option<String>) -> Result<T, ApiError> {
    let raw = raw.unwrap_or_default();
    serde_urlencoded::from_str(&raw).map_err(|e| {
        let msg = e.to_string();
        match field_in_message(&msg) {
            Some(field) => ApiError::invalid(field, format!("invalid query: {msg}")),
            None => ApiError::invalid_body(format!("invalid query: {msg}")),
        }
    })
}

/// The body, with a body over the limit answered as the API's JSON 413.
fn read_body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::too_large(format!("a request body is at most {MAX_BODY_BYTES} bytes"))
        }
        _ => ApiError::invalid_body(e.body_text()),
    })
}

async fn list_jobs(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let q: ListQuery = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let jobs = as_caller(&s, &headers, move |txn, p| {
        if matches!(p, Principal::Provider(_)) {
            return Err(ApiError::forbidden("list jobs"));
        }
        Ok(ops::jobs(txn, p, limit))
    })
    .await?;
    json(StatusCode::OK, &jobs)
}

async fn get_job(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let job = JobId(parse_id("id", &id)?);
    let view = as_caller(&s, &headers, move |txn, p| {
        ops::visible_job(txn, p, job)?;
        Ok(ops::job_view(txn, job))
    })
    .await?;
    json(StatusCode::OK, &view)
}

async fn cancel_job(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let job = JobId(parse_id("id", &id)?);
    let view = as_caller(&s, &headers, move |txn, p| ops::cancel(txn, p, job)).await?;
    json(StatusCode::OK, &view)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpotQuery {
    model: Option<String>,
    region: Option<String>,
}

async fn market_spot(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let q: SpotQuery = query(q)?;
    let model = q
        .model
        .map(|m| agora_types::GpuModel::resolve(&m).map_err(|e| ApiError::invalid("model", e.to_string())))
        .transpose()?;
    let views = as_caller(&s, &headers, move |txn, _| {
        Ok(crate::spot::view(&txn.vol.spot, model, q.region.as_deref()))
    })
    .await?;
    json(StatusCode::OK, &views)
}

async fn create_contract(
    State(s): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(raw)?;
    let req: CreateContract = parse_json(&body)?;
    let view = as_caller(&s, &headers, move |txn, p| contracts::create(txn, p, req)).await?;
    json(StatusCode::CREATED, &view)
}

async fn list_contracts(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let views = as_caller(&s, &headers, |txn, p| Ok(contracts::list(txn, p))).await?;
    json(StatusCode::OK, &views)
}

async fn get_contract(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let id = ContractId(parse_id("id", &id)?);
    let view = as_caller(&s, &headers, move |txn, p| contracts::get(txn, p, id)).await?;
    json(StatusCode::OK, &view)
}

async fn end_contract(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let id = ContractId(parse_id("id", &id)?);
    let view = as_caller(&s, &headers, move |txn, p| contracts::end(txn, p, id)).await?;
    json(StatusCode::OK, &view)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    after: Option<u64>,
    limit: Option<usize>,
    /// Wait up to this many milliseconds for new output (long poll).
    wait_ms: Option<u64>,
}

async fn job_logs(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: LogsQuery = query(q)?;
    let job = JobId(parse_id("id", &id)?);
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(30_000));
    loop {
        let h = headers.clone();
        let resp = as_caller(&s, &h, move |txn, p| ops::logs(txn, p, job, after, limit)).await?;
        if !resp.lines.is_empty() || resp.complete || tokio::time::Instant::now() >= deadline {
            return json(StatusCode::OK, &resp);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn balance(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let b = as_caller(&s, &headers, |txn, p| Ok(ops::balance(txn, tenant_of(p)?))).await?;
    json(StatusCode::OK, &b)
}

async fn market(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let m = as_caller(&s, &headers, |txn, _| Ok(ops::market(txn))).await?;
    json(StatusCode::OK, &m)
}

async fn market_health(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let h = as_caller(&s, &headers, |txn, p| Ok(ops::health(txn, p))).await?;
    json(StatusCode::OK, &h)
}

async fn provider_nodes(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let n = as_caller(&s, &headers, |txn, p| Ok(ops::nodes(txn, Some(provider_of(p)?)))).await?;
    json(StatusCode::OK, &n)
}

async fn provider_sites(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let v = as_caller(&s, &headers, |txn, p| Ok(ops::sites(txn, Some(provider_of(p)?)))).await?;
    json(StatusCode::OK, &v)
}

async fn admin_sites(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let v = as_admin(&s, &headers, |txn| Ok(ops::sites(txn, None))).await?;
    json(StatusCode::OK, &v)
}

async fn provider_leases(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let q: ListQuery = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let l = as_caller(&s, &headers, move |txn, p| {
        Ok(ops::provider_leases(txn, provider_of(p)?, limit))
    })
    .await?;
    json(StatusCode::OK, &l)
}

async fn agent_register(
    State(s): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(raw)?;
    let req: RegisterAgent = parse_json(&body)?;
    let r = as_caller(&s, &headers, move |txn, p| {
        ops::register_agent(txn, provider_of(p)?, req)
    })
    .await?;
    json(StatusCode::OK, &r)
}

async fn agent_heartbeat(
    State(s): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(raw)?;
    let hb: Heartbeat = parse_json(&body)?;
    let r = as_caller(&s, &headers, move |txn, p| ops::heartbeat(txn, provider_of(p)?, hb)).await?;
    json(StatusCode::OK, &r)
}

fn parse_amount(field: &str, text: &str) -> Result<Micros, ApiError> {
    Micros::parse_decimal(text).map_err(|e| ApiError::invalid(field, e.to_string()))
}

async fn create_tenant(State(s): State<AppState>, headers: HeaderMap, raw: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = read_body(raw)?;
    let req: CreateTenant = parse_json(&body)?;
    let initial = match &req.initial_balance {
        Some(text) => parse_amount("initial_balance", text)?,
        None => Micros::ZERO,
    };
    if initial > Micros::from_units(1_000_000_000) {
        return Err(ApiError::invalid("initial_balance", "must be at most 1,000,000,000"));
    }
    let name = req.name.clone();
    let (id, token) = as_admin(&s, &headers, move |txn| ops::create_tenant(txn, &req.name, initial)).await?;
    json(
        StatusCode::CREATED,
        &CreatedPrincipal {
            id: id.0,
            name,
            role: "tenant".into(),
            token,
        },
    )
}

async fn list_tenants(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let t = as_admin(&s, &headers, |txn| Ok(ops::tenants(txn))).await?;
    json(StatusCode::OK, &t)
}

async fn top_up(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(raw)?;
    let tenant = TenantId(parse_id("id", &id)?);
    let req: TopUp = parse_json(&body)?;
    let amount = parse_amount("amount", &req.amount)?;
    let b = as_admin(&s, &headers, move |txn| {
        ops::top_up(txn, tenant, amount, &req.idempotency_key)
    })
    .await?;
    json(StatusCode::OK, &b)
}

async fn create_provider(
    State(s): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = read_body(raw)?;
    let req: CreateProvider = parse_json(&body)?;
    let name = req.name.clone();
    let (id, token) = as_admin(&s, &headers, move |txn| ops::create_provider(txn, &req.name)).await?;
    json(
        StatusCode::CREATED,
        &CreatedPrincipal {
            id: id.0,
            name,
            role: "provider".into(),
            token,
        },
    )
}

async fn list_providers(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let v = as_admin(&s, &headers, |txn| Ok(ops::providers(txn))).await?;
    json(StatusCode::OK, &v)
}

async fn issue_token(State(s): State<AppState>, headers: HeaderMap, raw: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = read_body(raw)?;
    let req: IssueToken = parse_json(&body)?;
    let (role, id) = (req.role.clone(), req.id);
    let token = as_admin(&s, &headers, move |txn| {
        let principal = match (req.role.as_str(), req.id) {
            ("admin", None) => Principal::Admin,
            ("tenant", Some(id)) if txn.ex.tenants.contains_key(&TenantId(id)) => Principal::Tenant(TenantId(id)),
            ("provider", Some(id)) if txn.ex.providers.contains_key(&ProviderId(id)) => {
                Principal::Provider(ProviderId(id))
            }
            ("admin", Some(_)) => return Err(ApiError::invalid("id", "an admin token takes no id")),
            ("tenant" | "provider", None) => {
                return Err(ApiError::invalid("id", "required for tenant and provider tokens"));
            }
            ("tenant" | "provider", Some(id)) => return Err(ApiError::not_found(format!("{} {id}", req.role))),
            _ => return Err(ApiError::invalid("role", "must be admin, tenant or provider")),
        };
        Ok(ops::issue_token(txn, principal))
    })
    .await?;
    json(StatusCode::CREATED, &IssuedToken { role, id, token })
}

async fn admin_nodes(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let v = as_admin(&s, &headers, |txn| Ok(ops::nodes(txn, None))).await?;
    json(StatusCode::OK, &v)
}

async fn verify_ledger(State(s): State<AppState>, headers: HeaderMap) -> ApiResult {
    let v = as_admin(&s, &headers, |txn| Ok(ops::verify_ledger(txn))).await?;
    json(StatusCode::OK, &v)
}
