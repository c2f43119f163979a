//! The exchange's state machine: everything the server knows, rebuilt by applying
//! the event log in order. [`Exchange::apply`] is deterministic — no clock, no
//! randomness, no IO — so a replay after a crash reproduces ids, leases, the
//! market's indexes and every ledger transfer exactly.
//!
//! Architecture invariant: the only way to change an `Exchange` is `apply`; the
//! control loop (`core`) decides which events to emit, this module only applies them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use agora_engine::lifecycle::{JobState, LeaseState, OrderState};
use agora_engine::market::{Allocation, GangPart, Market, NodeSpec, OrderSpec, Placement, ReservedUse, SiteSpec};
use agora_ledger::{Account, Ledger, TransferId};
use agora_proto::Manifest;
use agora_proto::agent::{InventorySource, PartRef, SiteKind, Window};
use agora_types::{
    AgentId, ContractId, DomainId, GpuModel, JobId, JobKind, LeaseId, Micros, NodeId, OrderId, PricePerGpuHour,
    ProviderId, RegionId, SiteId, TenantId, Tier, UnixMs,
};

use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::contracts::Contract;
use crate::events::{Event, MarketRules, StopReason};

/// How many recent clearing prices are kept per GPU model for `agora market`.
const RECENT_PRICES_PER_MODEL: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provider {
    pub id: ProviderId,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agent {
    pub id: AgentId,
    pub provider: ProviderId,
    pub name: String,
    pub source: InventorySource,
    pub online: bool,
    pub nodes: BTreeSet<NodeId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub agent: AgentId,
    pub provider: ProviderId,
    pub name: String,
    pub model: GpuModel,
    pub gpus: u32,
    pub address: String,
    pub ask: PricePerGpuHour,
    pub site: SiteId,
    pub domain: DomainId,
    /// The fabric domain's name within the provider.
    pub fabric_domain: String,
    /// In its agent's latest registration (a node the agent stopped reporting is never offered).
    pub reported: bool,
    pub online: bool,
}

/// One location of a provider with one power budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Site {
    pub id: SiteId,
    pub provider: ProviderId,
    pub name: String,
    pub region: String,
    pub power_budget_w: Option<u64>,
    pub node_overhead_w: u32,
    #[serde(default)]
    pub kind: SiteKind,
    /// Orbital sites: when they are available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// Whether the site is available now: always for a terrestrial site; for
    /// an orbital one, inside a window (until a grace period before its end).
    #[serde(default = "available")]
    pub window_open: bool,
    /// The exchange's number for `region` (None when the region is empty),
    /// which the latency matrix of cross-provider gangs is keyed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_id: Option<RegionId>,
}

fn available() -> bool {
    true
}

