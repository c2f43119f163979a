//! The market simulator: a [`Scenario`] run in virtual time through the
//! exchange's own control loop ([`agora_server::core::Offline`]: the same
//! state machine, operations, clearing rounds, ledger and event log the
//! server runs, over an in-memory SQLite store), with hollow providers and
//! tenants instead of processes.
//!
//! Each round at virtual time `t`: tenants submit the jobs that arrived since
//! the last round, each at its arrival time (through `ops::submit`); hollow
//! agents report the parts whose work is done (exit 0, dated when it
//! finished); timed events and provider joins and leaves due by `t` happen;
//! the control loop ticks (clearing, settlement,
//! funds checks, agent timeouts); agents told to start or stop parts answer
//! at once. Only this module knows a job's length: the exchange sees a job
//! end when its agent says so, as in production. Work survives preemption
//! (jobs checkpoint): a restarted job runs for what it had left.
//!
//! Determinism: every choice comes from the scenario's seed
//! ([`SplitMix64`]); maps iterate in key order; the virtual clock starts at a
//! fixed epoch. The same scenario and seed give byte-identical outputs.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::path::Path;

use agora_engine::lifecycle::JobState;
use agora_ledger::Account;
use agora_proto::Manifest;
use agora_proto::agent::{
    Heartbeat, HeartbeatResponse, InventorySource, NodeReport, PartEvent, PartRef, RegisterAgent, SiteReport,
};
use agora_proto::manifest::Resources;
use agora_server::ServerConfig;
use agora_server::core::Offline;
use agora_server::events::{Event, MarketRules, RegionLatency};
use agora_server::ops;
use agora_types::{
    AgentId, GpuModel, JobId, JobKind, LeaseId, Micros, PricePerGpuHour, ProviderId, TenantId, Tier, UnixMs,
};
use serde::Serialize;

use crate::rng::SplitMix64;
use crate::scenario::{PolicyChoice, Scenario};

/// Where virtual time starts: 2026-01-01T00:00:00Z.
pub const EPOCH: UnixMs = UnixMs(1_767_225_600_000);
/// Most nodes one hollow agent reports (the server's limit per agent).
const NODES_PER_AGENT: usize = agora_server::ops::MAX_NODES_PER_AGENT;

/// Size classes of tenants (by their largest job) and providers (by GPUs), for the summary.
const CLASSES: [(&str, u64, u64); 3] = [("<64", 0, 63), ("64-1024", 64, 1024), (">1024", 1025, u64::MAX)];

/// A tenant group's size class, by its largest job.
fn group_class(group: &crate::scenario::TenantGroup) -> &'static str {
    class_of(u64::from(
        *group.gpus.iter().max().expect("validated: a group has job sizes"),
    ))
}

fn class_of(gpus: u64) -> &'static str {
    CLASSES
        .iter()
        .find(|(_, lo, hi)| (*lo..=*hi).contains(&gpus))
        .map_or(">1024", |c| c.0)
}

/// One row of `timeseries.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsRow {
    pub t_s: u64,
    pub gpus_online: u64,
    pub gpus_allocated: u64,
    pub pending_orders: u64,
    pub running_leases: u64,
    pub hhi_capacity: u32,
    pub hhi_allocated: u32,
    pub cr4_capacity_bps: u32,
    pub cr4_allocated_bps: u32,
}

/// One row of `spot.csv`: a spot class's clearing price at a metrics time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpotRow {
    pub t_s: u64,
    pub model: String,
    pub region: String,
    pub price: Micros,
    pub scarce: bool,
}

/// One row of `jobs.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub job: u64,
    pub tenant_group: String,
    /// The tenant's size class by its group's largest job: `<64`, `64-1024` or `>1024` GPUs.
    pub tenant_class: String,
    pub gpus: u32,
    pub submitted_s: u64,
    /// When it first ran; None if it never did.
    pub started_s: Option<u64>,
    pub ended_s: Option<u64>,
    pub state: String,
    pub cost: Micros,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobCounts {
    pub submitted: u64,
    /// Refused at submission (the tenant could not cover the minimum).
    pub refused: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub unfinished: u64,
}

/// Tenants of one size class. A job that never started counts as waiting
/// until the end of the run (a censored wait).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantClass {
    pub class: String,
    pub tenants: u64,
    pub jobs: u64,
    pub succeeded: u64,
    pub avg_wait_s: f64,
    pub p50_wait_s: u64,
    pub p95_wait_s: u64,
    pub avg_jct_s: f64,
    pub spend: Micros,
}

/// Providers of one size class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderClass {
    pub class: String,
    pub providers: u64,
    pub gpus: u64,
    pub gpu_hours_delivered: f64,
    /// Delivered GPU-hours over GPU-hours online while they were members.
    pub utilization: f64,
    pub revenue: Micros,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concentration {
    pub hhi_capacity: u32,
    pub hhi_delivered_gpu_hours: u32,
    pub cr4_delivered_bps: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub duration_s: u64,
    pub rounds: u64,
    pub events_logged: u64,
    pub jobs: JobCounts,
    pub tenant_classes: Vec<TenantClass>,
    pub provider_classes: Vec<ProviderClass>,
    pub concentration: Concentration,
    /// Agents' hosts that failed (`agent_mtbf`).
    pub agent_failures: u64,
    /// Single nodes that failed inside running agents (`node_mtbf`).
    pub node_failures: u64,
    /// Leases whose processes were lost (a failed host or node, an agent
    /// the exchange gave up on): their work was requeued.
    pub leases_lost: u64,
    /// What reservation contracts' charges asked of their tenants (in `spend`
    /// too; a tenant short of funds may have paid less, and is then ended).
    pub contract_charges: Micros,
    /// GPU-hours of spot leases on idle reserved GPUs (resold to others).
    pub resold_gpu_hours: f64,
    /// `Ledger::verify` over the whole journal at the end: balances, holds and chain.
    pub ledger_verified: bool,
    pub fees: Micros,
}

/// Everything a run produces; [`Outputs::write`] puts it in a directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    pub summary: Summary,
    pub timeseries: Vec<MetricsRow>,
    pub spot: Vec<SpotRow>,
    pub jobs: Vec<JobRow>,
}

