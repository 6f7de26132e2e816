//! `--plot FILE.svg`: the bench draws what it measured.
//!
//! Three charts, all drawn from JSON reports (so a chart can be redrawn
//! from a saved report, and `cargo bench` draws its own from the reports
//! of several servers):
//! - a sweep: p50, p99 and p99.9 against the *achieved* msgs/s of each
//!   step (log latency axis), the SLO as a horizontal line and the knee
//!   marked — the latency–throughput curve;
//! - a single run: the HdrHistogram percentile spectrum (x axis 1/(1−p) on
//!   a log scale, labelled as percentiles, as HdrHistogram's own plots), and
//!   below it msgs/s and p99 second by second;
//! - several servers' sweeps ([`servers_chart`]): p99 against achieved
//!   msgs/s, one curve per server.
//!
//! Every chart's title says what was measured, on what, with which
//! settings. `plotters` with its SVG backend only: text is written as SVG
//! `<text>` and left to the viewer's fonts, so no system library is needed.

use std::io;
use std::path::Path;

use super::schema::{Percentiles, Report, Second};
use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::latency::decode;
use super::BenchArgs;

/// Chart size in pixels (SVG user units).
const SIZE: (u32, u32) = (1100, 720);
/// One colour per series, distinguishable in print and for most colour-blind readers.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
];
const SLO_COLOUR: RGBColor = RGBColor(200, 0, 0);
const FONT: &str = "sans-serif";

/// A drawing error, naming the file.
fn fail(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("--plot {}: {e}", path.display()))
}

/// The settings of a run, in one line (also the interval log's comment).
pub fn describe_args(args: &BenchArgs) -> String {
    format!(
        "echo-reactor bench {}: {} connections, {} B messages, pipeline {}, {} thread(s), {} s measured, target {}",
        format!("{:?}", args.scenario).to_lowercase(),
        args.connections,
        args.size,
        args.pipeline,
        args.threads,
        args.duration.as_secs_f64(),
        args.addr
            .map_or("an echo-reactor child server".to_string(), |a| a.to_string()),
    )
}

/// What a report measured, on what, with which settings: the chart's subtitle.
pub fn describe_report(r: &Report) -> String {
    let s = &r.settings;
    let server = if s.child_server {
        "echo-reactor (child server)".to_string()
    } else {
        format!("server at {}", s.addr)
    };
    let per = if r.steps.is_some() { "step" } else { "run" };
    let duration = serde_json::Number::from_f64(s.duration_s)
        .map_or_else(|| s.duration_s.to_string(), |n| n.to_string());
    format!(
        "{server} · {} connections · {} B · pipeline {} · {} load thread(s) · {duration} s per {per} · Linux {} · {} CPU(s)",
        r.connections.requested,
        s.size,
        s.pipeline,
        s.threads,
        r.environment.kernel,
        r.environment.cpus,
    )
}

/// Draw `report` into `path`: the sweep chart if it has `steps`, else the
/// single-run chart.
pub fn chart_of_report(report: &Report, path: &Path) -> io::Result<()> {
    if report.steps.is_some() {
        sweep_chart(report, &describe_report(report), path)
    } else {
        run_chart(report, &describe_report(report), path)
    }
}

/// Latency range for a log axis holding `values`: powers of ten around them.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return 1.0..1000.0;
    }
    // A little room past the extremes, so a line at a power of ten (the
    // SLO, say) does not lie on the frame.
    let lo = 10f64.powf((lo * 0.8).log10().floor()).max(1.0);
    let hi = 10f64.powf((hi * 1.25).log10().ceil()).max(lo * 10.0);
    lo..hi
}

/// Microseconds as a reader says them: 850 us, 12 ms, 1.5 s.
pub fn latency_text(us: f64) -> String {
    match us {
        us if us < 1000.0 => format!("{us:.0} us"),
        us if us < 1_000_000.0 => format!("{} ms", trim(us / 1000.0)),
        us => format!("{} s", trim(us / 1e6)),
    }
}

