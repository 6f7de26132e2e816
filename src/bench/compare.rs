//! `echo-reactor bench compare BASE.json NEW.json`: two reports side by
//! side, each figure with its ratio new / base.
//!
//! Nothing is refused: comparing two servers, two sizes or two versions is
//! the point. The settings that differ are listed first, so a ratio is
//! never read without what changed. A figure missing from either report
//! (a scenario without it, a null) is left out; a ratio over a base of 0
//! is shown as `-` (`null` in JSON).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::args::CompareArgs;
use super::merge::read_report;
use super::plot;
use super::schema::{Report, Settings};

/// A figure of a report, where it has one.
type Pick = fn(&Report) -> Option<f64>;

/// The figures compared: name in the table, name in JSON, the figure.
const FIGURES: &[(&str, &str, Pick)] = &[
    ("msgs/s", "msgs_per_sec", |r| Some(r.msgs_per_sec)),
    ("MB/s", "mb_per_sec", |r| Some(r.bytes_per_sec / 1e6)),
    ("p50 us", "p50_us", |r| as_f64(r.latency_us.p50)),
    ("p90 us", "p90_us", |r| as_f64(r.latency_us.p90)),
    ("p99 us", "p99_us", |r| as_f64(r.latency_us.p99)),
    ("p99.9 us", "p999_us", |r| as_f64(r.latency_us.p999)),
    ("max us", "max_us", |r| as_f64(r.latency_us.max)),
    ("uncorrected p99 us", "uncorrected_p99_us", |r| {
        as_f64(r.latency_uncorrected_us?.p99)
    }),
    ("connections/s", "connections_per_sec", |r| {
        Some(r.connect.as_ref()?.connections_per_sec)
    }),
    ("connect p99 us", "connect_p99_us", |r| {
        as_f64(r.connect.as_ref()?.latency_us.p99)
    }),
    ("rss/conn idle B", "rss_per_conn_idle_bytes", |r| {
        r.hold.as_ref()?.rss_per_conn_idle_bytes
    }),
    // The sum of every kind.
    ("errors", "errors", |r| Some(r.errors.total() as f64)),
    ("client us/msg", "client_cpu_us_per_msg", |r| {
        r.client.cpu_us_per_msg
    }),
    ("server us/msg", "server_cpu_us_per_msg", |r| {
        r.server.cpu_us_per_msg
    }),
    ("server peak rss MiB", "server_rss_peak_mib", |r| {
        Some(r.server.rss_peak_bytes? as f64 / 1048576.0)
    }),
];

fn as_f64(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// A setting of a report, as JSON (so that any kind of value compares).
type Setting = fn(&Settings) -> Value;

/// The settings worth naming when they differ.
const SETTINGS: &[(&str, Setting)] = &[
    ("addr", |s| Value::from(s.addr.clone())),
    ("connections", |s| Value::from(s.connections)),
    ("size", |s| Value::from(s.size)),
    ("pipeline", |s| Value::from(s.pipeline)),
    ("rate", |s| Value::from(s.rate)),
    ("duration_s", |s| Value::from(s.duration_s)),
    ("threads", |s| Value::from(s.threads)),
    ("processes", |s| Value::from(s.processes)),
    ("protocol", |s| Value::from(s.protocol.clone())),
    ("scenario", |s| Value::from(s.scenario.clone())),
    ("flooders", |s| Value::from(s.flooders)),
];

/// Two reports compared (`--json` prints it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The base report's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The new report's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    /// The settings that differ.
    pub settings_differ: Vec<SettingDiffers>,
    /// Every figure both reports have, with its ratio.
    pub figures: Vec<FigureRatio>,
}

/// A setting that differs between the two reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingDiffers {
    /// Its name.
    pub setting: &'static str,
    /// In the base report.
    pub base: Value,
    /// In the new one.
    pub new: Value,
}

/// One figure of both reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureRatio {
    /// Its name in JSON.
    pub figure: &'static str,
    /// In the base report.
    pub base: f64,
    /// In the new one.
    pub new: f64,
    /// new / base (`null` over a base of 0).
    pub ratio: Option<f64>,
}

