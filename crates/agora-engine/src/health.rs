//! Market-health figures: concentration (HHI, CR4) of capacity and of
//! allocated GPUs, each tenant's dependency on its largest provider, and the
//! alerts of the 2023 US merger guidelines.
//!
//! Pure integer arithmetic over counts: shares are in basis points (1/100 of a
//! percent) and HHI on the usual 0–10,000 scale (the sum of squared percentage
//! shares), so the figures are exact and the same on every machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Above this HHI a market is "highly concentrated" (2023 US merger guidelines).
pub const HHI_HIGHLY_CONCENTRATED: u32 = 1800;
/// A rise of more than this much HHI is flagged (the guidelines' Δ > 100 test).
pub const HHI_RISE_ALERT: u32 = 100;

/// Concentration of one quantity (say, allocated GPUs) among participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Concentration {
    pub total: u64,
    pub participants: u32,
    /// Σ (percentage share)², 0..=10,000; 0 for an empty market.
    pub hhi: u32,
    /// Combined share of the four largest, in basis points.
    pub cr4_bps: u32,
    /// Share of the largest, in basis points.
    pub top_bps: u32,
}

impl Concentration {
    /// From each participant's amount (zero amounts are not participants).
    pub fn of(amounts: impl IntoIterator<Item = u64>) -> Concentration {
        let mut v: Vec<u64> = amounts.into_iter().filter(|a| *a > 0).collect();
        let total: u64 = v.iter().sum();
        if total == 0 {
            return Concentration::default();
        }
        v.sort_unstable_by(|a, b| b.cmp(a));
        let t = u128::from(total);
        // HHI = Σ (100·a/T)² = 10,000·Σ a² / T², rounded to the nearest integer.
        let squares: u128 = v.iter().map(|a| u128::from(*a) * u128::from(*a)).sum();
        let hhi = ((squares * 10_000 + t * t / 2) / (t * t)) as u32;
        let bps = |a: u64| ((u128::from(a) * 10_000) / t) as u32;
        Concentration {
            total,
            participants: v.len() as u32,
            hhi,
            cr4_bps: bps(v.iter().take(4).sum()),
            top_bps: bps(v[0]),
        }
    }

    pub fn highly_concentrated(&self) -> bool {
        self.hhi > HHI_HIGHLY_CONCENTRATED
    }
}

/// Which measure an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    CapacityByProvider,
    AllocatedByProvider,
    AllocatedByTenant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alert", rename_all = "snake_case")]
pub enum Alert {
    /// HHI above 1,800.
    HighlyConcentrated { measure: Measure, hhi: u32 },
    /// HHI rose by more than 100 since the previous figures.
    ConcentrationRising { measure: Measure, from: u32, to: u32 },
}

/// The inputs: GPUs per provider, and allocated GPUs per (tenant, provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdings<P: Ord, T: Ord> {
    pub capacity: BTreeMap<P, u64>,
    pub allocated: BTreeMap<(T, P), u64>,
}

// By hand: the derive would require `P: Default` and `T: Default`, which ids need not be.
impl<P: Ord, T: Ord> Default for Holdings<P, T> {
    fn default() -> Self {
        Holdings {
            capacity: BTreeMap::new(),
            allocated: BTreeMap::new(),
        }
    }
}

/// The figures the API serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health<P: Ord, T: Ord> {
    pub capacity_by_provider: Concentration,
    pub allocated_by_provider: Concentration,
    pub allocated_by_tenant: Concentration,
    /// Per tenant: its largest provider and that provider's share of the tenant's GPUs, in bps.
    pub dependency: BTreeMap<T, (P, u32)>,
    pub alerts: Vec<Alert>,
}