/// A rate as a reader says it: 950, 12k, 1.2M.
pub fn rate_text(rate: f64) -> String {
    match rate {
        r if r.abs() < 1000.0 => format!("{r:.0}"),
        r if r.abs() < 1e6 => format!("{}k", trim(r / 1000.0)),
        r => format!("{}M", trim(r / 1e6)),
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map_or(text.clone(), str::to_string)
}

/// The percentile a spectrum x value (1/(1-p)) stands for, as HdrHistogram
/// labels it: 1 → 0%, 10 → 90%, 100 → 99%, 1000 → 99.9%.
pub fn percentile_label(x: f64) -> String {
    let percent = 100.0 * (1.0 - 1.0 / x);
    let nines = x.log10().round().max(0.0) as usize;
    format!("{percent:.prec$}%", prec = nines.saturating_sub(2))
}

/// The spectrum of `h` as (1/(1-p), latency) points: ten per decade of
/// 1/(1-p), up to the last sample, where it ends at the histogram's max.
pub fn spectrum_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let count = h.len();
    if count == 0 {
        return Vec::new();
    }
    let last = count as f64; // 1/(1-p) of the highest sample's rank
    let mut points = Vec::new();
    let mut x = 1.0f64;
    while x < last {
        let p = 1.0 - 1.0 / x;
        points.push((x, h.value_at_quantile(p) as f64));
        x *= 10f64.powf(0.1);
    }
    points.push((last.max(1.0), h.max() as f64));
    points
}

/// A sweep's steps as points: achieved msgs/s, and one of the step's
/// latency percentiles (`pick`).
fn step_points(report: &Report, pick: fn(&Percentiles) -> Option<u64>) -> Vec<(f64, f64)> {
    let steps = report.steps.as_deref().unwrap_or_default();
    steps
        .iter()
        .filter_map(|s| Some((s.msgs_per_sec, pick(&s.latency_us)? as f64)))
        .collect()
}

/// The sweep chart: p50/p99/p99.9 against achieved msgs/s.
pub fn sweep_chart(report: &Report, subtitle: &str, path: &Path) -> io::Result<()> {
    type Pick = fn(&Percentiles) -> Option<u64>;
    let picks: [(&str, Pick); 3] = [
        ("p50", |l| l.p50),
        ("p99", |l| l.p99),
        ("p99.9", |l| l.p999),
    ];
    let series: Vec<(&str, Vec<(f64, f64)>)> = picks
        .iter()
        .map(|&(label, pick)| (label, step_points(report, pick)))
        .collect();
    let knee = report
        .knee
        .flatten()
        .and_then(|k| Some((k.msgs_per_sec, k.p99_us? as f64)));
    latency_curves(
        path,
        (
            "Latency vs throughput: open-loop rate sweep (corrected latency, from intended send time)",
            subtitle,
            "latency (log scale)",
        ),
        &series,
        slo_of(report),
        knee,
    )
}

/// Servers compared: p99 against achieved msgs/s, one curve per server
/// (each report a sweep, named by its label).
pub fn servers_chart(reports: &[(String, Report)], subtitle: &str, path: &Path) -> io::Result<()> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = reports
        .iter()
        .map(|(name, r)| (name.as_str(), step_points(r, |l| l.p99)))
        .collect();
    let slo = reports.first().map_or(1000.0, |(_, r)| slo_of(r));
    latency_curves(
        path,
        (
            "p99 latency vs throughput, one open-loop sweep per server (corrected latency)",
            subtitle,
            "p99 latency (log scale)",
        ),
        &curves,
        slo,
        None,
    )
}

/// A sweep's p99 objective, microseconds (the default when not recorded).
fn slo_of(report: &Report) -> f64 {
    report.sweep.as_ref().map_or(1000, |s| s.slo_p99_us) as f64
}

