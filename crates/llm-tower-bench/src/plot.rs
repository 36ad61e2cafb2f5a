//! `--plot DIR`: SVG and PNG charts of a report, drawn with plotters and a
//! bundled font (a subset of DejaVu Sans), so the pictures are the same on
//! every machine and need no system fonts.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::{Report, Run};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const SIZE: (u32, u32) = (960, 520);
const FAMILY: &str = "sans-serif";

fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err("the bundled font did not load".into()) }
}

fn e<E: std::fmt::Debug>(err: E) -> String {
    format!("drawing failed: {err:?}")
}

/// A line of a chart.
struct Line {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// What one chart shows.
struct Chart {
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    lines: Vec<Line>,
    /// Shaded x ranges, and their legend.
    shaded: Vec<(f64, f64)>,
    shade_label: &'static str,
    y_max: Option<f64>,
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const RED_: RGBColor = RGBColor(214, 39, 40);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const GREY_: RGBColor = RGBColor(127, 127, 127);

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    root.fill(&WHITE).map_err(e)?;
    let pts = c.lines.iter().flat_map(|l| l.points.iter());
    let x_max = pts.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-3) * 1.02;
    let x_min = pts.clone().map(|p| p.0).fold(f64::INFINITY, f64::min).min(x_max).min(0.0);
    let y_max = c.y_max.unwrap_or_else(|| pts.map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1);
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, (FAMILY, 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_min..x_max, 0f64..y_max)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(c.x_desc)
        .y_desc(c.y_desc)
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    if !c.shaded.is_empty() {
        let fill = RGBColor(255, 160, 160).mix(0.35).filled();
        chart
            .draw_series(c.shaded.iter().map(|&(a, b)| Rectangle::new([(a, 0.0), (b, y_max)], fill)))
            .map_err(e)?
            .label(c.shade_label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], fill));
    }
    for l in &c.lines {
        let color = l.color;
        chart
            .draw_series(LineSeries::new(l.points.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(l.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        if l.points.len() < 16 {
            chart.draw_series(l.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY_)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn write(dir: &Path, name: &str, c: &Chart, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let svg = dir.join(format!("{name}.svg"));
    draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), c)?;
    let png = dir.join(format!("{name}.png"));
    draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), c)?;
    out.extend([svg, png]);
    Ok(())
}

/// The run whose timeline tells the most: the breaker run, else the first.
fn over_time(report: &Report) -> Option<&Run> {
    report.runs.iter().find(|r| r.breaker.is_some()).or(report.runs.first())
}

/// Where the failing provider's breaker was not closed: `(from, to)` seconds.
fn open_spans(run: &Run) -> Vec<(f64, f64)> {
    let Some(b) = &run.breaker else { return Vec::new() };
    let end = run.timeline.last().map_or(run.summary.elapsed_s, |t| t.t_s);
    let mut spans = Vec::new();
    let mut since = None;
    for t in b.transitions.iter().filter(|t| t.provider == b.failing) {
        match (since, t.to.as_str()) {
            (None, "open" | "half_open") => since = Some(t.t_s),
            (Some(s), "closed") => {
                spans.push((s, t.t_s));
                since = None;
            }
            _ => {}
        }
    }
    if let Some(s) = since {
        spans.push((s, end));
    }
    spans
}

/// Writes the report's charts into `dir` (created if missing) and returns
/// the files written: latency percentiles per step (rate and stress),
/// latency and throughput over time (breaker-open time shaded), and the
/// cache's hit ratio over time.
pub fn plot(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let mut out = Vec::new();

    let steps: Vec<&Run> = report.runs.iter().filter(|r| r.params.get("qps").is_some()).collect();
    if !steps.is_empty() {
        let pick = |f: fn(&crate::record::Distribution) -> f64| {
            let mut v: Vec<(f64, f64)> = steps
                .iter()
                .filter_map(|r| Some((r.params["qps"].as_f64()?, f(r.summary.latency.as_ref()?))))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        let mut lines = vec![
            Line { name: "p50".into(), color: BLUE_, points: pick(|d| d.p50) },
            Line { name: "p90".into(), color: GREEN_, points: pick(|d| d.p90) },
            Line { name: "p99".into(), color: ORANGE_, points: pick(|d| d.p99) },
            Line { name: "p99.9".into(), color: RED_, points: pick(|d| d.p999) },
        ];
        let base: Vec<(f64, f64)> = steps
            .iter()
            .filter_map(|r| {
                Some((r.params["qps"].as_f64()?, r.baseline.as_ref()?.summary.latency.as_ref()?.p99))
            })
            .collect();
        if !base.is_empty() {
            lines.push(Line { name: "upstream alone p99".into(), color: GREY_, points: base });
        }
        let chart = Chart {
            title: format!("Latency by offered rate ({})", report.target),
            x_desc: "offered rate, requests/s",
            y_desc: "latency, ms (from intended send time)",
            lines,
            shaded: Vec::new(),
            shade_label: "",
            y_max: None,
        };
        write(dir, "latency-percentiles", &chart, &mut out)?;
    }

    if let Some(run) = over_time(report) {
        let tl = &run.timeline;
        let busy: Vec<_> = tl.iter().filter(|t| t.requests > 0).collect();
        let series = |f: fn(&crate::record::Tick) -> f64| busy.iter().map(|t| (t.t_s, f(t))).collect();
        let title = format!("[{}] {}", run.scenario, run.label);
        let latency = Chart {
            title: format!("Latency over time: {title}"),
            x_desc: "seconds",
            y_desc: "latency, ms",
            lines: vec![
                Line { name: "p50".into(), color: BLUE_, points: series(|t| t.p50_ms) },
                Line { name: "p99".into(), color: ORANGE_, points: series(|t| t.p99_ms) },
            ],
            shaded: open_spans(run),
            shade_label: "breaker not closed",
            y_max: None,
        };
        write(dir, "latency-over-time", &latency, &mut out)?;
        let width = tl.first().map_or(1.0, |t| t.t_s);
        let throughput = Chart {
            title: format!("Throughput over time: {title}"),
            x_desc: "seconds",
            y_desc: "requests/s",
            lines: vec![
                Line { name: "successes/s".into(), color: GREEN_, points: series(|t| t.throughput_rps) },
                Line {
                    name: "errors/s".into(),
                    color: RED_,
                    points: busy.iter().map(|t| (t.t_s, t.errors as f64 / width)).collect(),
                },
            ],
            shaded: open_spans(run),
            shade_label: "breaker not closed",
            y_max: None,
        };
        write(dir, "throughput-over-time", &throughput, &mut out)?;
    }

    if let Some(run) = report.runs.iter().find(|r| r.scenario == "cache") {
        let (mut hits, mut looked) = (0u64, 0u64);
        let mut cumulative = Vec::new();
        let mut per_bucket = Vec::new();
        for t in &run.timeline {
            hits += t.cache_hits;
            looked += t.cache_hits + t.cache_misses;
            let n = t.cache_hits + t.cache_misses;
            if n > 0 {
                per_bucket.push((t.t_s, 100.0 * t.cache_hits as f64 / n as f64));
                cumulative.push((t.t_s, 100.0 * hits as f64 / looked as f64));
            }
        }
        let chart = Chart {
            title: format!("Cache hit ratio: {}", run.label),
            x_desc: "seconds",
            y_desc: "hits, % of answers",
            lines: vec![
                Line { name: "in the interval".into(), color: BLUE_, points: per_bucket },
                Line { name: "since the start".into(), color: ORANGE_, points: cumulative },
            ],
            shaded: Vec::new(),
            shade_label: "",
            y_max: Some(100.0),
        };
        write(dir, "cache-hit-ratio", &chart, &mut out)?;
    }
    Ok(out)
}