impl Outputs {
    /// Writes `summary.json`, `timeseries.csv`, `spot.csv`, `jobs.csv` and
    /// the plots (see [`crate::plots`]).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let summary = serde_json::to_string_pretty(&self.summary).expect("a summary serializes");
        std::fs::write(dir.join("summary.json"), summary + "\n")?;
        let mut ts = String::from(
            "t_s,gpus_online,gpus_allocated,utilization,pending_orders,running_leases,hhi_capacity,hhi_allocated,cr4_capacity_bps,cr4_allocated_bps\n",
        );
        for r in &self.timeseries {
            let util = if r.gpus_online == 0 {
                0.0
            } else {
                r.gpus_allocated as f64 / r.gpus_online as f64
            };
            let _ = writeln!(
                ts,
                "{},{},{},{util:.4},{},{},{},{},{},{}",
                r.t_s,
                r.gpus_online,
                r.gpus_allocated,
                r.pending_orders,
                r.running_leases,
                r.hhi_capacity,
                r.hhi_allocated,
                r.cr4_capacity_bps,
                r.cr4_allocated_bps
            );
        }
        std::fs::write(dir.join("timeseries.csv"), ts)?;
        let mut spot = String::from("t_s,model,region,price,scarce\n");
        for r in &self.spot {
            let _ = writeln!(spot, "{},{},{},{},{}", r.t_s, r.model, r.region, r.price, r.scarce);
        }
        std::fs::write(dir.join("spot.csv"), spot)?;
        let mut jobs =
            String::from("job,tenant_group,tenant_class,gpus,submitted_s,started_s,ended_s,wait_s,jct_s,state,cost\n");
        let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        for j in &self.jobs {
            let wait = j.started_s.map(|s| s - j.submitted_s);
            let jct = j.ended_s.filter(|_| j.state == "succeeded").map(|e| e - j.submitted_s);
            let _ = writeln!(
                jobs,
                "{},{},{},{},{},{},{},{},{},{},{}",
                j.job,
                j.tenant_group,
                j.tenant_class,
                j.gpus,
                j.submitted_s,
                opt(j.started_s),
                opt(j.ended_s),
                opt(wait),
                opt(jct),
                j.state,
                j.cost
            );
        }
        std::fs::write(dir.join("jobs.csv"), jobs)?;
        crate::plots::draw(self, dir)
    }
}

struct SimProvider {
    group: usize,
    name: String,
    region: String,
    id: Option<ProviderId>,
    /// The ask per GPU-hour, changed by price events.
    ask: Micros,
    agents: Vec<AgentId>,
    gpus: u64,
    joined_ms: Option<u64>,
    left_ms: Option<u64>,
}

struct HollowAgent {
    provider: ProviderId,
    /// Its provider's index in `Sim::providers`.
    index: usize,
    region: String,
    reg: RegisterAgent,
    running: BTreeSet<PartRef>,
    /// Events not yet reported, with when they happened (ms of virtual time).
    pending: Vec<(PartEvent, u64)>,
    /// Heartbeating (not down, not cut off, not gone).
    alive: bool,
    /// When a down or cut-off agent returns.
    back_at: Option<u64>,
    /// Cut off from the exchange by a partition: its processes keep running
    /// (a crashed host's or an outage's die).
    partitioned: bool,
    /// Nodes (indices into `reg.nodes`) that failed and are not repaired:
    /// the agent leaves them out when it registers.
    down: BTreeSet<u32>,
}

impl HollowAgent {
    /// The agent's registration as it would send it now: without its failed nodes.
    fn inventory(&self) -> RegisterAgent {
        let mut reg = self.reg.clone();
        if !self.down.is_empty() {
            reg.nodes = (0u32..)
                .zip(&self.reg.nodes)
                .filter(|(n, _)| !self.down.contains(n))
                .map(|(_, node)| node.clone())
                .collect();
        }
        reg
    }
}

struct SimTenant {
    group: usize,
    id: TenantId,
}

/// What only the simulator knows of a job: how much work it has left.
struct Work {
    tenant: usize,
    gpus: u32,
    /// The job's length: the work it needs in all.
    total_ms: u64,
    remaining_ms: u64,
    /// The lease running it now and when that lease started.
    running: Option<(LeaseId, u64)>,
}

struct Sim<'s> {
    sc: &'s Scenario,
    seed: u64,
    rng: SplitMix64,
    off: Offline,
    providers: Vec<SimProvider>,
    agents: BTreeMap<AgentId, HollowAgent>,
    tenants: Vec<SimTenant>,
    /// (arrival ms, tenant index), earliest first.
    arrivals: BinaryHeap<Reverse<(u64, usize)>>,
    work: BTreeMap<JobId, Work>,
    /// Natural ends of running leases: (end ms, lease).
    ends: BTreeSet<(u64, LeaseId)>,
    /// The last event seq read from the log.
    cursor: u64,
    dirty: BTreeSet<AgentId>,
    /// Host failures, from their own seed so that scenarios without any
    /// draw the same jobs as before: (when, agent), earliest first.
    faults: SplitMix64,
    failures: BTreeSet<(u64, AgentId)>,
    agent_failures: u64,
    /// Single nodes' failures and repairs due: (when, agent, node index), earliest first.
    node_failures_due: BTreeSet<(u64, AgentId, u32)>,
    node_repairs_due: BTreeSet<(u64, AgentId, u32)>,
    node_failures: u64,
    /// Which of the scenario's contracts were recorded.
    contracts_made: Vec<bool>,
    refused: u64,
    rounds: u64,
    timeseries: Vec<MetricsRow>,
    spot: Vec<SpotRow>,
}

fn at(ms: u64) -> UnixMs {
    UnixMs(EPOCH.0 + ms as i64)
}

fn rules_for(sc: &Scenario, policies: PolicyChoice) -> MarketRules {
    let mut rules = MarketRules {
        fee_bps: sc.fee_bps,
        latency: sc
            .latency
            .iter()
            .map(|(a, b, ms)| RegionLatency {
                a: a.clone(),
                b: b.clone(),
                ms: *ms,
            })
            .collect(),
        ..MarketRules::default()
    };
    if let Some(bps) = sc.max_reserved_share_bps {
        rules.max_reserved_share_bps = bps;
    }
    if policies == PolicyChoice::Off {
        rules.policies.provider_share_cap_bps = None;
        rules.policies.small_tenant_floor_bps = 0;
    }
    rules
}

/// Runs a scenario with `seed`; `progress` is called after each round with
/// the virtual seconds done.
pub fn run(sc: &Scenario, seed: u64, progress: &mut dyn FnMut(u64)) -> anyhow::Result<Outputs> {
    simulate(sc, seed, false, progress)
}

/// Runs a scenario once per seed in `seeds`, checking the invariants (see
/// `Sim::check`) at every metrics time and at the end, and a restart's
/// rebuilt state against the state before it; returns the seeds that
/// failed, with what broke (a panic counts).
pub fn check(sc: &Scenario, seeds: impl IntoIterator<Item = u64>) -> Vec<(u64, String)> {
    let mut failed = Vec::new();
    for seed in seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| simulate(sc, seed, true, &mut |_| {})));
        match outcome {
            Ok(Ok(out)) if out.summary.ledger_verified => {}
            Ok(Ok(_)) => failed.push((seed, "the ledger does not verify at the end".to_string())),
            Ok(Err(e)) => failed.push((seed, format!("{e:#}"))),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".to_string());
                failed.push((seed, format!("panicked: {what}")));
            }
        }
    }
    failed
}

