//! Market-health policies the clearing round enforces on top of price and
//! topology. The market holds the mechanism; the caller sets the values
//! (the server from its market rules, with documented defaults).
//!
//! - **Provider share cap** (per tenant): once a tenant holds
//!   `provider_share_min_gpus` GPUs or more, no placement should leave more
//!   than `cap` of its GPUs on one provider (`on_provider ≤ max(min_gpus,
//!   cap × total)`, both counted after the placement). *Hard*: a placement
//!   that would break the cap is refused. *Soft*: a placement within the cap
//!   is preferred to any that breaks it, whatever their asks (within the bid);
//!   if none exists, the cheapest placement is taken as usual — a penalty
//!   that orders candidates, never a refusal.
//! - **Small-tenant floor** (per GPU model): `small_tenant_floor_bps` of each
//!   model's online GPUs is kept for tenants holding fewer than
//!   `small_tenant_gpus` GPUs (counted after the placement): a large tenant's
//!   placement may not leave fewer free GPUs of the model than that.
//! - Reserved-tier work is exempt from both: it runs on capacity its tenant
//!   already holds by contract. (The cap on the share of a model one tenant
//!   may reserve is checked when a contract is made, by the caller.)
//!
//! A tenant's GPUs are those of its leases, followed incrementally on lease
//! start and end. Checks that depend on the tenant make the round skip its
//! per-shape failure memory for that order, since another tenant's order of
//! the same shape may well fit.

use std::collections::BTreeMap;

use agora_types::{ProviderId, TenantId};
use serde::{Deserialize, Serialize};

use super::{Lease, Market};

/// How the provider share cap is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapMode {
    /// Prefer placements within the cap; never refuse for it.
    #[default]
    Soft,
    /// Refuse placements that break the cap.
    Hard,
}

/// The policies' settings; the default enforces none of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    /// The most of a tenant's GPUs on one provider, in basis points; None: no cap.
    pub provider_share_cap_bps: Option<u32>,
    pub provider_share_mode: CapMode,
    /// Tenants holding fewer GPUs than this are not capped.
    pub provider_share_min_gpus: u64,
    /// Basis points of each model's online GPUs kept for small tenants; 0: none.
    pub small_tenant_floor_bps: u32,
    /// A tenant holding fewer GPUs than this is small.
    pub small_tenant_gpus: u64,
}

impl Policies {
    /// Whether any policy may refuse or reorder something.
    pub fn any(&self) -> bool {
        self.provider_share_cap_bps.is_some() || self.small_tenant_floor_bps > 0
    }
}

/// GPUs a tenant's leases hold, in all and per provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantUse {
    pub total: u64,
    pub by_provider: BTreeMap<ProviderId, u64>,
}

impl TenantUse {
    pub fn on(&self, provider: ProviderId) -> u64 {
        self.by_provider.get(&provider).copied().unwrap_or(0)
    }
}

/// Whether `on_provider` of `total` GPUs (after a placement) is within the cap.
pub(super) fn within_cap(p: &Policies, on_provider: u64, total: u64) -> bool {
    match p.provider_share_cap_bps {
        None => true,
        Some(cap) => on_provider <= p.provider_share_min_gpus.max(total * u64::from(cap) / 10_000),
    }
}

impl Market {
    pub fn set_policies(&mut self, policies: Policies) {
        self.policies = policies;
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// GPUs a tenant's leases hold now.
    pub fn tenant_use(&self, tenant: TenantId) -> Option<&TenantUse> {
        self.tenant_use.get(&tenant)
    }

    /// Follows a lease's start (`sign` 1) or end (`-1`) in its tenant's use.
    pub(super) fn count_tenant_use(&mut self, lease: &Lease, sign: i8) {
        let gpus = lease.gpus_total();
        let u = self.tenant_use.entry(lease.tenant).or_default();
        let on = u.by_provider.entry(lease.provider).or_insert(0);
        if sign > 0 {
            u.total += gpus;
            *on += gpus;
        } else {
            u.total -= gpus;
            *on -= gpus;
            if *on == 0 {
                u.by_provider.remove(&lease.provider);
            }
            if u.total == 0 {
                self.tenant_use.remove(&lease.tenant);
            }
        }
    }
}
