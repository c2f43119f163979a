//! `agora contract …`: reservation contracts — reserve GPUs of one model at
//! one provider for a term, list them with how the reservation is used, end
//! one early.

use agora_proto::api::{ContractView, CreateContract};
use anyhow::anyhow;
use clap::Subcommand;

use crate::commands::{client, print_json};
use crate::{Conn, Output, table};

#[derive(Subcommand, Debug)]
pub(crate) enum ContractCommand {
    /// Reserve GPUs for a term; charged whether used or not. Run `tier: reserved`
    /// jobs on it; idle reserved GPUs are resold as spot and you are credited.
    ///
    /// Example: agora contract create --provider 1 --model h100 --gpus 8 --days 30
    Create {
        #[arg(long)]
        provider: u64,
        /// GPU model: a catalog name or alias.
        #[arg(long)]
        model: String,
        #[arg(long)]
        gpus: u32,
        /// Term length in days (or use --hours).
        #[arg(long, conflicts_with = "hours")]
        days: Option<u64>,
        #[arg(long)]
        hours: Option<u64>,
        /// Start, in ms since the Unix epoch (default: now).
        #[arg(long)]
        start_ms: Option<i64>,
        /// Fixed price per GPU-hour (default: the provider's lowest ask for the model).
        #[arg(long)]
        price: Option<String>,
        /// Admin only: the tenant the contract is for.
        #[arg(long)]
        tenant: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Your contracts (a provider sees those on its GPUs, an admin all), newest first.
    ///
    /// Example: agora contract list
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// One contract.
    ///
    /// Example: agora contract show 3
    Show {
        id: u64,
        #[command(flatten)]
        conn: Conn,
    },
    /// End a contract now: charged for the term served; reserved work beyond what you still hold stops and is requeued.
    ///
    /// Example: agora contract end 3
    End {
        id: u64,
        #[command(flatten)]
        conn: Conn,
    },
}

pub(crate) async fn run(command: ContractCommand) -> anyhow::Result<u8> {
    match command {
        ContractCommand::Create {
            provider,
            model,
            gpus,
            days,
            hours,
            start_ms,
            price,
            tenant,
            conn,
        } => {
            let duration_s = match (days, hours) {
                (Some(d), None) => d.saturating_mul(86_400),
                (None, Some(h)) => h.saturating_mul(3600),
                _ => return Err(anyhow!("give the term with --days or --hours")),
            };
            let req = CreateContract {
                tenant: tenant.map(agora_types::TenantId),
                provider: agora_types::ProviderId(provider),
                model,
                gpus,
                start_ms,
                duration_s,
                price_per_gpu_hour: price,
            };
            let c: ContractView = client(&conn)?.post("/api/v1/contracts", &req).await?;
            print(&conn, &[c], false)
        }
        ContractCommand::List { conn } => {
            let list: Vec<ContractView> = client(&conn)?.get("/api/v1/contracts").await?;
            print(&conn, &list, true)
        }
        ContractCommand::Show { id, conn } => {
            let c: ContractView = client(&conn)?.get(&format!("/api/v1/contracts/{id}")).await?;
            print(&conn, &[c], false)
        }
        ContractCommand::End { id, conn } => {
            let c: ContractView = client(&conn)?
                .post(&format!("/api/v1/contracts/{id}/end"), &serde_json::json!({}))
                .await?;
            print(&conn, &[c], false)
        }
    }
}

/// `--output json` prints the API's document: one contract, or the list.
fn print(conn: &Conn, contracts: &[ContractView], list: bool) -> anyhow::Result<u8> {
    if conn.output == Output::Json {
        return if list {
            print_json(&contracts)
        } else {
            print_json(&contracts[0])
        };
    }
    let mut t = table::new(&[
        "id", "tenant", "provider", "model", "gpus", "price", "term", "state", "charged", "used", "resold", "idle",
        "credited",
    ]);
    for c in contracts {
        let days = (c.end_ms - c.start_ms) as f64 / 86_400_000.0;
        let state = match &c.end_reason {
            Some(r) => format!("{} ({r})", c.state),
            None => c.state.clone(),
        };
        t.add_row(vec![
            c.id.to_string(),
            c.tenant.to_string(),
            c.provider.to_string(),
            c.model.name().to_string(),
            c.gpus.to_string(),
            c.price_per_gpu_hour.to_string(),
            format!("{days:.2} d"),
            state,
            format!("{} of {}", table::money(c.charged), table::money(c.term_cost)),
            c.holding.used_gpus.to_string(),
            c.holding.resold_gpus.to_string(),
            c.holding.idle_gpus.to_string(),
            table::money(c.holding.resale_credited),
        ]);
    }
    println!("{t}");
    Ok(0)
}
