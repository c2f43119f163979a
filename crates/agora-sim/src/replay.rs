//! Trace replay: real jobs submitted to the real engine in virtual time, with
//! the timing conventions of the published simulator the brief compares with
//! (decisions at most every 60 s; a start costs 7 + 2·(log2 g + 1) s before the
//! job progresses; every 60th round adds 47 s to every running job, the
//! checkpoint cost). Jobs under 8 GPUs sit in one node; larger ones take
//! ⌈g/8⌉ whole nodes.
//!
//! The engine never sees a duration: a job's length is known only to this
//! replay, which ends the lease when the job's work is done.

use std::collections::BTreeMap;
use std::time::Instant;

use agora_engine::market::{Market, NodeSpec, OrderSpec, SiteSpec};
use agora_types::{
    AgentId, DomainId, GpuModel, JobId, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour, ProviderId, SiteId,
    TenantId, Tier,
};
use serde::Serialize;

use crate::traces::TraceJob;

/// Timing conventions, as scenario settings.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub round_s: u64,
    /// Start cost = `start_base_s` + `start_per_log2_s` · (log2 g + 1).
    pub start_base_s: f64,
    pub start_per_log2_s: f64,
    pub checkpoint_every_rounds: u64,
    pub checkpoint_s: u64,
}

/// The conventions of the ElasticFlow simulator (see `data/traces/README.md`).
pub const ELASTICFLOW: Timing = Timing {
    round_s: 60,
    start_base_s: 7.0,
    start_per_log2_s: 2.0,
    checkpoint_every_rounds: 60,
    checkpoint_s: 47,
};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub jobs: usize,
    pub nodes: u32,
    pub gpus_per_node: u32,
    pub avg_jct_s: f64,
    pub p50_jct_s: f64,
    pub p99_jct_s: f64,
    pub makespan_s: u64,
    pub avg_wait_s: f64,
    /// GPU-seconds of useful work over GPU-seconds available until the makespan.
    pub utilization: f64,
    pub rounds: u64,
    pub wall_s: f64,
}

struct Running {
    job: usize,
    /// Virtual time the job's work is done, moved later by checkpoints.
    done_at: u64,
}

fn start_cost(t: &Timing, gpus: u32) -> u64 {
    let log2 = f64::from(gpus.max(1)).log2();
    (t.start_base_s + t.start_per_log2_s * (log2 + 1.0)).round() as u64
}

