//! The exchange's events: every state change is one of these, appended to the
//! durable log before the API acknowledges it. Events are facts ("part 0 of lease
//! 7 exited with code 3 at t"); their consequences (the lease ends, the job fails,
//! the ledger settles) are derived by [`crate::state::Exchange::apply`], so a replay
//! reproduces them exactly.
//!
//! Architecture invariant: events carry every input their application needs —
//! times, amounts, placements — and never refer to the clock or configuration
//! outside the state.

use agora_engine::market::{CapMode, Placement, Policies};
use agora_proto::Manifest;
use agora_proto::agent::{InventorySource, SiteKind, Window};
use agora_types::{
    AgentId, ContractId, DomainId, GpuModel, JobId, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId,
    SiteId, TenantId, UnixMs,
};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::contracts::{Contract, ContractEndReason};

/// Why a running lease is asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Cancelled,
    Preempted,
    InsufficientFunds,
    /// Another part of the same gang failed, so the gang cannot go on.
    PeerFailed,
    /// Reserved work beyond what its tenant still holds after a contract ended; requeued.
    ReservationEnded,
    /// Its orbital site's availability window is about to close; requeued.
    WindowClosing,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Cancelled => "cancelled",
            StopReason::Preempted => "preempted",
            StopReason::InsufficientFunds => "insufficient_funds",
            StopReason::PeerFailed => "peer_failed",
            StopReason::ReservationEnded => "reservation_ended",
            StopReason::WindowClosing => "window_closing",
        }
    }
}

/// Settings that change what applying an event does; they are state, set by an
/// event, so a replay uses the values that were in force at the time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarketRules {
    /// The exchange's take rate in basis points of every charge.
    pub fee_bps: u32,
    /// How many times lost or preempted work is requeued before it fails.
    pub max_retries: u32,
    /// Market health: the most of a GPU model's online capacity one tenant
    /// may hold under reservation contracts over any term, in basis points.
    #[serde(default = "default_max_reserved_share_bps")]
    pub max_reserved_share_bps: u32,
    /// Market health, in the clearing round (see `agora_engine::market::Policies`).
    #[serde(default = "default_policies")]
    pub policies: Policies,
    /// Round-trip latency between regions, which bounds gangs spanning
    /// providers (see [`crate::latency`]). Empty: no such gang is placed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<RegionLatency>,
}

/// The latency between two regions (as sites name them), either way round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionLatency {
    pub a: String,
    pub b: String,
    pub ms: u32,
}

fn default_max_reserved_share_bps() -> u32 {
    MarketRules::default().max_reserved_share_bps
}

fn default_policies() -> Policies {
    MarketRules::default().policies
}