impl<P: Ord + Copy, T: Ord + Copy> Health<P, T> {
    /// Computes the figures; `previous` (the last figures) drives the rising alerts.
    pub fn compute(h: &Holdings<P, T>, previous: Option<&Health<P, T>>) -> Health<P, T> {
        let mut by_provider: BTreeMap<P, u64> = BTreeMap::new();
        let mut by_tenant: BTreeMap<T, u64> = BTreeMap::new();
        let mut largest: BTreeMap<T, (P, u64)> = BTreeMap::new();
        for (&(t, p), &n) in &h.allocated {
            *by_provider.entry(p).or_default() += n;
            *by_tenant.entry(t).or_default() += n;
            let e = largest.entry(t).or_insert((p, 0));
            // Ties go to the smaller provider id: iteration is in (tenant, provider) order.
            if n > e.1 {
                *e = (p, n);
            }
        }
        let dependency = largest
            .into_iter()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(t, (p, n))| (t, (p, ((u128::from(n) * 10_000) / u128::from(by_tenant[&t])) as u32)))
            .collect();
        let mut health = Health {
            capacity_by_provider: Concentration::of(h.capacity.values().copied()),
            allocated_by_provider: Concentration::of(by_provider.into_values()),
            allocated_by_tenant: Concentration::of(by_tenant.into_values()),
            dependency,
            alerts: Vec::new(),
        };
        let measures = [
            (
                Measure::CapacityByProvider,
                health.capacity_by_provider,
                previous.map(|p| p.capacity_by_provider),
            ),
            (
                Measure::AllocatedByProvider,
                health.allocated_by_provider,
                previous.map(|p| p.allocated_by_provider),
            ),
            (
                Measure::AllocatedByTenant,
                health.allocated_by_tenant,
                previous.map(|p| p.allocated_by_tenant),
            ),
        ];
        for (measure, now, before) in measures {
            if now.highly_concentrated() {
                health.alerts.push(Alert::HighlyConcentrated { measure, hhi: now.hhi });
            }
            // A market that was empty had no concentration to rise from.
            if let Some(before) = before
                && before.total > 0
                && now.hhi > before.hhi + HHI_RISE_ALERT
            {
                health.alerts.push(Alert::ConcentrationRising {
                    measure,
                    from: before.hhi,
                    to: now.hhi,
                });
            }
        }
        health
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn textbook_cases() {
        assert_eq!(Concentration::of([100]).hhi, 10_000, "a monopoly");
        assert_eq!(Concentration::of([1, 1, 1, 1, 1]).hhi, 2_000, "five equal firms");
        assert_eq!(Concentration::of([]).hhi, 0);
        // Shares 40/30/20/10: 1600 + 900 + 400 + 100.
        let c = Concentration::of([40, 30, 20, 10, 0]);
        assert_eq!((c.hhi, c.cr4_bps, c.top_bps, c.participants), (3_000, 10_000, 4_000, 4));
        let c = Concentration::of([5; 20]);
        assert_eq!((c.hhi, c.cr4_bps), (500, 2_000));
    }

    #[test]
    fn a_megaprovider_entering_raises_alerts() {
        let mut h: Holdings<u32, u32> = Holdings::default();
        for p in 0..50 {
            h.capacity.insert(p, 8);
        }
        let before = Health::compute(&h, None);
        assert!(before.alerts.is_empty(), "{:?}", before.alerts);
        h.capacity.insert(99, 220_000);
        let after = Health::compute(&h, Some(&before));
        let from_empty = Health::compute(&h, Some(&Health::compute(&Holdings::default(), None)));
        assert!(
            !from_empty
                .alerts
                .iter()
                .any(|a| matches!(a, Alert::ConcentrationRising { .. })),
            "no rise from an empty market"
        );
        assert!(after.alerts.contains(&Alert::HighlyConcentrated {
            measure: Measure::CapacityByProvider,
            hhi: after.capacity_by_provider.hhi
        }));
        assert!(after.alerts.iter().any(|a| matches!(
            a,
            Alert::ConcentrationRising {
                measure: Measure::CapacityByProvider,
                ..
            }
        )));
    }

    #[test]
    fn dependency_is_the_largest_providers_share() {
        let mut h: Holdings<u32, u32> = Holdings::default();
        h.allocated.insert((1, 10), 6);
        h.allocated.insert((1, 11), 2);
        h.allocated.insert((2, 11), 4);
        let health = Health::compute(&h, None);
        assert_eq!(health.dependency[&1], (10, 7_500));
        assert_eq!(health.dependency[&2], (11, 10_000));
        assert_eq!(health.allocated_by_provider.total, 12);
    }

    proptest! {
        #[test]
        fn hhi_is_bounded_by_one_over_n_and_a_monopoly(amounts in prop::collection::vec(0u64..1_000_000, 0..50)) {
            let c = Concentration::of(amounts.iter().copied());
            prop_assert!(c.hhi <= 10_000);
            prop_assert!(c.cr4_bps <= 10_000 && c.top_bps <= c.cr4_bps);
            if c.participants > 0 {
                // Equal shares minimise HHI: at least 10,000 / n (allowing rounding).
                prop_assert!(u64::from(c.hhi) + 1 >= 10_000 / u64::from(c.participants));
            }
        }
    }
}
