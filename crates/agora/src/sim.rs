//! `agora sim`: market scenarios (`agora sim SCENARIO.yaml`) and trace replay
//! (`agora sim replay`).

use std::path::PathBuf;

use agora_sim::replay::{self, ELASTICFLOW};
use agora_sim::scenario::{self, PolicyChoice, Scenario, TraceScenario};
use agora_sim::{market, traces};
use anyhow::{Context, anyhow};
use clap::{Args, Subcommand, ValueEnum};

use crate::Output;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReplayPolicy {
    Fifo,
    Las,
    Srsf,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Policies {
    Default,
    Off,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct SimArgs {
    #[command(subcommand)]
    command: Option<SimCommand>,
    /// The scenario (YAML; see `crates/agora-sim/src/scenario.rs` and `scenarios/`).
    scenario: Option<PathBuf>,
    /// Overrides the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Overrides the scenario's market-health policies: `default` or `off`.
    #[arg(long, value_enum)]
    policies: Option<Policies>,
    /// Runs the scenario with N seeds (from the scenario's or `--seed`),
    /// checking invariants as it goes; prints every seed that fails.
    #[arg(long, value_name = "N")]
    check: Option<u64>,
    /// Writes summary.json, timeseries.csv, spot.csv and jobs.csv here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// `json` prints the summary as JSON.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TraceFormat {
    MsItp,
    Philly,
    /// Alibaba cluster-trace-gpu-v2023 pods (`openb_pod_list_*.csv`); see `--fractional`.
    #[value(name = "alibaba-2023-pods")]
    Alibaba2023Pods,
    /// Alibaba cluster-trace-gpu-v2025 inference instances
    /// (`disaggregated_DLRM_trace.csv`): each service replica a job running
    /// as long as it ran in the trace.
    #[value(name = "alibaba-2025-instances")]
    Alibaba2025Instances,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum FractionalArg {
    RoundUp,
    Reject,
}

/// The jobs of a trace file; for Alibaba's pods, what was left out goes to stderr.
fn read_jobs(
    format: scenario::TraceFormat,
    file: &std::path::Path,
    fractional: traces::Fractional,
) -> anyhow::Result<Vec<traces::TraceJob>> {
    Ok(match format {
        scenario::TraceFormat::MsItp => traces::read_ms_itp(file)?,
        scenario::TraceFormat::Philly => traces::read_philly(file)?,
        scenario::TraceFormat::Alibaba2023Pods => {
            let t = traces::read_alibaba_pods(file, fractional)?;
            eprintln!(
                "{} GPU jobs; left out: {} CPU-only, {} never scheduled, {} sharing a GPU; {} shared GPUs rounded up; \
                 {} constrained to undisclosed models only (any model here); the replay fleet has one model",
                t.jobs.len(),
                t.cpu_only,
                t.never_scheduled,
                t.fractional_rejected,
                t.fractional_rounded,
                t.undisclosed_only
            );
            t.jobs
        }
        scenario::TraceFormat::Alibaba2025Instances => {
            let t = traces::read_alibaba_instances(file)?;
            eprintln!(
                "{} GPU instances of {} services as jobs ({} running when the trace starts); left out: {} CPU-only; \
                 replicas are placed independently (no per-node limit)",
                t.instances(),
                t.services.len(),
                t.running_at_start,
                t.cpu_only
            );
            t.as_jobs()
        }
    })
}

#[derive(Subcommand, Debug)]
pub(crate) enum SimCommand {
    /// Replay a trace on N nodes × G GPUs: decisions every 60 s, start and checkpoint costs as the published baselines.
    ///
    /// Example: agora sim replay --trace data/traces/ms-itp/cluster04.csv --nodes 80
    Replay {
        #[arg(long)]
        trace: PathBuf,
        #[arg(long, value_enum, default_value = "ms-itp")]
        format: TraceFormat,
        /// With `--format alibaba-2023-pods`: a pod sharing one GPU gets a whole one (`round-up`) or is left out (`reject`).
        #[arg(long, value_enum, default_value = "round-up")]
        fractional: FractionalArg,
        #[arg(long, default_value_t = 80)]
        nodes: u32,
        #[arg(long, default_value_t = 8)]
        gpus_per_node: u32,
        /// `fifo`: first come first served with greedy backfill; `las`: least attained
        /// service in discrete queues (Tiresias-style), preemptive; neither reads durations.
        /// `srsf`: shortest estimated remaining service first, from users' estimates (`--noise`).
        #[arg(long, value_enum, default_value = "fifo")]
        policy: ReplayPolicy,
        /// With `--policy las`: the queues' thresholds of attained service, in GPU-seconds.
        #[arg(long, value_delimiter = ',', default_values_t = [3250u64, 7200, 30000, 100000, 300000])]
        las_queues: Vec<u64>,
        /// With `--policy srsf`: the queues' thresholds of estimated remaining service, in GPU-seconds.
        #[arg(long, value_delimiter = ',', default_values_t = [100000u64, 1000000, 10000000])]
        srsf_queues: Vec<u64>,
        /// With `--policy srsf`: each estimate is the real duration times (1 + noise)^u, u uniform in [-1, 1].
        #[arg(long, default_value_t = 0.5)]
        noise: f64,
        /// With `--policy srsf`: the seed of the estimates' noise.
        #[arg(long, default_value_t = 1)]
        estimate_seed: u64,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
}

pub(crate) fn run(args: SimArgs) -> anyhow::Result<u8> {
    match (args.command, args.scenario) {
        (Some(cmd), _) => replay_trace(cmd),
        (None, Some(path)) if is_trace_file(&path)? => trace_scenario(&path, args.out, args.output),
        (None, Some(path)) => match args.check {
            Some(n) => check(&path, args.seed, n),
            None => scenario(&path, args.seed, args.policies, args.out, args.output),
        },
        (None, None) => Err(anyhow!("give a scenario file, or `agora sim replay`")),
    }
}

fn is_trace_file(path: &std::path::Path) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(scenario::is_trace(&text))
}

/// A trace replay described by a scenario file; `summary.json` in `--out`.
fn trace_scenario(path: &std::path::Path, out: Option<PathBuf>, output: Output) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let sc = TraceScenario::from_yaml(&text).with_context(|| path.display().to_string())?;
    let t = &sc.trace;
    let file = path.parent().unwrap_or(std::path::Path::new(".")).join(&t.file);
    let jobs = read_jobs(t.format, &file, t.fractional)?;
    let too_big = jobs.iter().filter(|j| j.gpus > t.nodes * t.gpus_per_node).count();
    if too_big > 0 {
        return Err(anyhow!(
            "{too_big} jobs ask for more GPUs than {} × {}",
            t.nodes,
            t.gpus_per_node
        ));
    }
    let timing = replay::Timing {
        round_s: t.round.0,
        start_base_s: t.start_cost.base_s,
        start_per_log2_s: t.start_cost.per_log2_s,
        checkpoint_every_rounds: t.checkpoint.every_rounds,
        checkpoint_s: t.checkpoint.cost_s,
    };
    let policy = match t.policy {
        scenario::ReplayPolicy::Fifo => replay::Policy::Fifo,
        scenario::ReplayPolicy::Las => replay::Policy::Las {
            thresholds_gpu_s: t.las_queues.clone(),
        },
        scenario::ReplayPolicy::Srsf => {
            let e = t.estimates.expect("validated: srsf has estimates");
            replay::Policy::Srsf {
                thresholds_gpu_s: t.srsf_queues.clone(),
                estimates_s: replay::estimates(&jobs, e.noise, e.seed),
            }
        }
    };
    let s = replay::replay_with(&jobs, t.nodes, t.gpus_per_node, timing, &policy);
    let json = serde_json::to_string_pretty(&s)?;
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("summary.json"), format!("{json}\n"))
            .with_context(|| format!("writing {}", dir.display()))?;
    }
    match output {
        Output::Json => println!("{json}"),
        Output::Table => print_replay(&s),
    }
    Ok(0)
}