impl Site {
    fn spec(&self) -> SiteSpec {
        SiteSpec {
            id: self.id,
            provider: self.provider,
            power_budget_w: self.power_budget_w,
            node_overhead_w: self.node_overhead_w,
            orbital: self.kind == SiteKind::Orbital,
            region: self.region_id,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub tenant: TenantId,
    pub manifest: Manifest,
    pub state: JobState,
    pub orders: Vec<OrderId>,
    pub submitted_at: UnixMs,
    pub ended_at: Option<UnixMs>,
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub spec: OrderSpec,
    /// Position of this task within its batch (0 for a training gang).
    pub task_index: u32,
    pub state: OrderState,
    /// Leases granted so far, oldest first.
    pub leases: Vec<LeaseId>,
    /// Leases that ended lost (counted against the retry limit).
    pub lost: u32,
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub rank: u32,
    pub node: NodeId,
    pub agent: AgentId,
    pub gpu_indices: Vec<u32>,
    pub started_at: Option<UnixMs>,
    pub exited: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Set when the part failed to start or vanished from its agent.
    pub error: Option<String>,
    pub vanished: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub order: OrderId,
    pub job: JobId,
    pub tenant: TenantId,
    pub provider: ProviderId,
    pub tier: Tier,
    pub model: GpuModel,
    /// What the tenant pays per GPU-hour (zero for reserved work: its contract pays).
    pub price: PricePerGpuHour,
    /// The order's max price, which the spot price is compared with.
    pub bid: PricePerGpuHour,
    /// Reserved capacity the lease occupies; see [`Placement::reserved`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<ReservedUse>,
    /// When the lease is expected to end, from its duration estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<UnixMs>,
    /// Holders whose resale of this spot lease stopped (their contract ended
    /// and no longer backs it), and when: they are credited only up to then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resale_ended: BTreeMap<TenantId, UnixMs>,
    /// Set when the lease is one provider's part of a gang spanning providers
    /// (see [`Lease::gang_leases`]); its parts' ranks start at `first_rank`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gang: Option<GangPart>,
    pub gpus: u32,
    pub parts: Vec<Part>,
    pub state: LeaseState,
    pub assigned_at: UnixMs,
    /// When every part had started: usage is charged from here.
    pub running_at: Option<UnixMs>,
    pub ended_at: Option<UnixMs>,
    pub stop_reason: Option<StopReason>,
    pub stop_requested_at: Option<UnixMs>,
    pub exit_code: Option<i32>,
    pub last_settled_at: Option<UnixMs>,
    /// Set while the tenant could not cover the latest settlement.
    pub funds_short_since: Option<UnixMs>,
}

impl Lease {
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// Every lease of this lease's gang, itself included, in part order: the
    /// parts of a gang spanning providers start in one round, so their ids
    /// are consecutive. Just this lease otherwise.
    pub fn gang_leases(&self) -> impl Iterator<Item = LeaseId> + use<> {
        let (first, parts) = match self.gang {
            Some(g) => (self.id.0 - u64::from(g.index), u64::from(g.parts)),
            None => (self.id.0, 1),
        };
        (first..first + parts).map(LeaseId)
    }

    /// The gang-wide node rank of one of this lease's parts.
    pub fn node_rank(&self, rank: u32) -> u32 {
        self.gang.map_or(0, |g| g.first_rank) + rank
    }

    /// Nodes of the whole gang: this lease's, or all its sibling leases'.
    pub fn gang_nodes(&self) -> u32 {
        self.gang.map_or(self.parts.len() as u32, |g| g.nodes)
    }

    /// What the tenant owes for this lease from its start until `at`.
    pub fn due_until(&self, at: UnixMs) -> Micros {
        match self.running_at {
            Some(start) => self.price.cost(self.gpus, at.seconds_since(start)),
            None => Micros::ZERO,
        }
    }
}

/// The whole state of one exchange.
///
/// It serializes as a snapshot: the records and the ledger. Indexes derived
/// from them — name lookups, the set of live leases, the engine's market — are
/// skipped and rebuilt by [`Exchange::restore`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Exchange {
    pub rules: MarketRules,
    pub tenants: BTreeMap<TenantId, Tenant>,
    pub providers: BTreeMap<ProviderId, Provider>,
    /// Names taken, so that creating the 10,000th provider does not compare
    /// its name with every other.
    #[serde(skip)]
    tenant_names: BTreeSet<String>,
    #[serde(skip)]
    provider_names: BTreeSet<String>,
    /// Token SHA-256 → principal. A BTreeMap so a snapshot's bytes are a function of the state.
    tokens: BTreeMap<String, Principal>,
    pub agents: BTreeMap<AgentId, Agent>,
    #[serde(skip)]
    agent_by_name: BTreeMap<(ProviderId, String), AgentId>,
    pub sites: BTreeMap<SiteId, Site>,
    #[serde(skip)]
    site_by_name: BTreeMap<(ProviderId, String), SiteId>,
    /// Every region name a site ever reported, numbered in the order first seen.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionId>,
    pub nodes: BTreeMap<NodeId, Node>,
    #[serde(skip)]
    node_by_name: BTreeMap<(AgentId, String), NodeId>,
    /// GPUs of online nodes by provider (providers without any are absent):
    /// the capacity that concentration is measured on every round.
    #[serde(skip)]
    online_gpus: BTreeMap<ProviderId, u64>,
    /// Every fabric domain ever reported: its provider and name. Kept (not
    /// derived from today's nodes) so a name keeps its id for good.
    pub domains: BTreeMap<DomainId, (ProviderId, String)>,
    #[serde(skip)]
    domain_by_name: BTreeMap<(ProviderId, String), DomainId>,
    pub jobs: BTreeMap<JobId, Job>,
    pub orders: BTreeMap<OrderId, Order>,
    pub leases: BTreeMap<LeaseId, Lease>,
    /// Leases not yet terminal, for the periodic checks.
    #[serde(skip)]
    pub live_leases: BTreeSet<LeaseId>,
    /// Ended leases that ran, by end time, for fair share's window
    /// ([`Exchange::leases_since`] forgets the oldest).
    #[serde(skip)]
    ended_by_time: BTreeSet<(UnixMs, LeaseId)>,
    /// Per agent, the parts of live leases it runs that have not exited, in
    /// (lease, rank) order: a heartbeat looks at its agent's parts only.
    #[serde(skip)]
    live_parts: BTreeMap<AgentId, BTreeSet<PartRef>>,
    pub ledger: Ledger,
    /// Reservation contracts, by id (ids are sequential).
    #[serde(default)]
    pub contracts: BTreeMap<ContractId, Contract>,
    #[serde(skip)]
    pub market: Market,
    pub recent_prices: BTreeMap<GpuModel, VecDeque<Micros>>,
    /// Fair-share rank per tenant (absent: 0), mirrored into the market.
    pub share_ranks: BTreeMap<TenantId, u32>,
    /// Number of events applied; the log's last seq once replay is done.
    pub applied: u64,
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange::default()
    }

