//! Plain tables for people; `--output json` prints the API documents instead.

use agora_types::{Micros, UnixMs};
use comfy_table::presets::NOTHING;
use comfy_table::{Cell, Table};

pub(crate) fn new(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(headers.iter().map(|h| Cell::new(h.to_uppercase())));
    t
}

pub(crate) fn money(m: Micros) -> String {
    m.to_string()
}

pub(crate) fn opt_money(m: Option<Micros>) -> String {
    m.map_or_else(|| "-".into(), money)
}

/// Seconds between two instants, for durations in tables.
pub(crate) fn span(from: UnixMs, to: Option<UnixMs>, now: UnixMs) -> String {
    let end = to.unwrap_or(now);
    let s = end.seconds_since(from);
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    }
}
