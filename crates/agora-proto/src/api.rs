//! Documents of the HTTP API (`/api/v1/...`). Field names are stable: the CLI's
//! `--output json` prints these documents as they are.

use std::collections::BTreeMap;

use agora_types::{
    AgentId, ContractId, GpuModel, JobId, JobKind, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId,
    TenantId, Tier, UnixMs,
};
use serde::{Deserialize, Serialize};

/// Every error response: `{"error": {...}}` with a stable `code`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_request`, `invalid_manifest`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `insufficient_funds`, `payload_too_large`,
    /// `unsupported`, `method_not_allowed`, `unavailable`, `internal`.
    pub code: String,
    pub message: String,
    /// The offending field, dotted (`resources.gpus_per_node`), on 4xx where one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The manifest line, when the error comes from a YAML document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub job_id: JobId,
}

/// One job as its tenant (or an admin) sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub tenant: TenantId,
    pub name: String,
    pub kind: JobKind,
    pub tier: Tier,
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled`.
    pub state: String,
    pub gpus: u32,
    pub max_price_per_gpu_hour: Micros,
    pub submitted_at: UnixMs,
    pub ended_at: Option<UnixMs>,
    pub cancel_requested: bool,
    /// First non-zero exit code of a failed job.
    pub exit_code: Option<i32>,
    /// Why the job failed or is still pending, in words.
    pub reason: Option<String>,
    /// Money charged so far for this job, all leases together.
    pub cost: Micros,
    pub tasks: Vec<TaskView>,
}

/// One order of a job: the whole gang of a training job, or one task of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub order: OrderId,
    /// `pending`, `leased`, `done`, `failed`, `cancelled`.
    pub state: String,
    pub attempts: u32,
    /// Why it is not placed yet (from the latest clearing round).
    pub pending_reason: Option<String>,
    pub leases: Vec<LeaseView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseView {
    pub id: LeaseId,
    pub job: JobId,
    pub provider: ProviderId,
    /// `assigned`, `running`, `stopping`, `succeeded`, `failed`, `cancelled`, `preempted`, `lost`.
    pub state: String,
    pub price_per_gpu_hour: Micros,
    pub gpus: u32,
    pub parts: Vec<PartView>,
    pub assigned_at: UnixMs,
    pub running_at: Option<UnixMs>,
    pub ended_at: Option<UnixMs>,
    pub exit_code: Option<i32>,
    /// Why it was stopped: `cancelled`, `preempted`, `insufficient_funds`, `peer_failed`, `lost`.
    pub stop_reason: Option<String>,
    pub charged: Micros,
    pub funds_short_since: Option<UnixMs>,
    /// Set when the lease is one provider's part of a gang spanning providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangView>,
}

/// A gang spanning providers, as one of its leases sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GangView {
    /// Every lease of the gang in rank order, this one included.
    pub leases: Vec<LeaseId>,
    /// The gang-wide node rank of this lease's first part.
    pub first_rank: u32,
    /// Nodes of the whole gang.
    pub nodes: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartView {
    pub rank: u32,
    pub node: NodeId,
    pub gpu_indices: Vec<u32>,
    pub started_at: Option<UnixMs>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: u64,
    pub lease: LeaseId,
    pub rank: u32,
    pub stream: crate::agent::Stream,
    pub data: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogsResponse {
    pub job: JobId,
    pub lines: Vec<LogLine>,
    /// Pass as `after` to get what comes next.
    pub next: u64,
    /// True when the job has ended and everything it printed has been returned.
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalanceView {
    pub tenant: TenantId,
    pub available: Micros,
    pub held: Micros,
}

/// `GET /api/v1/market`: what is on offer and what recently cleared, per GPU model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarketView {
    pub models: Vec<ModelMarket>,
    pub fee_bps: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMarket {
    pub model: GpuModel,
    pub nodes: u32,
    pub gpus_total: u32,
    pub gpus_free: u32,
    pub ask_min: Option<Micros>,
    pub ask_max: Option<Micros>,
    /// Prices of the most recent placements of this model, newest first.
    pub recent_prices: Vec<Micros>,
    pub pending_orders: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    /// Initial balance, decimal (e.g. "100.00").
    #[serde(default)]
    pub initial_balance: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    pub name: String,
}

/// A principal just created, with its first token. The token is shown once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedPrincipal {
    pub id: u64,
    pub name: String,
    pub role: String,
    pub token: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// `admin`, `tenant` or `provider`.
    pub role: String,
    /// The tenant or provider id; absent for admin.
    #[serde(default)]
    pub id: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub role: String,
    pub id: Option<u64>,
    pub token: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopUp {
    /// Decimal amount, e.g. "250.00".
    pub amount: String,
    /// Idempotency key: the same key tops up once.
    pub idempotency_key: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantView {
    pub id: TenantId,
    pub name: String,
    pub available: Micros,
    pub held: Micros,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderView {
    pub id: ProviderId,
    pub name: String,
    pub earnings: Micros,
    pub agents: u32,
    pub nodes: u32,
    pub gpus: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    pub provider: ProviderId,
    pub agent: AgentId,
    pub name: String,
    pub gpu_model: GpuModel,
    pub gpus: u32,
    pub gpus_free: u32,
    pub ask: Micros,
    pub online: bool,
    pub site: String,
    pub fabric_domain: String,
}

/// A site with its power budget and what is drawn now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteView {
    pub provider: ProviderId,
    pub name: String,
    pub region: String,
    /// Absent: no limit.
    pub power_budget_w: Option<u64>,
    /// Overhead of nodes running anything plus TDP × GPUs leased.
    pub power_used_w: u64,
    pub power_headroom_w: Option<u64>,
    pub node_overhead_w: u32,
    pub nodes: u32,
    pub gpus: u32,
    /// `terrestrial` or `orbital`.
    #[serde(default)]
    pub kind: crate::agent::SiteKind,
    /// Whether it takes work now (an orbital site: inside a window, until a grace period before its end).
    #[serde(default)]
    pub available: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerVerifyView {
    pub ok: bool,
    pub transfers: u64,
    pub accounts: u64,
    pub head: String,
    /// Sum of all balances; zero when money is conserved.
    pub sum: Micros,
    pub problems: Vec<String>,
    pub balances: BTreeMap<String, Micros>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub role: String,
    pub id: Option<u64>,
}

/// `GET /api/v1/market/health`: concentration of the market, computed each round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthView {
    pub capacity_by_provider: ConcentrationView,
    pub allocated_by_provider: ConcentrationView,
    pub allocated_by_tenant: ConcentrationView,
    /// Each tenant's largest provider and its share of the tenant's GPUs (admins
    /// see every tenant, a tenant only itself, a provider none).
    pub dependency: Vec<DependencyView>,
    /// `highly_concentrated` (HHI above 1,800) and `concentration_rising` (HHI up
    /// more than 100 since the previous round), per measure.
    pub alerts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConcentrationView {
    /// GPUs counted.
    pub total: u64,
    pub participants: u32,
    /// Herfindahl–Hirschman index, 0..=10,000.
    pub hhi: u32,
    /// Share of the four largest, in basis points.
    pub cr4_bps: u32,
    /// Share of the largest, in basis points.
    pub top_bps: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DependencyView {
    pub tenant: TenantId,
    pub provider: ProviderId,
    pub share_bps: u32,
}

/// `POST /api/v1/contracts`: reserve GPUs of one model at one provider for a
/// term. A tenant reserves for itself; an admin names the tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContract {
    /// Admin only: the tenant the contract is for.
    #[serde(default)]
    pub tenant: Option<TenantId>,
    pub provider: ProviderId,
    /// A catalog name or alias (`h100`, `H100-80GB`, …).
    pub model: String,
    pub gpus: u32,
    /// When the term starts, in ms since the Unix epoch; absent: now.
    #[serde(default)]
    pub start_ms: Option<i64>,
    /// Length of the term in seconds.
    pub duration_s: u64,
    /// Fixed price per GPU-hour, decimal; absent: the provider's lowest ask
    /// for the model now. A tenant may not set it below that ask; an admin
    /// records a negotiated price.
    #[serde(default)]
    pub price_per_gpu_hour: Option<String>,
}

/// A reservation contract and how its reservation is used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContractView {
    pub id: ContractId,
    pub tenant: TenantId,
    pub provider: ProviderId,
    pub model: GpuModel,
    pub gpus: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub price_per_gpu_hour: PricePerGpuHour,
    /// `scheduled`, `active` or `ended`.
    pub state: String,
    /// Why it ended: `term`, `ended_by_tenant`, `ended_by_admin` or `insufficient_funds`.
    pub end_reason: Option<String>,
    pub ended_at_ms: Option<i64>,
    /// Price × GPUs × the whole term.
    pub term_cost: Micros,
    /// Charged so far (fee included), used or not.
    pub charged: Micros,
    /// The tenant's reservation on this provider and model now (all its active contracts there).
    pub holding: HoldingView,
}

/// A tenant's reserved GPUs on one provider and model: in use by its
/// reserved-tier work, resold as spot, idle; and what resale earned it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HoldingView {
    pub gpus: u64,
    pub used_gpus: u64,
    pub resold_gpus: u64,
    pub idle_gpus: u64,
    /// Resale revenue credited to the tenant so far (after the fee), on this provider and model.
    pub resale_credited: Micros,
}

/// The spot market of one class (GPU model, region): its clearing price this
/// round and the price history (`GET /api/v1/market/spot`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpotView {
    pub model: GpuModel,
    pub region: String,
    /// The clearing price: the floor when capacity is plentiful, the lowest
    /// accepted spot bid when it is scarce. Spot leases bidding below it are
    /// preempted; spot orders bidding below it wait.
    pub price: PricePerGpuHour,
    /// The lowest ask among the class's online nodes.
    pub floor: PricePerGpuHour,
    /// GPUs spot work may have: online GPUs minus those of reserved and on-demand leases.
    pub supply_gpus: u64,
    /// GPUs of running spot leases plus pending spot orders that could use the class.
    pub demand_gpus: u64,
    pub scarce: bool,
    /// Price changes, oldest first (bounded; kept since the server started).
    pub history: Vec<SpotPricePoint>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpotPricePoint {
    pub at_ms: i64,
    pub price: PricePerGpuHour,
}
