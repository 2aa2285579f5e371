//! The report as one HTML page: inline CSS and SVG, no request of any kind. Each chart is an
//! `<svg data-chart="NAME">` whose series are each one element carrying `data-series="NAME"`
//! (and `data-points`, how many points it draws), with the chart's table beside it. A chart with
//! no data is not drawn: a sentence says why. Every text from the data (group IDs, accounts) is
//! escaped.

use super::{Range, Report, AGE_EDGES_HOURS, TIME_EDGES_HOURS};
use std::fmt::Write;

/// Chart size (the SVG scales down with the page; the view box keeps its proportions).
const W: f64 = 640.0;
const H: f64 = 300.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 64.0;

/// Series colours (colour-blind safe, Okabe-Ito), cycled.
const COLOURS: &[&str] = &[
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn hours_label(h: f64) -> String {
    match h {
        h if h >= 24.0 && h % 24.0 == 0.0 => format!("{}d", h / 24.0),
        h => format!("{h}h"),
    }
}

/// A curve to draw: its name, its points, whether it is dashed (a summary over every group).
type Curve<'a> = (String, &'a [(usize, f64)], bool);

/// A line chart over categorical x positions (`labels`), y from 0 to 1 (a ratio).
fn line_chart(name: &str, title: &str, labels: &[String], series: &[Curve]) -> String {
    let n = labels.len().max(2) as f64;
    let x = |i: usize| LEFT + (W - LEFT - RIGHT) * i as f64 / (n - 1.0);
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v.clamp(0.0, 1.0));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg data-chart="{name}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        escape(title)
    );
    axes(
        &mut svg,
        labels,
        &x,
        &[0.0, 0.25, 0.5, 0.75, 1.0],
        &|v| format!("{:.0}%", v * 100.0),
        &y,
    );
    for (k, (series_name, points, dashed)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v)))
            .collect();
        let dash = if *dashed {
            r#" stroke-dasharray="5 4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<g data-series="{}" data-points="{}"><polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            escape(series_name),
            points.len(),
            path.join(" ")
        );
        for (i, v) in points.iter() {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"><title>{}: {} {:.1}%</title></circle>"#,
                x(*i),
                y(*v),
                escape(series_name),
                escape(&labels[*i]),
                v * 100.0
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

/// A bar chart: one bar per label and series (grouped), y from 0 to the largest value.
fn bar_chart(
    name: &str,
    title: &str,
    labels: &[String],
    series: &[(String, Vec<f64>)],
    percent: bool,
) -> String {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let max = if percent { 1.0 } else { nice_ceiling(max) };
    let slots = labels.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / slots;
    let bar = (slot * 0.8) / series.len().max(1) as f64;
    let x_center = |i: usize| LEFT + slot * (i as f64 + 0.5);
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v / max).clamp(0.0, 1.0));
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg data-chart="{name}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        escape(title)
    );
    let ticks: Vec<f64> = (0..=4).map(|k| max * k as f64 / 4.0).collect();
    let fmt = |v: f64| {
        if percent {
            format!("{:.0}%", v * 100.0)
        } else {
            format!("{v:.0}")
        }
    };
    axes(&mut svg, labels, &x_center, &ticks, &fmt, &y);
    for (k, (series_name, values)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let _ = write!(
            svg,
            r#"<g data-series="{}" data-points="{}" fill="{colour}">"#,
            escape(series_name),
            values.len()
        );
        for (i, v) in values.iter().enumerate() {
            let left = x_center(i) - slot * 0.4 + bar * k as f64;
            let top = y(*v);
            let _ = write!(
                svg,
                r#"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}"><title>{}: {} {}</title></rect>"#,
                (bar - 1.0).max(1.0),
                (H - BOTTOM - top).max(0.0),
                escape(series_name),
                escape(&labels[i]),
                fmt(*v)
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn axes(
    svg: &mut String,
    labels: &[String],
    x: &dyn Fn(usize) -> f64,
    ticks: &[f64],
    fmt: &dyn Fn(f64) -> String,
    y: &dyn Fn(f64) -> f64,
) {
    svg.push_str(r##"<g class="axes" font-size="11" fill="#444">"##);
    for t in ticks {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            y(*t),
            y(*t),
            LEFT - 6.0,
            y(*t) + 4.0,
            fmt(*t)
        );
    }
    // At most ~12 x labels, so long ranges stay legible, each cut to the room it has (about
    // 6.5 units a character at this size); the table beside holds the whole name.
    let every = labels.len().div_ceil(12).max(1);
    // Labels wider than their slot are turned (and cut at 14 characters: the table beside
    // holds the whole name).
    let room = (W - LEFT - RIGHT) / labels.len().div_ceil(every).max(1) as f64;
    let turn = labels.iter().any(|l| l.chars().count() as f64 * 7.0 > room);
    for (i, label) in labels.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let shown: String = match label.chars().count() > 14 {
            true => label.chars().take(13).chain(['…']).collect(),
            false => label.clone(),
        };
        let (x, y) = (x(i), H - BOTTOM + 16.0);
        let _ = match turn {
            true => write!(
                svg,
                r#"<text x="{x:.1}" y="{y}" text-anchor="end" transform="rotate(-30 {x:.1} {y})">{}</text>"#,
                escape(&shown)
            ),
            false => write!(
                svg,
                r#"<text x="{x:.1}" y="{y}" text-anchor="middle">{}</text>"#,
                escape(&shown)
            ),
        };
    }
    svg.push_str("</g>");
}

/// A table: a header row and rows of cells (already escaped where they hold data).
fn table(caption: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = format!("<table><caption>{}</caption><thead><tr>", escape(caption));
    for h in header {
        let _ = write!(t, "<th>{}</th>", escape(h));
    }
    t.push_str("</tr></thead><tbody>");
    for row in rows {
        t.push_str("<tr>");
        for cell in row {
            let _ = write!(t, "<td>{cell}</td>");
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

/// A bin's count (0 for a report with no bins: an empty range).
fn bin(counts: &[i64], i: usize) -> i64 {
    counts.get(i).copied().unwrap_or(0)
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// The series' names beside their colours (the order the chart draws them in).
fn legend(names: &[(String, bool)]) -> String {
    let mut out = String::from(r#"<ul class="legend">"#);
    for (k, (name, dashed)) in names.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let style = if *dashed { "dashed" } else { "solid" };
        let _ = write!(
            out,
            r#"<li><span class="swatch" style="border-top: 3px {style} {colour}"></span>{}</li>"#,
            escape(name)
        );
    }
    out.push_str("</ul>");
    out
}

fn section(title: &str, explain: &str, chart: Option<String>, table: String) -> String {
    let body = match chart {
        Some(svg) => format!(r#"<div class="chart">{svg}</div>{table}"#),
        None => format!(r#"<p class="empty">{}</p>"#, escape(explain)),
    };
    format!(
        r#"<section><h2>{}</h2><div class="pair">{body}</div></section>"#,
        escape(title)
    )
}

/// The read ratio by message age.
fn ratio_section(report: &Report) -> String {
    let ages: Vec<String> = AGE_EDGES_HOURS.iter().map(|h| hours_label(*h)).collect();
    let mut series: Vec<Curve> = report
        .ratio_by_group
        .iter()
        .map(|(g, p)| (g.clone(), p.as_slice(), false))
        .collect();
    let quartile_names = ["p25", "median", "p75"];
    for (name, points) in quartile_names.iter().zip(report.ratio_quartiles.iter()) {
        series.push((format!("all groups {name}"), points.as_slice(), true));
    }
    let has_curves = !report.ratio_quartiles[1].is_empty();
    let rows: Vec<Vec<String>> = report.ratio_quartiles[1]
        .iter()
        .enumerate()
        .map(|(k, (i, median))| {
            vec![
                escape(&ages[*i]),
                pct(report.ratio_quartiles[0][k].1),
                pct(*median),
                pct(report.ratio_quartiles[2][k].1),
            ]
        })
        .collect();
    section(
        "Read ratio by message age",
        "No snapshots of messages first seen in this range.",
        has_curves.then(|| {
            let names: Vec<(String, bool)> =
                series.iter().map(|(n, _, d)| (n.clone(), *d)).collect();
            line_chart("ratio_by_age", "Read ratio by message age", &ages, &series) + &legend(&names)
        }),
        table(
            "All groups: read ratio at each age since the first snapshot (per group medians drawn solid)",
            &["age", "p25", "median", "p75"],
            &rows,
        ),
    )
}

/// Time to 50% and to 90%.
fn time_section(report: &Report) -> String {
    let bins: Vec<String> = TIME_EDGES_HOURS
        .iter()
        .enumerate()
        .map(|(i, h)| match TIME_EDGES_HOURS.get(i + 1) {
            Some(next) => format!("{}–{}", hours_label(*h), hours_label(*next)),
            None => format!("≥{}", hours_label(*h)),
        })
        .collect();
    let reached =
        report.time_to_half.iter().sum::<i64>() + report.time_to_ninety.iter().sum::<i64>();
    let rows: Vec<Vec<String>> = bins
        .iter()
        .enumerate()
        .map(|(i, b)| {
            vec![
                escape(b),
                bin(&report.time_to_half, i).to_string(),
                bin(&report.time_to_ninety, i).to_string(),
            ]
        })
        .chain(std::iter::once(vec![
            "not reached".into(),
            report.never_half.to_string(),
            report.never_ninety.to_string(),
        ]))
        .collect();
    let as_f64 = |v: &[i64]| {
        (0..bins.len())
            .map(|i| bin(v, i) as f64)
            .collect::<Vec<_>>()
    };
    section(
        "Time to 50% and to 90% read",
        "No message of this range has reached 50% or 90% read yet.",
        (reached > 0).then(|| {
            bar_chart(
                "time_to_read",
                "Messages by time to 50% and to 90% read",
                &bins,
                &[
                    ("to 50%".into(), as_f64(&report.time_to_half)),
                    ("to 90%".into(), as_f64(&report.time_to_ninety)),
                ],
                false,
            ) + &legend(&[("to 50%".into(), false), ("to 90%".into(), false)])
        }),
        table(
            "Messages by time from first snapshot to 50% / 90% read",
            &["time", "to 50%", "to 90%"],
            &rows,
        ),
    )
}

/// The groups that read least.
fn least_section(report: &Report) -> String {
    let labels: Vec<String> = report.least.iter().map(|(g, _, _)| g.clone()).collect();
    let rows: Vec<Vec<String>> = report
        .least
        .iter()
        .map(|(g, n, r)| vec![escape(g), n.to_string(), pct(*r)])
        .collect();
    section(
        "Groups that read least",
        "No group of this range has a read ratio yet.",
        (!report.least.is_empty()).then(|| {
            bar_chart(
                "least_read_groups",
                "Mean read ratio of the groups that read least",
                &labels,
                &[(
                    "mean read ratio".into(),
                    report.least.iter().map(|(_, _, r)| *r).collect(),
                )],
                true,
            )
        }),
        table(
            "The groups with the lowest mean read ratio (newest snapshot of each message)",
            &["group", "messages", "mean read ratio"],
            &rows,
        ),
    )
}

/// The daily trend.
fn daily_section(report: &Report) -> String {
    let days: Vec<String> = report.daily.iter().map(|(d, ..)| d.to_string()).collect();
    let points: Vec<(usize, f64)> = report
        .daily
        .iter()
        .enumerate()
        .map(|(i, (_, _, r, _))| (i, *r))
        .collect();
    let rows: Vec<Vec<String>> = report
        .daily
        .iter()
        .map(|(d, n, r, half)| {
            vec![
                d.to_string(),
                n.to_string(),
                pct(*r),
                half.map_or("–".into(), |h| format!("{h:.1} h")),
            ]
        })
        .collect();
    section(
        "Daily trend",
        "No message was first seen in this range.",
        (!report.daily.is_empty()).then(|| {
            line_chart(
                "daily_trend",
                "Mean read ratio by day of first snapshot",
                &days,
                &[("mean read ratio".into(), points.as_slice(), false)],
            )
        }),
        table(
            "Per UTC day of first snapshot",
            &["day", "messages", "mean read ratio", "median time to 50%"],
            &rows,
        ),
    )
}

/// Members seen reading before the range, silent in it.
fn silent_section(report: &Report) -> String {
    let labels: Vec<String> = report.silent.iter().map(|(g, ..)| g.clone()).collect();
    let rows: Vec<Vec<String>> = report
        .silent
        .iter()
        .map(|(g, n, accounts)| {
            let mut shown = accounts
                .iter()
                .map(|a| escape(a))
                .collect::<Vec<_>>()
                .join(", ");
            if (*n as usize) > accounts.len() {
                let _ = write!(shown, ", … ({} more)", *n as usize - accounts.len());
            }
            vec![escape(g), n.to_string(), shown]
        })
        .collect();
    let explain = if report.has_read_events {
        "Every member seen reading before this range read something in it."
    } else {
        "No read events are stored for these groups (read-event detail is off: see the README, \"Who read it\")."
    };
    section(
        "Members seen reading before, silent in this range",
        explain,
        (!report.silent.is_empty()).then(|| {
            bar_chart(
                "silent_members",
                "Members who read before the range and nothing in it, per group",
                &labels,
                &[(
                    "silent members".into(),
                    report.silent.iter().map(|(_, n, _)| *n as f64).collect(),
                )],
                false,
            )
        }),
        table(
            "Accounts as stored (keyed hashes where hashing is on)",
            &["group", "members", "accounts"],
            &rows,
        ),
    )
}
/// The whole page: the five sections under a header saying what the page covers.
pub fn render(report: &Report, range: &Range, generated: chrono::DateTime<chrono::Utc>) -> String {
    let sections = [
        ratio_section(report),
        time_section(report),
        least_section(report),
        daily_section(report),
        silent_section(report),
    ];

    let scope = match range.groups.as_slice() {
        [] => "every group".to_string(),
        groups => format!("groups {}", groups.join(", ")),
    };
    let app = range.app.map_or(String::new(), |a| format!(", app {a}"));
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Read receipts, {since} to {until}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px; padding: 16px; color: #222; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
.meta {{ color: #555; margin: 0 0 8px; }}
.pair {{ display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }}
.chart {{ flex: 1 1 560px; min-width: 0; max-width: 720px; }}
.chart svg {{ width: 100%; height: auto; display: block; }}
table {{ border-collapse: collapse; flex: 1 1 320px; font-size: 12px; max-width: 100%; }}
caption {{ text-align: left; color: #555; padding-bottom: 4px; }}
th, td {{ border-bottom: 1px solid #e4e4e4; padding: 3px 8px; text-align: right; overflow-wrap: anywhere; }}
th:first-child, td:first-child {{ text-align: left; }}
.empty {{ color: #777; font-style: italic; }}
.legend {{ list-style: none; padding: 0; margin: 4px 0 0 {LEFT}px; font-size: 12px; display: flex; flex-wrap: wrap; gap: 4px 14px; }}
.swatch {{ display: inline-block; width: 18px; margin-right: 5px; vertical-align: middle; }}
</style></head>
<body>
<h1>Read receipts</h1>
<p class="meta">Messages first seen from {since} (inclusive) to {until} (exclusive), {scope}{app}: {messages} messages in {groups} groups, {snapshots} message-age points. Generated {generated} by receipt-exporter {version}. Times count from a message's first snapshot; their precision is the spacing of the runs.</p>
{body}
<script>addEventListener("load", () => {{ const d = document.documentElement; d.dataset.fits = String(d.scrollWidth <= d.clientWidth); }});</script>
</body></html>
"#,
        since = range.since.format("%Y-%m-%d %H:%M UTC"),
        until = range.until.format("%Y-%m-%d %H:%M UTC"),
        scope = escape(&scope),
        app = escape(&app),
        messages = report.messages,
        groups = report.groups,
        snapshots = report.snapshots,
        generated = generated.format("%Y-%m-%d %H:%M UTC"),
        version = env!("CARGO_PKG_VERSION"),
        body = sections.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Range {
        Range {
            since: "2026-12-01T00:00:00Z".parse().unwrap(),
            until: "2026-12-08T00:00:00Z".parse().unwrap(),
            groups: vec![],
            app: None,
        }
    }

    #[test]
    fn an_empty_report_draws_no_chart_and_says_why() {
        let page = render(&Report::default(), &range(), chrono::Utc::now());
        assert!(!page.contains("<svg"), "no chart without data");
        assert!(page.contains("No snapshots of messages first seen in this range."));
        assert_eq!(page.matches("<section>").count(), 5);
    }

    #[test]
    fn group_ids_are_escaped_everywhere() {
        let report = Report {
            messages: 1,
            groups: 1,
            least: vec![("<script>alert(1)</script>".into(), 1, 0.5)],
            ..Default::default()
        };
        let page = render(&report, &range(), chrono::Utc::now());
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains(r#"<svg data-chart="least_read_groups""#));
    }
}
