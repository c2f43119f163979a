//! The provider-side agent: it reports this machine's GPUs to the server, runs
//! the lease parts the server assigns as local process groups, and streams their
//! events and output back on every heartbeat.
//!
//! Modules: [`config`] (the YAML file and `agora up`'s in-process config),
//! [`inventory`] (NVML or declared nodes), [`process`] (the process runtime),
//! [`state`] (the loop's decisions as plain functions), [`client`] (HTTP).
//!
//! Architecture invariant: the agent never decides anything about leases. It
//! starts what it is told to start, stops what it is told to stop, and reports
//! what happened; every instruction is idempotent on its side (see
//! [`state::plan`]), so the server may repeat instructions freely. In the other
//! direction delivery is at least once: an event or log chunk is resent until a
//! heartbeat carrying it is answered 2xx, so after a lost answer the server may
//! see it twice and must treat a repeated event as already applied.
//!
//! Shutdown policy: when [`run`]'s shutdown future completes the agent SIGTERMs
//! every part, SIGKILLs what is left after the grace (10 s at most), sends the
//! exit events in a final heartbeat if the server answers, and returns. Parts do
//! not outlive the agent yet; adopting running parts across an agent restart
//! (through `state_dir`) is a later step.

pub mod client;
pub mod config;
pub mod inventory;
pub mod process;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use agora_proto::agent::{
    Heartbeat, HeartbeatResponse, MAX_LOG_BYTES_PER_HEARTBEAT, PartEvent, PartRef, RegisterAgent, RegisterResponse,
};
use agora_types::{AgentId, NodeId};
use anyhow::Context as _;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

pub use client::{CallError, ServerClient};
pub use config::{AgentConfig, AgentTuning, ConfigError, InventoryMode, NodeSpec};
pub use inventory::{Inventory, InventoryError, discover};
pub use process::{LogBuffer, ProcessRuntime};

/// Longest wait for the final heartbeat at shutdown.
const FINAL_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// The shutdown grace never exceeds this, whatever the tuning says.
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Bounds on the server's heartbeat interval, so a misconfigured server can
/// neither make the agent spin nor fall silent.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the agent until `shutdown` completes: discovers the inventory,
/// registers (retrying until the server answers), then heartbeats and runs
/// parts. Returns an error for what retrying cannot fix: no token, no
/// inventory, a token the server refuses. Parts are stopped before it returns.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let token = config.resolve_token()?;
    let inventory = inventory::discover(&config).context("forming the agent's inventory")?;
    run_with_inventory(config, &token, inventory, shutdown).await
}

/// [`run`] with the token and inventory already settled (for embedding, e.g.
/// `agora up`, and tests).
pub async fn run_with_inventory(
    config: AgentConfig,
    token: &str,
    inventory: Inventory,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let client = ServerClient::new(&config.server, token, config.tuning.request_timeout)?;
    let mut agent = Agent::new(config, inventory, client);
    let shutdown = std::pin::pin!(shutdown);
    let outcome = agent.serve(shutdown).await;
    if let Err(e) = &outcome {
        error!(error = %format!("{e:#}"), "agent stopping");
    }
    agent.shut_down().await;
    outcome
}

/// The agent's state between heartbeats.
struct Agent {
    config: AgentConfig,
    registration: RegisterAgent,
    client: ServerClient,
    runtime: ProcessRuntime,
    pending: state::PendingEvents,
    finished: state::FinishedParts,
    pacer: state::Pacer,
    /// The id from the last registration; kept through outages for the final heartbeat.
    agent_id: Option<AgentId>,
    nodes: BTreeMap<String, NodeId>,
    /// Register before the next heartbeat: at start, and after the server was
    /// unreachable or failing (it may have restarted and forgotten us).
    must_register: bool,
    /// Parts this agent stopped because it is shutting down, reported as such
    /// so the exchange requeues their work rather than failing it.
    stopped_by_agent: BTreeSet<PartRef>,
    /// Set once shutdown begins: every later heartbeat tells the exchange to
    /// stop offering this agent's nodes.
    leaving: bool,
}

impl Agent {
    fn new(config: AgentConfig, inventory: Inventory, client: ServerClient) -> Agent {
        let registration = RegisterAgent {
            name: config.name.clone(),
            inventory_source: inventory.source,
            sites: config.sites.clone(),
            nodes: inventory.nodes,
        };
        let t = &config.tuning;
        let pacer = state::Pacer::new(
            Instant::now(),
            Duration::from_secs(1),
            t.min_heartbeat_gap,
            t.max_retry_backoff,
        );
        Agent {
            runtime: ProcessRuntime::new(t.log_buffer_bytes),
            pending: state::PendingEvents::default(),
            finished: state::FinishedParts::new(state::FINISHED_PARTS_KEPT),
            pacer,
            agent_id: None,
            nodes: BTreeMap::new(),
            must_register: true,
            stopped_by_agent: BTreeSet::new(),
            leaving: false,
            registration,
            client,
            config,
        }
    }