fn load(path: &std::path::Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Scenario::from_yaml(&text).with_context(|| path.display().to_string())
}

/// `--check N`: N seeds with the invariants checked; exit code 1 if any fails.
fn check(path: &std::path::Path, seed: Option<u64>, n: u64) -> anyhow::Result<u8> {
    let sc = load(path)?;
    let first = seed.unwrap_or(sc.seed);
    let failed = market::check(&sc, first..first.saturating_add(n));
    for (seed, why) in &failed {
        println!("seed {seed}: {why}");
    }
    println!(
        "{} of {n} seeds passed ({first}..{})",
        n - failed.len() as u64,
        first.saturating_add(n)
    );
    Ok(u8::from(!failed.is_empty()))
}

fn scenario(
    path: &std::path::Path,
    seed: Option<u64>,
    policies: Option<Policies>,
    out: Option<PathBuf>,
    output: Output,
) -> anyhow::Result<u8> {
    let mut sc = load(path)?;
    if let Some(p) = policies {
        sc.policies = match p {
            Policies::Default => PolicyChoice::Default,
            Policies::Off => PolicyChoice::Off,
        };
    }
    let seed = seed.unwrap_or(sc.seed);
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let b = indicatif::ProgressBar::new(sc.duration.0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% of simulated time · {elapsed} ")
                .expect("a valid template"),
        );
        b
    });
    let started = std::time::Instant::now();
    let outputs = market::run(&sc, seed, &mut |done_s| {
        if let Some(b) = &bar {
            b.set_position(done_s);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let wall_s = started.elapsed().as_secs_f64();
    if let Some(dir) = &out {
        outputs
            .write(dir)
            .with_context(|| format!("writing {}", dir.display()))?;
    }
    let s = &outputs.summary;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(s)?),
        Output::Table => {
            println!(
                "{}: {} days simulated in {wall_s:.1} s (seed {}); {} jobs: {} succeeded, {} failed, {} unfinished, {} refused",
                s.scenario,
                s.duration_s as f64 / 86_400.0,
                s.seed,
                s.jobs.submitted,
                s.jobs.succeeded,
                s.jobs.failed,
                s.jobs.unfinished,
                s.jobs.refused
            );
            let mut t = crate::table::new(&[
                "tenants",
                "count",
                "jobs",
                "done",
                "avg wait s",
                "p95 wait s",
                "avg JCT s",
                "spend",
            ]);
            for c in &s.tenant_classes {
                t.add_row(vec![
                    c.class.clone(),
                    c.tenants.to_string(),
                    c.jobs.to_string(),
                    c.succeeded.to_string(),
                    format!("{:.0}", c.avg_wait_s),
                    c.p95_wait_s.to_string(),
                    format!("{:.0}", c.avg_jct_s),
                    crate::table::money(c.spend),
                ]);
            }
            println!("{t}");
            let mut t = crate::table::new(&[
                "providers",
                "count",
                "GPUs",
                "GPU-h delivered",
                "utilization",
                "revenue",
            ]);
            for c in &s.provider_classes {
                t.add_row(vec![
                    c.class.clone(),
                    c.providers.to_string(),
                    c.gpus.to_string(),
                    format!("{:.0}", c.gpu_hours_delivered),
                    format!("{:.1} %", c.utilization * 100.0),
                    crate::table::money(c.revenue),
                ]);
            }
            println!("{t}");
            println!(
                "concentration: HHI of capacity {}, of delivered GPU-hours {} (CR4 {:.1} %); ledger verified: {}",
                s.concentration.hhi_capacity,
                s.concentration.hhi_delivered_gpu_hours,
                f64::from(s.concentration.cr4_delivered_bps) / 100.0,
                s.ledger_verified
            );
        }
    }
    if let Some(dir) = out {
        eprintln!("outputs in {}", dir.display());
    }
    Ok(if s.ledger_verified { 0 } else { 1 })
}

