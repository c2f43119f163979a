//! The control loop: one thread owns the [`Exchange`] and the store. API handlers
//! send it closures; it runs a batch of them, runs the periodic work (clearing
//! rounds, settlement, timeouts) when due, commits every event the batch emitted
//! in ONE durable transaction, and only then answers the callers.
//!
//! Group commit is what lets the server acknowledge thousands of submissions per
//! second while never acknowledging anything that is not on disk: if the commit
//! fails the process exits, because its memory is ahead of its log.
//!
//! This is a std thread and not a Tokio task because every step (SQLite, the
//! engine) is synchronous CPU or disk work that must not stall the async runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_store::Store;
use agora_types::{AgentId, JobId, OrderId, UnixMs};
use tokio::sync::oneshot;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::events::Event;
use crate::state::Exchange;

/// Most closures run in one batch (one commit).
const MAX_BATCH: usize = 4096;

type Reply = Box<dyn FnOnce() + Send>;
type Work = Box<dyn FnOnce(&mut Txn<'_>) -> Reply + Send>;

/// What the control loop knows that is not part of the durable state: it is
/// rebuilt from scratch after a restart.
#[derive(Debug, Default)]
pub struct Volatile {
    /// Why each pending order was not placed in the latest round.
    pub pending_reasons: BTreeMap<OrderId, String>,
    pub agent_last_seen: HashMap<AgentId, UnixMs>,
    /// The next log chunk number expected from each agent (see `LogChunk::seq`).
    /// After a restart it starts over, so at most one repeated batch per agent
    /// can slip through then.
    pub log_next_seq: HashMap<AgentId, u64>,
    /// Log bytes stored per job, to enforce retention.
    pub log_bytes: HashMap<JobId, u64>,
    /// Leases already warned that their tenant's funds ran out.
    pub warned: BTreeSet<agora_types::LeaseId>,
    /// Market-health figures of the latest round.
    pub health: Option<agora_engine::health::Health<agora_types::ProviderId, agora_types::TenantId>>,
    /// The event count when the last clearing round ran (its own events
    /// included); a round with no event since is skipped.
    pub cleared_at_event: Option<u64>,
    /// When the last clearing round ran.
    pub cleared_at_ms: UnixMs,
    /// Clearing rounds actually run (ticks minus skipped rounds).
    pub clears: u64,
    /// The spot market's prices this round and their history.
    pub spot: crate::spot::SpotBoard,
    pub rounds: u64,
    pub last_round_us: u64,
}

/// One step of the control loop's view: the state, the events emitted so far in
/// this batch, the time of the batch.
pub struct Txn<'a> {
    pub ex: &'a mut Exchange,
    pub store: &'a mut dyn Store,
    pub cfg: &'a ServerConfig,
    pub vol: &'a mut Volatile,
    pub now: UnixMs,
    events: &'a mut Vec<Vec<u8>>,
}

impl Txn<'_> {
    /// Applies an event to the state now and queues it for this batch's commit.
    pub fn emit(&mut self, event: Event) {
        let bytes = serde_json::to_vec(&event).expect("events serialize");
        self.events.push(bytes);
        self.ex.apply(&event);
    }
}

/// A handle API handlers use to reach the control loop.
#[derive(Clone)]
pub struct CoreHandle {
    tx: mpsc::Sender<Work>,
    /// Set to make the loop finish its batch, write a snapshot and exit, even
    /// while other handles still exist.
    stop: Arc<AtomicBool>,
}

impl CoreHandle {
    /// Runs `f` on the control loop and returns its result once the events it
    /// emitted are durable.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let work: Work = Box::new(move |txn| {
            let r = f(txn);
            Box::new(move || {
                let _ = reply_tx.send(r);
            })
        });
        self.tx.send(work).map_err(|_| ApiError::unavailable())?;
        reply_rx.await.map_err(|_| ApiError::unavailable())
    }

    /// Asks the loop to stop after the work already queued.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Box::new(|_| Box::new(|| ())));
    }
}

pub fn now_ms() -> UnixMs {
    UnixMs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

/// Rebuilds the state: the latest snapshot, then every event logged after it.
pub fn recover(store: &dyn Store) -> anyhow::Result<Exchange> {
    let (mut ex, mut after) = match store.latest_snapshot()? {
        Some((seq, bytes)) => {
            let ex = Exchange::restore(&bytes)
                .map_err(|e| anyhow::anyhow!("snapshot at event {seq} is not readable: {e}"))?;
            anyhow::ensure!(ex.applied == seq, "snapshot at event {seq} holds {} events", ex.applied);
            (ex, seq)
        }
        None => (Exchange::new(), 0),
    };
    loop {
        let batch = store.read_events(after, 10_000)?;
        if batch.is_empty() {
            break;
        }
        for (seq, bytes) in batch {
            let event: Event =
                serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("event {seq} is not readable: {e}"))?;
            ex.apply(&event);
            after = seq;
        }
    }
    Ok(ex)
}

/// Writes a snapshot of the state as of its last applied event.
fn snapshot(ex: &Exchange, store: &mut dyn Store) {
    let started = Instant::now();
    let bytes = ex.snapshot();
    match store.save_snapshot(ex.applied, &bytes) {
        Ok(()) => tracing::info!(
            events = ex.applied,
            bytes = bytes.len(),
            ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        ),
        // Not fatal: the log still holds everything; the next restart replays more.
        Err(e) => tracing::warn!(error = %e, "cannot write a snapshot"),
    }
}

