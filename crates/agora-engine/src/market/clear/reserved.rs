//! Serving a reserved-tier order: on the pools where its tenant holds a
//! reservation with room, at no per-GPU-hour price, preempting spot leases
//! (which include resold idle reserved GPUs) when the pool has no free room.
//! See [`crate::market::reservation`] for the model.

use agora_types::{GpuModel, Micros, PricePerGpuHour, ProviderId};

use super::{Round, Unplaced};
use crate::market::{Demand, Holding, OrderSpec, RoundPlan};

impl Round<'_> {
    /// Places a reserved-tier order or plans its preemptions; None if placed, else why not.
    pub(super) fn serve_reserved(&mut self, order: &OrderSpec, plan: &mut RoundPlan) -> Option<Unplaced> {
        self.begin(order);
        let gpus = order.gpus_total();
        // The tenant's holdings on models it accepts, by (provider, model).
        let held: Vec<((ProviderId, GpuModel), Holding)> = self
            .reserved
            .iter()
            .filter(|((_, model), _)| order.accepts(*model))
            .filter_map(|(key, pool)| pool.holders().get(&order.tenant).map(|h| (*key, *h)))
            .collect();
        let demand = Demand::of(order);
        if held.is_empty() {
            return Some(Unplaced::NoReservation { demand });
        }
        // Room counts resold GPUs, which the holder takes back by preemption.
        let with_room: Vec<((ProviderId, GpuModel), Holding)> =
            held.iter().filter(|(_, h)| h.room() >= gpus).copied().collect();
        if with_room.is_empty() {
            let (_, h) = held.iter().max_by_key(|(_, h)| h.room()).copied()?;
            return Some(Unplaced::ReservationFull {
                demand,
                reserved_gpus: h.gpus,
                used_gpus: h.used,
            });
        }
        // The price is the contract's business: search at any ask, one pool at a time.
        let mut unbounded = order.clone();
        unbounded.max_price = PricePerGpuHour(Micros(i128::MAX));
        let indexed = |m: &GpuModel| self.market.indexes.models.contains_key(m);
        // On free GPUs only as far as the reservation is idle: beyond that its
        // GPUs are resold, and taking others would leave a spot lease credited
        // to a holder that no longer lends it anything.
        for &((provider, model), h) in &with_room {
            if !indexed(&model) || h.idle() < gpus {
                continue;
            }
            self.only_provider = Some(provider);
            let mut refused = None;
            let found = if order.nodes == 1 {
                self.find_single(&unbounded, &[model], &mut refused)
            } else {
                self.find_gang(&unbounded, &[model], &mut refused)
            };
            self.only_provider = None;
            if let Some((pool, nodes)) = found {
                plan.placements.push(self.reserve(order, pool, &nodes));
                return None;
            }
        }
        for &((provider, model), h) in &with_room {
            if !indexed(&model) {
                continue;
            }
            self.only_provider = Some(provider);
            // Short of idle GPUs: take back its own resold ones.
            self.victims_of = (h.idle() < gpus).then_some(order.tenant);
            let reclaim = if order.nodes == 1 {
                self.find_single_reclaim(&unbounded, &[model])
            } else {
                self.find_gang_reclaim(&unbounded, &[model])
            };
            self.only_provider = None;
            self.victims_of = None;
            if let Some(reclaim) = reclaim {
                // The reservation is spoken for: a later order of the round must not preempt for it again.
                if let Some(h) = self
                    .reserved_mut((provider, model))
                    .and_then(|p| p.holders.get_mut(&order.tenant))
                {
                    h.used += gpus;
                }
                return Some(self.wait_for(order, &reclaim, plan));
            }
        }
        let ((provider, model), _) = with_room[0];
        let free_gpus = self.reserved.get(&(provider, model)).map_or(0, |p| p.free_gpus());
        Some(Unplaced::ReservedNoRoom {
            demand,
            provider,
            model,
            free_gpus,
        })
    }
}
