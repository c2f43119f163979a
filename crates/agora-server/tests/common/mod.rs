//! Helpers for driving the control loop in-process: a simulated agent and
//! shortcuts to the operations.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::time::Duration;

use agora_proto::Manifest;
use agora_proto::agent::{
    Heartbeat, InventorySource, LaunchSpec, NodeReport, PartEvent, PartRef, RegisterAgent, SiteReport,
};
use agora_server::core::CoreHandle;
use agora_server::ops;
use agora_types::{AgentId, GpuModel, JobId, Micros, ProviderId, TenantId};

/// An agent simulated in the test: it "runs" whatever it is told and reports it.
pub struct FakeAgent {
    pub id: AgentId,
    pub provider: ProviderId,
    pub running: BTreeSet<PartRef>,
    pub events: Vec<PartEvent>,
    /// Every launch the exchange asked for, oldest first.
    pub launched: Vec<LaunchSpec>,
}

impl FakeAgent {
    pub async fn beat(&mut self, core: &CoreHandle) {
        let hb = Heartbeat {
            agent_id: self.id,
            running: self.running.iter().copied().collect(),
            events: std::mem::take(&mut self.events),
            event_ages_ms: vec![],
            more_events: false,
            stopped_by_agent: vec![],
            leaving: false,
            logs: vec![],
        };
        let provider = self.provider;
        let resp = core
            .call(move |t| ops::heartbeat(t, provider, hb))
            .await
            .unwrap()
            .unwrap();
        for s in resp.start {
            if self.running.insert(s.part) {
                self.events.push(PartEvent::Started { part: s.part });
                self.launched.push(s);
            }
        }
        for stop in resp.stop {
            if self.running.remove(&stop.part) {
                self.events.push(PartEvent::Exited {
                    part: stop.part,
                    exit_code: None,
                    signal: Some(15),
                });
            }
        }
    }

    pub fn exit_all(&mut self, code: i32) {
        for part in std::mem::take(&mut self.running) {
            self.events.push(PartEvent::Exited {
                part,
                exit_code: Some(code),
                signal: None,
            });
        }
    }
}

pub fn manifest(yaml: &str) -> Manifest {
    Manifest::from_yaml(yaml).unwrap()
}

pub async fn submit(core: &CoreHandle, tenant: TenantId, yaml: &str) -> JobId {
    let m = manifest(yaml);
    core.call(move |t| ops::submit(t, tenant, m)).await.unwrap().unwrap()
}

/// A job's state and pending reason, as the API shows them.
pub async fn job_state(core: &CoreHandle, job: JobId) -> (String, Option<String>) {
    core.call(move |t| {
        let v = ops::job_view(t, job);
        (v.state, v.reason)
    })
    .await
    .unwrap()
}

/// Submits several manifests in one step of the control loop, so no clearing
/// round runs between them.
pub async fn submit_together<const N: usize>(core: &CoreHandle, tenant: TenantId, yamls: [&str; N]) -> [JobId; N] {
    let manifests = yamls.map(manifest);
    core.call(move |t| manifests.map(|m| ops::submit(t, tenant, m).unwrap()))
        .await
        .unwrap()
}

pub async fn rounds() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// Registers a simulated agent with one node of `gpus` GPUs at `ask` per GPU-hour.
pub async fn register(core: &CoreHandle, provider: ProviderId, name: &str, gpus: u32, ask: Micros) -> FakeAgent {
    register_with(core, provider, name, gpus, ask, None).await
}

/// [`register`] with the node at a site of the agent in `region`, when given.
pub async fn register_with(
    core: &CoreHandle,
    provider: ProviderId,
    name: &str,
    gpus: u32,
    ask: Micros,
    region: Option<&str>,
) -> FakeAgent {
    let sites = region
        .map(|region| SiteReport {
            name: format!("{name}-site"),
            region: region.into(),
            power_budget_kw: None,
            node_overhead_w: 0,
            kind: Default::default(),
            windows: vec![],
        })
        .into_iter()
        .collect();
    let reg = RegisterAgent {
        name: name.into(),
        inventory_source: InventorySource::Declared,
        sites,
        nodes: vec![NodeReport {
            name: "n0".into(),
            gpu_model: GpuModel::resolve("h100").unwrap(),
            gpus,
            address: format!("{name}.example"),
            ask_micros_per_gpu_hour: ask,
            site: region.map(|_| format!("{name}-site")),
            fabric_domain: None,
        }],
    };
    let r = core
        .call(move |t| ops::register_agent(t, provider, reg))
        .await
        .unwrap()
        .unwrap();
    FakeAgent {
        id: r.agent_id,
        provider,
        running: BTreeSet::new(),
        events: vec![],
        launched: vec![],
    }
}