/// The comparison: what differs, then every figure.
pub fn compare(base: &Report, new: &Report) -> Comparison {
    let settings_differ = SETTINGS
        .iter()
        .filter_map(|&(setting, pick)| {
            let (a, b) = (pick(&base.settings), pick(&new.settings));
            (a != b).then_some(SettingDiffers {
                setting,
                base: a,
                new: b,
            })
        })
        .collect();
    let figures = FIGURES
        .iter()
        .filter_map(|&(_, figure, pick)| {
            let (a, b) = (pick(base)?, pick(new)?);
            Some(FigureRatio {
                figure,
                base: a,
                new: b,
                ratio: (a != 0.0).then(|| b / a),
            })
        })
        .collect();
    Comparison {
        base: None,
        new: None,
        settings_differ,
        figures,
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A number as the JSON report writes it (`1.0`, not `1`).
fn figure_text(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())
}

fn describe(r: &Report) -> String {
    let s = &r.settings;
    format!(
        "{}, {}/{} connections, {} B, pipeline {}, {}, {} s, target {}",
        r.scenario,
        r.connections.achieved,
        r.connections.requested,
        s.size,
        s.pipeline,
        match r.target_rate {
            None => "closed loop".to_string(),
            Some(rate) => format!("open loop at {} msgs/s", figure_text(rate)),
        },
        figure_text(r.duration_s),
        s.addr,
    )
}

/// `--plot`: the two sweeps as two curves of one chart (the chart
/// `cargo bench -- sweep` draws for its servers), so two servers measured
/// anywhere, at any time, are compared as a picture too.
fn plot_sweeps(args: &CompareArgs, (base, new): (&Report, &Report), path: &Path) -> io::Result<()> {
    for (file, report) in [(&args.base, base), (&args.new, new)] {
        if report.steps.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--plot draws sweeps: {} has no `steps` (make it with bench --sweep ... --json)",
                    file.display()
                ),
            ));
        }
    }
    let name = |file: &PathBuf| {
        file.file_stem().map_or_else(
            || file.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    };
    // Short: what each sweep ran (the chart's width holds one line).
    let what = |file: &PathBuf, r: &Report| {
        format!(
            "{}: {} connections, {} B, pipeline {}, {} steps",
            name(file),
            r.connections.achieved,
            r.settings.size,
            r.settings.pipeline,
            r.steps.as_ref().map_or(0, Vec::len)
        )
    };
    let subtitle = format!("{} · {}", what(&args.base, base), what(&args.new, new));
    let reports = [
        (name(&args.base), base.clone()),
        (name(&args.new), new.clone()),
    ];
    plot::servers_chart(&reports, &subtitle, path)
}

/// `echo-reactor bench compare BASE.json NEW.json [--json] [--plot FILE.svg]`.
pub fn run_compare(args: &CompareArgs) -> io::Result<()> {
    let base = read_report(&args.base)?;
    let new = read_report(&args.new)?;
    if let Some(path) = &args.plot {
        plot_sweeps(args, (&base, &new), path)?;
    }
    let mut result = compare(&base, &new);
    let mut out = io::stdout().lock();
    if args.json {
        result.base = Some(args.base.display().to_string());
        result.new = Some(args.new.display().to_string());
        serde_json::to_writer(&mut out, &result).map_err(io::Error::other)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "base  {}: {}", args.base.display(), describe(&base))?;
    writeln!(out, "new   {}: {}", args.new.display(), describe(&new))?;
    if !result.settings_differ.is_empty() {
        let list: Vec<String> = result
            .settings_differ
            .iter()
            .map(|d| format!("{} {} -> {}", d.setting, d.base, d.new))
            .collect();
        writeln!(out, "settings that differ: {}", list.join(", "))?;
    }
    writeln!(
        out,
        "{:<20} {:>14} {:>14} {:>9}",
        "", "base", "new", "new/base"
    )?;
    for row in &result.figures {
        let label = FIGURES
            .iter()
            .find(|f| row.figure == f.1)
            .map_or("?", |f| f.0);
        let ratio = row.ratio.map_or("-".to_string(), |r| format!("{r:.2}x"));
        writeln!(
            out,
            "{label:<20} {:>14} {:>14} {ratio:>9}",
            number(row.base),
            number(row.new),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_figure_has_its_ratio_and_differing_settings_are_named() {
        let mut base = Report::default();
        base.settings.size = 64;
        base.msgs_per_sec = 1000.0;
        base.latency_us.p99 = Some(100);
        let mut new = Report::default();
        new.settings.size = 128;
        new.msgs_per_sec = 2500.0;
        new.latency_us.p99 = Some(50);
        new.errors.reset = 3;
        let c = compare(&base, &new);
        let ratio = |name: &str| c.figures.iter().find(|f| f.figure == name).map(|f| f.ratio);
        assert_eq!(ratio("msgs_per_sec"), Some(Some(2.5)));
        assert_eq!(ratio("p99_us"), Some(Some(0.5)));
        assert_eq!(ratio("errors"), Some(None), "no ratio over zero");
        assert_eq!(ratio("p50_us"), None, "missing in both: left out");
        assert_eq!(
            c.settings_differ,
            [SettingDiffers {
                setting: "size",
                base: Value::from(64),
                new: Value::from(128)
            }]
        );
    }

    #[test]
    fn numbers_print_as_integers_when_whole() {
        assert_eq!(number(1234.0), "1234");
        assert_eq!(number(1234.56), "1234.6");
        assert_eq!(number(0.456), "0.46");
    }
}
