//! Market scenarios: who provides, who buys, what happens when — the YAML
//! documents `agora sim SCENARIO.yaml` runs (see [`crate::market`]).
//!
//! ```yaml
//! name: small-market
//! seed: 1                      # default 1; `--seed` overrides
//! duration: 2d                 # virtual time simulated
//! round: 60s                   # clearing rounds every … (default 60s)
//! metrics_every: 1h            # one time-series row every … (default 1h)
//! fee_bps: 500                 # the exchange's fee (default 500)
//! policies: default            # default | off: the market-health policies
//! snapshot_every_events: 100000   # the server's snapshots (a restart replays from the latest)
//! latency:                     # optional, for gangs that span providers
//!   - [eu-west, eu-central, 12]
//! providers:                   # groups of providers alike
//!   - name: homelab
//!     count: 100               # providers in the group (default 1)
//!     regions: [eu-west, us-east]   # taken round-robin by the group's providers
//!     gpu_model: rtx4090       # catalog name or alias
//!     nodes: 1                 # per provider (default 1)
//!     gpus_per_node: 2
//!     nodes_per_domain: 32     # fabric domain size (default 32)
//!     price: {min: 0.30, max: 0.45}  # ask per GPU-hour, uniform per provider (or one number)
//!     joins_at: 0              # when the group's providers join (default 0)
//!     leaves_at: 30d           # optional: they leave (their work is requeued)
//!     agent_mtbf: 30d          # optional: each agent's host fails after an exponential
//!                              # time of this mean: its processes die, it is silent
//!     agent_repair: 1h         # for this long (default 1h, at least 3 rounds), then registers again
//!     node_mtbf: 90d           # optional: each node fails alone after an exponential time
//!                              # of this mean: its processes die, its agent reports it gone
//!     node_repair: 4h          # for this long (default 1h, at least a round), then reports it again
//! tenants:
//!   - name: small-lab
//!     count: 20
//!     budget: 5000             # per tenant, in currency units
//!     arrival_every: 2h        # mean time between a tenant's jobs (exponential)
//!     gpus: [1, 2, 4, 8]       # job sizes, each equally likely
//!     gpus_per_node: 8         # larger jobs are gangs of whole nodes of this many (default 8)
//!     duration: {min: 10m, max: 12h}   # log-uniform
//!     tier: on-demand          # on-demand | spot | reserved (with a contract; default on-demand)
//!     max_price: 3.00          # the bid per GPU-hour
//!     gpu_models: [h100]       # optional; default any model
//!     cross_provider_max_latency_ms: 10   # optional: gangs may span providers this close
//! events:                      # optional, in time order
//!   - {at: 1d, policies: off}
//!   - {at: 1d12h, region_outage: {region: eu-west, for: 2h}}
//!   - {at: 2d, price_change: {group: homelab, factor: 0.8}}
//!   - {at: 2d6h, server_restart: true}   # crash; rebuild from the event log
//!   - {at: 3d, partition: {group: cluster, for: 30m}}   # the group's agents are cut
//!     # off from the exchange; their processes keep running and report on return
//! contracts:                   # optional: reservations (compute as a service)
//!   - {tenant_group: big-lab, provider_group: cluster, gpus: 64, at: 6h, for: 1d, price: 2.00}
//!     # the group's first tenant reserves the group's first provider's GPUs;
//!     # its `tier: reserved` jobs run there, idle reserved GPUs sell as spot
//! max_reserved_share_bps: 9000 # optional: the most of a model contracts may reserve
//! ```
//!
//! Durations are whole seconds or `90s`, `30m`, `2h`, `1h30m`, `1d` (times
//! such as `at:` also take `0`). Unknown fields are errors naming the field.

use std::collections::BTreeMap;
use std::fmt;

use agora_types::{GpuModel, Micros, Tier};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The most providers, tenants or events a scenario may declare in all.
pub const MAX_ENTITIES: u64 = 1_000_000;
/// The longest scenario, in seconds of virtual time (a year).
pub const MAX_DURATION_S: u64 = 365 * 86_400;