/// Starts the control loop on its own thread.
pub fn spawn(
    mut ex: Exchange,
    mut store: Box<dyn Store>,
    cfg: ServerConfig,
) -> (CoreHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Work>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let handle = std::thread::Builder::new()
        .name("agora-core".into())
        .spawn(move || {
            // A panic here is a bug; the state may be half-applied and ahead of
            // the log. Exit so a supervisor restarts from the log, rather than
            // leave a server that answers every request with 503.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut vol = Volatile::default();
                let start = now_ms();
                // Every known agent gets a full timeout from now to reconnect.
                for id in ex.agents.keys() {
                    vol.agent_last_seen.insert(*id, start);
                }
                let round = Duration::from_millis(cfg.round_interval_ms.max(10));
                let mut next_round = Instant::now();
                let mut snapshot_at = ex.applied;
                let mut batch: Vec<Work> = Vec::new();
                let mut events: Vec<Vec<u8>> = Vec::new();
                loop {
                    let wait = next_round.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(w) => {
                            batch.push(w);
                            while batch.len() < MAX_BATCH {
                                match rx.try_recv() {
                                    Ok(w) => batch.push(w),
                                    Err(_) => break,
                                }
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    let mut txn = Txn {
                        ex: &mut ex,
                        store: store.as_mut(),
                        cfg: &cfg,
                        vol: &mut vol,
                        now: now_ms(),
                        events: &mut events,
                    };
                    let replies: Vec<Reply> = batch.drain(..).map(|w| w(&mut txn)).collect();
                    if Instant::now() >= next_round {
                        crate::ops::tick(&mut txn);
                        next_round = Instant::now() + round;
                    }
                    if !events.is_empty() {
                        if let Err(e) = store.append(&events) {
                            // Memory is now ahead of the log: nothing more may be acknowledged.
                            tracing::error!(error = %e, "cannot commit events; stopping");
                            std::process::exit(70);
                        }
                        events.clear();
                        if ex.applied - snapshot_at >= cfg.snapshot_every_events {
                            snapshot(&ex, store.as_mut());
                            snapshot_at = ex.applied;
                        }
                    }
                    for reply in replies {
                        reply();
                    }
                    if stop_flag.load(Ordering::SeqCst) {
                        break;
                    }
                }
                if ex.applied > snapshot_at {
                    snapshot(&ex, store.as_mut());
                }
                tracing::info!("control loop stopped");
            }));
            if outcome.is_err() {
                tracing::error!("the control loop panicked; exiting so the exchange restarts from its log");
                std::process::exit(70);
            }
        })
        .expect("spawn the control loop thread");
    (CoreHandle { tx, stop }, handle)
}

/// The control loop without threads or a wall clock, for the simulator: it
/// steps the same state, operations and commits in virtual time. Each
/// [`Offline::step`] is one batch of the threaded loop: it runs the closure at
/// the given time and then commits the events it emitted to the store in one
/// append.
pub struct Offline {
    pub ex: Exchange,
    pub store: Box<dyn Store>,
    pub cfg: ServerConfig,
    pub vol: Volatile,
    events: Vec<Vec<u8>>,
    snapshot_at: u64,
    /// Events up to here were forgotten (see [`Offline::compact_log`]).
    compacted_through: u64,
}

impl Offline {
    /// Recovers the state from `store` (empty: a new exchange); every known
    /// agent gets a full timeout from `now`, as after a restart.
    pub fn open(store: Box<dyn Store>, cfg: ServerConfig, now: UnixMs) -> anyhow::Result<Offline> {
        let ex = recover(store.as_ref())?;
        let mut vol = Volatile::default();
        for id in ex.agents.keys() {
            vol.agent_last_seen.insert(*id, now);
        }
        let snapshot_at = ex.applied;
        Ok(Offline {
            ex,
            store,
            cfg,
            vol,
            events: Vec::new(),
            snapshot_at,
            compacted_through: 0,
        })
    }

    /// Forgets the logged events the latest snapshot covers, up to
    /// `keep_after` (what a reader of the log has read): a long simulation's
    /// log then holds about `snapshot_every_events` events, not all of them.
    pub fn compact_log(&mut self, keep_after: u64) -> anyhow::Result<()> {
        let through = self.snapshot_at.min(keep_after);
        if through <= self.compacted_through {
            return Ok(());
        }
        match self.store.compact(through) {
            // A snapshot that could not be written covers nothing: keep the events.
            Ok(_) | Err(agora_store::StoreError::CompactAhead { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.compacted_through = through;
        Ok(())
    }

    /// Runs `f` at `now`, then commits what it emitted.
    pub fn step<R>(&mut self, now: UnixMs, f: impl FnOnce(&mut Txn<'_>) -> R) -> anyhow::Result<R> {
        let mut txn = Txn {
            ex: &mut self.ex,
            store: self.store.as_mut(),
            cfg: &self.cfg,
            vol: &mut self.vol,
            now,
            events: &mut self.events,
        };
        let r = f(&mut txn);
        if !self.events.is_empty() {
            self.store.append(&self.events)?;
            self.events.clear();
            if self.ex.applied - self.snapshot_at >= self.cfg.snapshot_every_events {
                snapshot(&self.ex, self.store.as_mut());
                self.snapshot_at = self.ex.applied;
            }
        }
        Ok(r)
    }

    /// The periodic work of one round at `now` (see [`crate::ops::tick`]).
    pub fn tick(&mut self, now: UnixMs) -> anyhow::Result<()> {
        self.step(now, crate::ops::tick)
    }

    /// A crash and restart at `now`: everything in memory is dropped and
    /// rebuilt from the store (its latest snapshot and the events after it).
    pub fn restart(self, now: UnixMs) -> anyhow::Result<Offline> {
        Offline::open(self.store, self.cfg, now)
    }
}
