//! The spot market in the control loop: each clearing round prices every class
//! (GPU model, region of the site) with [`agora_engine::spot`], admits only
//! spot orders whose bid reaches the price of a class they accept, preempts
//! the spot leases the price outbids (with the usual grace signal), and keeps
//! each class's price history for the API.
//!
//! A spot lease pays its node's ask, fixed when it starts (one number the
//! ledger charges exactly); the clearing price decides who may run, not what
//! a running lease pays. The history lives in memory (a bounded series per
//! class since the server started): prices are a function of the state of
//! each round, not events, so they are not replayed.

use std::collections::{BTreeMap, VecDeque};

use agora_engine::market::OrderSpec;
use agora_engine::spot::{SpotClass, SpotQuote, below_spot_price, spot_quotes};
use agora_proto::api::{SpotPricePoint, SpotView};
use agora_types::{GpuModel, PricePerGpuHour, RegionId, SiteId, Tier, UnixMs};

use crate::core::Txn;
use crate::events::{Event, StopReason};
use crate::state::Exchange;

/// Price changes kept per class.
pub const HISTORY_PER_CLASS: usize = 1000;

/// A class: GPU model and region.
pub type Class = (GpuModel, String);

/// This round's quotes and the price history.
#[derive(Debug, Default)]
pub struct SpotBoard {
    pub quotes: BTreeMap<Class, SpotQuote>,
    pub history: BTreeMap<Class, VecDeque<(UnixMs, PricePerGpuHour)>>,
    /// `quotes` by region number, as the engine computed them (for the
    /// outbid check, which looks up every spot lease's class).
    by_region_id: BTreeMap<SpotClass, SpotQuote>,
}

/// Prices every class from the state now and records changed prices.
pub fn price(txn: &mut Txn<'_>) {
    let by_region_id = spot_quotes(&txn.ex.market);
    let names: BTreeMap<RegionId, &str> = txn.ex.regions.iter().map(|(name, id)| (*id, name.as_str())).collect();
    let quotes: BTreeMap<Class, SpotQuote> = by_region_id
        .iter()
        .map(|(&(model, region), q)| {
            let name = region.and_then(|r| names.get(&r).copied()).unwrap_or_default();
            ((model, name.to_string()), *q)
        })
        .collect();
    let now = txn.now;
    let board = &mut txn.vol.spot;
    board.by_region_id = by_region_id;
    for (class, q) in &quotes {
        let series = board.history.entry(class.clone()).or_default();
        if series.back().is_none_or(|(_, p)| *p != q.price) {
            series.push_back((now, q.price));
            if series.len() > HISTORY_PER_CLASS {
                series.pop_front();
            }
        }
    }
    board.quotes = quotes;
}

/// Whether a spot order's bid reaches the price of some class it accepts
/// (other tiers always pass); else why it waits.
pub fn admits(board: &SpotBoard, order: &OrderSpec) -> Result<(), String> {
    if order.tier != Tier::Spot {
        return Ok(());
    }
    let mut lowest: Option<(&Class, PricePerGpuHour)> = None;
    for (class, q) in &board.quotes {
        if !order.accepts(class.0) {
            continue;
        }
        if q.price <= order.max_price {
            return Ok(());
        }
        if lowest.is_none_or(|(_, p)| q.price < p) {
            lowest = Some((class, q.price));
        }
    }
    match lowest {
        // No class at all: the market's own reason says why.
        None => Ok(()),
        Some(((model, region), price)) => Err(format!(
            "spot price of {} in region `{region}` is {price}, above this order's bid of {}",
            model.name(),
            order.max_price
        )),
    }
}

/// The price of every (site, model) whose class is priced above its floor,
/// for the engine: a spot order is never placed where its bid is below it.
pub fn site_prices(ex: &Exchange, board: &SpotBoard) -> BTreeMap<(SiteId, GpuModel), PricePerGpuHour> {
    let mut scarce: BTreeMap<&str, Vec<(GpuModel, PricePerGpuHour)>> = BTreeMap::new();
    for ((model, region), q) in &board.quotes {
        if q.price > q.floor {
            scarce.entry(region.as_str()).or_default().push((*model, q.price));
        }
    }
    let mut out = BTreeMap::new();
    if scarce.is_empty() {
        return out;
    }
    for site in ex.sites.values() {
        for &(model, price) in scarce.get(site.region.as_str()).into_iter().flatten() {
            out.insert((site.id, model), price);
        }
    }
    out
}

/// Signals every spot lease the current prices outbid to stop.
pub fn preempt_outbid(txn: &mut Txn<'_>) {
    let outbid = below_spot_price(&txn.ex.market, &txn.vol.spot.by_region_id);
    for lease in outbid {
        tracing::info!(%lease, "preempting spot lease outbid by the spot price");
        txn.emit(Event::StopRequested {
            lease,
            reason: StopReason::Preempted,
            at: txn.now,
        });
    }
}

/// The classes with their price and history, optionally filtered.
pub fn view(board: &SpotBoard, model: Option<GpuModel>, region: Option<&str>) -> Vec<SpotView> {
    board
        .quotes
        .iter()
        .filter(|((m, r), _)| model.is_none_or(|want| *m == want) && region.is_none_or(|want| r == want))
        .map(|((m, r), q)| SpotView {
            model: *m,
            region: r.clone(),
            price: q.price,
            floor: q.floor,
            supply_gpus: q.supply_gpus,
            demand_gpus: q.demand_gpus,
            scarce: q.scarce,
            history: board
                .history
                .get(&(*m, r.clone()))
                .map(|h| {
                    h.iter()
                        .map(|(at, price)| SpotPricePoint {
                            at_ms: at.0,
                            price: *price,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}