#[derive(Debug, Error)]
pub enum ScenarioError {
    #[error("scenario: {0}")]
    Parse(String),
    #[error("scenario: {field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Virtual time in seconds: an integer, or a duration such as `1d12h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
#[serde(transparent)]
pub struct Secs(pub u64);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secs, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("whole seconds or a duration such as 90s, 30m, 2h, 1h30m or 1d")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                Ok(Secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                u64::try_from(v)
                    .map(Secs)
                    .map_err(|_| E::custom("must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secs, E> {
                if v == "0" {
                    return Ok(Secs(0));
                }
                agora_proto::manifest::parse_duration(v).map(Secs).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Money in currency units, exact to the micro: `2.5`, `"2.50"` or `3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Money(pub Micros);

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount such as 2.50")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                // The shortest text that reads back as this number: what was written.
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                Micros::parse_decimal(v).map(Money).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A price: one number, or a range each provider draws from uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PriceRange {
    Fixed(Money),
    Range { min: Money, max: Money },
}

impl PriceRange {
    pub fn bounds(self) -> (Micros, Micros) {
        match self {
            PriceRange::Fixed(m) => (m.0, m.0),
            PriceRange::Range { min, max } => (min.0, max.0),
        }
    }
}

/// Job durations, drawn log-uniformly between `min` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DurationRange {
    pub min: Secs,
    pub max: Secs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyChoice {
    /// The exchange's documented defaults (see `MarketRules::default`).
    #[default]
    Default,
    /// No provider share cap and no small-tenant floor.
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderGroup {
    pub name: String,
    #[serde(default = "one")]
    pub count: u32,
    pub regions: Vec<String>,
    pub gpu_model: String,
    #[serde(default = "one")]
    pub nodes: u32,
    pub gpus_per_node: u32,
    #[serde(default = "thirty_two")]
    pub nodes_per_domain: u32,
    pub price: PriceRange,
    #[serde(default)]
    pub joins_at: Secs,
    #[serde(default)]
    pub leaves_at: Option<Secs>,
    /// Mean time between failures of each agent's host (exponential); none: never.
    #[serde(default)]
    pub agent_mtbf: Option<Secs>,
    /// How long a failed host stays down before its agent registers again.
    #[serde(default = "hour")]
    pub agent_repair: Secs,
    /// Mean time between failures of one node (exponential), inside a
    /// running agent: the node's processes die and the agent registers
    /// again without it. None: nodes fail only with their agent's host.
    #[serde(default)]
    pub node_mtbf: Option<Secs>,
    /// How long a failed node stays out before its agent reports it again.
    #[serde(default = "hour")]
    pub node_repair: Secs,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantGroup {
    pub name: String,
    #[serde(default = "one")]
    pub count: u32,
    pub budget: Money,
    pub arrival_every: Secs,
    pub gpus: Vec<u32>,
    #[serde(default = "eight")]
    pub gpus_per_node: u32,
    pub duration: DurationRange,
    #[serde(default = "on_demand")]
    pub tier: Tier,
    pub max_price: Money,
    #[serde(default)]
    pub gpu_models: Vec<String>,
    /// Gangs may span providers whose regions are at most this far apart
    /// (see the scenario's `latency`); absent: one provider per gang.
    #[serde(default)]
    pub cross_provider_max_latency_ms: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionOutage {
    pub region: String,
    #[serde(rename = "for")]
    pub lasts: Secs,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceChange {
    pub group: String,
    /// Every ask of the group is multiplied by this (`0.8`: 20 % cheaper).
    pub factor: f64,
}

/// A provider group's agents lose the exchange for a while: their processes
/// keep running, and what happened meanwhile is reported when they return.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub group: String,
    #[serde(rename = "for")]
    pub lasts: Secs,
}

/// Something that happens at a point of the scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimedEvent {
    pub at: Secs,
    #[serde(default)]
    pub policies: Option<PolicyChoice>,
    #[serde(default)]
    pub region_outage: Option<RegionOutage>,
    #[serde(default)]
    pub price_change: Option<PriceChange>,
    #[serde(default)]
    pub partition: Option<Partition>,
    /// `true`: the server crashes and restarts from its event log.
    #[serde(default)]
    pub server_restart: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "one_u64")]
    pub seed: u64,
    pub duration: Secs,
    #[serde(default = "sixty")]
    pub round: Secs,
    #[serde(default = "hour")]
    pub metrics_every: Secs,
    #[serde(default = "fee")]
    pub fee_bps: u32,
    #[serde(default)]
    pub policies: PolicyChoice,
    /// The server writes a snapshot after this many events, so a restart
    /// replays the latest snapshot and the events after it.
    #[serde(default = "snapshot_every")]
    pub snapshot_every_events: u64,
    #[serde(default)]
    pub latency: Vec<(String, String, u32)>,
    pub providers: Vec<ProviderGroup>,
    pub tenants: Vec<TenantGroup>,
    #[serde(default)]
    pub events: Vec<TimedEvent>,
    /// Reservation contracts (compute as a service), recorded by the exchange's admin.
    #[serde(default)]
    pub contracts: Vec<ContractSpec>,
    /// The most of a GPU model contracts may reserve, in basis points (the server's default: 8000).
    #[serde(default)]
    pub max_reserved_share_bps: Option<u32>,
}

/// A reservation: the first tenant of `tenant_group` reserves `gpus` of the
/// first provider of `provider_group` (its model) from `at` for `for`, at a
/// fixed price per GPU-hour, charged whether used or not. The tenant's
/// `tier: reserved` jobs run there; idle reserved GPUs are sold as spot.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContractSpec {
    pub tenant_group: String,
    pub provider_group: String,
    pub gpus: u32,
    pub at: Secs,
    #[serde(rename = "for")]
    pub lasts: Secs,
    pub price: Money,
}

fn one() -> u32 {
    1
}
fn one_u64() -> u64 {
    1
}
fn eight() -> u32 {
    8
}
fn thirty_two() -> u32 {
    32
}
fn sixty() -> Secs {
    Secs(60)
}
fn hour() -> Secs {
    Secs(3600)
}
fn snapshot_every() -> u64 {
    100_000
}
fn fee() -> u32 {
    500
}
fn on_demand() -> Tier {
    Tier::OnDemand
}

impl Scenario {
    /// Parses and validates a scenario document.
    pub fn from_yaml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = serde_saphyr::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Checks what the types do not: ranges, names, references, sizes.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.duration.0 == 0 || self.duration.0 > MAX_DURATION_S {
            return Err(invalid("duration", "must be more than 0 and at most 365 days"));
        }
        if self.round.0 == 0 || self.round.0 > self.duration.0 {
            return Err(invalid("round", "must be more than 0 and at most the duration"));
        }
        if self.metrics_every.0 < self.round.0 {
            return Err(invalid("metrics_every", "must be at least one round"));
        }
        if self.snapshot_every_events == 0 {
            return Err(invalid("snapshot_every_events", "must be at least 1"));
        }
        if self.fee_bps > 10_000 {
            return Err(invalid("fee_bps", "must be at most 10000"));
        }
        if self.providers.is_empty() {
            return Err(invalid("providers", "must list at least one group"));
        }
        let mut entities: u64 = 0;
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let f = |name: &str| format!("providers[{i}].{name}");
            check_name(&p.name).map_err(|m| invalid(f("name"), m))?;
            if !names.insert(p.name.clone()) {
                return Err(invalid(f("name"), format!("`{}` names two groups", p.name)));
            }
            if p.count == 0 {
                return Err(invalid(f("count"), "must be at least 1"));
            }
            if p.agent_mtbf.is_some_and(|m| m.0 < self.round.0) {
                return Err(invalid(f("agent_mtbf"), "must be at least one round"));
            }
            // The exchange loses a silent agent after 3 rounds; a host back
            // sooner would look as if it never failed, its downtime as work.
            if p.agent_repair.0 < 3 * self.round.0 {
                return Err(invalid(
                    f("agent_repair"),
                    "must be at least 3 rounds (the agents' timeout)",
                ));
            }
            if p.node_mtbf.is_some_and(|m| m.0 < self.round.0) {
                return Err(invalid(f("node_mtbf"), "must be at least one round"));
            }
            if p.node_repair.0 < self.round.0 {
                return Err(invalid(f("node_repair"), "must be at least one round"));
            }
            if p.regions.is_empty() || p.regions.iter().any(|r| check_name(r).is_err()) {
                return Err(invalid(f("regions"), "must list region names ([A-Za-z0-9._-], 1..=64)"));
            }
            GpuModel::resolve(&p.gpu_model).map_err(|e| invalid(f("gpu_model"), e.to_string()))?;
            if p.nodes == 0 || p.gpus_per_node == 0 || p.gpus_per_node > 64 || p.nodes_per_domain == 0 {
                return Err(invalid(
                    f("nodes"),
                    "nodes and nodes_per_domain must be at least 1, gpus_per_node 1..=64",
                ));
            }
            let (min, max) = p.price.bounds();
            if min <= Micros::ZERO || max < min {
                return Err(invalid(f("price"), "must be more than 0, with min ≤ max"));
            }
            if p.leaves_at.is_some_and(|l| l <= p.joins_at) {
                return Err(invalid(f("leaves_at"), "must be after joins_at"));
            }
            entities += u64::from(p.count) * u64::from(p.nodes);
        }
        if self.tenants.is_empty() {
            return Err(invalid("tenants", "must list at least one group"));
        }
        for (i, t) in self.tenants.iter().enumerate() {
            let f = |name: &str| format!("tenants[{i}].{name}");
            check_name(&t.name).map_err(|m| invalid(f("name"), m))?;
            if !names.insert(t.name.clone()) {
                return Err(invalid(f("name"), format!("`{}` names two groups", t.name)));
            }
            if t.count == 0 {
                return Err(invalid(f("count"), "must be at least 1"));
            }
            if t.arrival_every.0 == 0 {
                return Err(invalid(f("arrival_every"), "must be more than 0"));
            }
            if t.gpus.is_empty() || t.gpus.iter().any(|g| *g == 0 || *g > 32_768) {
                return Err(invalid(f("gpus"), "must list job sizes of 1..=32768 GPUs"));
            }
            if t.gpus_per_node == 0 || t.gpus_per_node > 64 {
                return Err(invalid(f("gpus_per_node"), "must be 1..=64"));
            }
            if t.duration.min.0 == 0 || t.duration.max < t.duration.min {
                return Err(invalid(f("duration"), "min must be more than 0 and at most max"));
            }
            if t.tier == Tier::Reserved && !self.contracts.iter().any(|c| c.tenant_group == t.name) {
                return Err(invalid(
                    f("tier"),
                    "reserved needs a contract for the group (see `contracts`)",
                ));
            }
            if t.max_price.0 <= Micros::ZERO || t.budget.0 < Micros::ZERO {
                return Err(invalid(
                    f("max_price"),
                    "max_price must be more than 0, budget at least 0",
                ));
            }
            if t.cross_provider_max_latency_ms.is_some_and(|ms| ms == 0 || ms > 1000) {
                return Err(invalid(f("cross_provider_max_latency_ms"), "must be 1..=1000"));
            }
            for (j, m) in t.gpu_models.iter().enumerate() {
                GpuModel::resolve(m).map_err(|e| invalid(format!("tenants[{i}].gpu_models[{j}]"), e.to_string()))?;
            }
            entities += u64::from(t.count);
        }
        for (i, e) in self.events.iter().enumerate() {
            let f = |name: &str| format!("events[{i}].{name}");
            let kinds = usize::from(e.policies.is_some())
                + usize::from(e.region_outage.is_some())
                + usize::from(e.price_change.is_some())
                + usize::from(e.partition.is_some())
                + usize::from(e.server_restart);
            if kinds != 1 {
                return Err(invalid(
                    format!("events[{i}]"),
                    "must say exactly one of policies, region_outage, price_change, partition, server_restart",
                ));
            }
            if let Some(p) = &e.partition {
                if !self.providers.iter().any(|g| g.name == p.group) {
                    return Err(invalid(
                        f("partition.group"),
                        format!("no provider group `{}`", p.group),
                    ));
                }
                if p.lasts.0 == 0 {
                    return Err(invalid(f("partition.for"), "must be more than 0"));
                }
            }
            if let Some(o) = &e.region_outage
                && o.lasts.0 < 3 * self.round.0
            {
                return Err(invalid(
                    f("region_outage.for"),
                    "must be at least 3 rounds (the agents' timeout)",
                ));
            }
            if let Some(c) = &e.price_change {
                if !self.providers.iter().any(|p| p.name == c.group) {
                    return Err(invalid(
                        f("price_change.group"),
                        format!("no provider group `{}`", c.group),
                    ));
                }
                if !(c.factor.is_finite() && c.factor > 0.0 && c.factor <= 100.0) {
                    return Err(invalid(f("price_change.factor"), "must be more than 0 and at most 100"));
                }
            }
            if i > 0 && e.at < self.events[i - 1].at {
                return Err(invalid(f("at"), "events must be in time order"));
            }
        }
        entities += self.events.len() as u64;
        for (i, c) in self.contracts.iter().enumerate() {
            let f = |name: &str| format!("contracts[{i}].{name}");
            if !self.tenants.iter().any(|t| t.name == c.tenant_group) {
                return Err(invalid(
                    f("tenant_group"),
                    format!("no tenant group `{}`", c.tenant_group),
                ));
            }
            let Some(p) = self.providers.iter().find(|p| p.name == c.provider_group) else {
                return Err(invalid(
                    f("provider_group"),
                    format!("no provider group `{}`", c.provider_group),
                ));
            };
            if c.at < p.joins_at {
                return Err(invalid(f("at"), "must be once the provider group has joined"));
            }
            if c.gpus == 0 || u64::from(c.gpus) > u64::from(p.nodes) * u64::from(p.gpus_per_node) {
                return Err(invalid(f("gpus"), "must be 1 to the GPUs of one provider of the group"));
            }
            if c.lasts.0 == 0 {
                return Err(invalid(f("for"), "must be more than 0"));
            }
            if c.price.0 <= Micros::ZERO {
                return Err(invalid(f("price"), "must be more than 0"));
            }
        }
        if self.max_reserved_share_bps.is_some_and(|b| b == 0 || b > 10_000) {
            return Err(invalid("max_reserved_share_bps", "must be 1..=10000"));
        }
        entities += self.contracts.len() as u64;
        if entities > MAX_ENTITIES {
            return Err(invalid(
                "providers",
                format!("{entities} nodes, tenants and events; at most {MAX_ENTITIES}"),
            ));
        }
        for (i, (a, b, ms)) in self.latency.iter().enumerate() {
            if check_name(a).is_err() || check_name(b).is_err() || *ms > 10_000 {
                return Err(invalid(
                    format!("latency[{i}]"),
                    "must be [region, region, milliseconds ≤ 10000]",
                ));
            }
        }
        Ok(())
    }
}

/// A trace replay as a scenario file (`trace-itp-cluster04.yaml`): a real
/// trace on a fleet of identical nodes, with the timing conventions of the
/// published baselines as settings.
///
/// ```yaml
/// name: trace-itp-cluster04
/// trace:
///   format: ms-itp              # ms-itp | philly | alibaba-2023-pods
///   # fractional: round-up      # alibaba-2023-pods: a pod sharing a GPU gets a whole one, or `reject`
///   file: ../data/traces/ms-itp/cluster04.csv   # relative to the scenario file
///   nodes: 80
///   gpus_per_node: 8
///   policy: las                 # fifo | las (neither reads a job's duration) | srsf
///   las_queues: [3250, 7200, 30000, 100000, 300000]   # GPU-seconds of attained service
///   # srsf: shortest estimated remaining service first, from users' estimates:
///   # each is the real duration times (1 + noise)^u, u uniform in [-1, 1]
///   # estimates: {noise: 0.5, seed: 1}
///   # srsf_queues: [100000, 1000000, 10000000]   # GPU-seconds of estimated remaining service
///   round: 60s                  # decisions at most this often
///   start_cost: {base_s: 7, per_log2_s: 2}   # 7 + 2·(log2 g + 1) s per start or restart
///   checkpoint: {every_rounds: 60, cost_s: 47}
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceScenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub trace: TraceSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    pub format: TraceFormat,
    pub file: String,
    pub nodes: u32,
    pub gpus_per_node: u32,
    /// Alibaba pods sharing one GPU: `round-up` (a whole GPU, the default) or `reject`.
    #[serde(default)]
    pub fractional: crate::traces::Fractional,
    #[serde(default)]
    pub policy: ReplayPolicy,
    #[serde(default = "default_queues")]
    pub las_queues: Vec<u64>,
    /// With `policy: srsf`: thresholds of estimated remaining service, GPU-seconds.
    #[serde(default = "default_srsf_queues")]
    pub srsf_queues: Vec<u64>,
    /// Duration estimates as users would give them (required by `srsf`).
    #[serde(default)]
    pub estimates: Option<EstimateNoise>,
    #[serde(default = "sixty")]
    pub round: Secs,
    #[serde(default = "default_start_cost")]
    pub start_cost: StartCost,
    #[serde(default = "default_checkpoint")]
    pub checkpoint: Checkpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceFormat {
    MsItp,
    Philly,
    /// Alibaba cluster-trace-gpu-v2023 pods (see `traces::parse_alibaba_pods`).
    #[serde(rename = "alibaba-2023-pods")]
    Alibaba2023Pods,
    /// Alibaba cluster-trace-gpu-v2025 inference instances, each replica a
    /// job (see `traces::ServiceTrace::as_jobs`).
    #[serde(rename = "alibaba-2025-instances")]
    Alibaba2025Instances,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayPolicy {
    Fifo,
    #[default]
    Las,
    /// Shortest estimated remaining service first (reads `estimates`).
    Srsf,
}

/// Each job's estimate is its real duration times `(1 + noise)^u`, `u`
/// uniform in [-1, 1], drawn from `seed` (see `replay::estimates`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EstimateNoise {
    pub noise: f64,
    #[serde(default = "seed_one")]
    pub seed: u64,
}

fn seed_one() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartCost {
    pub base_s: f64,
    pub per_log2_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub every_rounds: u64,
    pub cost_s: u64,
}

fn default_queues() -> Vec<u64> {
    vec![3_250, 7_200, 30_000, 100_000, 300_000]
}
fn default_srsf_queues() -> Vec<u64> {
    vec![100_000, 1_000_000, 10_000_000]
}
fn default_start_cost() -> StartCost {
    StartCost {
        base_s: 7.0,
        per_log2_s: 2.0,
    }
}
fn default_checkpoint() -> Checkpoint {
    Checkpoint {
        every_rounds: 60,
        cost_s: 47,
    }
}

impl TraceScenario {
    pub fn from_yaml(text: &str) -> Result<TraceScenario, ScenarioError> {
        let s: TraceScenario = serde_saphyr::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        let t = &s.trace;
        if t.nodes == 0 || t.gpus_per_node == 0 || t.gpus_per_node > 64 {
            return Err(invalid("trace.nodes", "nodes must be at least 1, gpus_per_node 1..=64"));
        }
        if t.round.0 == 0 {
            return Err(invalid("trace.round", "must be more than 0"));
        }
        if t.las_queues.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid("trace.las_queues", "must be increasing"));
        }
        if t.srsf_queues.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid("trace.srsf_queues", "must be increasing"));
        }
        match t.estimates {
            Some(e) if !(e.noise.is_finite() && e.noise >= 0.0) => {
                return Err(invalid(
                    "trace.estimates.noise",
                    "must be a finite number of at least 0",
                ));
            }
            None if t.policy == ReplayPolicy::Srsf => {
                return Err(invalid(
                    "trace.estimates",
                    "policy srsf needs duration estimates, e.g. `estimates: {noise: 0.5}`",
                ));
            }
            _ => {}
        }
        let (b, p) = (t.start_cost.base_s, t.start_cost.per_log2_s);
        if !(b.is_finite() && p.is_finite() && b >= 0.0 && p >= 0.0) {
            return Err(invalid("trace.start_cost", "must be finite and at least 0"));
        }
        Ok(s)
    }
}