fn replay_trace(cmd: SimCommand) -> anyhow::Result<u8> {
    let SimCommand::Replay {
        trace,
        format,
        fractional,
        nodes,
        gpus_per_node,
        policy,
        las_queues,
        srsf_queues,
        noise,
        estimate_seed,
        output,
    } = cmd;
    if !(noise.is_finite() && noise >= 0.0) {
        return Err(anyhow!("--noise must be a finite number of at least 0"));
    }
    if nodes == 0 || gpus_per_node == 0 {
        return Err(anyhow!("--nodes and --gpus-per-node must be at least 1"));
    }
    let format = match format {
        TraceFormat::MsItp => scenario::TraceFormat::MsItp,
        TraceFormat::Philly => scenario::TraceFormat::Philly,
        TraceFormat::Alibaba2023Pods => scenario::TraceFormat::Alibaba2023Pods,
        TraceFormat::Alibaba2025Instances => scenario::TraceFormat::Alibaba2025Instances,
    };
    let fractional = match fractional {
        FractionalArg::RoundUp => traces::Fractional::RoundUp,
        FractionalArg::Reject => traces::Fractional::Reject,
    };
    let jobs = read_jobs(format, &trace, fractional)?;
    let too_big = jobs.iter().filter(|j| j.gpus > nodes * gpus_per_node).count();
    if too_big > 0 {
        return Err(anyhow!(
            "{too_big} jobs ask for more GPUs than {nodes} × {gpus_per_node}"
        ));
    }
    let policy = match policy {
        ReplayPolicy::Fifo => replay::Policy::Fifo,
        ReplayPolicy::Las => replay::Policy::Las {
            thresholds_gpu_s: las_queues,
        },
        ReplayPolicy::Srsf => replay::Policy::Srsf {
            thresholds_gpu_s: srsf_queues,
            estimates_s: replay::estimates(&jobs, noise, estimate_seed),
        },
    };
    let s = replay::replay_with(&jobs, nodes, gpus_per_node, ELASTICFLOW, &policy);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Output::Table => print_replay(&s),
    }
    Ok(0)
}

fn print_replay(s: &replay::Summary) {
    println!(
        "{} jobs on {} × {} GPUs: average JCT {:.0} s (median {:.0}, p99 {:.0}), average wait {:.0} s",
        s.jobs, s.nodes, s.gpus_per_node, s.avg_jct_s, s.p50_jct_s, s.p99_jct_s, s.avg_wait_s
    );
    println!(
        "makespan {} s, utilization {:.1} %, {} rounds cleared, wall {:.2} s",
        s.makespan_s,
        s.utilization * 100.0,
        s.rounds,
        s.wall_s
    );
}