    /// The state as snapshot bytes. Deterministic: the same state gives the same bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the state serializes")
    }

    /// Rebuilds a state from snapshot bytes: the records, then every index
    /// derived from them, the engine's market included.
    pub fn restore(bytes: &[u8]) -> Result<Exchange, serde_json::Error> {
        let mut ex: Exchange = serde_json::from_slice(bytes)?;
        ex.tenant_names = ex.tenants.values().map(|t| t.name.clone()).collect();
        ex.provider_names = ex.providers.values().map(|p| p.name.clone()).collect();
        for a in ex.agents.values() {
            ex.agent_by_name.insert((a.provider, a.name.clone()), a.id);
        }
        for (id, (provider, name)) in &ex.domains {
            ex.domain_by_name.insert((*provider, name.clone()), *id);
        }
        // A snapshot from before regions were numbered: number them now, in site order.
        let unnumbered: Vec<SiteId> = ex
            .sites
            .values()
            .filter(|s| s.region_id.is_none() && !s.region.is_empty())
            .map(|s| s.id)
            .collect();
        for id in unnumbered {
            let region = ex.sites[&id].region.clone();
            let number = ex.region_id(&region);
            ex.sites.get_mut(&id).expect("listed").region_id = number;
        }
        for site in ex.sites.values() {
            ex.site_by_name.insert((site.provider, site.name.clone()), site.id);
            ex.market.upsert_site(site.spec());
        }
        for n in ex.nodes.values() {
            if n.online {
                *ex.online_gpus.entry(n.provider).or_insert(0) += u64::from(n.gpus);
            }
            ex.node_by_name.insert((n.agent, n.name.clone()), n.id);
            ex.market.upsert_node(NodeSpec {
                id: n.id,
                provider: n.provider,
                agent: n.agent,
                model: n.model,
                gpus: n.gpus,
                ask: n.ask,
                site: n.site,
                domain: n.domain,
            });
            ex.market.set_node_online(n.id, n.online && ex.site_open(n.site));
        }
        ex.market.set_policies(ex.rules.policies);
        ex.sync_latency();
        for (tenant, rank) in &ex.share_ranks {
            ex.market.set_share_rank(*tenant, *rank);
        }
        for o in ex.orders.values().filter(|o| o.state == OrderState::Pending) {
            ex.market.add_order(o.spec.clone());
        }
        // Holdings before leases: starting a lease counts its reserved use.
        ex.restore_reservations();
        for l in ex.leases.values().filter(|l| l.running_at.is_some()) {
            if let Some(end) = l.ended_at {
                ex.ended_by_time.insert((end, l.id));
            }
        }
        for l in ex.leases.values().filter(|l| !l.is_terminal()) {
            ex.live_leases.insert(l.id);
            for p in l.parts.iter().filter(|p| !p.exited) {
                ex.live_parts.entry(p.agent).or_default().insert(PartRef {
                    lease: l.id,
                    rank: p.rank,
                });
            }
            let allocations = l
                .parts
                .iter()
                .map(|p| Allocation {
                    node: p.node,
                    gpu_indices: p.gpu_indices.clone(),
                })
                .collect();
            ex.market.start_lease_owned(
                l.id,
                l.tier,
                Placement {
                    order: l.order,
                    tenant: l.tenant,
                    bid: l.bid,
                    provider: l.provider,
                    price: l.price,
                    allocations,
                    reserved: l.reserved.clone(),
                    ends_at: l.ends_at,
                    gang: l.gang,
                },
            );
            if l.state == LeaseState::Stopping {
                ex.market.mark_stopping(l.id);
            }
        }
        Ok(ex)
    }

    /// The parts of live leases an agent runs that have not exited, in (lease, rank) order.
    pub fn live_parts_of(&self, agent: AgentId) -> impl Iterator<Item = (&Lease, &Part)> + '_ {
        self.live_parts.get(&agent).into_iter().flatten().map(|p| {
            let l = &self.leases[&p.lease];
            (l, &l.parts[p.rank as usize])
        })
    }

    pub fn principal_for(&self, token_sha256: &str) -> Option<Principal> {
        self.tokens.get(token_sha256).copied()
    }

    pub fn tokens_issued(&self) -> usize {
        self.tokens.len()
    }

    pub fn next_tenant_id(&self) -> TenantId {
        TenantId(self.tenants.keys().next_back().map_or(1, |t| t.0 + 1))
    }

    pub fn next_provider_id(&self) -> ProviderId {
        ProviderId(self.providers.keys().next_back().map_or(1, |p| p.0 + 1))
    }

    pub fn next_agent_id(&self) -> AgentId {
        AgentId(self.agents.keys().next_back().map_or(1, |a| a.0 + 1))
    }

    pub fn next_node_id(&self) -> NodeId {
        NodeId(self.nodes.keys().next_back().map_or(1, |n| n.0 + 1))
    }

    pub fn next_job_id(&self) -> JobId {
        JobId(self.jobs.keys().next_back().map_or(1, |j| j.0 + 1))
    }

    pub fn next_order_id(&self) -> OrderId {
        OrderId(self.orders.keys().next_back().map_or(1, |o| o.0 + 1))
    }

    pub fn next_lease_id(&self) -> LeaseId {
        LeaseId(self.leases.keys().next_back().map_or(1, |l| l.0 + 1))
    }

    pub fn agent_named(&self, provider: ProviderId, name: &str) -> Option<AgentId> {
        self.agent_by_name.get(&(provider, name.to_string())).copied()
    }

    pub fn site_named(&self, provider: ProviderId, name: &str) -> Option<SiteId> {
        self.site_by_name.get(&(provider, name.to_string())).copied()
    }

    pub fn next_site_id(&self) -> SiteId {
        SiteId(self.sites.keys().next_back().map_or(1, |s| s.0 + 1))
    }

    /// The fabric domain of that name, or the id a new one would get.
    pub fn domain_named(&self, provider: ProviderId, name: &str) -> Result<DomainId, DomainId> {
        match self.domain_by_name.get(&(provider, name.to_string())) {
            Some(d) => Ok(*d),
            None => Err(DomainId(self.domains.keys().next_back().map_or(1, |d| d.0 + 1))),
        }
    }

    pub fn node_named(&self, agent: AgentId, name: &str) -> Option<NodeId> {
        self.node_by_name.get(&(agent, name.to_string())).copied()
    }

    pub fn tenant_funds(&self, tenant: TenantId) -> (Micros, Micros) {
        (
            self.ledger.balance(&Account::TenantAvailable(tenant)),
            self.ledger.balance(&Account::TenantHeld(tenant)),
        )
    }

    /// Money charged so far for a lease (what moved out of escrow to provider and fees).
    pub fn lease_charged(&self, lease: LeaseId) -> Micros {
        self.ledger.hold_of(lease).map_or(Micros::ZERO, |h| h.charged)
    }

    /// Applies one event. Panics on an event that contradicts the state: the
    /// control loop validated it before emitting, so that is a bug or a corrupt log.
    pub fn apply(&mut self, event: &Event) {
        self.applied += 1;
        match event {
            Event::RulesSet { rules, .. } => {
                self.rules = rules.clone();
                self.market.set_policies(rules.policies);
                self.sync_latency();
            }
            Event::TenantCreated { tenant, name, .. } => {
                assert_eq!(*tenant, self.next_tenant_id(), "tenant ids are sequential");
                self.tenant_names.insert(name.clone());
                self.tenants.insert(
                    *tenant,
                    Tenant {
                        id: *tenant,
                        name: name.clone(),
                    },
                );
            }
            Event::ProviderCreated { provider, name, .. } => {
                assert_eq!(*provider, self.next_provider_id(), "provider ids are sequential");
                self.provider_names.insert(name.clone());
                self.providers.insert(
                    *provider,
                    Provider {
                        id: *provider,
                        name: name.clone(),
                    },
                );
            }
            Event::TokenIssued {
                token_sha256,
                principal,
                ..
            } => {
                self.tokens.insert(token_sha256.clone(), *principal);
            }
            Event::ToppedUp {
                tenant,
                amount,
                idempotency_key,
                at,
            } => {
                self.ledger
                    .top_up(
                        TransferId::new(format!("topup:{tenant}:{idempotency_key}")),
                        *tenant,
                        *amount,
                        *at,
                    )
                    .expect("a top-up validated by the control loop applies");
            }
            Event::AgentRegistered {
                agent,
                provider,
                name,
                source,
                nodes,
                ..
            } => {
                let entry = self.agents.entry(*agent).or_insert_with(|| Agent {
                    id: *agent,
                    provider: *provider,
                    name: name.clone(),
                    source: *source,
                    online: true,
                    nodes: BTreeSet::new(),
                });
                entry.online = true;
                entry.source = *source;
                self.agent_by_name.insert((*provider, name.clone()), *agent);
                for node in entry.nodes.clone() {
                    let reported = nodes.contains(&node);
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.reported = reported;
                    }
                    self.set_node_online(node, reported);
                }
            }
            Event::SiteReported {
                site,
                provider,
                name,
                region,
                power_budget_w,
                node_overhead_w,
                kind,
                windows,
                ..
            } => {
                // An orbital site opens by a `SiteWindow` event; a re-reported one keeps its state.
                let window_open = match self.sites.get(site) {
                    Some(old) if *kind == SiteKind::Orbital => old.window_open,
                    _ => *kind == SiteKind::Terrestrial,
                };
                let region_id = self.region_id(region);
                let s = Site {
                    id: *site,
                    provider: *provider,
                    name: name.clone(),
                    region: region.clone(),
                    power_budget_w: *power_budget_w,
                    node_overhead_w: *node_overhead_w,
                    kind: *kind,
                    windows: windows.clone(),
                    window_open,
                    region_id,
                };
                self.market.upsert_site(s.spec());
                self.site_by_name.insert((*provider, name.clone()), *site);
                let was_open = self.sites.get(site).map(|old| old.window_open);
                self.sites.insert(*site, s);
                // A site that became available (or not) by being re-declared takes its nodes along.
                if was_open.is_some_and(|was| was != window_open) {
                    self.sync_site_nodes(*site);
                }
            }
            Event::NodeReported {
                node,
                agent,
                provider,
                name,
                model,
                gpus,
                address,
                ask,
                site,
                domain,
                fabric_domain,
                ..
            } => {
                self.count_online(*node, -1);
                self.nodes.insert(
                    *node,
                    Node {
                        id: *node,
                        agent: *agent,
                        provider: *provider,
                        name: name.clone(),
                        model: *model,
                        gpus: *gpus,
                        address: address.clone(),
                        ask: *ask,
                        site: *site,
                        domain: *domain,
                        fabric_domain: fabric_domain.clone(),
                        reported: true,
                        online: true,
                    },
                );
                self.count_online(*node, 1);
                self.node_by_name.insert((*agent, name.clone()), *node);
                self.domains
                    .entry(*domain)
                    .or_insert_with(|| (*provider, fabric_domain.clone()));
                self.domain_by_name.insert((*provider, fabric_domain.clone()), *domain);
                self.agents
                    .get_mut(agent)
                    .expect("node of a known agent")
                    .nodes
                    .insert(*node);
                self.market.upsert_node(NodeSpec {
                    id: *node,
                    provider: *provider,
                    agent: *agent,
                    model: *model,
                    gpus: *gpus,
                    ask: *ask,
                    site: *site,
                    domain: *domain,
                });
                let open = self.site_open(*site);
                self.market.set_node_online(*node, open);
            }
            Event::SiteWindow { site, open, .. } => {
                self.sites.get_mut(site).expect("known site").window_open = *open;
                self.sync_site_nodes(*site);
            }
            Event::JobSubmitted {
                job,
                tenant,
                manifest,
                first_order,
                at,
            } => self.apply_submit(*job, *tenant, manifest, *first_order, *at),
            Event::CancelRequested { job, at } => self.apply_cancel(*job, *at),
            Event::LeaseStarted {
                lease,
                placement,
                hold,
                at,
            } => self.apply_lease_started(*lease, placement, *hold, *at),
            Event::StopRequested { lease, reason, at } => self.request_stop(*lease, *reason, *at),
            Event::PartStarted { lease, rank, at } => {
                let l = self.leases.get_mut(lease).expect("known lease");
                let part = &mut l.parts[*rank as usize];
                if part.started_at.is_none() && !part.exited {
                    part.started_at = Some(*at);
                }
                if l.running_at.is_none() && l.parts.iter().all(|p| p.started_at.is_some()) {
                    // Events are dated by the agents, so the last to arrive is not always the latest.
                    let all_started = l.parts.iter().filter_map(|p| p.started_at).max().unwrap_or(*at);
                    l.running_at = Some(all_started);
                    l.last_settled_at = Some(all_started);
                    if l.state == LeaseState::Assigned {
                        transition_lease(l, LeaseState::Running);
                    }
                }
                let job = l.job;
                self.refresh_job(job, *at);
            }
            Event::PartExited {
                lease,
                rank,
                exit_code,
                signal,
                at,
            } => {
                self.part_ended(*lease, *rank, *at, |p| {
                    p.exit_code = *exit_code;
                    p.signal = *signal;
                });
            }
            Event::PartStartFailed { lease, rank, error, at } => {
                self.part_ended(*lease, *rank, *at, |p| {
                    p.error = Some(format!("failed to start: {error}"))
                });
            }
            Event::PartVanished { lease, rank, cause, at } => {
                self.part_ended(*lease, *rank, *at, |p| {
                    p.vanished = true;
                    p.error = Some(cause.clone());
                });
            }
            Event::PartNotStarted { lease, rank, at } => self.part_ended(*lease, *rank, *at, |_| {}),
            Event::Settled { lease, at } => self.apply_settle(*lease, *at),
            Event::ContractCreated { contract, .. } => self.apply_contract_created(contract.clone()),
            Event::ContractStarted { contract, at } => self.apply_contract_started(*contract, *at),
            Event::ContractCharged { contract, at } => self.apply_contract_charged(*contract, *at),
            Event::ContractEnded { contract, reason, at } => self.apply_contract_ended(*contract, *reason, *at),
            Event::ShareRanksSet { ranks, .. } => {
                for (tenant, rank) in ranks {
                    if *rank == 0 {
                        self.share_ranks.remove(tenant);
                    } else {
                        self.share_ranks.insert(*tenant, *rank);
                    }
                    self.market.set_share_rank(*tenant, *rank);
                }
            }
            Event::AgentLost { agent, last_seen, .. } => self.apply_agent_lost(*agent, *last_seen),
        }
    }

    /// The number of a region, numbering a new name (and telling the market
    /// the latencies that name completes); None for the empty region.
    fn region_id(&mut self, region: &str) -> Option<RegionId> {
        if region.is_empty() {
            return None;
        }
        if let Some(id) = self.regions.get(region) {
            return Some(*id);
        }
        let id = RegionId(self.regions.len() as u64 + 1);
        self.regions.insert(region.to_string(), id);
        self.sync_latency();
        Some(id)
    }

    /// Gives the market the rules' latency matrix between the regions sites reported.
    fn sync_latency(&mut self) {
        let regions = &self.regions;
        self.market.set_latency(
            self.rules
                .latency
                .iter()
                .filter_map(|l| Some((*regions.get(&l.a)?, *regions.get(&l.b)?, l.ms))),
        );
    }

    /// Marks a node online or offline; the market offers it only while its site is available too.
    fn set_node_online(&mut self, node: NodeId, online: bool) {
        self.count_online(node, -1);
        if let Some(n) = self.nodes.get_mut(&node) {
            n.online = online;
            let site = n.site;
            self.count_online(node, 1);
            let open = self.site_open(site);
            self.market.set_node_online(node, online && open);
        }
    }

    /// Adds (`sign` 1) or takes back (-1) a node's GPUs in the capacity by
    /// provider, if it is online; nothing for an unknown node.
    fn count_online(&mut self, node: NodeId, sign: i8) {
        let Some(n) = self.nodes.get(&node).filter(|n| n.online) else {
            return;
        };
        let gpus = self.online_gpus.entry(n.provider).or_insert(0);
        if sign > 0 {
            *gpus += u64::from(n.gpus);
        } else {
            *gpus -= u64::from(n.gpus);
            if *gpus == 0 {
                self.online_gpus.remove(&n.provider);
            }
        }
    }

    /// The leases that may have run after `from`: those not ended and those
    /// that ran and ended after it. Forgets the leases that ended before
    /// `forget_before` (a later call's `from` must not be earlier).
    pub fn leases_since(&mut self, from: UnixMs, forget_before: UnixMs) -> impl Iterator<Item = &Lease> {
        let kept = self.ended_by_time.split_off(&(forget_before.min(from), LeaseId(0)));
        self.ended_by_time = kept;
        let leases = &self.leases;
        let ended = self
            .ended_by_time
            .range((UnixMs(from.0.saturating_add(1)), LeaseId(0))..)
            .map(|(_, id)| id);
        self.live_leases.iter().chain(ended).map(move |id| &leases[id])
    }

    /// Whether a tenant has this name.
    pub fn tenant_named(&self, name: &str) -> bool {
        self.tenant_names.contains(name)
    }

    /// Whether a provider has this name.
    pub fn provider_named(&self, name: &str) -> bool {
        self.provider_names.contains(name)
    }

    /// GPUs of online nodes by provider; a provider with none is absent.
    pub fn online_gpus(&self) -> &BTreeMap<ProviderId, u64> {
        &self.online_gpus
    }

    /// Tells the market which of a site's nodes it may offer: online ones, while the site is available.
    fn sync_site_nodes(&mut self, site: SiteId) {
        let open = self.site_open(site);
        let nodes: Vec<(NodeId, bool)> = self
            .nodes
            .values()
            .filter(|n| n.site == site)
            .map(|n| (n.id, n.online))
            .collect();
        for (node, online) in nodes {
            self.market.set_node_online(node, online && open);
        }
    }

    /// Whether a site is available now (unknown sites are).
    pub fn site_open(&self, site: SiteId) -> bool {
        self.sites.get(&site).is_none_or(|s| s.window_open)
    }

    fn apply_submit(&mut self, job: JobId, tenant: TenantId, manifest: &Manifest, first_order: OrderId, at: UnixMs) {
        assert_eq!(job, self.next_job_id(), "job ids are sequential");
        assert_eq!(first_order, self.next_order_id(), "order ids are sequential");
        let r = &manifest.resources;
        let (count, nodes) = match manifest.kind {
            JobKind::Training => (1, r.nodes),
            JobKind::Batch => (r.tasks, 1),
            JobKind::Service => (1, 1),
        };
        let mut orders = Vec::with_capacity(count as usize);
        for i in 0..count {
            let id = OrderId(first_order.0 + u64::from(i));
            let spec = OrderSpec {
                id,
                job,
                tenant,
                tier: manifest.tier,
                max_price: manifest.max_price_per_gpu_hour,
                models: r.gpu_models.clone(),
                min_vram_mib: r.min_vram_mib,
                nodes,
                gpus_per_node: r.gpus_per_node,
                duration_estimate_s: manifest.duration_estimate_s,
                checkpointable: manifest.checkpointable,
                max_latency_ms: r.cross_provider_max_latency_ms,
            };
            self.market.add_order(spec.clone());
            self.orders.insert(
                id,
                Order {
                    spec,
                    task_index: i,
                    state: OrderState::Pending,
                    leases: Vec::new(),
                    lost: 0,
                    failure: None,
                },
            );
            orders.push(id);
        }
        self.jobs.insert(
            job,
            Job {
                id: job,
                tenant,
                manifest: manifest.clone(),
                state: JobState::Pending,
                orders,
                submitted_at: at,
                ended_at: None,
                cancel_requested: false,
            },
        );
    }

    fn apply_cancel(&mut self, job: JobId, at: UnixMs) {
        let j = self.jobs.get_mut(&job).expect("known job");
        j.cancel_requested = true;
        let orders = j.orders.clone();
        for order in orders {
            let o = self.orders.get_mut(&order).expect("known order");
            match o.state {
                OrderState::Pending => {
                    transition_order(o, OrderState::Cancelled);
                    self.market.remove_order(order);
                }
                OrderState::Leased => {
                    // The last lease, and its siblings when it is part of a gang spanning providers.
                    let last = &self.leases[o.leases.last().expect("a leased order has a lease")];
                    for lease in last.gang_leases().collect::<Vec<_>>() {
                        self.request_stop(lease, StopReason::Cancelled, at);
                    }
                }
                _ => {}
            }
        }
        self.refresh_job(job, at);
    }

    fn apply_lease_started(&mut self, lease: LeaseId, placement: &Placement, hold: Micros, at: UnixMs) {
        assert_eq!(lease, self.next_lease_id(), "lease ids are sequential");
        let order = self.orders.get_mut(&placement.order).expect("placed order exists");
        match placement.gang {
            // The other parts of a gang spanning providers follow its first one.
            Some(g) if g.index > 0 => assert_eq!(
                order.leases.last(),
                Some(&LeaseId(lease.0 - 1)),
                "parts of a gang start consecutively"
            ),
            _ => transition_order(order, OrderState::Leased),
        }
        order.leases.push(lease);
        let spec = order.spec.clone();
        let parts: Vec<Part> = placement
            .allocations
            .iter()
            .enumerate()
            .map(|(rank, a)| Part {
                rank: rank as u32,
                node: a.node,
                agent: self.nodes[&a.node].agent,
                gpu_indices: a.gpu_indices.clone(),
                started_at: None,
                exited: false,
                exit_code: None,
                signal: None,
                error: None,
                vanished: false,
            })
            .collect();
        let model = self.nodes[&placement.allocations[0].node].model;
        let gpus = parts.iter().map(|p| p.gpu_indices.len() as u32).sum();
        self.ledger
            .hold(lease, spec.tenant, placement.provider, hold, at)
            .expect("the control loop checked the tenant can cover the hold");
        self.market.start_lease(lease, spec.tier, placement);
        let prices = self.recent_prices.entry(model).or_default();
        prices.push_front(placement.price.0);
        prices.truncate(RECENT_PRICES_PER_MODEL);
        self.leases.insert(
            lease,
            Lease {
                id: lease,
                order: spec.id,
                job: spec.job,
                tenant: spec.tenant,
                provider: placement.provider,
                tier: spec.tier,
                model,
                price: placement.price,
                bid: placement.bid,
                reserved: placement.reserved.clone(),
                ends_at: placement.ends_at,
                resale_ended: BTreeMap::new(),
                gang: placement.gang,
                gpus,
                parts,
                state: LeaseState::Assigned,
                assigned_at: at,
                running_at: None,
                ended_at: None,
                stop_reason: None,
                stop_requested_at: None,
                exit_code: None,
                last_settled_at: None,
                funds_short_since: None,
            },
        );
        self.live_leases.insert(lease);
        for p in &self.leases[&lease].parts {
            self.live_parts
                .entry(p.agent)
                .or_default()
                .insert(PartRef { lease, rank: p.rank });
        }
        self.refresh_job(spec.job, at);
    }

    fn request_stop(&mut self, lease: LeaseId, reason: StopReason, at: UnixMs) {
        if self.stop_one(lease, reason, at) {
            self.stop_siblings(lease, Some(reason), at);
        }
    }

    /// Stops one lease (not its siblings); false if it was stopping or over already.
    fn stop_one(&mut self, lease: LeaseId, reason: StopReason, at: UnixMs) -> bool {
        let l = self.leases.get_mut(&lease).expect("known lease");
        if l.is_terminal() || l.state == LeaseState::Stopping {
            return false;
        }
        transition_lease(l, LeaseState::Stopping);
        l.stop_reason = Some(reason);
        l.stop_requested_at = Some(at);
        self.market.mark_stopping(lease);
        true
    }

    /// A gang spanning providers goes on only whole: when one of its leases
    /// is stopped or ends without success, the others are stopped too —
    /// for the same reason when it concerns the whole gang (cancel,
    /// preemption), else because a peer failed.
    fn stop_siblings(&mut self, lease: LeaseId, reason: Option<StopReason>, at: UnixMs) {
        let l = &self.leases[&lease];
        if l.gang.is_none() {
            return;
        }
        let mirrored = match reason {
            Some(
                r @ (StopReason::Cancelled
                | StopReason::Preempted
                | StopReason::ReservationEnded
                | StopReason::WindowClosing),
            ) => r,
            Some(StopReason::InsufficientFunds | StopReason::PeerFailed) | None => StopReason::PeerFailed,
        };
        // One flat pass: a gang may have thousands of parts.
        for sibling in l.gang_leases().filter(|s| *s != lease).collect::<Vec<_>>() {
            self.stop_one(sibling, mirrored, at);
        }
    }

    /// Marks one part ended; when it was the last, ends the lease.
    fn part_ended(&mut self, lease: LeaseId, rank: u32, at: UnixMs, update: impl FnOnce(&mut Part)) {
        let l = self.leases.get_mut(&lease).expect("known lease");
        if l.is_terminal() {
            return;
        }
        let part = &mut l.parts[rank as usize];
        if part.exited {
            return;
        }
        part.exited = true;
        let agent = part.agent;
        update(part);
        if let Some(parts) = self.live_parts.get_mut(&agent) {
            parts.remove(&PartRef { lease, rank });
            if parts.is_empty() {
                self.live_parts.remove(&agent);
            }
        }
        let l = self.leases.get_mut(&lease).expect("known lease");
        let part = &l.parts[rank as usize];
        let failed = part.vanished || part.error.is_some() || part.exit_code != Some(0);
        if l.parts.iter().all(|p| p.exited) {
            self.end_lease(lease, at);
        } else if failed && l.state != LeaseState::Stopping {
            // A gang cannot go on without one of its members.
            self.request_stop(lease, StopReason::PeerFailed, at);
        }
    }

    fn end_lease(&mut self, lease: LeaseId, at: UnixMs) {
        let fee_bps = self.rules.fee_bps;
        let l = self.leases.get_mut(&lease).expect("known lease");
        let all_ok = l.parts.iter().all(|p| p.exit_code == Some(0) && p.error.is_none());
        let final_state = if l.parts.iter().any(|p| p.vanished) {
            LeaseState::Lost
        } else if all_ok && l.running_at.is_some() {
            LeaseState::Succeeded
        } else {
            match l.stop_reason {
                Some(StopReason::Cancelled) => LeaseState::Cancelled,
                Some(StopReason::Preempted | StopReason::ReservationEnded | StopReason::WindowClosing) => {
                    LeaseState::Preempted
                }
                Some(StopReason::InsufficientFunds) | Some(StopReason::PeerFailed) | None => LeaseState::Failed,
            }
        };
        transition_lease(l, final_state);
        l.ended_at = Some(at);
        if l.running_at.is_some() {
            self.ended_by_time.insert((at, lease));
        }
        l.exit_code = l.parts.iter().filter_map(|p| p.exit_code).find(|c| *c != 0);
        let due = l.due_until(at);
        let (order, job) = (l.order, l.job);
        self.live_leases.remove(&lease);
        self.market.end_lease(lease);
        // Settle what was delivered, then return the rest of the escrow. A
        // shortfall here is absorbed: the lease has ended and cannot be stopped
        // earlier than it was; the settlement charges what the tenant had.
        self.ledger
            .settle(lease, due, fee_bps, at)
            .expect("settling a known hold");
        self.credit_resales(lease, at);
        self.ledger.release(lease, at).expect("releasing a known hold");

        if final_state != LeaseState::Succeeded {
            let reason = self.leases[&lease].stop_reason;
            self.stop_siblings(lease, reason, at);
        }
        // A gang spanning providers settles its order once its last lease ends.
        let (final_state, lease) = match self.gang_outcome(lease) {
            Some(outcome) => outcome,
            None => {
                self.refresh_job(job, at);
                return;
            }
        };

        let max_retries = self.rules.max_retries;
        let cancel_requested = self.jobs[&job].cancel_requested;
        let o = self.orders.get_mut(&order).expect("known order");
        let next = match final_state {
            LeaseState::Succeeded => OrderState::Done,
            LeaseState::Cancelled => OrderState::Cancelled,
            _ if cancel_requested => OrderState::Cancelled,
            LeaseState::Preempted => OrderState::Pending,
            LeaseState::Lost => {
                o.lost += 1;
                if o.lost > max_retries {
                    o.failure = Some(format!("lost {} times (retry limit {max_retries})", o.lost));
                    OrderState::Failed
                } else {
                    OrderState::Pending
                }
            }
            _ => {
                let l = &self.leases[&lease];
                o.failure = Some(match (l.stop_reason, l.exit_code) {
                    (Some(StopReason::InsufficientFunds), _) => {
                        "insufficient_funds: the tenant's balance ran out".to_string()
                    }
                    (_, Some(code)) => format!("exited with code {code}"),
                    _ => l
                        .parts
                        .iter()
                        .find_map(|p| p.error.clone())
                        .unwrap_or_else(|| "ended by a signal".to_string()),
                });
                OrderState::Failed
            }
        };
        transition_order(o, next);
        if next == OrderState::Pending {
            self.market.add_order(o.spec.clone());
        }
        self.refresh_job(job, at);
    }

    /// What the order of an ended lease became, as one lease's final state and
    /// the lease that explains it; None while another lease of its gang runs.
    /// For a gang spanning providers: succeeded if every lease did; else
    /// cancelled, lost, preempted, failed — the first that any lease was.
    fn gang_outcome(&self, lease: LeaseId) -> Option<(LeaseState, LeaseId)> {
        let l = &self.leases[&lease];
        if l.gang.is_none() {
            return Some((l.state, lease));
        }
        let gang: Vec<&Lease> = l.gang_leases().map(|id| &self.leases[&id]).collect();
        if !gang.iter().all(|s| s.is_terminal()) {
            return None;
        }
        let first = |state: LeaseState| gang.iter().find(|s| s.state == state).map(|s| (state, s.id));
        let failed = || {
            // The lease whose failure names the cause: an exit code, then a shortfall, then a part's error.
            let cause = gang.iter().filter(|s| s.state == LeaseState::Failed).min_by_key(|s| {
                (
                    // As for one lease: a shortfall first; a part stopped for its peers last.
                    s.stop_reason != Some(StopReason::InsufficientFunds),
                    s.stop_reason == Some(StopReason::PeerFailed),
                    s.exit_code.is_none(),
                    !s.parts.iter().any(|p| p.error.is_some()),
                    s.id,
                )
            })?;
            Some((LeaseState::Failed, cause.id))
        };
        first(LeaseState::Cancelled)
            .or_else(|| first(LeaseState::Lost))
            .or_else(|| first(LeaseState::Preempted))
            .or_else(failed)
            .or(Some((LeaseState::Succeeded, lease)))
    }

    fn apply_settle(&mut self, lease: LeaseId, at: UnixMs) {
        let fee_bps = self.rules.fee_bps;
        let l = self.leases.get_mut(&lease).expect("known lease");
        if l.is_terminal() {
            return;
        }
        let due = l.due_until(at);
        let outcome = self
            .ledger
            .settle(lease, due, fee_bps, at)
            .expect("settling a known hold");
        l.last_settled_at = Some(at);
        if outcome.short_by > Micros::ZERO {
            l.funds_short_since.get_or_insert(at);
        } else {
            l.funds_short_since = None;
        }
        self.credit_resales(lease, at);
    }

    /// Ends the lost agent's parts as of `last_seen`: nothing after it is charged.
    fn apply_agent_lost(&mut self, agent: AgentId, last_seen: UnixMs) {
        let a = self.agents.get_mut(&agent).expect("known agent");
        a.online = false;
        for node in a.nodes.clone() {
            self.set_node_online(node, false);
        }
        let affected: Vec<(LeaseId, u32)> = self
            .live_parts
            .get(&agent)
            .map(|parts| parts.iter().map(|p| (p.lease, p.rank)).collect())
            .unwrap_or_default();
        for (lease, rank) in affected {
            self.part_ended(lease, rank, last_seen, |p| {
                p.vanished = true;
                p.error = Some("its agent stopped answering".into());
            });
        }
    }

    /// Recomputes a job's state from its orders and records the transition.
    fn refresh_job(&mut self, job: JobId, at: UnixMs) {
        let j = self.jobs.get_mut(&job).expect("known job");
        let states: Vec<OrderState> = j.orders.iter().map(|o| self.orders[o].state).collect();
        let all_terminal = states.iter().all(|s| s.is_terminal());
        let next = if all_terminal {
            if states.iter().all(|s| *s == OrderState::Done) {
                JobState::Succeeded
            } else if states.contains(&OrderState::Failed) {
                JobState::Failed
            } else {
                JobState::Cancelled
            }
        } else if states.contains(&OrderState::Leased)
            || (j.state == JobState::Running && states.contains(&OrderState::Done))
        {
            JobState::Running
        } else {
            JobState::Pending
        };
        if next != j.state {
            agora_engine::lifecycle::check_job_transition(j.state, next).unwrap_or_else(|e| panic!("job {job}: {e}"));
            j.state = next;
            if next.is_terminal() {
                j.ended_at = Some(at);
            }
        }
    }
}

fn transition_lease(l: &mut Lease, to: LeaseState) {
    agora_engine::lifecycle::check_lease_transition(l.state, to).unwrap_or_else(|e| panic!("lease {}: {e}", l.id));
    l.state = to;
}

fn transition_order(o: &mut Order, to: OrderState) {
    agora_engine::lifecycle::check_order_transition(o.state, to).unwrap_or_else(|e| panic!("order {}: {e}", o.spec.id));
    o.state = to;
}
