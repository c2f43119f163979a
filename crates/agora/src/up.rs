//! `agora up`: a whole exchange on one machine — the server with its SQLite
//! database, a funded demo tenant, a local provider and its agent in-process.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use agora_server::{Bootstrap, Server};
use agora_types::GpuModel;
use anyhow::Context;
use clap::Args;

use crate::ServerArgs;
use crate::commands::{parse_money, server_config, shutdown_signal};

#[derive(Args, Debug)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// GPUs of the local agent's declared node.
    #[arg(long, default_value_t = 8)]
    gpus: u32,
    /// GPU model of the local node (aliases such as h100 or rtx4090 work).
    #[arg(long, default_value = "H100-80GB-SXM")]
    gpu_model: String,
    /// The local provider's ask, per GPU-hour.
    #[arg(long, default_value = "2.50")]
    price: String,
    /// The demo tenant's balance on first start.
    #[arg(long, default_value = "1000.00")]
    balance: String,
}

const TOKENS_FILE: &str = "up-tokens.json";

/// Writes a file only its owner can read: it holds tokens.
pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<u8> {
    let model = GpuModel::resolve(&args.gpu_model).map_err(|e| anyhow::anyhow!("--gpu-model: {e}"))?;
    let gpus = NonZeroU32::new(args.gpus)
        .filter(|g| g.get() <= 64)
        .ok_or_else(|| anyhow::anyhow!("--gpus: must be 1..=64"))?;
    let price = parse_money("--price", &args.price)?;
    let balance = parse_money("--balance", &args.balance)?;
    if price <= agora_types::Micros::ZERO {
        anyhow::bail!("--price: must be greater than zero");
    }
    let data_dir: PathBuf = args.server.data_dir.clone();
    let server = Server::start(server_config(&args.server)?).await?;
    let tokens_path = data_dir.join(TOKENS_FILE);
    let tokens: Bootstrap = match server.bootstrap(balance).await? {
        Some(b) => {
            write_private(&tokens_path, &serde_json::to_string_pretty(&b)?)?;
            b
        }
        None => {
            let text = std::fs::read_to_string(&tokens_path).with_context(|| {
                format!(
                    "this data dir was not created by `agora up` ({} is missing)",
                    tokens_path.display()
                )
            })?;
            serde_json::from_str(&text).with_context(|| format!("reading {}", tokens_path.display()))?
        }
    };
    let url = format!("http://{}", server.addr);
    let agent_cfg = agora_agent::AgentConfig::single_node(
        url.clone(),
        Some(tokens.provider_token.clone()),
        "local",
        model,
        gpus,
        price,
    );
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(async move {
        agora_agent::run(agent_cfg, async {
            let _ = agent_stopped.await;
        })
        .await
    });
    println!(
        "Agora is up: an exchange with one local provider ({} × {model} at {}/GPU-h).",
        gpus, price
    );
    println!();
    println!("  API        {url}");
    println!("  data       {}", data_dir.display());
    println!("  admin      {}", tokens.admin_token);
    println!("  provider   {}", tokens.provider_token);
    println!("  tenant     {}  (demo tenant)", tokens.tenant_token);
    println!();
    println!("In another shell:");
    println!();
    println!("export AGORA_URL={url}");
    println!("export AGORA_TOKEN={}", tokens.tenant_token);
    println!();
    println!("  agora market                      # what is on offer");
    println!("  agora submit examples/hello.yaml --wait");
    println!("  agora jobs                        # your jobs");
    println!("  agora logs <ID> --follow          # a job's output");
    println!("  agora balance                     # what you have and what is held");
    println!();
    println!("Ctrl-C stops the exchange; `agora up` again resumes it with the same data.");
    shutdown_signal().await;
    eprintln!("stopping…");
    let _ = stop_agent.send(());
    match agent.await {
        Ok(Err(e)) => eprintln!("agent: {e:#}"),
        Err(e) => eprintln!("agent: {e}"),
        Ok(Ok(())) => {}
    }
    server.stop().await;
    Ok(0)
}
