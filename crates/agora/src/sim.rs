//! `agora sim`: the simulator's commands. For now, trace replay; scenarios come next.

use std::path::PathBuf;

use agora_sim::replay::{self, ELASTICFLOW};
use agora_sim::traces;
use anyhow::anyhow;
use clap::{Subcommand, ValueEnum};

use crate::Output;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TraceFormat {
    MsItp,
    Philly,
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
        #[arg(long, default_value_t = 80)]
        nodes: u32,
        #[arg(long, default_value_t = 8)]
        gpus_per_node: u32,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
}

pub(crate) fn run(cmd: SimCommand) -> anyhow::Result<u8> {
    let SimCommand::Replay {
        trace,
        format,
        nodes,
        gpus_per_node,
        output,
    } = cmd;
    if nodes == 0 || gpus_per_node == 0 {
        return Err(anyhow!("--nodes and --gpus-per-node must be at least 1"));
    }
    let jobs = match format {
        TraceFormat::MsItp => traces::read_ms_itp(&trace)?,
        TraceFormat::Philly => traces::read_philly(&trace)?,
    };
    let too_big = jobs.iter().filter(|j| j.gpus > nodes * gpus_per_node).count();
    if too_big > 0 {
        return Err(anyhow!(
            "{too_big} jobs ask for more GPUs than {nodes} × {gpus_per_node}"
        ));
    }
    let s = replay::replay(&jobs, nodes, gpus_per_node, ELASTICFLOW);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Output::Table => {
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
    }
    Ok(0)
}
