//! Gangs that span pools (io.net-style clusters). An order that opts in with
//! [`OrderSpec::max_latency_ms`] and finds no single pool for its gang may take
//! whole nodes of several pools — other providers, other asks — as long as
//! every two regions it uses are at most that many milliseconds apart in the
//! market's latency matrix. One pool stays the first choice: its gang runs
//! inside one provider's fabric, which no latency bound matches.
//!
//! The search, per accepted model: list the free whole nodes' domains of every
//! pool within price, at sites with a known region that the order may use;
//! sort them cheapest first (among equal asks, the pools with the most free
//! nodes first, so the gang has fewer parts; then the fullest domains, so each
//! part spans fewer fabrics). Then for each region as an *anchor*, walk that
//! list and take nodes from a domain when its region is already used or is
//! within the bound of every region used so far (the anchor counts as used),
//! within each site's power. The cheapest complete set wins (total ask), then
//! the fewest parts, then the lower model and anchor. Greedy, not an exact
//! search over region sets: with tens of regions the anchors cover the
//! clusters a bound allows, and it costs one sort and one pass per anchor.
//!
//! Each pool becomes one placement (one lease to the caller, with its own
//! provider and price), in the order first used; ranks run through the parts
//! in that order, and inside a part by site, domain and node id.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use agora_types::{DomainId, GpuModel, Micros, NodeId, PricePerGpuHour, ProviderId, RegionId, SiteId};

use super::{GangPoolKey, PoolKey, Round, gang_pools_of};
use crate::market::{GangPart, OrderSpec, Placement};

/// One fabric domain's free whole nodes in one pool, as a split gang sees them.
#[derive(Debug, Clone, Copy)]
struct Domain {
    ask: PricePerGpuHour,
    /// Free whole nodes in the domain's pool: bigger pools first among equal asks.
    pool_nodes: u32,
    provider: ProviderId,
    count: u32,
    site: SiteId,
    domain: DomainId,
    region: RegionId,
}

/// Nodes taken from one domain.
#[derive(Debug, Clone, Copy)]
struct Take {
    pool: PoolKey,
    site: SiteId,
    domain: DomainId,
    nodes: u32,
}

