//! The agent protocol: an agent registers its inventory, then heartbeats. Each
//! heartbeat carries what happened on the agent (lease parts started and exited,
//! log output) and its answer carries what the agent must do (start or stop parts).
//!
//! Every instruction is repeated until the agent reports it done, so the protocol
//! survives lost requests and restarts of either side: an agent ignores a start for
//! a part it already runs and a stop for a part it no longer runs.

use std::collections::BTreeMap;

use agora_types::{AgentId, GpuModel, JobId, LeaseId, Micros, NodeId};
use serde::{Deserialize, Serialize};

/// Where an agent's inventory came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InventorySource {
    /// Discovered through NVML (a driver is present).
    Nvml,
    /// Declared in the agent's configuration (no driver, or discovery disabled).
    Declared,
}

/// `POST /api/v1/agent/register`, with a provider token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    /// Stable name of this agent within its provider; registering again with the
    /// same name returns the same agent id (an agent restart is not a new agent).
    pub name: String,
    pub inventory_source: InventorySource,
    /// Sites the nodes are in, by name (unique within the provider). Nodes
    /// naming no site are in the provider's `default` site, with no power limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteReport>,
    pub nodes: Vec<NodeReport>,
}

/// A site: one location with one power budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteReport {
    pub name: String,
    /// Region name, for latency and market figures (e.g. `us-east`).
    pub region: String,
    /// The most the site's GPUs and nodes may draw; absent for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_budget_kw: Option<u64>,
    /// What a node draws besides its GPUs while it runs anything.
    #[serde(default)]
    pub node_overhead_w: u32,
    /// `terrestrial` (the default) or `orbital`: an orbital site runs and can
    /// be reached only inside its `windows`, and takes only checkpointable work.
    #[serde(default)]
    pub kind: SiteKind,
    /// Orbital sites: when the site is available, ascending and disjoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteKind {
    #[default]
    Terrestrial,
    Orbital,
}

/// A span of time `[start_ms, end_ms)`, in ms since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The latest time a window may name: the end of the year 9999, in ms since the epoch.
pub const MAX_WINDOW_MS: i64 = 253_402_300_799_999;

/// At most this many windows per orbital site in one report.
pub const MAX_WINDOWS_PER_SITE: usize = 1024;

impl SiteReport {
    /// Why the site's kind and windows do not hold together, if they do not.
    pub fn check_windows(&self) -> Result<(), String> {
        match self.kind {
            SiteKind::Terrestrial if !self.windows.is_empty() => {
                Err("windows are for orbital sites; a terrestrial site is always available".into())
            }
            SiteKind::Terrestrial => Ok(()),
            SiteKind::Orbital if self.windows.is_empty() => {
                Err("an orbital site needs at least one availability window".into())
            }
            SiteKind::Orbital if self.windows.len() > MAX_WINDOWS_PER_SITE => {
                Err(format!("at most {MAX_WINDOWS_PER_SITE} windows"))
            }
            SiteKind::Orbital => {
                let mut previous_end = i64::MIN;
                for (i, w) in self.windows.iter().enumerate() {
                    if !(0..=MAX_WINDOW_MS).contains(&w.start_ms) || !(0..=MAX_WINDOW_MS).contains(&w.end_ms) {
                        return Err(format!("window {i} is outside 0..={MAX_WINDOW_MS} ms (the year 9999)"));
                    }
                    if w.end_ms <= w.start_ms {
                        return Err(format!("window {i} ends before it starts"));
                    }
                    if w.start_ms < previous_end {
                        return Err(format!("window {i} overlaps or precedes the one before it"));
                    }
                    previous_end = w.end_ms;
                }
                Ok(())
            }
        }
    }
}