fn simulate(sc: &Scenario, seed: u64, checks: bool, progress: &mut dyn FnMut(u64)) -> anyhow::Result<Outputs> {
    let store = agora_store::open_store(":memory:")?;
    let mut cfg = ServerConfig::new(
        "127.0.0.1:0".parse().expect("an address"),
        std::path::PathBuf::from("simulated"),
    );
    let round_ms = sc.round.0 * 1000;
    cfg.round_interval_ms = round_ms;
    cfg.heartbeat_interval_ms = round_ms;
    // Hollow agents answer every round; three silent rounds make one lost.
    cfg.agent_timeout_ms = 3 * round_ms;
    cfg.stop_grace_ms = 0;
    cfg.settle_interval_ms = 3_600_000;
    cfg.snapshot_every_events = sc.snapshot_every_events;
    cfg.rules = rules_for(sc, sc.policies);
    let off = Offline::open(store, cfg, EPOCH)?;
    let mut sim = Sim {
        sc,
        seed,
        rng: SplitMix64::new(seed),
        off,
        providers: Vec::new(),
        agents: BTreeMap::new(),
        tenants: Vec::new(),
        arrivals: BinaryHeap::new(),
        work: BTreeMap::new(),
        ends: BTreeSet::new(),
        cursor: 0,
        dirty: BTreeSet::new(),
        faults: SplitMix64::new(seed ^ 0x6661_756c_7473),
        failures: BTreeSet::new(),
        agent_failures: 0,
        node_failures_due: BTreeSet::new(),
        node_repairs_due: BTreeSet::new(),
        node_failures: 0,
        contracts_made: vec![false; sc.contracts.len()],
        refused: 0,
        rounds: 0,
        timeseries: Vec::new(),
        spot: Vec::new(),
    };
    sim.setup()?;
    let end_ms = sc.duration.0 * 1000;
    let metrics_ms = sc.metrics_every.0 * 1000;
    let mut next_event = 0;
    let mut now = 0;
    while now <= end_ms {
        // Jobs arrive between rounds, so they are submitted first, when they arrived.
        sim.arrive(now)?;
        // Work that finished since the last round is reported before this
        // round's events (an outage now does not undo work done before it).
        sim.finish(now);
        sim.heartbeats(now)?;
        while let Some(e) = sc.events.get(next_event).filter(|e| e.at.0 * 1000 <= now) {
            sim.timed_event(e, now)?;
            next_event += 1;
        }
        sim.memberships(now)?;
        sim.reserve(now)?;
        sim.fail(now);
        sim.fail_nodes(now)?;
        sim.heartbeats(now)?;
        sim.off.tick(at(now))?;
        sim.rounds += 1;
        sim.react(now)?;
        // The log need not outgrow a snapshot's worth of events: recovery reads
        // the latest snapshot and what follows it.
        sim.off.compact_log(sim.cursor)?;
        sim.keep_alive(now)?;
        if now % metrics_ms == 0 {
            sim.metrics(now);
            if checks {
                sim.check(now)?;
            }
        }
        progress(now / 1000);
        now += round_ms;
    }
    if checks {
        sim.check(end_ms)?;
    }
    sim.outputs(end_ms)
}

