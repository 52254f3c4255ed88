//! The status page's chart: attributed installs per day over the last 30 days, a
//! stacked bar per day with a colour per top source, drawn as inline SVG.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use maud::{html, Markup};

use super::status::count;
use crate::store::{ChartSource, DailySourceCount};

pub(super) const CHART_DAYS: i64 = 30;
/// Sources drawn with their own colour; the rest are grouped as "other".
pub(super) const CHART_SOURCES: usize = 8;
const PALETTE: [&str; CHART_SOURCES + 1] = [
    "#2563eb", "#16a34a", "#d97706", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626",
    "#6b7280",
];

/// One drawn segment of a stacked bar.
struct Bar {
    x: f64,
    y: f64,
    height: f64,
    colour: &'static str,
    label: String,
}

/// The top of the y-axis and its step: 1, 2 or 5 × 10ⁿ, at most four steps.
fn y_scale(max: i64) -> (i64, i64) {
    let max = max.max(1);
    let mut magnitude = 1i64;
    loop {
        for m in [1, 2, 5] {
            let step = m * magnitude;
            let steps = (max + step - 1) / step;
            if steps <= 4 {
                return (step * steps, step);
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

/// A stacked bar per day, one colour per top source, with a y-axis of installs.
pub(super) fn chart(daily: &[DailySourceCount], today: NaiveDate) -> Markup {
    // The store already kept the top sources by name and summed the rest as Other.
    let mut totals: BTreeMap<&ChartSource, i64> = BTreeMap::new();
    for d in daily.iter().filter(|d| d.source != ChartSource::Other) {
        *totals.entry(&d.source).or_default() += d.installs;
    }
    let mut ranked: Vec<(&ChartSource, i64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = ranked
        .iter()
        .take(CHART_SOURCES)
        .map(|(s, _)| source_label(s))
        .collect();
    let series_of = |s: &ChartSource| {
        ranked
            .iter()
            .take(CHART_SOURCES)
            .position(|(t, _)| *t == s)
            .unwrap_or(CHART_SOURCES)
    };

    let first_day = today - Duration::days(CHART_DAYS - 1);
    let mut grid = vec![[0i64; CHART_SOURCES + 1]; CHART_DAYS as usize];
    for d in daily {
        let idx = (d.day - first_day).num_days();
        if (0..CHART_DAYS).contains(&idx) {
            grid[idx as usize][series_of(&d.source)] += d.installs;
        }
    }
    let max = grid
        .iter()
        .map(|day| day.iter().sum::<i64>())
        .max()
        .unwrap_or(0);
    let (top_value, step) = y_scale(max);
    // The axis labels take the left margin.
    let (left, width, height) = (40.0, 600.0, 160.0);
    let plot = height - 8.0;
    let bar = (width - left) / CHART_DAYS as f64;
    let y_of = |n: i64| height - n as f64 / top_value as f64 * plot;
    let mut bars = Vec::new();
    for (i, day) in grid.iter().enumerate() {
        let mut below = 0;
        for (series, &n) in day.iter().enumerate().filter(|(_, c)| **c > 0) {
            let name = top.get(series).map_or("other", String::as_str);
            bars.push(Bar {
                x: left + i as f64 * bar + 1.0,
                y: y_of(below + n),
                height: y_of(below) - y_of(below + n),
                colour: PALETTE[series],
                label: format!(
                    "{}: {name} {}",
                    first_day + Duration::days(i as i64),
                    count(n, "install", "installs")
                ),
            });
            below += n;
        }
    }
    let ticks: Vec<i64> = (0..=top_value / step).map(|i| i * step).collect();
    let has_other = daily.iter().any(|d| d.source == ChartSource::Other);
    html! {
        svg.chart viewBox=(format!("0 0 {width} {}", height + 16.0)) role="img" data-chart="installs-by-source" {
            title { "Attributed installs per day by source" }
            g data-axis="y" {
                @for t in &ticks {
                    line x1=(left) y1=(format!("{:.1}", y_of(*t))) x2=(width) y2=(format!("{:.1}", y_of(*t))) stroke=(if *t == 0 { "#d1d5db" } else { "#eef0f3" }) {}
                    text x=(left - 4.0) y=(format!("{:.1}", y_of(*t) + 3.0)) font-size="10" fill="#6b7280" text-anchor="end" { (t) }
                }
            }
            @for b in &bars {
                rect x=(format!("{:.1}", b.x)) y=(format!("{:.1}", b.y)) width=(format!("{:.1}", bar - 2.0)) height=(format!("{:.1}", b.height)) fill=(b.colour) {
                    title { (b.label) }
                }
            }
            text x=(left) y=(height + 14.0) font-size="10" fill="#6b7280" { (first_day) }
            text x=(width) y=(height + 14.0) font-size="10" fill="#6b7280" text-anchor="end" { (today) }
        }
        @if ranked.is_empty() {
            p.muted { "No attributed installs in the last 30 days." }
        } @else {
            ul.legend {
                @for (i, name) in top.iter().enumerate() {
                    li { span.swatch style=(format!("background:{}", PALETTE[i])) {} (name) }
                }
                @if has_other {
                    li { span.swatch style=(format!("background:{}", PALETTE[CHART_SOURCES])) {} "other" }
                }
            }
        }
    }
}

fn source_label(source: &ChartSource) -> String {
    match source {
        ChartSource::Source(s) => s.clone(),
        ChartSource::NoSource => "(no source)".to_owned(),
        ChartSource::Other => "other".to_owned(),
    }
}
