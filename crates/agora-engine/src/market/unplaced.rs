//! Why an order stayed pending: typed reasons that the API returns as data and
//! the CLI prints as one sentence.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use agora_types::{GpuModel, LeaseId, OrderId, PricePerGpuHour, ProviderId, SiteId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::OrderSpec;

/// What an order asked for, repeated in its reasons so each reason reads on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    pub nodes: u32,
    pub gpus_per_node: u32,
    /// Empty: any model. Shared: a round's reasons for orders with one model
    /// list point at one copy of it (it serializes as a plain list).
    pub models: Arc<[GpuModel]>,
    pub min_vram_mib: u32,
    pub max_price: PricePerGpuHour,
}

impl Demand {
    pub fn of(order: &OrderSpec) -> Demand {
        Demand::sharing(order, Arc::from(order.models.as_slice()))
    }

    /// [`Demand::of`] with `models` (equal to the order's) shared rather than copied.
    pub(crate) fn sharing(order: &OrderSpec, models: Arc<[GpuModel]>) -> Demand {
        debug_assert_eq!(*models, *order.models, "a shared model list is the order's");
        Demand {
            nodes: order.nodes,
            gpus_per_node: order.gpus_per_node,
            models,
            min_vram_mib: order.min_vram_mib,
            max_price: order.max_price,
        }
    }
}

/// The reasons of a round's unplaced orders, in service order (the order the
/// round met them), at most one per order. A round only appends to it, which
/// costs far less than sorting 50,000 reasons into a map; it serializes as a
/// map by ascending order id, the same bytes a `BTreeMap<OrderId, Unplaced>`
/// gives, so the wire format and the decision hashes do not depend on it.
///
/// Orders alike in a round share one stored reason ([`Reasons::push_same`]):
/// most of a busy round's 50,000 orders fail like an earlier one, and each
/// then costs one id and one index, not a copy of the reason.
///
/// [`Reasons::get`] and indexing scan the list: meant for tests and single
/// look-ups. A caller that looks up many ids builds a map with
/// [`Reasons::by_id`].
///
/// Two lists are equal when they give the same orders the same reasons, in
/// any order, as the map they serialize to would be.
#[derive(Debug, Clone, Default)]
pub struct Reasons {
    /// Each order with the index of its reason in `distinct`, in service order.
    orders: Vec<(OrderId, u32)>,
    distinct: Vec<Unplaced>,
}

impl PartialEq for Reasons {
    fn eq(&self, other: &Reasons) -> bool {
        self.len() == other.len() && self.by_id() == other.by_id()
    }
}

impl Eq for Reasons {}

impl Reasons {
    pub(crate) fn with_capacity(n: usize) -> Reasons {
        Reasons {
            orders: Vec::with_capacity(n),
            distinct: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, order: OrderId, reason: Unplaced) {
        let index = u32::try_from(self.distinct.len()).expect("fewer than 2^32 reasons");
        self.distinct.push(reason);
        self.orders.push((order, index));
    }

    /// Gives `order` the reason pushed `index`-th, without copying it.
    pub(crate) fn push_same(&mut self, order: OrderId, index: usize) {
        let shared = self.orders[index].1;
        self.orders.push((order, shared));
    }

    /// In service order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            orders: self.orders.iter(),
            distinct: &self.distinct,
        }
    }

    /// The reasons alone, in service order.
    pub fn values(&self) -> impl Iterator<Item = &Unplaced> {
        self.iter().map(|(_, r)| r)
    }

    pub fn len(&self) -> usize {
        self.orders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// The reason of one order (a linear scan).
    pub fn get(&self, order: &OrderId) -> Option<&Unplaced> {
        self.iter().find(|(id, _)| *id == order).map(|(_, r)| r)
    }

    pub fn contains_key(&self, order: &OrderId) -> bool {
        self.get(order).is_some()
    }

    /// The reasons by ascending order id.
    pub fn by_id(&self) -> BTreeMap<OrderId, &Unplaced> {
        self.iter().map(|(id, r)| (*id, r)).collect()
    }
}

impl std::ops::Index<&OrderId> for Reasons {
    type Output = Unplaced;

    fn index(&self, order: &OrderId) -> &Unplaced {
        self.get(order)
            .unwrap_or_else(|| panic!("order {order} has no reason in this plan"))
    }
}