/// Replays `jobs` on `nodes` nodes of `gpus_per_node` GPUs.
pub fn replay(jobs: &[TraceJob], nodes: u32, gpus_per_node: u32, timing: Timing) -> Summary {
    let wall = Instant::now();
    let model = GpuModel::resolve("H100-80GB-SXM").expect("in the catalog");
    let price = PricePerGpuHour(Micros::from_units(2));
    let mut market = Market::new();
    market.upsert_site(SiteSpec {
        id: SiteId(1),
        provider: ProviderId(1),
        power_budget_w: None,
        node_overhead_w: 0,
        orbital: false,
        region: None,
    });
    for i in 0..nodes {
        market.upsert_node(NodeSpec {
            id: NodeId(u64::from(i) + 1),
            provider: ProviderId(1),
            agent: AgentId(1),
            model,
            gpus: gpus_per_node,
            ask: price,
            site: SiteId(1),
            domain: DomainId(1),
        });
    }
    let order_of = |i: usize, g: u32| {
        let (n, per) = if g < gpus_per_node {
            (1, g.max(1))
        } else {
            (g.div_ceil(gpus_per_node), gpus_per_node)
        };
        OrderSpec {
            id: OrderId(i as u64 + 1),
            job: JobId(i as u64 + 1),
            tenant: TenantId(1),
            tier: Tier::OnDemand,
            max_price: price,
            models: vec![model],
            min_vram_mib: 0,
            nodes: n,
            gpus_per_node: per,
            duration_estimate_s: None,
            checkpointable: false,
            max_latency_ms: None,
        }
    };
    let mut started_at: Vec<Option<u64>> = vec![None; jobs.len()];
    let mut finished_at: Vec<Option<u64>> = vec![None; jobs.len()];
    let mut running: BTreeMap<LeaseId, Running> = BTreeMap::new();
    let mut next_submit = 0;
    let mut next_lease = 1;
    let mut round: u64 = 0;
    let mut rounds_cleared = 0;
    let mut changed = true;
    let mut done = 0;
    while done < jobs.len() {
        let now = round * timing.round_s;
        // Checkpoints: every running job loses `checkpoint_s` of progress.
        if timing.checkpoint_every_rounds > 0 && round > 0 && round.is_multiple_of(timing.checkpoint_every_rounds) {
            for r in running.values_mut() {
                r.done_at += timing.checkpoint_s;
            }
        }
        // Jobs done since the last round free their GPUs now.
        let ended: Vec<LeaseId> = running
            .iter()
            .filter(|(_, r)| r.done_at <= now)
            .map(|(l, _)| *l)
            .collect();
        for lease in ended {
            let r = running.remove(&lease).expect("listed above");
            market.end_lease(lease);
            finished_at[r.job] = Some(r.done_at);
            done += 1;
            changed = true;
        }
        while next_submit < jobs.len() && jobs[next_submit].submit_s <= now {
            market.add_order(order_of(next_submit, jobs[next_submit].gpus));
            next_submit += 1;
            changed = true;
        }
        // Nothing changed since the last round: its decisions would be the same.
        if changed {
            changed = false;
            rounds_cleared += 1;
            let plan = market.clear();
            for p in &plan.placements {
                let job = (p.order.0 - 1) as usize;
                let lease = LeaseId(next_lease);
                next_lease += 1;
                market.start_lease(lease, Tier::OnDemand, p);
                started_at[job] = Some(now);
                let done_at = now + start_cost(&timing, jobs[job].gpus) + jobs[job].duration_s;
                running.insert(lease, Running { job, done_at });
            }
        }
        // Jump to the next round where something can happen.
        let next_event = running
            .values()
            .map(|r| r.done_at)
            .chain(jobs.get(next_submit).map(|j| j.submit_s))
            .min();
        let Some(next_event) = next_event else { break };
        let mut next_round = next_event.div_ceil(timing.round_s).max(round + 1);
        // Never jump over a checkpoint round while jobs run.
        if !running.is_empty() && timing.checkpoint_every_rounds > 0 {
            let next_checkpoint = (round / timing.checkpoint_every_rounds + 1) * timing.checkpoint_every_rounds;
            next_round = next_round.min(next_checkpoint);
        }
        round = next_round;
    }
    let mut jct: Vec<u64> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| finished_at[i].expect("every job finishes") - j.submit_s)
        .collect();
    let waits: u64 = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| started_at[i].expect("every job starts") - j.submit_s)
        .sum();
    let makespan = finished_at.iter().flatten().copied().max().unwrap_or(0);
    let work: u64 = jobs.iter().map(|j| j.duration_s * u64::from(j.gpus)).sum();
    jct.sort_unstable();
    let pct = |q: f64| jct[((jct.len() as f64 * q) as usize).min(jct.len() - 1)] as f64;
    let n = jobs.len().max(1) as f64;
    Summary {
        jobs: jobs.len(),
        nodes,
        gpus_per_node,
        avg_jct_s: jct.iter().sum::<u64>() as f64 / n,
        p50_jct_s: pct(0.5),
        p99_jct_s: pct(0.99),
        makespan_s: makespan,
        avg_wait_s: waits as f64 / n,
        utilization: work as f64 / (makespan.max(1) as f64 * f64::from(nodes * gpus_per_node)),
        rounds: rounds_cleared,
        wall_s: wall.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(submit_s: u64, duration_s: u64, gpus: u32) -> TraceJob {
        TraceJob {
            submit_s,
            duration_s,
            gpus,
        }
    }

    #[test]
    fn a_lone_job_waits_for_the_next_round_and_pays_its_start_cost() {
        let s = replay(&[job(10, 1000, 8)], 1, 8, ELASTICFLOW);
        // Submitted at 10, placed at the round at 60, start cost 7 + 2·(3 + 1) = 15 s.
        assert_eq!(s.avg_jct_s, (60 + 15 + 1000 - 10) as f64);
        assert_eq!(s.avg_wait_s, 50.0);
    }

    #[test]
    fn jobs_queue_when_the_fleet_is_full_and_every_job_finishes() {
        let jobs: Vec<TraceJob> = (0..20)
            .map(|i| job(i * 30, 500 + i * 10, [1, 2, 4, 8, 16][i as usize % 5]))
            .collect();
        let s = replay(&jobs, 2, 8, ELASTICFLOW);
        assert_eq!(s.jobs, 20);
        assert!(s.avg_wait_s > 0.0, "a 2-node fleet makes some wait");
        assert!(s.utilization > 0.0 && s.utilization <= 1.0);
        assert_eq!(
            s,
            Summary {
                wall_s: s.wall_s,
                ..replay(&jobs, 2, 8, ELASTICFLOW)
            },
            "deterministic"
        );
    }
}
