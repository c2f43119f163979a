//! `agora`: the one binary — the exchange server, the provider agent and the CLI.

mod bench;
mod client;
mod commands;
mod contract;
mod sim;
mod table;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes, documented in the README.
pub(crate) const EXIT_ERROR: u8 = 1;
pub(crate) const EXIT_JOB_FAILED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "agora",
    version,
    about = "An open exchange for AI compute",
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShareMode {
    Soft,
    Hard,
}

/// How the CLI reaches an exchange.
#[derive(Args, Debug, Clone)]
pub(crate) struct Conn {
    /// The exchange's URL.
    #[arg(long, env = "AGORA_URL", default_value = "http://127.0.0.1:7070", global = true)]
    pub(crate) url: String,
    /// A bearer token (tenant, provider or admin).
    #[arg(long, env = "AGORA_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// Print tables for people or JSON documents for programs.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    pub(crate) output: Output,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ServerArgs {
    /// Where the exchange keeps its database.
    #[arg(long, env = "AGORA_DATA", default_value = "./agora-data")]
    pub(crate) data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub(crate) listen: std::net::SocketAddr,
    /// Milliseconds between clearing rounds.
    #[arg(long, default_value_t = 1000)]
    pub(crate) round_interval_ms: u64,
    /// Milliseconds between agent heartbeats.
    #[arg(long, default_value_t = 1000)]
    pub(crate) heartbeat_interval_ms: u64,
    /// An agent silent this long (ms) is lost and its leases requeued.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) agent_timeout_ms: u64,
    /// Grace (ms) between SIGTERM and SIGKILL when a lease is stopped or preempted.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) stop_grace_ms: u64,
    /// How long (ms) a lease runs, warned, once its tenant's funds run out.
    #[arg(long, default_value_t = 60_000)]
    pub(crate) funds_grace_ms: u64,
    /// Running leases are settled at least this often (ms).
    #[arg(long, default_value_t = 60_000)]
    pub(crate) settle_interval_ms: u64,
    /// The exchange's take rate, in basis points of every charge.
    #[arg(long, default_value_t = 500)]
    pub(crate) fee_bps: u32,
    /// Times lost work is requeued before it fails.
    #[arg(long, default_value_t = 3)]
    pub(crate) max_retries: u32,
    /// Market health: the most of a tenant's GPUs on one provider (basis points; 0 turns the cap off).
    #[arg(long, default_value_t = 5000)]
    pub(crate) provider_share_cap_bps: u32,
    /// `soft` prefers placements within the provider share cap; `hard` refuses the others.
    #[arg(long, value_enum, default_value = "soft")]
    pub(crate) provider_share_mode: ShareMode,
    /// Tenants with fewer GPUs than this are not subject to the provider share cap.
    #[arg(long, default_value_t = 64)]
    pub(crate) provider_share_min_gpus: u64,
    /// Market health: basis points of each GPU model kept for small tenants (0: none).
    #[arg(long, default_value_t = 500)]
    pub(crate) small_tenant_floor_bps: u32,
    /// A tenant with fewer GPUs than this is small.
    #[arg(long, default_value_t = 64)]
    pub(crate) small_tenant_gpus: u64,
    /// Region latencies for gangs that may span providers: a file of
    /// `region_a,region_b,milliseconds` lines (without it, no gang spans providers).
    #[arg(long, value_name = "FILE")]
    pub(crate) latency_matrix: Option<PathBuf>,
    /// Market health: the most of a GPU model one tenant may reserve under contracts (basis points).
    #[arg(long, default_value_t = 8000)]
    pub(crate) max_reserved_share_bps: u32,
    /// Submitting or placing work needs a balance covering this many seconds of it.
    #[arg(long, default_value_t = 60)]
    pub(crate) min_funds_s: u64,
    /// Job output the server keeps per job (MiB); the oldest goes first.
    #[arg(long, default_value_t = 8)]
    pub(crate) log_retention_mib: u64,
    /// Escrow horizon (s) for jobs without a duration estimate.
    #[arg(long, default_value_t = 3600)]
    pub(crate) hold_horizon_s: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a whole exchange on this machine: server, database, a local agent.
    ///
    /// Example: agora up --gpus 8 --gpu-model H100-80GB-SXM --price 2.50
    Up(up::UpArgs),
    /// Run the exchange server.
    ///
    /// Example: agora serve --data-dir /var/lib/agora --listen 0.0.0.0:7070
    Serve(ServerArgs),
    /// Run a provider agent.
    ///
    /// Example: AGORA_TOKEN=agora_... agora agent --config agent.yaml
    Agent {
        /// The agent's YAML configuration (server, name, inventory).
        #[arg(long)]
        config: PathBuf,
        /// Overrides `server` of the configuration.
        #[arg(long)]
        server: Option<String>,
        /// Provider token (else `token` of the configuration, else AGORA_TOKEN).
        #[arg(long, env = "AGORA_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Submit a job manifest (YAML) and print its id.
    ///
    /// Example: agora submit job.yaml --wait
    Submit {
        file: PathBuf,
        /// Follow the job until it ends; exit 3 if it fails.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List your jobs.
    Jobs {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one job: state, tasks, leases, pending reason, cost.
    Job {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a job's output.
    ///
    /// Example: agora logs 7 --follow
    Logs {
        id: String,
        /// Keep printing new output until the job ends.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a job: pending tasks are withdrawn, running ones stopped.
    Cancel {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show your balance.
    Balance {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show asks and recent clearing prices per GPU model.
    Market {
        #[command(flatten)]
        conn: Conn,
    },
    /// Spot prices per GPU model and region, with their history.
    ///
    /// Example: agora spot --model h100
    Spot {
        /// Only this GPU model (a catalog name or alias).
        #[arg(long)]
        model: Option<String>,
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Market health: concentration (HHI, CR4) of capacity and allocated GPUs, dependency, alerts.
    Health {
        #[command(flatten)]
        conn: Conn,
    },
    /// Reservation contracts: reserve GPUs of a model at a provider for a term.
    ///
    /// Example: agora contract create --provider 1 --model h100 --gpus 8 --days 30
    Contract {
        #[command(subcommand)]
        command: contract::ContractCommand,
    },
    /// Provider commands.
    Provider {
        #[command(subcommand)]
        command: commands::ProviderCommand,
    },
    /// Measure this machine: the clearing engine on a fleet, or `agora bench server`.
    ///
    /// Example: agora bench --fleet colossus --orders 50000 --seed 1 --output json
    Bench(bench::BenchArgs),
    /// Simulate a market scenario in virtual time through the exchange's own
    /// control loop, or replay a real GPU trace (`agora sim replay`).
    ///
    /// Example: agora sim scenarios/small-market.yaml --seed 2 --out runs/small
    Sim(sim::SimArgs),
    /// Operator commands (admin token).
    Admin {
        #[command(subcommand)]
        command: commands::AdminCommand,
    },
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGORA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A command whose output goes through a pipe (`agora jobs | head`) ends
/// quietly, with status 0, when the reader leaves, as other command-line
/// tools do, instead of reporting a panic: printing to a closed pipe is the
/// only panic this recognises. Not for the long-running commands, whose
/// output is logs.
fn quiet_on_closed_pipe(command: &Command) {
    if matches!(command, Command::Up(_) | Command::Serve(_) | Command::Agent { .. }) {
        return;
    }
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("(os error 32)") {
            std::process::exit(0);
        }
        report(info);
    }));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    quiet_on_closed_pipe(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => {
                init_logs("warn,agora=info");
                up::run(args).await
            }
            Command::Serve(args) => {
                init_logs("info");
                commands::serve(args).await
            }
            Command::Agent { config, server, token } => {
                init_logs("info");
                commands::agent(config, server, token).await
            }
            Command::Submit { file, wait, conn } => commands::submit(&conn, &file, wait).await,
            Command::Jobs { limit, conn } => commands::jobs(&conn, limit).await,
            Command::Job { id, conn } => commands::job(&conn, &id).await,
            Command::Logs { id, follow, conn } => commands::logs(&conn, &id, follow).await,
            Command::Cancel { id, conn } => commands::cancel(&conn, &id).await,
            Command::Balance { conn } => commands::balance(&conn).await,
            Command::Market { conn } => commands::market(&conn).await,
            Command::Health { conn } => commands::health(&conn).await,
            Command::Spot { model, region, conn } => commands::spot(&conn, model, region).await,
            Command::Provider { command } => commands::provider(command).await,
            Command::Contract { command } => contract::run(command).await,
            Command::Admin { command } => commands::admin(command).await,
            Command::Sim(args) => tokio::task::spawn_blocking(move || sim::run(args)).await?,
            Command::Bench(args) => {
                init_logs("warn");
                bench::run(args).await
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