impl Default for MarketRules {
    fn default() -> Self {
        MarketRules {
            fee_bps: 500,
            max_retries: 3,
            max_reserved_share_bps: 8000,
            // Documented defaults: tenants with 64 GPUs or more prefer to keep at
            // most half of them on one provider; 5 % of each model is kept for
            // tenants with fewer than 64 GPUs.
            policies: Policies {
                provider_share_cap_bps: Some(5000),
                provider_share_mode: CapMode::Soft,
                provider_share_min_gpus: 64,
                small_tenant_floor_bps: 500,
                small_tenant_gpus: 64,
            },
            latency: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RulesSet {
        rules: MarketRules,
        at: UnixMs,
    },
    TenantCreated {
        tenant: TenantId,
        name: String,
        at: UnixMs,
    },
    ProviderCreated {
        provider: ProviderId,
        name: String,
        at: UnixMs,
    },
    /// Only the SHA-256 of a token is ever stored.
    TokenIssued {
        token_sha256: String,
        principal: Principal,
        at: UnixMs,
    },
    ToppedUp {
        tenant: TenantId,
        amount: Micros,
        idempotency_key: String,
        at: UnixMs,
    },
    /// An agent registered (or came back). Its known nodes listed in `nodes`
    /// are online, the others offline; nodes new to it follow as `NodeReported`.
    AgentRegistered {
        agent: AgentId,
        provider: ProviderId,
        name: String,
        source: InventorySource,
        nodes: Vec<NodeId>,
        at: UnixMs,
    },
    /// A provider's site, new or changed.
    SiteReported {
        site: SiteId,
        provider: ProviderId,
        name: String,
        region: String,
        power_budget_w: Option<u64>,
        node_overhead_w: u32,
        #[serde(default)]
        kind: SiteKind,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        windows: Vec<Window>,
        at: UnixMs,
    },
    /// An orbital site's window opened or (a grace period before its end) closed.
    SiteWindow {
        site: SiteId,
        open: bool,
        at: UnixMs,
    },
    NodeReported {
        node: NodeId,
        agent: AgentId,
        provider: ProviderId,
        name: String,
        model: GpuModel,
        gpus: u32,
        address: String,
        ask: PricePerGpuHour,
        site: SiteId,
        /// Fabric domain: its id, and its name within the provider.
        domain: DomainId,
        fabric_domain: String,
        at: UnixMs,
    },
    JobSubmitted {
        job: JobId,
        tenant: TenantId,
        manifest: Box<Manifest>,
        first_order: OrderId,
        at: UnixMs,
    },
    CancelRequested {
        job: JobId,
        at: UnixMs,
    },
    /// A clearing round placed an order; `hold` is escrowed from the tenant.
    LeaseStarted {
        lease: LeaseId,
        placement: Placement,
        hold: Micros,
        at: UnixMs,
    },
    StopRequested {
        lease: LeaseId,
        reason: StopReason,
        at: UnixMs,
    },
    PartStarted {
        lease: LeaseId,
        rank: u32,
        at: UnixMs,
    },
    PartExited {
        lease: LeaseId,
        rank: u32,
        exit_code: Option<i32>,
        signal: Option<i32>,
        at: UnixMs,
    },
    PartStartFailed {
        lease: LeaseId,
        rank: u32,
        error: String,
        at: UnixMs,
    },
    /// The part ended without its work finishing, through no fault of the
    /// tenant's: it vanished from its agent, or the agent stopped it while
    /// shutting down. The lease is lost and its work requeued.
    PartVanished {
        lease: LeaseId,
        rank: u32,
        cause: String,
        at: UnixMs,
    },
    /// A part of a stopping lease that its agent never started: nothing to stop.
    PartNotStarted {
        lease: LeaseId,
        rank: u32,
        at: UnixMs,
    },
    /// Periodic settlement of a running lease's usage up to `at`.
    Settled {
        lease: LeaseId,
        at: UnixMs,
    },
    /// Fair-share ranks changed: within a tier and a bid, tenants with a lower
    /// rank (less recent use) are served first.
    ShareRanksSet {
        ranks: Vec<(TenantId, u32)>,
        at: UnixMs,
    },
    /// An agent was silent past the timeout; its nodes go offline and their
    /// leases are lost, charged only up to `last_seen`.
    AgentLost {
        agent: AgentId,
        last_seen: UnixMs,
        at: UnixMs,
    },
    /// A reservation contract was agreed; it starts with `ContractStarted`.
    ContractCreated {
        contract: Contract,
        at: UnixMs,
    },
    /// The term began: the market holds the GPUs for the tenant.
    ContractStarted {
        contract: ContractId,
        at: UnixMs,
    },
    /// Periodic charge of the term served up to `at`.
    ContractCharged {
        contract: ContractId,
        at: UnixMs,
    },
    /// The term is over (or was cut short): charged up to `at`, GPUs released.
    ContractEnded {
        contract: ContractId,
        reason: ContractEndReason,
        at: UnixMs,
    },
}

impl Event {
    pub fn at(&self) -> UnixMs {
        match self {
            Event::RulesSet { at, .. }
            | Event::TenantCreated { at, .. }
            | Event::ProviderCreated { at, .. }
            | Event::TokenIssued { at, .. }
            | Event::ToppedUp { at, .. }
            | Event::AgentRegistered { at, .. }
            | Event::SiteReported { at, .. }
            | Event::SiteWindow { at, .. }
            | Event::NodeReported { at, .. }
            | Event::JobSubmitted { at, .. }
            | Event::CancelRequested { at, .. }
            | Event::LeaseStarted { at, .. }
            | Event::StopRequested { at, .. }
            | Event::PartStarted { at, .. }
            | Event::PartExited { at, .. }
            | Event::PartStartFailed { at, .. }
            | Event::PartVanished { at, .. }
            | Event::PartNotStarted { at, .. }
            | Event::Settled { at, .. }
            | Event::ShareRanksSet { at, .. }
            | Event::AgentLost { at, .. }
            | Event::ContractCreated { at, .. }
            | Event::ContractStarted { at, .. }
            | Event::ContractCharged { at, .. }
            | Event::ContractEnded { at, .. } => *at,
        }
    }
}