/// [`Reasons`] in service order: each order with its reason.
pub struct Iter<'a> {
    orders: std::slice::Iter<'a, (OrderId, u32)>,
    distinct: &'a [Unplaced],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a OrderId, &'a Unplaced);

    fn next(&mut self) -> Option<Self::Item> {
        let (id, index) = self.orders.next()?;
        Some((id, &self.distinct[*index as usize]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.orders.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Reasons {
    type Item = (&'a OrderId, &'a Unplaced);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<(OrderId, Unplaced)> for Reasons {
    fn from_iter<I: IntoIterator<Item = (OrderId, Unplaced)>>(iter: I) -> Reasons {
        let mut reasons = Reasons::default();
        for (order, reason) in iter {
            reasons.push(order, reason);
        }
        reasons
    }
}

impl Serialize for Reasons {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<(OrderId, u32)> = self.orders.clone();
        sorted.sort_unstable_by_key(|(id, _)| *id);
        serializer.collect_map(sorted.iter().map(|(id, index)| (id, &self.distinct[*index as usize])))
    }
}

impl<'de> Deserialize<'de> for Reasons {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Reasons, D::Error> {
        let map = BTreeMap::<OrderId, Unplaced>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

/// Why a pending order was not placed in a round. The checks run in the order
/// of the variants: the first that applies is the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum buffers its fields, and serde_json
// cannot read an i128 (money) back through that buffer.
#[serde(rename_all = "snake_case")]
pub enum Unplaced {
    /// No online node of an accepted model has enough VRAM, at any price.
    NoMatchingNode { models: Vec<GpuModel>, min_vram_mib: u32 },
    /// Matching nodes exist but none has `gpus_per_node` GPUs, even empty.
    NodeTooSmall { demand: Demand, largest_node_gpus: u32 },
    /// Gang: gangs take whole nodes of exactly `gpus_per_node` GPUs, and no
    /// matching node has that many.
    GangNodeSize { demand: Demand, node_sizes: Vec<u32> },
    /// Every matching node asks more than the order's max price.
    AskAboveMaxPrice {
        demand: Demand,
        cheapest_ask: PricePerGpuHour,
    },
    /// The order would fit, but not within a site's power budget: the first
    /// refusal of the search (the cheapest candidate), with what it needed.
    PowerBudget {
        demand: Demand,
        site: SiteId,
        headroom_w: u64,
        needed_w: u64,
    },
    /// Single-node order: no node within price has enough free GPUs now.
    NotEnoughFree { demand: Demand, most_free_on_one_node: u32 },
    /// Gang: fewer free whole nodes of `gpus_per_node` GPUs within price than it needs.
    TooFewNodes { demand: Demand, nodes_with_room: u32 },
    /// Gang: enough free whole nodes, but not inside one pool (provider, model, ask).
    GangSplit {
        demand: Demand,
        nodes_with_room: u32,
        most_in_one_pool: u32,
    },
    /// Gang that may span providers: enough free whole nodes within price,
    /// but no set of regions pairwise within `max_latency_ms` holds them
    /// (regions with no known latency between them never pair).
    LatencyBound {
        demand: Demand,
        max_latency_ms: u32,
        nodes_with_room: u32,
        most_within_bound: u32,
    },
    /// Preemption signals were sent (this round or earlier) and the order waits
    /// for these leases to end; it will be placed in a later round.
    WaitingForPreemption { leases: Vec<LeaseId> },
    /// On-demand: free GPUs exist, but they are reserved by contracts that
    /// may claim them back; on-demand work takes only unreserved ones.
    HeldByReservations { demand: Demand, reserved_idle_gpus: u64 },
    /// Market health: placing it would leave more than `cap_bps` of the
    /// tenant's GPUs on `provider` (the first provider the hard cap refused).
    ProviderShareCap {
        demand: Demand,
        provider: ProviderId,
        cap_bps: u32,
    },
    /// Market health: `kept_gpus` GPUs of `model` are kept for small tenants,
    /// and this order's tenant is not small.
    SmallTenantFloor {
        demand: Demand,
        model: GpuModel,
        kept_gpus: u64,
    },
    /// No room now; conservative backfill reserved `nodes` nodes for it from
    /// `start_ms`, when the work on them is estimated to end.
    ReservedAhead {
        demand: Demand,
        start_ms: i64,
        /// Seconds from the round to `start_ms`.
        starts_in_s: u64,
        nodes: u32,
    },
    /// Reserved tier: the tenant holds no active reservation of an accepted model.
    NoReservation { demand: Demand },
    /// Reserved tier: the tenant's reservations are in use up to their size.
    ReservationFull {
        demand: Demand,
        reserved_gpus: u64,
        used_gpus: u64,
    },
    /// Reserved tier: the reservation has room, but its provider's nodes do
    /// not, even by preempting spot leases (nodes offline, power, node
    /// sizes, or GPUs held by on-demand leases from before the contract).
    ReservedNoRoom {
        demand: Demand,
        provider: ProviderId,
        model: GpuModel,
        free_gpus: u64,
    },
}

/// `H100-80GB-SXM`, `H100-80GB-SXM or A100-80GB`, or `GPUs` for any model.
struct Models<'a>(&'a [GpuModel], u32);

impl fmt::Display for Models<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Models(models, min_vram_mib) = *self;
        if models.is_empty() {
            f.write_str("GPUs")?;
            if min_vram_mib > 0 {
                write!(f, " with ≥ {min_vram_mib} MiB")?;
            }
            return Ok(());
        }
        for (i, m) in models.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            f.write_str(m.name())?;
        }
        Ok(())
    }
}

impl Demand {
    fn models(&self) -> Models<'_> {
        Models(&self.models, self.min_vram_mib)
    }
}