/// What both sweep charts draw: latency curves (log scale) against achieved
/// msgs/s, a point per step, the SLO as a dashed line, the knee if any.
fn latency_curves(
    path: &Path,
    (title, subtitle, y_desc): (&str, &str, &str),
    curves: &[(&str, Vec<(f64, f64)>)],
    slo: f64,
    knee: Option<(f64, f64)>,
) -> io::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let area = header(&root, title, subtitle).map_err(|e| fail(path, e))?;
    let y = log_range(
        curves
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
            .chain([slo]),
    );
    let x_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(x, _)| x))
        .fold(1.0f64, f64::max)
        * 1.08;
    let mut chart = ChartBuilder::on(&area)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, y.log_scale())
        .map_err(|e| fail(path, e))?;
    chart
        .configure_mesh()
        .x_desc("achieved throughput (messages per second)")
        .y_desc(y_desc)
        .x_label_formatter(&|x| rate_text(*x))
        .y_label_formatter(&|y| latency_text(*y))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(|e| fail(path, e))?;
    for (i, (label, points)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| fail(path, e))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|e| fail(path, e))?;
    }
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, slo), (x_max, slo)],
            8,
            5,
            SLO_COLOUR.stroke_width(2),
        ))
        .map_err(|e| fail(path, e))?
        .label(format!("SLO: p99 ≤ {}", latency_text(slo)))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], SLO_COLOUR.stroke_width(2)));
    if let Some((kx, ky)) = knee {
        chart
            .draw_series([EmptyElement::at((kx, ky))
                + Circle::new((0, 0), 10, BLACK.stroke_width(2))
                + Text::new(
                    format!("knee: {} msgs/s, p99 {}", rate_text(kx), latency_text(ky)),
                    (-150, -30),
                    (FONT, 17).into_font(),
                )])
            .map_err(|e| fail(path, e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight) // overloaded points go up, not there
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(path, e))?;
    root.present().map_err(|e| fail(path, e))
}

/// The single-run chart: the percentile spectrum, then msgs/s and p99 per second.
pub fn run_chart(report: &Report, subtitle: &str, path: &Path) -> io::Result<()> {
    let histogram = Some(report.histogram.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("the report has no histogram".to_string())
        .and_then(decode)
        .map_err(|e| fail(path, e))?;
    let open_loop = report.target_rate.is_some();
    let spectrum = spectrum_points(&histogram);
    let uncorrected = report
        .histogram_uncorrected
        .as_deref()
        .and_then(|t| decode(t).ok())
        .map(|h| spectrum_points(&h));
    let seconds: &[Second] = report.seconds.as_deref().unwrap_or_default();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let loop_kind = match report.target_rate {
        Some(rate) => format!("open loop at {} msgs/s requested", rate_text(rate)),
        None => "closed loop".to_string(),
    };
    let area = header(
        &root,
        &format!(
            "Latency by percentile, {} messages, {loop_kind}: {} msgs/s achieved",
            histogram.len(),
            rate_text(report.msgs_per_sec)
        ),
        subtitle,
    )
    .map_err(|e| fail(path, e))?;
    let (top, bottom) = if seconds.is_empty() {
        (area.clone(), None)
    } else {
        let (top, bottom) = area.split_vertically((SIZE.1 as f64 * 0.52) as u32);
        (top, Some(bottom))
    };
    // The spectrum.
    let x_max = spectrum.last().map_or(10.0, |p| p.0).max(10.0);
    let x_max = 10f64.powf(x_max.log10().ceil());
    let y = log_range(
        spectrum
            .iter()
            .chain(uncorrected.iter().flatten())
            .map(|p| p.1),
    );
    let mut chart = ChartBuilder::on(&top)
        .margin(15)
        .margin_right(45) // room for the last percentile label
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((1.0..x_max).log_scale(), y.log_scale())
        .map_err(|e| fail(path, e))?;
    chart
        .configure_mesh()
        .x_desc("percentile (axis: 1/(1-p), log scale)")
        .y_desc("latency (log scale)")
        .x_label_formatter(&|x| {
            let decade = x.log10();
            if (decade - decade.round()).abs() < 1e-6 {
                percentile_label(*x)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| latency_text(*y))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(|e| fail(path, e))?;
    let label = if open_loop {
        "corrected (from intended send time)"
    } else {
        "latency"
    };
    chart
        .draw_series(LineSeries::new(
            spectrum.clone(),
            COLOURS[0].stroke_width(2),
        ))
        .map_err(|e| fail(path, e))?
        .label(format!(
            "{label}, max {}",
            latency_text(histogram.max() as f64)
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], COLOURS[0].stroke_width(3)));
    if let (true, Some(points)) = (open_loop, uncorrected) {
        chart
            .draw_series(LineSeries::new(points, COLOURS[1].stroke_width(2)))
            .map_err(|e| fail(path, e))?
            .label("uncorrected (from actual send time)")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], COLOURS[1].stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(path, e))?;
    // Second by second.
    if let Some(bottom) = bottom {
        let (rate_area, p99_area) = bottom.split_horizontally(SIZE.0 / 2);
        let rates: Vec<(f64, f64)> = seconds.iter().map(|s| (s.t_s, s.msgs_per_sec)).collect();
        let p99s: Vec<(f64, f64)> = seconds
            .iter()
            .filter_map(|s| Some((s.t_s, s.p99_us? as f64)))
            .collect();
        let t_max = rates.iter().map(|p| p.0).fold(1.0f64, f64::max);
        let r_max = rates.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&rate_area)
            .margin(15)
            .caption("throughput, second by second", (FONT, 17))
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, 0.0..r_max)
            .map_err(|e| fail(path, e))?;
        chart
            .configure_mesh()
            .x_desc("time into the measured window (s)")
            .y_desc("msgs/s")
            .y_label_formatter(&|y| rate_text(*y))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(|e| fail(path, e))?;
        chart
            .draw_series(LineSeries::new(rates.clone(), COLOURS[2].stroke_width(2)))
            .map_err(|e| fail(path, e))?;
        chart
            .draw_series(
                rates
                    .iter()
                    .map(|&p| Circle::new(p, 3, COLOURS[2].filled())),
            )
            .map_err(|e| fail(path, e))?;
        // Linear from zero: a second's p99 seldom spans decades, and a
        // log axis over less than one decade crowds its labels.
        let y_max = p99s.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&p99_area)
            .margin(15)
            .caption(format!("p99 {label}, second by second"), (FONT, 17))
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(|e| fail(path, e))?;
        chart
            .configure_mesh()
            .x_desc("time into the measured window (s)")
            .y_desc("p99")
            .y_label_formatter(&|y| latency_text(*y))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(|e| fail(path, e))?;
        chart
            .draw_series(LineSeries::new(p99s.clone(), COLOURS[3].stroke_width(2)))
            .map_err(|e| fail(path, e))?;
        chart
            .draw_series(p99s.iter().map(|&p| Circle::new(p, 3, COLOURS[3].filled())))
            .map_err(|e| fail(path, e))?;
    }
    root.present().map_err(|e| fail(path, e))
}

