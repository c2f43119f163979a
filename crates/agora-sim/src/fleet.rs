//! Fleets to run the engine on: the Colossus-scale fleet of the benchmarks (one
//! provider with 27,500 nodes × 8 H100 in 32-node fabric domains at one 300 MW
//! site, beside 10,000 small providers with 1–8 GPUs of mixed models in 20
//! regions) and a small one for tests. Plain data: the caller feeds it to the
//! engine (or, later, to hollow agents in the simulator).

use agora_engine::market::{Market, NodeSpec, SiteSpec};
use agora_types::{AgentId, DomainId, GpuModel, Micros, NodeId, PricePerGpuHour, ProviderId, SiteId};

use crate::rng::SplitMix64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSite {
    pub id: SiteId,
    pub provider: ProviderId,
    pub region: u16,
    /// None: the site reports no power limit.
    pub power_budget_w: Option<u64>,
    /// Power a node draws besides its GPUs while it runs anything.
    pub node_overhead_w: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    pub id: NodeId,
    pub provider: ProviderId,
    pub site: SiteId,
    pub domain: DomainId,
    pub region: u16,
    pub model: GpuModel,
    pub gpus: u32,
    pub ask: PricePerGpuHour,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    pub name: &'static str,
    pub sites: Vec<FleetSite>,
    pub nodes: Vec<FleetNode>,
    pub regions: u16,
}

impl Fleet {
    pub fn gpus(&self) -> u64 {
        self.nodes.iter().map(|n| u64::from(n.gpus)).sum()
    }

    /// A market holding this fleet's sites and nodes (each provider is its own agent).
    pub fn market(&self) -> Market {
        let mut m = Market::new();
        for s in &self.sites {
            m.upsert_site(SiteSpec {
                id: s.id,
                provider: s.provider,
                power_budget_w: s.power_budget_w,
                node_overhead_w: s.node_overhead_w,
                orbital: false,
                region: None,
            });
        }
        for n in &self.nodes {
            m.upsert_node(NodeSpec {
                id: n.id,
                provider: n.provider,
                agent: AgentId(n.provider.0),
                model: n.model,
                gpus: n.gpus,
                ask: n.ask,
                site: n.site,
                domain: n.domain,
            });
        }
        m
    }
}

/// Parameters of a fleet: one mega-provider beside many small ones.
#[derive(Debug, Clone, Copy)]
pub struct FleetShape {
    pub mega_nodes: u32,
    pub gpus_per_mega_node: u32,
    pub nodes_per_domain: u32,
    pub mega_power_budget_w: u64,
    pub mega_node_overhead_w: u32,
    pub small_providers: u32,
    pub regions: u16,
}

/// The benchmark fleet of the brief: 220,000 H100s in one 300 MW site plus 10,000 small providers.
pub const COLOSSUS: FleetShape = FleetShape {
    mega_nodes: 27_500,
    gpus_per_mega_node: 8,
    nodes_per_domain: 32,
    mega_power_budget_w: 300_000_000,
    mega_node_overhead_w: 1_500,
    small_providers: 10_000,
    regions: 20,
};

/// The same shape at 1/100 scale, for tests.
pub const SMALL: FleetShape = FleetShape {
    mega_nodes: 275,
    gpus_per_mega_node: 8,
    nodes_per_domain: 32,
    mega_power_budget_w: 3_000_000,
    mega_node_overhead_w: 1_500,
    small_providers: 100,
    regions: 20,
};

/// A fleet by name: `colossus` or `small`.
pub fn named(name: &str, seed: u64) -> Option<Fleet> {
    match name {
        "colossus" => Some(build("colossus", COLOSSUS, seed)),
        "small" => Some(build("small", SMALL, seed)),
        _ => None,
    }
}

fn price(text: &str) -> PricePerGpuHour {
    PricePerGpuHour(Micros::parse_decimal(text).expect("a valid literal price"))
}

/// Models small providers bring, with a typical ask per GPU-hour.
const SMALL_MODELS: &[(&str, &str)] = &[
    ("RTX-4090", "0.40"),
    ("RTX-3090", "0.25"),
    ("RTX-A6000", "0.55"),
    ("A10", "0.60"),
    ("L4", "0.50"),
    ("L40S", "1.00"),
    ("A100-80GB", "1.40"),
    ("H100-80GB-PCIe", "2.20"),
    ("H100-80GB-SXM", "2.60"),
];

pub fn build(name: &'static str, shape: FleetShape, seed: u64) -> Fleet {
    let mut rng = SplitMix64::new(seed);
    let h100 = GpuModel::resolve("H100-80GB-SXM").expect("in the catalog");
    let mega = ProviderId(1);
    let mut sites = vec![FleetSite {
        id: SiteId(1),
        provider: mega,
        region: 0,
        power_budget_w: Some(shape.mega_power_budget_w),
        node_overhead_w: shape.mega_node_overhead_w,
    }];
    let mut nodes = Vec::with_capacity((shape.mega_nodes + shape.small_providers) as usize);
    for i in 0..shape.mega_nodes {
        nodes.push(FleetNode {
            id: NodeId(u64::from(i) + 1),
            provider: mega,
            site: SiteId(1),
            domain: DomainId(u64::from(i / shape.nodes_per_domain) + 1),
            region: 0,
            model: h100,
            gpus: shape.gpus_per_mega_node,
            ask: price("2.00"),
        });
    }
    let first_small_domain = u64::from(shape.mega_nodes.div_ceil(shape.nodes_per_domain)) + 1;
    for p in 0..shape.small_providers {
        let provider = ProviderId(u64::from(p) + 2);
        let site = SiteId(u64::from(p) + 2);
        let region = rng.below(u64::from(shape.regions)) as u16;
        sites.push(FleetSite {
            id: site,
            provider,
            region,
            power_budget_w: None,
            node_overhead_w: 300,
        });
        let (model, base) = *rng.pick(SMALL_MODELS);
        // Asks spread ±30 % around the model's typical price, in whole cents.
        let base = price(base).micros();
        let cents = (base / 10_000) as u64;
        let ask_cents = rng.range(cents * 7 / 10, cents * 13 / 10).max(1);
        nodes.push(FleetNode {
            id: NodeId(u64::from(shape.mega_nodes) + u64::from(p) + 1),
            provider,
            site,
            domain: DomainId(first_small_domain + u64::from(p)),
            region,
            model: GpuModel::resolve(model).expect("in the catalog"),
            gpus: rng.range(1, 8) as u32,
            ask: PricePerGpuHour(Micros(i128::from(ask_cents) * 10_000)),
        });
    }
    Fleet {
        name,
        sites,
        nodes,
        regions: shape.regions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colossus_has_the_briefs_shape() {
        let f = named("colossus", 1).unwrap();
        let mega: Vec<_> = f.nodes.iter().filter(|n| n.provider == ProviderId(1)).collect();
        assert_eq!(mega.len(), 27_500);
        assert_eq!(mega.iter().map(|n| u64::from(n.gpus)).sum::<u64>(), 220_000);
        assert_eq!(
            mega.iter()
                .map(|n| n.domain)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            860
        );
        assert_eq!(f.nodes.len(), 37_500);
        assert_eq!(f.sites[0].power_budget_w, Some(300_000_000));
        assert!(f.nodes.iter().all(|n| (1..=8).contains(&n.gpus)));
        assert!(f.nodes.iter().all(|n| n.region < 20));
    }

    #[test]
    fn the_same_seed_builds_the_same_fleet() {
        assert_eq!(named("small", 9), named("small", 9));
        assert_ne!(named("small", 9), named("small", 10));
    }
}