/// `no provider with 16 free H100-80GB-SXM at ≤ 2.50/GPU-h` or, for a gang,
/// `no provider with 2 free whole nodes of 8 H100-80GB-SXM at ≤ 2.50/GPU-h`.
impl fmt::Display for Demand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes > 1 {
            return write!(
                f,
                "no provider with {} free whole nodes of {} {} at ≤ {}",
                self.nodes,
                self.gpus_per_node,
                self.models(),
                self.max_price
            );
        }
        write!(
            f,
            "no provider with {} free {} at ≤ {}",
            self.gpus_per_node,
            self.models(),
            self.max_price
        )
    }
}

impl fmt::Display for Unplaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaced::NoMatchingNode { models, min_vram_mib } => {
                f.write_str("no online node")?;
                if !models.is_empty() {
                    write!(f, " of model {}", Models(models, 0))?;
                }
                if *min_vram_mib > 0 {
                    write!(f, " with ≥ {min_vram_mib} MiB VRAM")?;
                }
                Ok(())
            }
            Unplaced::NodeTooSmall {
                demand,
                largest_node_gpus,
            } => write!(
                f,
                "no node has {} {}; the largest has {largest_node_gpus}",
                demand.gpus_per_node,
                demand.models()
            ),
            Unplaced::GangNodeSize { demand, node_sizes } => {
                let sizes: Vec<String> = node_sizes.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{demand}; a gang takes whole nodes of exactly {} GPUs and the matching nodes have {}",
                    demand.gpus_per_node,
                    sizes.join(", ")
                )
            }
            Unplaced::PowerBudget {
                demand,
                site,
                headroom_w,
                needed_w,
            } => write!(
                f,
                "{demand} within power; site {site} has {headroom_w} W of headroom and the order needs {needed_w} W"
            ),
            Unplaced::AskAboveMaxPrice { demand, cheapest_ask } => {
                write!(f, "{demand}; cheapest ask {}", cheapest_ask.0)
            }
            Unplaced::NotEnoughFree {
                demand,
                most_free_on_one_node: 0,
            } => {
                write!(f, "{demand}; none free at that price")
            }
            Unplaced::NotEnoughFree {
                demand,
                most_free_on_one_node,
            } => {
                write!(
                    f,
                    "{demand}; at most {most_free_on_one_node} free on one node at that price"
                )
            }
            Unplaced::TooFewNodes {
                demand,
                nodes_with_room,
            } => match nodes_with_room {
                0 => write!(f, "{demand}; none free at that price"),
                n => write!(f, "{demand}; only {n} free at that price"),
            },
            Unplaced::GangSplit {
                demand,
                nodes_with_room,
                most_in_one_pool,
            } => write!(
                f,
                "{demand}; {nodes_with_room} free at that price but at most {most_in_one_pool} in one pool \
                 (a gang needs one provider, model and ask)"
            ),
            Unplaced::LatencyBound {
                demand,
                max_latency_ms,
                nodes_with_room,
                most_within_bound,
            } => write!(
                f,
                "{demand}; {nodes_with_room} free at that price across providers but at most \
                 {most_within_bound} in regions within {max_latency_ms} ms of each other"
            ),
            Unplaced::HeldByReservations {
                demand,
                reserved_idle_gpus,
            } => write!(
                f,
                "{demand} outside reservations; {reserved_idle_gpus} free GPUs there are reserved by contracts"
            ),
            Unplaced::ProviderShareCap {
                demand,
                provider,
                cap_bps,
            } => write!(
                f,
                "{demand} within the provider share cap: more than {}.{:02} % of your GPUs would be on provider {provider}",
                cap_bps / 100,
                cap_bps % 100
            ),
            Unplaced::SmallTenantFloor {
                demand,
                model,
                kept_gpus,
            } => write!(
                f,
                "{demand} outside the small-tenant floor: the last {kept_gpus} free {model} are kept for tenants with few GPUs"
            ),
            Unplaced::ReservedAhead {
                demand,
                starts_in_s,
                nodes,
                ..
            } => {
                let noun = if *nodes == 1 { "node is" } else { "nodes are" };
                write!(
                    f,
                    "{demand} now; {nodes} {noun} reserved for it from about {starts_in_s} s from now, \
                     when the work on them is estimated to end"
                )
            }
            Unplaced::NoReservation { demand } => write!(
                f,
                "reserved tier, but no active reservation contract of yours for {}",
                demand.models()
            ),
            Unplaced::ReservationFull {
                demand,
                reserved_gpus,
                used_gpus,
            } => write!(
                f,
                "your reservation of {reserved_gpus} GPUs has {used_gpus} in use; {} more do not fit",
                u64::from(demand.nodes) * u64::from(demand.gpus_per_node)
            ),
            Unplaced::ReservedNoRoom {
                demand,
                provider,
                model,
                free_gpus,
            } => write!(
                f,
                "no room yet for {} × {} {model} on your reservation at provider {provider}: \
                 {free_gpus} GPUs free there and no spot lease to reclaim",
                demand.nodes, demand.gpus_per_node
            ),
            Unplaced::WaitingForPreemption { leases } => {
                let ids: Vec<String> = leases.iter().map(ToString::to_string).collect();
                let noun = if leases.len() == 1 { "lease" } else { "leases" };
                write!(f, "waiting for {noun} {} to stop", ids.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_types::Micros;

    use super::*;

    fn demand(models: &[GpuModel]) -> Demand {
        Demand {
            nodes: 2,
            gpus_per_node: 8,
            models: Arc::from(models),
            min_vram_mib: 0,
            max_price: PricePerGpuHour(Micros(2_500_000)),
        }
    }

    /// Reasons in service order serialize as the map by order id that the
    /// plan used to hold, and read back in id order.
    #[test]
    fn reasons_serialize_as_a_map_by_id() {
        let h100 = GpuModel::resolve("H100-80GB-SXM").expect("in the catalog");
        let service_order = [
            (
                OrderId(30),
                Unplaced::NoReservation {
                    demand: demand(&[h100]),
                },
            ),
            (
                OrderId(4),
                Unplaced::WaitingForPreemption {
                    leases: vec![LeaseId(7)],
                },
            ),
            (
                OrderId(12),
                Unplaced::TooFewNodes {
                    demand: demand(&[]),
                    nodes_with_room: 1,
                },
            ),
        ];
        let reasons: Reasons = service_order.iter().cloned().collect();
        let map: BTreeMap<OrderId, Unplaced> = service_order.iter().cloned().collect();
        let json = serde_json::to_string(&reasons).expect("serializes");
        assert_eq!(json, serde_json::to_string(&map).expect("serializes"));
        let back: Reasons = serde_json::from_str(&json).expect("reads back");
        let ids: Vec<OrderId> = back.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [OrderId(4), OrderId(12), OrderId(30)]);
        assert_eq!(back, reasons, "equal as maps, whatever the order");
        assert_eq!(reasons[&OrderId(4)], map[&OrderId(4)]);
        assert!(!reasons.contains_key(&OrderId(5)));
        assert_eq!(reasons.values().count(), 3);
    }

    /// An order given an earlier order's reason reads, compares and
    /// serializes as if it held its own copy.
    #[test]
    fn a_shared_reason_reads_as_a_copy() {
        let too_few = Unplaced::TooFewNodes {
            demand: demand(&[]),
            nodes_with_room: 2,
        };
        let waiting = Unplaced::WaitingForPreemption {
            leases: vec![LeaseId(9)],
        };
        let mut shared = Reasons::default();
        shared.push(OrderId(8), too_few.clone());
        shared.push(OrderId(3), waiting.clone());
        shared.push_same(OrderId(5), 0);
        shared.push_same(OrderId(1), 2);
        let copies: Reasons = [
            (OrderId(8), too_few.clone()),
            (OrderId(3), waiting),
            (OrderId(5), too_few.clone()),
            (OrderId(1), too_few.clone()),
        ]
        .into_iter()
        .collect();
        assert_eq!(shared, copies);
        assert_eq!(shared.len(), 4);
        assert_eq!(shared[&OrderId(1)], too_few);
        let ids: Vec<OrderId> = shared.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [OrderId(8), OrderId(3), OrderId(5), OrderId(1)], "service order");
        assert_eq!(
            serde_json::to_string(&shared).expect("serializes"),
            serde_json::to_string(&copies).expect("serializes")
        );
    }
}
