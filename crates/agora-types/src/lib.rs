//! Vocabulary shared by every Agora crate: ids, money, the GPU catalog, tiers and resources.
//!
//! Architecture invariant: this crate depends on nothing of Agora's and does no IO.

pub mod gpu;
pub mod ids;
pub mod money;

pub use gpu::{GpuModel, GpuSpec, Interface, UnknownGpuModel, edit_distance};
pub use ids::{AgentId, ContractId, DomainId, JobId, LeaseId, NodeId, OrderId, ProviderId, RegionId, SiteId, TenantId};
pub use money::{Micros, ParseMoneyError, PricePerGpuHour};

use serde::{Deserialize, Serialize};

/// Time in milliseconds since the Unix epoch. Time is always passed in as an
/// argument (the engine and the ledger never read a clock), so it is a plain value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct UnixMs(pub i64);

impl UnixMs {
    /// Whole seconds elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn seconds_since(self, earlier: UnixMs) -> i64 {
        ((self.0 - earlier.0) / 1000).max(0)
    }

    pub fn plus_ms(self, ms: i64) -> UnixMs {
        UnixMs(self.0.saturating_add(ms))
    }
}

/// Service tier of an order. The derived order is the clearing priority:
/// a smaller value clears first (reserved, then on-demand, then spot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Runs on capacity its tenant holds under a reservation contract.
    Reserved,
    OnDemand,
    Spot,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Reserved => "reserved",
            Tier::OnDemand => "on-demand",
            Tier::Spot => "spot",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of workload a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// A gang: `nodes` × `gpus_per_node`, all or nothing.
    Training,
    /// `tasks` independent tasks of `gpus_per_node` GPUs on one node each.
    Batch,
    /// Replicated inference service (not yet supported by the market).
    Service,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Training => "training",
            JobKind::Batch => "batch",
            JobKind::Service => "service",
        }
    }
}
