//! `agora bench`: figures measured on this machine. Without a subcommand it
//! measures the clearing engine on a fleet (`--fleet colossus`); `agora bench
//! server` measures the HTTP server.

mod engine;
mod server;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    engine: engine::EngineBench,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Submissions/s and heartbeats/s of a server on this machine (durable, over HTTP).
    ///
    /// Example: agora bench server --submissions 20000 --heartbeats 100000 --concurrency 32
    Server(server::ServerBench),
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    match args.command {
        Some(BenchCommand::Server(s)) => server::run(s).await,
        // The engine is synchronous CPU work on one core: off the async runtime.
        None => tokio::task::spawn_blocking(move || engine::run(args.engine)).await?,
    }
}