    /// The loop proper; returns when `shutdown` completes or on a fatal error.
    async fn serve<F: Future<Output = ()>>(&mut self, mut shutdown: Pin<&mut F>) -> anyhow::Result<()> {
        info!(server = %self.config.server, name = %self.config.name, "agent starting");
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                event = self.runtime.next_exit() => {
                    self.record(event);
                    self.pacer.hurry(Instant::now());
                    continue;
                }
                _ = sleep_until(self.pacer.next_due()) => {}
            }
            if self.must_register {
                let result = tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    r = self.client.register(&self.registration) => r,
                };
                match result {
                    Ok(answer) => self.registered(answer),
                    Err(e) if e.is_auth() => {
                        anyhow::bail!(
                            "the server refused the provider token at registration ({e}); check `token` or AGORA_TOKEN"
                        )
                    }
                    Err(e) => {
                        let retry_in = self.pacer.failed(Instant::now());
                        warn!(error = %e, retry_in_ms = retry_in.as_millis() as u64, "registration failed");
                        continue;
                    }
                }
            }
            if !self.heartbeat(shutdown.as_mut()).await {
                return Ok(());
            }
        }
    }

    fn registered(&mut self, answer: RegisterResponse) {
        if let Some(old) = self.agent_id.filter(|old| *old != answer.agent_id) {
            warn!(old = %old, new = %answer.agent_id, "the server gave this agent a new id");
        }
        for node in &self.registration.nodes {
            if !answer.nodes.contains_key(&node.name) {
                warn!(node = %node.name, "the server's registration answer lacks a node id");
            }
        }
        let interval =
            Duration::from_millis(answer.heartbeat_interval_ms).clamp(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL);
        info!(
            agent = %answer.agent_id,
            nodes = ?answer.nodes,
            heartbeat_interval_ms = interval.as_millis() as u64,
            "registered"
        );
        self.pacer.set_interval(interval);
        self.agent_id = Some(answer.agent_id);
        self.nodes = answer.nodes;
        self.must_register = false;
    }

    fn record(&mut self, event: PartEvent) {
        if let PartEvent::Exited { part, .. } | PartEvent::StartFailed { part, .. } = &event {
            self.finished.insert(*part);
        }
        self.pending.push(event);
    }

    fn drain_exits(&mut self) {
        while let Some(event) = self.runtime.try_next_exit() {
            self.record(event);
        }
    }

    /// Builds the next heartbeat from what is pending; the log batch must be
    /// restored if the heartbeat is not acknowledged.
    fn next_heartbeat(&mut self, agent_id: AgentId) -> (Heartbeat, process::LogBatch) {
        self.drain_exits();
        let batch = self
            .runtime
            .logs()
            .lock()
            .expect("log buffer lock")
            .take_batch(MAX_LOG_BYTES_PER_HEARTBEAT);
        let events = self.pending.batch(state::MAX_EVENTS_PER_HEARTBEAT);
        let stopped_by_agent = events
            .iter()
            .filter_map(|e| match e {
                PartEvent::Exited { part, .. } if self.stopped_by_agent.contains(part) => Some(*part),
                _ => None,
            })
            .collect();
        let heartbeat = Heartbeat {
            agent_id,
            running: self.runtime.running(),
            event_ages_ms: self.pending.ages_ms(state::MAX_EVENTS_PER_HEARTBEAT, Instant::now()),
            more_events: self.pending.len() > events.len(),
            stopped_by_agent,
            leaving: self.leaving,
            events,
            logs: batch.chunks(),
        };
        (heartbeat, batch)
    }

    fn acknowledged(&mut self, heartbeat: &Heartbeat) {
        self.pending.acknowledge(heartbeat.events.len());
    }

    fn restore_logs(&mut self, batch: process::LogBatch) {
        self.runtime.logs().lock().expect("log buffer lock").restore(batch);
    }

    /// One heartbeat and its answer. Returns false when shutdown came first.
    async fn heartbeat<F: Future<Output = ()>>(&mut self, mut shutdown: Pin<&mut F>) -> bool {
        let agent_id = self.agent_id.expect("heartbeats follow a registration");
        let (heartbeat, batch) = self.next_heartbeat(agent_id);
        let sent_at = Instant::now();
        let (result, shutting_down) = {
            let request = self.client.heartbeat(&heartbeat);
            let mut request = std::pin::pin!(request);
            tokio::select! {
                r = &mut request => (r, false),
                // The server may already have taken this heartbeat: finish it
                // (briefly) rather than resend its events in the final one.
                _ = &mut shutdown => match tokio::time::timeout(FINAL_HEARTBEAT_TIMEOUT, &mut request).await {
                    Ok(r) => (r, true),
                    Err(_) => (Err(CallError::Network("no answer before shutdown".into())), true),
                },
            }
        };
        if shutting_down {
            match result {
                Ok(_ignored_instructions) => self.acknowledged(&heartbeat),
                Err(_) => self.restore_logs(batch),
            }
            return false;
        }
        match result {
            Ok(answer) => {
                debug!(
                    events = heartbeat.events.len(),
                    logs = heartbeat.logs.len(),
                    start = answer.start.len(),
                    stop = answer.stop.len(),
                    "heartbeat"
                );
                self.acknowledged(&heartbeat);
                self.pacer.succeeded(sent_at);
                let backlog =
                    !self.pending.is_empty() || !self.runtime.logs().lock().expect("log buffer lock").is_empty();
                if backlog {
                    // More output than one heartbeat carries: keep flushing at
                    // the minimum gap rather than the full interval.
                    self.pacer.hurry(Instant::now());
                }
                self.apply(answer);
            }
            Err(e) => {
                self.restore_logs(batch);
                if e.is_auth() || e.is_unknown_agent() || e.is_outage() {
                    // Registering again settles it: the same name yields the same
                    // id, and a refused token there is fatal.
                    self.must_register = true;
                }
                let retry_in = self.pacer.failed(Instant::now());
                warn!(
                    error = %e,
                    pending_events = self.pending.len(),
                    retry_in_ms = retry_in.as_millis() as u64,
                    "heartbeat failed"
                );
            }
        }
        true
    }

    fn apply(&mut self, answer: HeartbeatResponse) {
        self.drain_exits();
        let running: BTreeSet<_> = self.runtime.running().into_iter().collect();
        let plan = state::plan(answer, &running, &self.finished);
        for stop in plan.stop {
            info!(lease = %stop.part.lease, rank = stop.part.rank, reason = %stop.reason, grace_ms = stop.grace_ms, "stopping part");
            self.runtime.stop(stop.part, Duration::from_millis(stop.grace_ms));
        }
        for spec in plan.start {
            let part = spec.part;
            if !self.nodes.values().any(|id| *id == spec.node) {
                warn!(lease = %part.lease, rank = part.rank, node = %spec.node, "start names a node this agent did not register");
            }
            info!(lease = %part.lease, rank = part.rank, job = %spec.job, gpus = ?spec.gpu_indices, "starting part");
            let event = self.runtime.start(&spec);
            self.record(event);
            self.pacer.hurry(Instant::now());
        }
    }

    /// Stops every part and reports the exits if the server answers in time.
    async fn shut_down(&mut self) {
        let grace = self.config.tuning.shutdown_grace.min(MAX_SHUTDOWN_GRACE);
        let running = self.runtime.running();
        if !running.is_empty() {
            info!(
                parts = running.len(),
                grace_ms = grace.as_millis() as u64,
                "stopping all parts before exiting"
            );
        }
        self.leaving = true;
        self.stopped_by_agent.extend(running.iter().copied());
        for event in self.runtime.stop_all(grace).await {
            self.record(event);
        }
        let Some(agent_id) = self.agent_id else {
            return;
        };
        let deadline = Instant::now() + FINAL_HEARTBEAT_TIMEOUT;
        // A few rounds, so a log backlog larger than one heartbeat still gets out;
        // at least one, so the exchange learns the agent is leaving.
        let mut sent_one = false;
        for _ in 0..4 {
            let logs_left = !self.runtime.logs().lock().expect("log buffer lock").is_empty();
            if self.pending.is_empty() && !logs_left && sent_one {
                break;
            }
            sent_one = true;
            let (heartbeat, batch) = self.next_heartbeat(agent_id);
            match tokio::time::timeout_at(deadline, self.client.heartbeat(&heartbeat)).await {
                Ok(Ok(_ignored_instructions)) => self.acknowledged(&heartbeat),
                Ok(Err(e)) => {
                    warn!(error = %e, undelivered_events = self.pending.len(), "final heartbeat failed");
                    break;
                }
                Err(_) => {
                    warn!(undelivered_events = self.pending.len(), "final heartbeat timed out");
                    break;
                }
            }
            drop(batch);
        }
        info!("agent stopped");
    }
}
