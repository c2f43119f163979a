//! Plots of a market simulation, each as PNG and SVG (plotters, with an
//! embedded DejaVu Sans so no system font is needed):
//!
//! - `prices`: the spot clearing price of each GPU model over time (the
//!   average over its regions), per GPU-hour;
//! - `utilization`: allocated over online GPUs;
//! - `hhi`: the HHI of capacity and of allocated GPUs by provider, with the
//!   1,800 line of the 2023 merger guidelines;
//! - `wait_cdf`: the distribution of job waits by tenant size class (jobs
//!   that never started count as waiting until the end).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::market::Outputs;

const FONT: &[u8] = include_bytes!("../../../data/fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (960, 540);
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The chart files [`draw`] writes, without extension.
pub const CHARTS: [&str; 4] = ["prices", "utilization", "hhi", "wait_cdf"];

type Point = (f64, f64);
type Drawn<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registered = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
        assert!(registered.is_ok(), "the embedded font is a TTF");
    });
}

/// Writes every chart of [`CHARTS`] into `dir` as `NAME.png` and `NAME.svg`.
pub fn draw(out: &Outputs, dir: &Path) -> anyhow::Result<()> {
    register_font();
    macro_rules! both {
        ($name:expr, $chart:ident) => {{
            let png = dir.join(format!("{}.png", $name));
            let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
            $chart(&root, out).map_err(|e| anyhow::anyhow!("drawing {}: {e}", png.display()))?;
            root.present()
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", png.display()))?;
            let svg = dir.join(format!("{}.svg", $name));
            let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
            $chart(&root, out).map_err(|e| anyhow::anyhow!("drawing {}: {e}", svg.display()))?;
            root.present()
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", svg.display()))?;
        }};
    }
    both!(CHARTS[0], prices);
    both!(CHARTS[1], utilization);
    both!(CHARTS[2], hhi);
    both!(CHARTS[3], wait_cdf);
    Ok(())
}

fn days(out: &Outputs) -> f64 {
    (out.summary.duration_s as f64 / 86_400.0).max(1e-6)
}

fn legend(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

fn prices<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, out: &Outputs) -> Drawn<DB> {
    root.fill(&WHITE)?;
    // Per model: the average of its regions' prices at each metrics time.
    let mut by_model: BTreeMap<&str, BTreeMap<u64, (f64, u32)>> = BTreeMap::new();
    for r in &out.spot {
        let e = by_model.entry(&r.model).or_default().entry(r.t_s).or_insert((0.0, 0));
        e.0 += r.price.0 as f64 / 1e6;
        e.1 += 1;
    }
    let top = by_model
        .values()
        .flat_map(|s| s.values().map(|(sum, n)| sum / f64::from(*n)))
        .fold(0.0f64, f64::max)
        .max(0.01)
        * 1.15;
    let mut chart = ChartBuilder::on(root)
        .caption("Spot clearing price by GPU model", ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..days(out), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("day")
        .y_desc("price per GPU-hour")
        .draw()?;
    for (i, (model, series)) in by_model.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points = series
            .iter()
            .map(|(t, (sum, n))| (*t as f64 / 86_400.0, sum / f64::from(*n)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*model)
            .legend(legend(color));
    }
    if !by_model.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

fn utilization<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, out: &Outputs) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption("Utilization: allocated over online GPUs", ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..days(out), 0f64..1.05f64)?;
    chart.configure_mesh().x_desc("day").y_desc("fraction").draw()?;
    let points = out.timeseries.iter().map(|r| {
        let u = if r.gpus_online == 0 {
            0.0
        } else {
            r.gpus_allocated as f64 / r.gpus_online as f64
        };
        (r.t_s as f64 / 86_400.0, u)
    });
    chart.draw_series(LineSeries::new(points, PALETTE[0].stroke_width(2)))?;
    Ok(())
}

fn hhi<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, out: &Outputs) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption("Concentration by provider (HHI)", ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..days(out), 0f64..10_000f64)?;
    chart.configure_mesh().x_desc("day").y_desc("HHI").draw()?;
    let at = |t: u64| t as f64 / 86_400.0;
    let series: [(&str, RGBColor, Vec<Point>); 2] = [
        (
            "capacity",
            PALETTE[0],
            out.timeseries
                .iter()
                .map(|r| (at(r.t_s), f64::from(r.hhi_capacity)))
                .collect(),
        ),
        (
            "allocated GPUs",
            PALETTE[1],
            out.timeseries
                .iter()
                .map(|r| (at(r.t_s), f64::from(r.hhi_allocated)))
                .collect(),
        ),
    ];
    for (label, color, points) in series {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(legend(color));
    }
    let threshold = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1800.0), (days(out), 1800.0)],
            threshold.stroke_width(1),
        ))?
        .label("1,800: highly concentrated")
        .legend(legend(threshold));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn wait_cdf<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, out: &Outputs) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let end = out.summary.duration_s;
    // Waits in hours per tenant class, from the jobs and their groups' classes.
    let mut waits: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for j in &out.jobs {
        let wait = j.started_s.unwrap_or(end).saturating_sub(j.submitted_s);
        waits.entry(&j.tenant_class).or_default().push(wait as f64 / 3600.0);
    }
    let longest = waits
        .values()
        .flat_map(|w| w.iter().copied())
        .fold(0.0f64, f64::max)
        .max(0.1);
    let mut chart = ChartBuilder::on(root)
        .caption("Job waits by tenant size class (CDF)", ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..longest * 1.02, 0f64..1.0f64)?;
    chart
        .configure_mesh()
        .x_desc("wait (hours)")
        .y_desc("fraction of jobs")
        .draw()?;
    for (i, (class, mut w)) in waits.into_iter().enumerate() {
        w.sort_by(f64::total_cmp);
        let n = w.len() as f64;
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = w.iter().enumerate().map(|(k, x)| (*x, (k + 1) as f64 / n)).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("tenants {class} GPUs"))
            .legend(legend(color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
