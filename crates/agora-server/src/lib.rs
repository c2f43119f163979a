//! The Agora server: the HTTP API, the control loop that feeds the engine and
//! applies its decisions, and the event-sourced state behind them.
//!
//! Architecture invariant: every state change is an [`events::Event`] written to
//! the store before the request that caused it is answered; the state in memory
//! is always what replaying the log gives.

pub mod api;
pub mod auth;
pub mod config;
pub mod contracts;
pub mod core;
pub mod error;
pub mod events;
pub mod latency;
pub mod ops;
pub mod spot;
pub mod state;

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::ServerConfig;
pub use core::CoreHandle;

use crate::auth::Principal;
use crate::events::Event;

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub core: CoreHandle,
    core_thread: std::thread::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
    shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Tokens created when a data directory is first used by `agora up`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Bootstrap {
    pub admin_token: String,
    pub tenant_token: String,
    pub provider_token: String,
}

impl Server {
    /// Opens (or creates) the store in the data dir, rebuilds the state from its
    /// log and starts serving.
    pub async fn start(cfg: ServerConfig) -> anyhow::Result<Server> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating the data dir {}", cfg.data_dir.display()))?;
        let db = cfg.data_dir.join("agora.db");
        let store = agora_store::SqliteStore::open(&db).with_context(|| format!("opening {}", db.display()))?;
        let started = std::time::Instant::now();
        let ex = core::recover(&store).context("replaying the event log")?;
        tracing::info!(
            events = ex.applied,
            ms = started.elapsed().as_millis() as u64,
            "state rebuilt from the event log"
        );
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let rules = cfg.rules.clone();
        let (core, core_thread) = core::spawn(ex, Box::new(store), cfg);
        core.call(move |txn| {
            if txn.ex.rules != rules || txn.ex.applied == 0 {
                txn.emit(Event::RulesSet { rules, at: txn.now });
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let app = api::app(api::AppState { core: core.clone() });
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = shutdown_rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "http server failed");
            }
        });
        tracing::info!(%addr, "serving");
        Ok(Server {
            addr,
            core,
            core_thread,
            http,
            shutdown,
        })
    }

    /// On a fresh exchange, creates an admin, a funded demo tenant and a local
    /// provider and returns their tokens; on an existing one, returns `None`.
    pub async fn bootstrap(&self, tenant_balance: agora_types::Micros) -> anyhow::Result<Option<Bootstrap>> {
        self.core
            .call(move |txn| -> anyhow::Result<Option<Bootstrap>> {
                if txn.ex.tokens_issued() > 0 {
                    return Ok(None);
                }
                let admin_token = ops::issue_token(txn, Principal::Admin);
                let (_, tenant_token) =
                    ops::create_tenant(txn, "demo", tenant_balance).map_err(|e| anyhow::anyhow!("{e}"))?;
                let (_, provider_token) = ops::create_provider(txn, "local").map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(Some(Bootstrap {
                    admin_token,
                    tenant_token,
                    provider_token,
                }))
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
    }

    /// On a fresh exchange, creates the first admin token and returns it.
    pub async fn bootstrap_admin(&self) -> anyhow::Result<Option<String>> {
        self.core
            .call(|txn| (txn.ex.tokens_issued() == 0).then(|| ops::issue_token(txn, Principal::Admin)))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Stops accepting requests, lets in-flight ones finish, stops the control loop.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.http.await;
        self.core.shutdown();
        let _ = tokio::task::spawn_blocking(move || self.core_thread.join()).await;
    }
}