/// One node as its agent reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    /// Unique within the agent.
    pub name: String,
    pub gpu_model: GpuModel,
    pub gpus: u32,
    /// Host name or address other nodes of a gang use to reach this node (`MASTER_ADDR`).
    pub address: String,
    /// The ask: price per GPU-hour for this node's GPUs, in micros.
    pub ask_micros_per_gpu_hour: Micros,
    /// The site's name from `RegisterAgent::sites`; absent for the provider's default site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The fabric domain (one InfiniBand/Ethernet pod), by name, unique within
    /// the provider; absent: one domain per agent, named after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fabric_domain: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub agent_id: AgentId,
    /// Node name → node id, for every reported node.
    pub nodes: BTreeMap<String, NodeId>,
    /// How often the agent must heartbeat; silence past the server's timeout
    /// marks its leases lost.
    pub heartbeat_interval_ms: u64,
}

/// Which output stream a log chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A lease part is what one node runs of a lease: rank `rank` of a gang, or the only part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartRef {
    pub lease: LeaseId,
    pub rank: u32,
}

/// Something that happened to a part on the agent, reported once (and again
/// until a heartbeat carrying it is acknowledged).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PartEvent {
    Started {
        part: PartRef,
    },
    /// The process ended. `exit_code` is absent when a signal ended it.
    Exited {
        part: PartRef,
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    /// The process could not be started (command not found, bad working dir, …).
    StartFailed {
        part: PartRef,
        error: String,
    },
}

/// Output of a part, in order. The agent splits output into chunks of at most
/// [`MAX_LOG_CHUNK_BYTES`] and never drops the middle of a stream silently: when
/// its buffer overflows it sends a marker saying how many bytes were dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    pub part: PartRef,
    pub stream: Stream,
    pub data: String,
    /// The agent's running number of this chunk, increasing in the order
    /// chunks are sent. Heartbeats are delivered at least once, so the
    /// exchange drops a chunk numbered below one it already stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

pub const MAX_LOG_CHUNK_BYTES: usize = 64 * 1024;
/// Upper bound on the log bytes carried by one heartbeat.
pub const MAX_LOG_BYTES_PER_HEARTBEAT: usize = 1024 * 1024;

/// `POST /api/v1/agent/heartbeat`, with a provider token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub agent_id: AgentId,
    /// Every part the agent is running now.
    pub running: Vec<PartRef>,
    pub events: Vec<PartEvent>,
    /// How long ago each event of `events` happened, in milliseconds of the
    /// agent's monotonic clock, in the same order. The exchange dates events
    /// by it, so a part that ended while the server was unreachable is not
    /// charged for the outage. Missing entries count as 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_ages_ms: Vec<u64>,
    /// More events are pending than this heartbeat carries: the exchange must
    /// not conclude from `running` that a part without its exit event vanished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more_events: bool,
    /// Parts whose exit in `events` the agent itself caused by shutting down:
    /// the exchange requeues their work instead of failing it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_by_agent: Vec<PartRef>,
    /// The agent is shutting down: its nodes take no new work until it registers again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
    pub logs: Vec<LogChunk>,
}

/// What the server asks of the agent.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub start: Vec<LaunchSpec>,
    pub stop: Vec<StopOrder>,
}

/// Everything needed to start one part; the server composes the environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub part: PartRef,
    pub job: JobId,
    pub node: NodeId,
    /// GPU indices on the node, also given as `CUDA_VISIBLE_DEVICES` in `env`.
    pub gpu_indices: Vec<u32>,
    pub command: String,
    pub args: Vec<String>,
    /// Complete environment additions: the manifest's env plus `CUDA_VISIBLE_DEVICES`,
    /// `AGORA_JOB_ID`, `AGORA_LEASE_ID` and, for gangs, the torchrun variables.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
}

/// Stop a part: SIGTERM to its process group now, SIGKILL after `grace_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopOrder {
    pub part: PartRef,
    pub grace_ms: u64,
    /// Why, for the agent's log: `cancelled`, `preempted`, `insufficient_funds`, `lost`.
    pub reason: String,
}