/// Draw the title and subtitle lines at the top of `root`; the rest is the chart's.
fn header<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    title: &str,
    subtitle: &str,
) -> Result<DrawingArea<SVGBackend<'a>, Shift>, DrawingAreaErrorKind<std::io::Error>> {
    let (top, rest) = root.split_vertically(64);
    top.draw(&Text::new(
        title,
        (20, 12),
        (FONT, 21).into_font().style(FontStyle::Bold),
    ))?;
    top.draw(&Text::new(
        subtitle,
        (20, 40),
        (FONT, 15).into_font().color(&RGBColor(60, 60, 60)),
    ))?;
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::latency::new_histogram;

    #[test]
    fn percentiles_are_labelled_as_hdrhistogram_does() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(100_000.0), "99.999%");
    }

    #[test]
    fn the_spectrum_rises_and_ends_at_the_max() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        h.record(987_654).unwrap();
        let points = spectrum_points(&h);
        assert!(points
            .windows(2)
            .all(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1));
        assert_eq!(points.last().unwrap(), &(10_001.0, h.max() as f64));
        assert!(spectrum_points(&new_histogram()).is_empty());
    }

    #[test]
    fn figures_read_as_a_person_says_them() {
        assert_eq!(latency_text(850.0), "850 us");
        assert_eq!(latency_text(12_000.0), "12 ms");
        assert_eq!(latency_text(1_500_000.0), "1.5 s");
        assert_eq!(rate_text(950.0), "950");
        assert_eq!(rate_text(12_500.0), "12.5k");
        assert_eq!(rate_text(2_000_000.0), "2M");
    }
}
