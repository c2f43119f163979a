//! `agora bench --fleet colossus --orders 50000 --seed 1`: the clearing engine
//! alone, on one core, on a generated fleet with job sizes drawn from the MS ITP
//! and Philly traces. Each round clears the pending orders and applies the
//! plan; between rounds a share of the running leases end and new orders refill
//! the queue, so later rounds measure the steady state, not only the first fill.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use agora_engine::market::{NodeSpec, RoundPlan};
use agora_sim::fleet;
use agora_sim::rng::SplitMix64;
use agora_sim::traces::{self, TraceJob};
use agora_sim::workload::{self, Mix};
use agora_types::{DomainId, LeaseId, NodeId, OrderId, Tier};
use anyhow::{Context, anyhow};
use clap::Args;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::Output;

#[derive(Args, Debug)]
pub(crate) struct EngineBench {
    /// The fleet: `colossus` (27,500 × 8 H100 in 32-node domains at one 300 MW site, plus 10,000 small providers) or `small` (1/100 of it).
    #[arg(long, default_value = "colossus")]
    fleet: String,
    /// Pending orders kept in the queue.
    #[arg(long, default_value_t = 50_000)]
    orders: usize,
    /// Seed of the fleet, the orders and the churn.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Clearing rounds to run.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Clear with the exchange's default market-health policies (provider
    /// share cap, small-tenant floor), as `agora serve` does; off by default so
    /// the figures compare with earlier runs.
    #[arg(long)]
    policies: bool,
    /// Share of running leases (per mille) that end between rounds.
    #[arg(long, default_value_t = 50)]
    churn_per_mille: u64,
    /// Folder with `ms-itp/*.csv` and `philly/philly.csv` (default: the repository's `data/traces`).
    #[arg(long)]
    traces: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[derive(Serialize)]
struct Report {
    fleet: String,
    /// Whether the exchange's default market-health policies were on.
    policies: bool,
    nodes: usize,
    gpus: u64,
    orders: usize,
    seed: u64,
    rounds: usize,
    /// Time to build the engine's indexes for the fleet and the first orders.
    setup_ms: f64,
    /// One round = clear the pending orders + apply the plan to the market.
    round_ms_p50: f64,
    round_ms_p99: f64,
    first_round_ms: f64,
    first_round_placements: u64,
    /// Every round's placements and time (clear + apply, ms), in order.
    per_round: Vec<(u64, f64)>,
    clear_ms_p50: f64,
    placements: u64,
    preemptions: u64,
    placements_per_s: f64,
    /// GPUs allocated after the first round, of all GPUs (demand exceeds supply).
    allocated_fraction: f64,
    /// Gangs of ≤ 256 GPUs on more than one node that one fabric domain of their pool
    /// could hold at their turn in the round: the share placed within one domain.
    single_domain_fraction: f64,
    multi_node_gangs_le_256: u64,
    /// GPUs still free after the first round, by model: where packing fell short.
    free_after_first_round: BTreeMap<String, u64>,
    engine_rss_mib: f64,
    decisions_hash: String,
}

fn default_traces() -> PathBuf {
    let here = PathBuf::from("data/traces");
    if here.is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/traces")
}

fn load_mix(dir: &Path) -> anyhow::Result<Mix> {
    let mut all: Vec<Vec<TraceJob>> = Vec::new();
    let itp = dir.join("ms-itp");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&itp)
        .with_context(|| format!("reading {} (pass --traces DIR)", itp.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    for f in files {
        all.push(traces::read_ms_itp(&f)?);
    }
    all.push(traces::read_philly(&dir.join("philly/philly.csv"))?);
    Ok(Mix::from_traces(all.iter().map(Vec::as_slice)))
}

/// Peak resident memory of this process, from the kernel.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// A gang's pool: one provider, model, ask and node size (hashed into one key).
fn pool_of(n: &NodeSpec) -> u64 {
    let mut h = Sha256::new();
    h.update(n.provider.0.to_le_bytes());
    h.update(n.model.name().as_bytes());
    h.update(n.ask.micros().to_le_bytes());
    h.update(n.gpus.to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

pub(crate) fn run(args: EngineBench) -> anyhow::Result<u8> {
    let fleet = fleet::named(&args.fleet, args.seed)
        .ok_or_else(|| anyhow!("--fleet: unknown fleet `{}` (colossus, small)", args.fleet))?;
    if args.orders == 0 || args.rounds == 0 {
        return Err(anyhow!("--orders and --rounds must be at least 1"));
    }
    let mix = load_mix(&args.traces.clone().unwrap_or_else(default_traces))?;
    let domain_of: BTreeMap<NodeId, DomainId> = fleet.nodes.iter().map(|n| (n.id, n.domain)).collect();
    let gpus_total = fleet.gpus();
    let mut rng = SplitMix64::new(args.seed);

    let setup = Instant::now();
    let mut market = fleet.market();
    if args.policies {
        market.set_policies(agora_server::events::MarketRules::default().policies);
    }
    let mut next_order = 1;
    // Each order's tier, as the exchange keeps its orders: starting a lease
    // takes the tier from the caller, not from a lookup in the market.
    let mut tiers: HashMap<OrderId, Tier> = HashMap::new();
    for o in workload::orders(&mut rng, &mix, args.orders, next_order) {
        tiers.insert(o.id, o.tier);
        market.add_order(o);
    }
    next_order += args.orders as u64;
    let setup_ms = setup.elapsed().as_secs_f64() * 1000.0;

    let mut hasher = Sha256::new();
    let mut round_ms = Vec::new();
    let mut per_round = Vec::new();
    let mut clear_ms = Vec::new();
    let (mut placements, mut preemptions) = (0u64, 0u64);
    let mut busy_s = 0.0;
    let mut next_lease = 1u64;
    let mut running: Vec<(LeaseId, Tier)> = Vec::new();
    let mut allocated_fraction = 0.0;
    let mut free_after_first_round: BTreeMap<String, u64> = BTreeMap::new();
    let (mut gangs, mut gangs_one_domain) = (0u64, 0u64);
    for round in 0..args.rounds {
        // Free whole nodes per (pool, domain) before the round, to judge each gang at its turn.
        let mut whole: BTreeMap<NodeId, bool> = BTreeMap::new();
        let mut free_in_domain: BTreeMap<(u64, DomainId), u32> = BTreeMap::new();
        for n in market.nodes() {
            let free = n.online() && n.free_gpus() == n.spec().gpus;
            whole.insert(n.spec().id, free);
            if free {
                *free_in_domain.entry((pool_of(n.spec()), n.spec().domain)).or_default() += 1;
            }
        }
        let t0 = Instant::now();
        let mut plan: RoundPlan = market.clear();
        let clear_s = t0.elapsed().as_secs_f64();
        // The bench keeps a copy for its statistics and hash; the exchange's
        // state machine keeps its own in the event log.
        let kept = plan.placements.clone();
        // Applying the plan: the placements move into the market.
        let t2 = Instant::now();
        for p in plan.placements.drain(..) {
            // (A gang spanning pools has several placements for one order.)
            let tier = tiers[&p.order];
            let lease = LeaseId(next_lease);
            next_lease += 1;
            market.start_lease_owned(lease, tier, p);
            running.push((lease, tier));
        }
        for pre in &plan.preemptions {
            market.mark_stopping(pre.lease);
        }
        let round_s = clear_s + t2.elapsed().as_secs_f64();
        plan.placements = kept;
        clear_ms.push(clear_s * 1000.0);
        round_ms.push(round_s * 1000.0);
        per_round.push((plan.placements.len() as u64, round_s * 1000.0));
        busy_s += round_s;
        placements += plan.placements.len() as u64;
        preemptions += plan.preemptions.len() as u64;
        // Placements come in service order: replay them against the free whole nodes.
        for p in &plan.placements {
            let gpus: u32 = p.allocations.iter().map(|a| a.gpu_indices.len() as u32).sum();
            let pool = pool_of(
                market
                    .node(p.allocations[0].node)
                    .expect("placed on a known node")
                    .spec(),
            );
            if p.allocations.len() > 1 && gpus <= 256 {
                let could = free_in_domain
                    .iter()
                    .any(|((pl, _), free)| *pl == pool && *free as usize >= p.allocations.len());
                if could {
                    gangs += 1;
                    let first = domain_of[&p.allocations[0].node];
                    if p.allocations.iter().all(|a| domain_of[&a.node] == first) {
                        gangs_one_domain += 1;
                    }
                }
            }
            for a in &p.allocations {
                if whole.insert(a.node, false) == Some(true) {
                    *free_in_domain
                        .get_mut(&(pool, domain_of[&a.node]))
                        .expect("counted above") -= 1;
                }
            }
        }
        hasher.update(serde_json::to_vec(&plan).expect("plans serialize"));
        if round == 0 {
            let used: u64 = market.nodes().map(|n| u64::from(n.spec().gpus - n.free_gpus())).sum();
            allocated_fraction = used as f64 / gpus_total as f64;
            for n in market.nodes().filter(|n| n.free_gpus() > 0) {
                *free_after_first_round
                    .entry(n.spec().model.name().to_string())
                    .or_default() += u64::from(n.free_gpus());
            }
        }
        // Churn: preempted leases end, a share of the others finish; new orders refill the queue.
        let stopping: std::collections::BTreeSet<LeaseId> = plan.preemptions.iter().map(|p| p.lease).collect();
        running.retain(|(lease, _)| {
            let ends = stopping.contains(lease) || rng.chance(args.churn_per_mille);
            if ends {
                market.end_lease(*lease);
            }
            !ends
        });
        let missing = args.orders.saturating_sub(market.pending_orders().count());
        for o in workload::orders(&mut rng, &mix, missing, next_order) {
            tiers.insert(o.id, o.tier);
            market.add_order(o);
        }
        next_order += missing as u64;
    }
    let first_round_ms = round_ms[0];
    round_ms.sort_by(f64::total_cmp);
    clear_ms.sort_by(f64::total_cmp);
    let report = Report {
        policies: args.policies,
        fleet: args.fleet,
        nodes: fleet.nodes.len(),
        gpus: gpus_total,
        orders: args.orders,
        seed: args.seed,
        rounds: args.rounds,
        setup_ms,
        round_ms_p50: percentile(&round_ms, 0.5),
        round_ms_p99: percentile(&round_ms, 0.99),
        first_round_ms,
        first_round_placements: per_round[0].0,
        per_round,
        clear_ms_p50: percentile(&clear_ms, 0.5),
        placements,
        preemptions,
        placements_per_s: placements as f64 / busy_s.max(1e-9),
        allocated_fraction,
        single_domain_fraction: if gangs == 0 {
            1.0
        } else {
            gangs_one_domain as f64 / gangs as f64
        },
        multi_node_gangs_le_256: gangs,
        free_after_first_round,
        engine_rss_mib: peak_rss_mib(),
        decisions_hash: hex::encode(&hasher.finalize()[..16]),
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            println!(
                "fleet {}: {} nodes, {} GPUs; {} pending orders; seed {}",
                report.fleet, report.nodes, report.gpus, report.orders, report.seed
            );
            println!(
                "round (clear + apply): p50 {:.1} ms, p99 {:.1} ms, first {:.1} ms; clear alone p50 {:.1} ms",
                report.round_ms_p50, report.round_ms_p99, report.first_round_ms, report.clear_ms_p50
            );
            println!(
                "placements: {} in {} rounds, {:.0}/s; preemptions: {}",
                report.placements, report.rounds, report.placements_per_s, report.preemptions
            );
            println!(
                "allocated after round 1: {:.2} %; gangs ≤ 256 GPUs in one domain: {:.2} % of {}",
                report.allocated_fraction * 100.0,
                report.single_domain_fraction * 100.0,
                report.multi_node_gangs_le_256
            );
            println!(
                "peak RSS {:.0} MiB; decisions hash {}",
                report.engine_rss_mib, report.decisions_hash
            );
        }
    }
    Ok(0)
}