impl Sim<'_> {
    /// Tenants exist from the start; providers are laid out (they join later).
    fn setup(&mut self) -> anyhow::Result<()> {
        let rules = self.off.cfg.rules.clone();
        self.off.step(EPOCH, |t| t.emit(Event::RulesSet { rules, at: t.now }))?;
        for (g, group) in self.sc.providers.iter().enumerate() {
            let (lo, hi) = group.price.bounds();
            for i in 0..group.count {
                let ask = Micros(i128::from(self.rng.range(lo.0 as u64, hi.0 as u64)));
                self.providers.push(SimProvider {
                    group: g,
                    name: format!("{}-{i}", group.name),
                    region: group.regions[i as usize % group.regions.len()].clone(),
                    id: None,
                    ask,
                    agents: Vec::new(),
                    gpus: u64::from(group.nodes) * u64::from(group.gpus_per_node),
                    joined_ms: None,
                    left_ms: None,
                });
            }
        }
        for (g, group) in self.sc.tenants.iter().enumerate() {
            for i in 0..group.count {
                let name = format!("{}-{i}", group.name);
                let budget = group.budget.0;
                let (id, _) = self
                    .off
                    .step(EPOCH, |t| ops::create_tenant(t, &name, budget))?
                    .map_err(|e| anyhow::anyhow!("creating tenant {name}: {e}"))?;
                let index = self.tenants.len();
                self.tenants.push(SimTenant { group: g, id });
                let first = self.rng.exponential(group.arrival_every.0 * 1000);
                self.arrivals.push(Reverse((first, index)));
            }
        }
        Ok(())
    }

    /// The inventory one provider's agents report, at its current ask.
    fn inventories(&self, p: &SimProvider) -> Vec<RegisterAgent> {
        let group = &self.sc.providers[p.group];
        let model = GpuModel::resolve(&group.gpu_model).expect("validated");
        let site = format!("{}-site", p.name);
        let nodes: Vec<NodeReport> = (0..group.nodes)
            .map(|n| NodeReport {
                name: format!("n{n}"),
                gpu_model: model,
                gpus: group.gpus_per_node,
                address: format!("{}-n{n}", p.name),
                ask_micros_per_gpu_hour: p.ask,
                site: Some(site.clone()),
                fabric_domain: Some(format!("{}-d{}", p.name, n / group.nodes_per_domain)),
            })
            .collect();
        nodes
            .chunks(NODES_PER_AGENT)
            .enumerate()
            .map(|(i, chunk)| RegisterAgent {
                name: format!("{}-a{i}", p.name),
                inventory_source: InventorySource::Declared,
                sites: vec![SiteReport {
                    name: site.clone(),
                    region: p.region.clone(),
                    power_budget_kw: None,
                    node_overhead_w: 0,
                    kind: Default::default(),
                    windows: vec![],
                }],
                nodes: chunk.to_vec(),
            })
            .collect()
    }

    /// Providers join and leave as their groups say.
    fn memberships(&mut self, now: u64) -> anyhow::Result<()> {
        for i in 0..self.providers.len() {
            let group = &self.sc.providers[self.providers[i].group];
            let (joins, leaves) = (group.joins_at.0 * 1000, group.leaves_at.map(|l| l.0 * 1000));
            let p = &self.providers[i];
            if p.joined_ms.is_none() && joins <= now {
                self.join(i, now)?;
            } else if p.joined_ms.is_some() && p.left_ms.is_none() && leaves.is_some_and(|l| l <= now) {
                self.leave(i, now)?;
            }
        }
        Ok(())
    }

    fn join(&mut self, i: usize, now: u64) -> anyhow::Result<()> {
        let name = self.providers[i].name.clone();
        let (id, _) = self
            .off
            .step(at(now), |t| ops::create_provider(t, &name))?
            .map_err(|e| anyhow::anyhow!("creating provider {name}: {e}"))?;
        self.providers[i].id = Some(id);
        self.providers[i].joined_ms = Some(now);
        for reg in self.inventories(&self.providers[i]) {
            let agent = self.register(id, reg.clone(), now)?;
            self.providers[i].agents.push(agent);
            let region = self.providers[i].region.clone();
            self.agents.insert(
                agent,
                HollowAgent {
                    provider: id,
                    index: i,
                    region,
                    reg,
                    running: BTreeSet::new(),
                    pending: Vec::new(),
                    alive: true,
                    back_at: None,
                    partitioned: false,
                    down: BTreeSet::new(),
                },
            );
            self.schedule_failure(agent, now);
            for node in 0..self.agents[&agent].reg.nodes.len() as u32 {
                self.schedule_node_failure(agent, node, now);
            }
        }
        Ok(())
    }

    /// The exchange's admin records the contracts due by `now`.
    fn reserve(&mut self, now: u64) -> anyhow::Result<()> {
        for (i, c) in self.sc.contracts.iter().enumerate() {
            if self.contracts_made[i] || c.at.0 * 1000 > now {
                continue;
            }
            self.contracts_made[i] = true;
            let tenant_group = self.sc.tenants.iter().position(|t| t.name == c.tenant_group);
            let tenant = self
                .tenants
                .iter()
                .find(|t| Some(t.group) == tenant_group)
                .map(|t| t.id)
                .expect("validated: the group has a tenant");
            let provider_group = self.sc.providers.iter().position(|p| p.name == c.provider_group);
            let provider = self
                .providers
                .iter()
                .find(|p| Some(p.group) == provider_group)
                .and_then(|p| p.id)
                .expect("validated: the group has joined");
            let model = self.sc.providers[provider_group.expect("validated")].gpu_model.clone();
            let req = agora_proto::api::CreateContract {
                tenant: Some(tenant),
                provider,
                model,
                gpus: c.gpus,
                start_ms: None,
                duration_s: c.lasts.0,
                price_per_gpu_hour: Some(c.price.0.to_string()),
            };
            self.off
                .step(at(now), |t| {
                    agora_server::contracts::create(t, agora_server::auth::Principal::Admin, req)
                })?
                .map_err(|e| anyhow::anyhow!("contracts[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// The agent's next host failure, if its group has an MTBF.
    fn schedule_failure(&mut self, agent: AgentId, after: u64) {
        let group = self.providers[self.agents[&agent].index].group;
        if let Some(mtbf) = self.sc.providers[group].agent_mtbf {
            let when = after + self.faults.exponential(mtbf.0 * 1000).max(1);
            self.failures.insert((when, agent));
        }
    }

    /// The node's next failure, if its group has a node MTBF.
    fn schedule_node_failure(&mut self, agent: AgentId, node: u32, after: u64) {
        let group = self.providers[self.agents[&agent].index].group;
        if let Some(mtbf) = self.sc.providers[group].node_mtbf {
            let when = after + self.faults.exponential(mtbf.0 * 1000).max(1);
            self.node_failures_due.insert((when, agent, node));
        }
    }

    /// Nodes that fail now inside running agents: their processes die (the
    /// agent no longer reports them, so the exchange finds them vanished)
    /// and the agent registers again without the node; repaired nodes are
    /// reported again. A node whose agent is down or cut off fails later.
    fn fail_nodes(&mut self, now: u64) -> anyhow::Result<()> {
        let mut changed = BTreeSet::new();
        while let Some(&(when, agent, node)) = self.node_repairs_due.first() {
            if when > now {
                break;
            }
            self.node_repairs_due.pop_first();
            self.agents
                .get_mut(&agent)
                .expect("a scheduled agent")
                .down
                .remove(&node);
            changed.insert(agent);
            self.schedule_node_failure(agent, node, when);
        }
        while let Some(&(when, agent, node)) = self.node_failures_due.first() {
            if when > now {
                break;
            }
            self.node_failures_due.pop_first();
            if self.providers[self.agents[&agent].index].left_ms.is_some() {
                continue;
            }
            let a = &self.agents[&agent];
            if !a.alive || a.partitioned {
                let later = a.back_at.unwrap_or(now).max(now) + 1;
                self.schedule_node_failure(agent, node, later);
                continue;
            }
            let ex = &self.off.ex;
            let id = ex.node_named(agent, &a.reg.nodes[node as usize].name);
            let dead: Vec<PartRef> = a
                .running
                .iter()
                .filter(|part| {
                    ex.leases
                        .get(&part.lease)
                        .and_then(|l| l.parts.get(part.rank as usize))
                        .is_some_and(|p| Some(p.node) == id)
                })
                .copied()
                .collect();
            let a = self.agents.get_mut(&agent).expect("a scheduled agent");
            for part in &dead {
                a.running.remove(part);
            }
            a.down.insert(node);
            self.node_failures += 1;
            let group = self.providers[a.index].group;
            self.node_repairs_due
                .insert((now + self.sc.providers[group].node_repair.0 * 1000, agent, node));
            changed.insert(agent);
        }
        for agent in changed {
            let a = &self.agents[&agent];
            if a.alive && !a.partitioned {
                let (provider, reg) = (a.provider, a.inventory());
                self.register(provider, reg, now)?;
                self.dirty.insert(agent);
            }
        }
        Ok(())
    }

    /// Hosts that fail now: their processes die and their agents fall silent
    /// until repaired (the exchange loses them after its timeout).
    fn fail(&mut self, now: u64) {
        while let Some(&(when, agent)) = self.failures.first() {
            if when > now {
                break;
            }
            self.failures.pop_first();
            let provider = &self.providers[self.agents[&agent].index];
            if provider.left_ms.is_some() {
                continue;
            }
            let group = provider.group;
            let repair_ms = self.sc.providers[group].agent_repair.0 * 1000;
            let a = self.agents.get_mut(&agent).expect("a scheduled agent");
            // A host already down or cut off fails later, if at all.
            let back = if a.alive || a.partitioned {
                self.agent_failures += 1;
                a.alive = false;
                a.partitioned = false;
                let back = a.back_at.unwrap_or(0).max(now + repair_ms);
                a.back_at = Some(back);
                back
            } else {
                a.back_at.unwrap_or(now)
            };
            self.schedule_failure(agent, back);
        }
    }

    fn register(&mut self, provider: ProviderId, reg: RegisterAgent, now: u64) -> anyhow::Result<AgentId> {
        let r = self
            .off
            .step(at(now), |t| ops::register_agent(t, provider, reg))?
            .map_err(|e| anyhow::anyhow!("registering an agent of provider {provider}: {e}"))?;
        Ok(r.agent_id)
    }

    /// A provider leaves gracefully: its agents stop their parts (the work is requeued) and say so.
    fn leave(&mut self, i: usize, now: u64) -> anyhow::Result<()> {
        self.providers[i].left_ms = Some(now);
        for agent in self.providers[i].agents.clone() {
            let a = self.agents.get_mut(&agent).expect("a provider's agent");
            let stopped: Vec<PartRef> = std::mem::take(&mut a.running).into_iter().collect();
            for part in &stopped {
                a.pending.push((
                    PartEvent::Exited {
                        part: *part,
                        exit_code: None,
                        signal: Some(15),
                    },
                    now,
                ));
            }
            a.alive = false;
            let provider = a.provider;
            let hb = heartbeat(agent, a, now, stopped, true);
            self.off
                .step(at(now), |t| ops::heartbeat(t, provider, hb))?
                .map_err(|e| anyhow::anyhow!("heartbeat of agent {agent}: {e}"))?;
        }
        Ok(())
    }

    fn timed_event(&mut self, e: &crate::scenario::TimedEvent, now: u64) -> anyhow::Result<()> {
        if e.server_restart {
            self.restart(now)?;
        }
        if let Some(p) = e.policies {
            let rules = rules_for(self.sc, p);
            self.off.cfg.rules = rules.clone();
            self.off
                .step(at(now), |t| t.emit(Event::RulesSet { rules, at: t.now }))?;
        }
        if let Some(o) = &e.region_outage {
            // The region's agents fall silent and their processes die: the
            // exchange loses them after its timeout.
            let until = now + o.lasts.0 * 1000;
            for a in self.agents.values_mut().filter(|a| a.region == o.region) {
                if a.alive || a.partitioned {
                    a.alive = false;
                    a.partitioned = false;
                    a.back_at = Some(a.back_at.unwrap_or(0).max(until));
                } else if let Some(back) = a.back_at.as_mut() {
                    *back = (*back).max(until);
                }
            }
        }
        if let Some(p) = &e.partition {
            // The group's live agents lose the exchange; their work goes on.
            let until = now + p.lasts.0 * 1000;
            let group = self
                .sc
                .providers
                .iter()
                .position(|g| g.name == p.group)
                .expect("validated");
            let agents: Vec<AgentId> = self
                .providers
                .iter()
                .filter(|p| p.group == group && p.left_ms.is_none())
                .flat_map(|p| p.agents.iter().copied())
                .collect();
            for id in agents {
                let a = self.agents.get_mut(&id).expect("a provider's agent");
                if a.alive {
                    a.alive = false;
                    a.partitioned = true;
                    a.back_at = Some(until);
                } else if a.partitioned {
                    // Partitions that overlap end with the last.
                    a.back_at = Some(a.back_at.unwrap_or(0).max(until));
                }
            }
        }
        if let Some(c) = &e.price_change {
            let group = self
                .sc
                .providers
                .iter()
                .position(|g| g.name == c.group)
                .expect("validated");
            for i in 0..self.providers.len() {
                let p = &mut self.providers[i];
                if p.group != group {
                    continue;
                }
                p.ask = Micros(((p.ask.0 as f64) * c.factor).round().max(1.0) as i128);
                let Some(id) = p.id.filter(|_| p.left_ms.is_none()) else {
                    continue;
                };
                // Agents down or cut off get the new asks when they register again.
                let regs = self.inventories(&self.providers[i]);
                for (agent, reg) in self.providers[i].agents.clone().into_iter().zip(regs) {
                    let a = self.agents.get_mut(&agent).expect("a provider's agent");
                    a.reg = reg;
                    if a.alive {
                        let reg = a.inventory();
                        self.register(id, reg, now)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The server crashes and restarts: its memory is rebuilt from the event
    /// log alone, and must equal what it was: the same snapshot bytes, and a
    /// market with the same nodes, leases, queue, policies and reservations
    /// that clears the same way.
    fn restart(&mut self, now: u64) -> anyhow::Result<()> {
        let plan = |off: &Offline| {
            let m = &off.ex.market;
            let mut f = serde_json::to_string(&m.clear()).expect("a plan serializes");
            // What the market holds, through its public views.
            let _ = write!(f, "{:?}{:?}", m.policies(), m.reservations());
            for o in m.pending_orders() {
                let _ = write!(f, "{o:?}{}", m.share_rank(o.tenant));
            }
            for l in m.leases() {
                let _ = write!(f, "{l:?}");
            }
            for n in m.nodes() {
                let _ = write!(f, "{:?}{}{:?}", n.spec(), n.online(), n.gpu_owners());
            }
            f
        };
        let (before, plan_before) = (self.off.ex.snapshot(), plan(&self.off));
        let placeholder = Offline::open(agora_store::open_store(":memory:")?, self.off.cfg.clone(), at(now))?;
        let off = std::mem::replace(&mut self.off, placeholder);
        self.off = off.restart(at(now))?;
        anyhow::ensure!(
            self.off.ex.snapshot() == before,
            "invariant: the state rebuilt from the event log at {} s differs from the state before the restart",
            now / 1000
        );
        anyhow::ensure!(
            plan(&self.off) == plan_before,
            "invariant: the market rebuilt from the event log at {} s differs (nodes, leases, queue, policies, reservations or its clearing plan)",
            now / 1000
        );
        Ok(())
    }

    /// Checks what must always hold, or says which invariant broke: the
    /// ledger balances and its chain verifies; every GPU a live lease holds
    /// is held by it in the market and by nothing else; every job not ended
    /// is pending in the market or running on a live lease.
    fn check(&self, now: u64) -> anyhow::Result<()> {
        let ex = &self.off.ex;
        let t = now / 1000;
        ex.ledger
            .verify()
            .map_err(|e| anyhow::anyhow!("invariant at {t} s: the ledger does not verify: {e}"))?;
        let mut held = 0u64;
        for id in &ex.live_leases {
            let l = &ex.leases[id];
            for p in &l.parts {
                let node = ex
                    .market
                    .node(p.node)
                    .ok_or_else(|| anyhow::anyhow!("invariant at {t} s: lease {id} is on unknown node {}", p.node))?;
                for g in &p.gpu_indices {
                    anyhow::ensure!(
                        node.gpu_owners().get(*g as usize) == Some(&Some(*id)),
                        "invariant at {t} s: GPU {g} of node {} is not held by its lease {id}",
                        p.node
                    );
                    held += 1;
                }
            }
        }
        let owned: u64 = ex
            .nodes
            .keys()
            .filter_map(|n| ex.market.node(*n))
            .map(|n| n.gpu_owners().iter().flatten().count() as u64)
            .sum();
        anyhow::ensure!(
            owned == held,
            "invariant at {t} s: the market holds {owned} GPUs for leases, the live leases {held}"
        );
        for (id, j) in &ex.jobs {
            if j.state.is_terminal() {
                continue;
            }
            for o in &j.orders {
                let order = &ex.orders[o];
                let alive = match order.state {
                    agora_engine::lifecycle::OrderState::Pending => ex.market.order(*o).is_some(),
                    // Any lease of the last attempt (a gang's parts end one by one).
                    agora_engine::lifecycle::OrderState::Leased => order
                        .leases
                        .last()
                        .is_some_and(|l| ex.leases[l].gang_leases().any(|g| ex.live_leases.contains(&g))),
                    _ => true,
                };
                anyhow::ensure!(
                    alive,
                    "invariant at {t} s: job {id}'s order {o} is neither queued nor running"
                );
            }
        }
        // A job succeeds after running exactly its length, over all its attempts.
        for (id, w) in &self.work {
            let j = &ex.jobs[id];
            if j.state != JobState::Succeeded {
                continue;
            }
            // Per attempt (a lease, or a gang's leases, which run together):
            // from its start until its first lease ended.
            let leases = &ex.orders[&j.orders[0]].leases;
            let attempts: Vec<&agora_server::state::Lease> = leases
                .iter()
                .map(|l| &ex.leases[l])
                .filter(|l| l.gang.is_none_or(|g| g.index == 0))
                .collect();
            let ran: i64 = attempts
                .iter()
                .filter_map(|l| {
                    let ended = l.gang_leases().filter_map(|g| ex.leases.get(&g)?.ended_at).min()?;
                    Some(ended.0 - l.running_at?.0)
                })
                .sum();
            let slack = attempts.len() as i64;
            anyhow::ensure!(
                (ran - w.total_ms as i64).abs() <= slack,
                "invariant at {t} s: job {id} succeeded after running {ran} ms of its {} ms",
                w.total_ms
            );
        }
        Ok(())
    }

    /// Tenants submit the jobs that arrived by `now`.
    fn arrive(&mut self, now: u64) -> anyhow::Result<()> {
        while let Some(&Reverse((when, index))) = self.arrivals.peek() {
            if when > now {
                break;
            }
            self.arrivals.pop();
            let group = &self.sc.tenants[self.tenants[index].group];
            let gpus = *self.rng.pick(&group.gpus);
            let duration_s = self.rng.log_uniform(group.duration.min.0, group.duration.max.0);
            let next = when + self.rng.exponential(group.arrival_every.0 * 1000);
            self.arrivals.push(Reverse((next, index)));
            let (nodes, per_node) = if gpus <= group.gpus_per_node {
                (1, gpus)
            } else {
                (gpus.div_ceil(group.gpus_per_node), group.gpus_per_node)
            };
            let manifest = Manifest {
                name: format!("{}-job", group.name),
                kind: JobKind::Training,
                resources: Resources {
                    gpus_per_node: per_node,
                    nodes,
                    tasks: 1,
                    gpu_models: group
                        .gpu_models
                        .iter()
                        .map(|m| GpuModel::resolve(m).expect("validated"))
                        .collect(),
                    min_vram_mib: 0,
                    cross_provider_max_latency_ms: group.cross_provider_max_latency_ms.filter(|_| nodes > 1),
                },
                tier: group.tier,
                max_price_per_gpu_hour: PricePerGpuHour(group.max_price.0),
                duration_estimate_s: None,
                command: "train".into(),
                args: vec![],
                env: BTreeMap::new(),
                workdir: None,
                checkpointable: true,
            };
            let tenant = self.tenants[index].id;
            match self.off.step(at(when), |t| ops::submit(t, tenant, manifest))? {
                Ok(job) => {
                    self.work.insert(
                        job,
                        Work {
                            tenant: index,
                            gpus: nodes * per_node,
                            total_ms: duration_s * 1000,
                            remaining_ms: duration_s * 1000,
                            running: None,
                        },
                    );
                }
                Err(_) => self.refused += 1,
            }
        }
        Ok(())
    }

    /// Parts whose work is done by `now` exit 0, dated when they finished.
    fn finish(&mut self, now: u64) {
        while let Some(&(end, attempt)) = self.ends.first() {
            if end > now {
                break;
            }
            self.ends.pop_first();
            let ex = &self.off.ex;
            let gang: Vec<LeaseId> = match ex.leases.get(&attempt) {
                Some(l) => l.gang_leases().collect(),
                None => continue,
            };
            // An attempt a lease of which was stopped or lost before its work
            // was done has ended already (the rest are being stopped); one
            // with a part on a down agent lost its work since the last
            // heartbeat, and the exchange will requeue it.
            if !gang.iter().all(|l| ex.leases.contains_key(l)) {
                continue;
            }
            let parts = || gang.iter().flat_map(|l| &ex.leases[l].parts);
            let parts_up = parts().all(|p| self.agents.get(&p.agent).is_some_and(|a| a.alive || a.partitioned));
            let cut_off = parts().any(|p| self.agents.get(&p.agent).is_some_and(|a| a.partitioned));
            // A stop the exchange sent reaches a connected agent this round; one
            // behind a partition does not, and its processes finish first.
            let live = gang.iter().all(|l| {
                let l = &ex.leases[l];
                !l.is_terminal() && (cut_off || l.state != agora_engine::lifecycle::LeaseState::Stopping)
            });
            if !live || !parts_up {
                continue;
            }
            let job = ex.leases[&attempt].job;
            let Some(w) = self
                .work
                .get_mut(&job)
                .filter(|w| w.running.is_some_and(|(r, _)| r == attempt))
            else {
                continue;
            };
            // Behind a partition the processes finish all the same; the
            // exchange hears of it on their return, or has requeued the work
            // meanwhile (then the next attempt is counted from what it saw).
            if !cut_off {
                w.remaining_ms = 0;
                w.running = None;
            }
            for lease in gang {
                for p in &ex.leases[&lease].parts {
                    let part = PartRef { lease, rank: p.rank };
                    let a = self.agents.get_mut(&p.agent).expect("checked above");
                    if a.running.remove(&part) {
                        a.pending.push((
                            PartEvent::Exited {
                                part,
                                exit_code: Some(0),
                                signal: None,
                            },
                            end,
                        ));
                        self.dirty.insert(p.agent);
                    }
                }
            }
        }
    }

    /// Dirty agents report their events; they start and stop what they are told at once.
    fn heartbeats(&mut self, now: u64) -> anyhow::Result<()> {
        while !self.dirty.is_empty() {
            for agent in std::mem::take(&mut self.dirty) {
                let Some(a) = self.agents.get_mut(&agent).filter(|a| a.alive) else {
                    continue;
                };
                let provider = a.provider;
                let hb = heartbeat(agent, a, now, Vec::new(), false);
                let resp = self
                    .off
                    .step(at(now), |t| ops::heartbeat(t, provider, hb))?
                    .map_err(|e| anyhow::anyhow!("heartbeat of agent {agent}: {e}"))?;
                self.obey(agent, resp, now);
            }
        }
        Ok(())
    }

    fn obey(&mut self, agent: AgentId, resp: HeartbeatResponse, now: u64) {
        let a = self.agents.get_mut(&agent).expect("a known agent");
        for s in resp.start {
            if a.running.insert(s.part) {
                a.pending.push((PartEvent::Started { part: s.part }, now));
                self.dirty.insert(agent);
                // An attempt is a lease, or the leases of a gang spanning
                // providers, named by its first: its natural end is set once,
                // from its job's work left.
                let ex = &self.off.ex;
                let attempt = ex.leases[&s.part.lease]
                    .gang_leases()
                    .next()
                    .expect("a lease's gang has it");
                if let Some(w) = self.work.get_mut(&s.job)
                    && w.running.is_none_or(|(l, _)| l != attempt)
                {
                    if let Some((prev, started)) = w.running {
                        // The previous attempt made progress until its first lease ended (stopped or lost).
                        let ended = ex.leases[&prev]
                            .gang_leases()
                            .filter_map(|l| ex.leases.get(&l).and_then(|l| l.ended_at))
                            .min()
                            .map_or(now, |e| (e.0 - EPOCH.0) as u64);
                        w.remaining_ms = w.remaining_ms.saturating_sub(ended.saturating_sub(started));
                        self.ends.retain(|(_, l)| *l != prev);
                    }
                    w.running = Some((attempt, now));
                    self.ends.insert((now + w.remaining_ms.max(1), attempt));
                }
            }
        }
        for stop in resp.stop {
            if a.running.remove(&stop.part) {
                a.pending.push((
                    PartEvent::Exited {
                        part: stop.part,
                        exit_code: None,
                        signal: Some(15),
                    },
                    now,
                ));
                self.dirty.insert(agent);
            }
        }
    }

    /// Reads what happened from the log: agents with new or stopped parts
    /// must hear of it. A stop or a part's end can stop the other parts of
    /// its lease and the other leases of its gang inside the exchange, with
    /// no event of their own: their agents hear of it too. Repeats until the
    /// answers cause nothing more.
    fn react(&mut self, now: u64) -> anyhow::Result<()> {
        loop {
            let batch = self.off.store.read_events(self.cursor, 10_000)?;
            let Some(&(last, _)) = batch.last() else {
                return Ok(());
            };
            self.cursor = last;
            for (_, bytes) in batch {
                let event: Event = serde_json::from_slice(&bytes)?;
                match event {
                    Event::LeaseStarted { placement, .. } => {
                        for a in &placement.allocations {
                            self.dirty.insert(self.off.ex.nodes[&a.node].agent);
                        }
                    }
                    Event::StopRequested { lease, .. }
                    | Event::PartExited { lease, .. }
                    | Event::PartStartFailed { lease, .. }
                    | Event::PartVanished { lease, .. }
                    | Event::PartNotStarted { lease, .. } => self.mark_gang(lease),
                    Event::AgentLost { agent, .. } => {
                        let leases: BTreeSet<LeaseId> = self
                            .agents
                            .get(&agent)
                            .map(|a| a.running.iter().map(|p| p.lease).collect())
                            .unwrap_or_default();
                        for lease in leases {
                            self.mark_gang(lease);
                        }
                    }
                    _ => {}
                }
            }
            self.heartbeats(now)?;
        }
    }

    /// Marks dirty the agents of every part of a lease's gang.
    fn mark_gang(&mut self, lease: LeaseId) {
        let ex = &self.off.ex;
        let Some(l) = ex.leases.get(&lease) else { return };
        for id in l.gang_leases() {
            for p in ex.leases.get(&id).into_iter().flat_map(|l| &l.parts) {
                self.dirty.insert(p.agent);
            }
        }
    }

    /// Agents heartbeat every round. A down agent comes back by registering
    /// again (its processes died); a cut-off one by heartbeating what it runs
    /// and what happened meanwhile.
    fn keep_alive(&mut self, now: u64) -> anyhow::Result<()> {
        let back: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| !a.alive && a.back_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in back {
            if self.providers[self.agents[&id].index].left_ms.is_some() {
                continue;
            }
            let a = self.agents.get_mut(&id).expect("listed");
            a.alive = true;
            a.back_at = None;
            // A cut-off agent's processes ran on; a failed host's died.
            if !std::mem::take(&mut a.partitioned) {
                a.running.clear();
                a.pending.clear();
            }
            let (provider, reg) = (a.provider, a.inventory());
            // Registering again brings the nodes back online (at asks changed
            // meanwhile); the next heartbeat tells the exchange which of its
            // parts ran on, ended or vanished.
            self.register(provider, reg, now)?;
            self.dirty.insert(id);
        }
        let seen = at(now);
        for (id, a) in &self.agents {
            if a.alive {
                self.off.vol.agent_last_seen.insert(*id, seen);
            }
        }
        Ok(())
    }

    fn metrics(&mut self, now: u64) {
        let ex = &self.off.ex;
        let gpus_online: u64 = ex.nodes.values().filter(|n| n.online).map(|n| u64::from(n.gpus)).sum();
        let gpus_allocated: u64 = ex.live_leases.iter().map(|l| u64::from(ex.leases[l].gpus)).sum();
        let (hc, ha) = self
            .off
            .vol
            .health
            .as_ref()
            .map_or((Default::default(), Default::default()), |h| {
                (h.capacity_by_provider, h.allocated_by_provider)
            });
        self.timeseries.push(MetricsRow {
            t_s: now / 1000,
            gpus_online,
            gpus_allocated,
            pending_orders: ex.market.pending_orders().count() as u64,
            running_leases: ex.live_leases.len() as u64,
            hhi_capacity: hc.hhi,
            hhi_allocated: ha.hhi,
            cr4_capacity_bps: hc.cr4_bps,
            cr4_allocated_bps: ha.cr4_bps,
        });
        for ((model, region), q) in &self.off.vol.spot.quotes {
            self.spot.push(SpotRow {
                t_s: now / 1000,
                model: model.name().to_string(),
                region: region.clone(),
                price: q.price.0,
                scarce: q.scarce,
            });
        }
    }

    fn outputs(self, end_ms: u64) -> anyhow::Result<Outputs> {
        let ex = &self.off.ex;
        let secs = |t: UnixMs| ((t.0 - EPOCH.0).max(0) / 1000) as u64;
        let mut jobs = Vec::new();
        let mut counts = JobCounts {
            submitted: self.work.len() as u64 + self.refused,
            refused: self.refused,
            succeeded: 0,
            failed: 0,
            unfinished: 0,
        };
        // Per tenant class: waits (censored at the end), JCTs, spend.
        let mut by_class: BTreeMap<&str, ClassTally> = BTreeMap::new();
        for (id, w) in &self.work {
            let j = &ex.jobs[id];
            let order = &ex.orders[&j.orders[0]];
            let started = order
                .leases
                .iter()
                .filter_map(|l| ex.leases[l].running_at)
                .min()
                .map(secs);
            let cost = order
                .leases
                .iter()
                .map(|l| ex.lease_charged(*l))
                .fold(Micros::ZERO, |a, b| Micros(a.0 + b.0));
            match j.state {
                JobState::Succeeded => counts.succeeded += 1,
                JobState::Failed | JobState::Cancelled => counts.failed += 1,
                _ => counts.unfinished += 1,
            }
            let group = &self.sc.tenants[self.tenants[w.tenant].group];
            let class = group_class(group);
            let submitted = secs(j.submitted_at);
            let e = by_class.entry(class).or_default();
            e.tenants.insert(w.tenant);
            e.waits.push(started.unwrap_or(end_ms / 1000).saturating_sub(submitted));
            if j.state == JobState::Succeeded
                && let Some(end) = j.ended_at
            {
                e.jcts.push(secs(end) - submitted);
            }
            e.spend = Micros(e.spend.0 + cost.0);
            jobs.push(JobRow {
                job: id.0,
                tenant_group: group.name.clone(),
                tenant_class: class.to_string(),
                gpus: w.gpus,
                submitted_s: submitted,
                started_s: started,
                ended_s: j.ended_at.map(secs),
                state: j.state.as_str().to_string(),
                cost,
            });
        }
        // Reservation contracts are paid whether used or not: their charges
        // are their tenants' spend too.
        let mut contract_charges = Micros::ZERO;
        for c in ex.contracts.values() {
            let charged = c.charged_until.map_or(Micros::ZERO, |u| c.due_until(u));
            contract_charges = Micros(contract_charges.0 + charged.0);
            let Some(t) = self.tenants.iter().find(|t| t.id == c.tenant) else {
                continue;
            };
            let class = group_class(&self.sc.tenants[t.group]);
            if let Some(e) = by_class.get_mut(class) {
                e.spend = Micros(e.spend.0 + charged.0);
            }
        }
        let tenant_classes = CLASSES
            .iter()
            .filter_map(|(name, _, _)| {
                let ClassTally {
                    tenants,
                    mut waits,
                    jcts,
                    spend,
                } = by_class.remove(name)?;
                let succeeded = jcts.len() as u64;
                waits.sort_unstable();
                let pct = |q: f64| waits[((waits.len() as f64 * q) as usize).min(waits.len() - 1)];
                Some(TenantClass {
                    class: name.to_string(),
                    tenants: tenants.len() as u64,
                    jobs: waits.len() as u64,
                    succeeded,
                    avg_wait_s: waits.iter().sum::<u64>() as f64 / waits.len() as f64,
                    p50_wait_s: pct(0.5),
                    p95_wait_s: pct(0.95),
                    avg_jct_s: if jcts.is_empty() {
                        0.0
                    } else {
                        jcts.iter().sum::<u64>() as f64 / jcts.len() as f64
                    },
                    spend,
                })
            })
            .collect();

        // Delivered GPU-hours per provider, from the leases' running spans up to
        // the end; and those of spot leases on idle reserved GPUs (resold).
        let end = at(end_ms);
        let mut delivered: BTreeMap<ProviderId, f64> = BTreeMap::new();
        let mut resold_gpu_hours = 0.0;
        for l in ex.leases.values() {
            let Some(start) = l.running_at else { continue };
            let stop = l.ended_at.unwrap_or(end).min(end);
            let span_h = (stop.0 - start.0).max(0) as f64 / 3_600_000.0;
            *delivered.entry(l.provider).or_default() += span_h * f64::from(l.gpus);
            if l.tier == Tier::Spot {
                resold_gpu_hours += span_h * f64::from(l.reserved.iter().map(|r| r.gpus).sum::<u32>());
            }
        }
        let mut provider_classes = Vec::new();
        for (name, _, _) in CLASSES {
            let members: Vec<&SimProvider> = self
                .providers
                .iter()
                .filter(|p| p.id.is_some() && class_of(p.gpus) == name)
                .collect();
            if members.is_empty() {
                continue;
            }
            let online_hours: f64 = members
                .iter()
                .map(|p| {
                    let from = p.joined_ms.unwrap_or(end_ms);
                    let to = p.left_ms.unwrap_or(end_ms);
                    to.saturating_sub(from) as f64 / 3_600_000.0 * p.gpus as f64
                })
                .sum();
            let hours: f64 = members
                .iter()
                .map(|p| delivered.get(&p.id.expect("joined")).copied().unwrap_or(0.0))
                .sum();
            let revenue = members
                .iter()
                .map(|p| ex.ledger.balance(&Account::ProviderEarnings(p.id.expect("joined"))))
                .fold(Micros::ZERO, |a, b| Micros(a.0 + b.0));
            provider_classes.push(ProviderClass {
                class: name.to_string(),
                providers: members.len() as u64,
                gpus: members.iter().map(|p| p.gpus).sum(),
                gpu_hours_delivered: round3(hours),
                utilization: if online_hours > 0.0 {
                    round3(hours / online_hours)
                } else {
                    0.0
                },
                revenue,
            });
        }
        let capacity = agora_engine::health::Concentration::of(
            self.providers.iter().filter(|p| p.joined_ms.is_some()).map(|p| p.gpus),
        );
        let delivered_c =
            agora_engine::health::Concentration::of(delivered.values().map(|h| (h * 1000.0).round() as u64));
        let summary = Summary {
            scenario: self.sc.name.clone(),
            seed: self.seed,
            duration_s: end_ms / 1000,
            rounds: self.rounds,
            events_logged: ex.applied,
            jobs: counts,
            tenant_classes,
            provider_classes,
            concentration: Concentration {
                hhi_capacity: capacity.hhi,
                hhi_delivered_gpu_hours: delivered_c.hhi,
                cr4_delivered_bps: delivered_c.cr4_bps,
            },
            agent_failures: self.agent_failures,
            node_failures: self.node_failures,
            leases_lost: ex
                .leases
                .values()
                .filter(|l| l.state == agora_engine::lifecycle::LeaseState::Lost)
                .count() as u64,
            contract_charges,
            resold_gpu_hours: round3(resold_gpu_hours),
            ledger_verified: ex.ledger.verify().is_ok(),
            fees: ex.ledger.balance(&Account::ExchangeFees),
        };
        Ok(Outputs {
            summary,
            timeseries: self.timeseries,
            spot: self.spot,
            jobs,
        })
    }
}

/// One tenant class's jobs, while the summary is computed.
#[derive(Default)]
struct ClassTally {
    tenants: BTreeSet<usize>,
    /// Every job's wait, censored at the end for jobs that never started.
    waits: Vec<u64>,
    /// Succeeded jobs' completion times.
    jcts: Vec<u64>,
    spend: Micros,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A heartbeat carrying an agent's pending events, dated by their ages.
fn heartbeat(id: AgentId, a: &mut HollowAgent, now: u64, stopped_by_agent: Vec<PartRef>, leaving: bool) -> Heartbeat {
    let pending = std::mem::take(&mut a.pending);
    Heartbeat {
        agent_id: id,
        running: a.running.iter().copied().collect(),
        event_ages_ms: pending.iter().map(|(_, when)| now.saturating_sub(*when)).collect(),
        events: pending.into_iter().map(|(e, _)| e).collect(),
        more_events: false,
        stopped_by_agent,
        leaving,
        logs: vec![],
    }
}