impl Round<'_> {
    /// The parts of a gang spanning pools, each a pool and its nodes in rank
    /// order; or, when none fits, the most nodes one latency-compatible set of
    /// regions offered.
    pub(super) fn find_split(
        &self,
        order: &OrderSpec,
        models: &[GpuModel],
        bound_ms: u32,
    ) -> Result<Vec<(PoolKey, Vec<NodeId>)>, u32> {
        let need = order.nodes;
        let g = order.gpus_per_node;
        let mut best: Option<((Micros, usize), Vec<Take>)> = None;
        let mut most = 0u32;
        let mut domains: Vec<Domain> = Vec::new();
        for &model in models {
            if !self.model_ok(model, order.gpus_total()) {
                continue;
            }
            domains.clear();
            for (key, pool) in self.whole.pools_in(gang_pools_of(model, g, order.max_price)) {
                if !self.admits(order.tier, key.provider, model, u64::from(g)) {
                    continue;
                }
                for (&(site, domain), free) in &pool.by_domain {
                    if free.is_empty() || !self.site_ok(site) || !self.spot_ok(site, model) {
                        continue;
                    }
                    let Some(region) = self.market.site(site).and_then(|s| s.region) else {
                        continue;
                    };
                    domains.push(Domain {
                        ask: key.ask,
                        pool_nodes: pool.total,
                        provider: key.provider,
                        count: free.len() as u32,
                        site,
                        domain,
                        region,
                    });
                }
            }
            if domains.iter().map(|d| u64::from(d.count)).sum::<u64>() < u64::from(need) {
                most = most.max(domains.iter().map(|d| d.count).sum());
                continue;
            }
            domains.sort_unstable_by_key(|d| {
                (
                    d.ask,
                    Reverse(d.pool_nodes),
                    d.provider,
                    Reverse(d.count),
                    d.site,
                    d.domain,
                )
            });
            let regions: BTreeSet<RegionId> = domains.iter().map(|d| d.region).collect();
            for &anchor in &regions {
                let (takes, taken) = self.gather(order, model, &domains, anchor, bound_ms);
                most = most.max(taken);
                if taken < need {
                    continue;
                }
                let cost = takes
                    .iter()
                    .map(|t| Micros(t.pool.ask.0.0 * i128::from(t.nodes)))
                    .fold(Micros::ZERO, |a, b| Micros(a.0 + b.0));
                let parts = takes.iter().map(|t| t.pool).collect::<BTreeSet<_>>().len();
                if best.as_ref().is_none_or(|(score, _)| (cost, parts) < *score) {
                    best = Some(((cost, parts), takes));
                }
            }
        }
        let (_, takes) = best.ok_or(most)?;
        Ok(self.parts_of(&takes, g))
    }

    /// Walks `domains` (sorted) from one anchor region, taking nodes until the
    /// gang is complete; returns what it took and how many nodes.
    fn gather(
        &self,
        order: &OrderSpec,
        model: GpuModel,
        domains: &[Domain],
        anchor: RegionId,
        bound_ms: u32,
    ) -> (Vec<Take>, u32) {
        let g = order.gpus_per_node;
        let gpus_w = u64::from(model.spec().tdp_w) * u64::from(g);
        let mut used = vec![anchor];
        let mut takes = Vec::new();
        let mut remaining = order.nodes;
        // Nodes each site can still power (None: unlimited), and GPUs taken per provider.
        let mut site_left: BTreeMap<SiteId, Option<u64>> = BTreeMap::new();
        let mut by_provider: BTreeMap<ProviderId, u64> = BTreeMap::new();
        for d in domains {
            if remaining == 0 {
                break;
            }
            let known = used.contains(&d.region);
            if !known
                && !used
                    .iter()
                    .all(|&r| self.market.latency_ms(r, d.region).is_some_and(|ms| ms <= bound_ms))
            {
                continue;
            }
            let left = site_left.entry(d.site).or_insert_with(|| {
                // Whole nodes run nothing, so each adds the site's overhead.
                self.headroom_w(d.site).map(|h| h / (gpus_w + self.overhead_w(d.site)))
            });
            let n = left
                .map_or(d.count, |l| u64::from(d.count).min(l) as u32)
                .min(remaining);
            if n == 0 {
                continue;
            }
            let held = by_provider.get(&d.provider).copied().unwrap_or(0);
            if !self.admits(order.tier, d.provider, model, held + u64::from(n) * u64::from(g)) {
                continue;
            }
            if let Some(l) = left {
                *l -= u64::from(n);
            }
            *by_provider.entry(d.provider).or_insert(0) += u64::from(n) * u64::from(g);
            if !known {
                used.push(d.region);
            }
            takes.push(Take {
                pool: PoolKey {
                    model,
                    ask: d.ask,
                    provider: d.provider,
                },
                site: d.site,
                domain: d.domain,
                nodes: n,
            });
            remaining -= n;
        }
        (takes, order.nodes - remaining)
    }

    /// Groups takes into one part per pool, in the order first taken; inside
    /// a part, nodes by site, domain and id.
    fn parts_of(&self, takes: &[Take], g: u32) -> Vec<(PoolKey, Vec<NodeId>)> {
        // Per pool: (site, domain, nodes) taken.
        type Domains = Vec<(SiteId, DomainId, u32)>;
        let mut parts: Vec<(PoolKey, Domains)> = Vec::new();
        for t in takes {
            match parts.iter_mut().find(|(pool, _)| *pool == t.pool) {
                Some((_, domains)) => domains.push((t.site, t.domain, t.nodes)),
                None => parts.push((t.pool, vec![(t.site, t.domain, t.nodes)])),
            }
        }
        parts
            .into_iter()
            .map(|(pool, mut domains)| {
                domains.sort_unstable();
                let key = GangPoolKey {
                    model: pool.model,
                    gpus: g,
                    ask: pool.ask,
                    provider: pool.provider,
                };
                let whole = self.whole.pool(&key).expect("a split takes free whole nodes");
                let nodes = domains
                    .iter()
                    .flat_map(|&(site, domain, n)| whole.by_domain[&(site, domain)].iter().take(n as usize).copied())
                    .collect();
                (pool, nodes)
            })
            .collect()
    }

    /// Reserves every part of a split gang and appends their placements.
    pub(super) fn reserve_split(
        &mut self,
        order: &OrderSpec,
        parts: Vec<(PoolKey, Vec<NodeId>)>,
        placements: &mut Vec<Placement>,
    ) {
        let count = parts.len() as u32;
        let mut first_rank = 0;
        for (index, (pool, nodes)) in parts.into_iter().enumerate() {
            let mut placement = self.reserve(order, pool, &nodes);
            if count > 1 {
                placement.gang = Some(GangPart {
                    index: index as u32,
                    parts: count,
                    first_rank,
                    nodes: order.nodes,
                    gpus_total: order.gpus_total(),
                });
            }
            first_rank += nodes.len() as u32;
            placements.push(placement);
        }
    }
}