/// Whether a scenario document replays a trace (it has a top-level `trace:`).
pub fn is_trace(text: &str) -> bool {
    serde_saphyr::from_str::<BTreeMap<String, de::IgnoredAny>>(text).is_ok_and(|m| m.contains_key("trace"))
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` must be 1..=64 of [A-Za-z0-9._-]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "name: t\nduration: 1d\nproviders:\n  - {name: p, regions: [eu-west], gpu_model: h100, gpus_per_node: 8, price: 2.5}\ntenants:\n  - {name: lab, budget: 100, arrival_every: 1h, gpus: [8], duration: {min: 10m, max: 1h}, max_price: 3}\n";

    #[test]
    fn a_small_scenario_gets_its_defaults() {
        let s = Scenario::from_yaml(SMALL).unwrap();
        assert_eq!(
            (s.seed, s.round, s.metrics_every, s.fee_bps),
            (1, Secs(60), Secs(3600), 500)
        );
        assert_eq!(s.providers[0].price.bounds().0, Micros::parse_decimal("2.5").unwrap());
        assert_eq!(s.tenants[0].duration.min, Secs(600));
        assert_eq!(s.tenants[0].tier, Tier::OnDemand);
    }

    #[test]
    fn mistakes_name_their_field() {
        let cases = [
            (SMALL.replace("duration: 1d", "duration: 0"), "duration"),
            (
                SMALL.replace("gpu_model: h100", "gpu_model: h10"),
                "providers[0].gpu_model",
            ),
            (SMALL.replace("gpus: [8]", "gpus: []"), "tenants[0].gpus"),
            (
                format!("{SMALL}events:\n  - {{at: 1h, price_change: {{group: nobody, factor: 0.5}}}}\n"),
                "events[0].price_change.group",
            ),
            (format!("{SMALL}events:\n  - {{at: 1h}}\n"), "events[0]"),
        ];
        for (text, field) in cases {
            match Scenario::from_yaml(&text) {
                Err(ScenarioError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let e = Scenario::from_yaml(&SMALL.replace("name: t\n", "name: t\nrounds: 3\n")).unwrap_err();
        assert!(e.to_string().contains("rounds"), "{e}");
    }
}
