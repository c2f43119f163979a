//! Order streams: job sizes drawn from real traces (1–128 GPUs) plus a tail of
//! large gangs (512–32,768 GPUs), mixed tiers, models and bids, from a seed.

use agora_engine::market::OrderSpec;
use agora_types::{GpuModel, JobId, Micros, OrderId, PricePerGpuHour, TenantId, Tier};

use crate::rng::SplitMix64;
use crate::traces::TraceJob;

/// How orders are drawn.
#[derive(Debug, Clone)]
pub struct Mix {
    /// GPU counts to draw job sizes from (one entry per trace job).
    pub sizes: Vec<u32>,
    /// Chance, per mille, that an order is a large gang instead.
    pub large_per_mille: u64,
    /// Chance, per mille, that an order is spot.
    pub spot_per_mille: u64,
    pub tenants: u64,
}

impl Mix {
    /// Sizes from trace jobs, ignoring jobs of no GPUs.
    pub fn from_traces<'a>(traces: impl IntoIterator<Item = &'a [TraceJob]>) -> Mix {
        let sizes = traces
            .into_iter()
            .flatten()
            .map(|j| j.gpus)
            .filter(|g| *g > 0)
            .collect();
        Mix {
            sizes,
            large_per_mille: 5,
            spot_per_mille: 350,
            tenants: 200,
        }
    }
}

const LARGE_GANGS: &[u32] = &[512, 1024, 2048, 4096, 8192, 16_384, 32_768];

fn micros(units_cents: u64) -> PricePerGpuHour {
    PricePerGpuHour(Micros(i128::from(units_cents) * 10_000))
}

/// `count` orders with ids from `first`, job id = order id.
pub fn orders(rng: &mut SplitMix64, mix: &Mix, count: usize, first: u64) -> Vec<OrderSpec> {
    assert!(!mix.sizes.is_empty(), "a mix needs sizes");
    let model = |name: &str| GpuModel::resolve(name).expect("in the catalog");
    let h100 = model("H100-80GB-SXM");
    // Single-node work that is not model-agnostic often accepts alternatives
    // (SkyPilot's `{A100:8, H100:8}`): the data-centre class of GPUs.
    let datacenter = vec![h100, model("H100-80GB-PCIe"), model("A100-80GB"), model("L40S")];
    (0..count as u64)
        .map(|i| {
            let id = first + i;
            let large = rng.chance(mix.large_per_mille);
            let gpus = if large {
                *rng.pick(LARGE_GANGS)
            } else {
                *rng.pick(&mix.sizes)
            };
            // Jobs under 8 GPUs sit in one node; larger ones take ⌈g/8⌉ whole nodes of 8.
            let (nodes, gpus_per_node) = if gpus <= 8 { (1, gpus) } else { (gpus.div_ceil(8), 8) };
            let tier = if !large && rng.chance(mix.spot_per_mille) {
                Tier::Spot
            } else {
                Tier::OnDemand
            };
            // Single-node work often takes any model or any data-centre GPU; gangs train on H100s.
            let class = if nodes == 1 { rng.below(10) } else { 9 };
            let (models, max_price) = match class {
                0..=3 => (Vec::new(), micros(rng.range(50, 350))),
                4..=6 => (datacenter.clone(), micros(rng.range(120, 400))),
                _ => (vec![h100], micros(rng.range(180, 400))),
            };
            let tenant = if large {
                1 + rng.below(5)
            } else {
                1 + rng.below(mix.tenants)
            };
            OrderSpec {
                id: OrderId(id),
                job: JobId(id),
                tenant: TenantId(tenant),
                tier,
                max_price,
                models,
                min_vram_mib: 0,
                nodes,
                gpus_per_node,
                duration_estimate_s: None,
                checkpointable: false,
                max_latency_ms: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix() -> Mix {
        Mix {
            sizes: vec![1, 1, 2, 4, 8, 16, 64, 128],
            large_per_mille: 50,
            spot_per_mille: 350,
            tenants: 10,
        }
    }

    #[test]
    fn shapes_follow_the_node_convention_and_the_seed() {
        let a = orders(&mut SplitMix64::new(3), &mix(), 2000, 1);
        let b = orders(&mut SplitMix64::new(3), &mix(), 2000, 1);
        assert_eq!(a, b);
        for o in &a {
            assert!(o.nodes >= 1 && (1..=8).contains(&o.gpus_per_node));
            if o.nodes > 1 {
                assert_eq!(o.gpus_per_node, 8);
            }
        }
        assert!(
            a.iter().any(|o| o.nodes * o.gpus_per_node >= 512),
            "the large tail appears"
        );
        assert!(a.iter().any(|o| o.tier == Tier::Spot));
        assert_eq!(a[0].id, OrderId(1));
    }
}
