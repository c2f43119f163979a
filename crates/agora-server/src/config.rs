//! Server settings, with the defaults `agora serve` and `agora up` use.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::events::MarketRules;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Interval between clearing rounds.
    pub round_interval_ms: u64,
    /// How often agents are told to heartbeat.
    pub heartbeat_interval_ms: u64,
    /// An agent silent this long is lost: its nodes go offline and its leases are requeued.
    pub agent_timeout_ms: u64,
    /// Time between SIGTERM and SIGKILL when a lease is stopped.
    pub stop_grace_ms: u64,
    /// How long a lease the tenant can no longer pay for keeps running, warned, before it ends.
    pub funds_grace_ms: u64,
    /// Running leases are settled at least this often.
    pub settle_interval_ms: u64,
    /// Escrow held at lease start when the manifest gives no duration estimate.
    pub hold_horizon_s: u64,
    /// The least a tenant must have to submit or place work: this many seconds
    /// of it at its price. Below that, submissions get HTTP 402.
    pub min_funds_s: u64,
    /// Log output kept per job; older output is pruned first.
    pub log_retention_bytes_per_job: u64,
    /// Fair share looks at GPU-hours delivered to each tenant over this window.
    pub fair_share_window_s: u64,
    /// The unit of use fair-share ranks count in (GPU-seconds; default a GPU-hour).
    pub fair_share_unit_gpu_s: u64,
    /// A snapshot is written after this many events (and at a clean shutdown),
    /// so a restart replays at most this many.
    pub snapshot_every_events: u64,
    pub rules: MarketRules,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            round_interval_ms: 1000,
            heartbeat_interval_ms: 1000,
            agent_timeout_ms: 30_000,
            stop_grace_ms: 10_000,
            funds_grace_ms: 60_000,
            settle_interval_ms: 60_000,
            hold_horizon_s: 3600,
            min_funds_s: 60,
            log_retention_bytes_per_job: 8 * 1024 * 1024,
            snapshot_every_events: 100_000,
            fair_share_window_s: 24 * 3600,
            fair_share_unit_gpu_s: 3600,
            rules: MarketRules::default(),
        }
    }
}
