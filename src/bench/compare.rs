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

use clap::Args;
use serde_json::{json, Value};

use super::merge::read_report;
use super::plot;

/// Flags of `echo-reactor bench compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The report compared against (`bench --json` output).
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,
    /// The report compared.
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,
    /// Print the comparison as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Both reports' sweeps (`bench --sweep ... --json`) in one SVG chart:
    /// p99 against achieved msgs/s, a curve each, named by file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// The figures compared: name in the table, name in JSON, where in the report.
const FIGURES: &[(&str, &str, &str)] = &[
    ("msgs/s", "msgs_per_sec", "/msgs_per_sec"),
    ("MB/s", "mb_per_sec", "/bytes_per_sec"),
    ("p50 us", "p50_us", "/latency_us/p50"),
    ("p90 us", "p90_us", "/latency_us/p90"),
    ("p99 us", "p99_us", "/latency_us/p99"),
    ("p99.9 us", "p999_us", "/latency_us/p999"),
    ("max us", "max_us", "/latency_us/max"),
    (
        "uncorrected p99 us",
        "uncorrected_p99_us",
        "/latency_uncorrected_us/p99",
    ),
    (
        "connections/s",
        "connections_per_sec",
        "/connect/connections_per_sec",
    ),
    (
        "connect p99 us",
        "connect_p99_us",
        "/connect/latency_us/p99",
    ),
    (
        "rss/conn idle B",
        "rss_per_conn_idle_bytes",
        "/hold/rss_per_conn_idle_bytes",
    ),
    ("errors", "errors", ""), // the sum of every kind
    (
        "client us/msg",
        "client_cpu_us_per_msg",
        "/client/cpu_us_per_msg",
    ),
    (
        "server us/msg",
        "server_cpu_us_per_msg",
        "/server/cpu_us_per_msg",
    ),
    (
        "server peak rss MiB",
        "server_rss_peak_mib",
        "/server/rss_peak_bytes",
    ),
];

/// The settings worth naming when they differ.
const SETTINGS: &[&str] = &[
    "addr",
    "connections",
    "size",
    "pipeline",
    "rate",
    "duration_s",
    "threads",
    "processes",
    "protocol",
    "scenario",
    "flooders",
];

fn figure(report: &Value, path: &str) -> Option<f64> {
    if path.is_empty() {
        let errors = report["errors"].as_object()?;
        return Some(errors.values().filter_map(Value::as_u64).sum::<u64>() as f64);
    }
    let value = report.pointer(path)?.as_f64()?;
    Some(match path {
        "/bytes_per_sec" => value / 1e6,
        "/server/rss_peak_bytes" => value / 1048576.0,
        _ => value,
    })
}

/// The comparison as a JSON object: what differs, then every figure.
pub fn compare(base: &Value, new: &Value) -> Value {
    let differ: Vec<Value> = SETTINGS
        .iter()
        .filter_map(|&key| {
            let (a, b) = (&base["settings"][key], &new["settings"][key]);
            (a != b).then(|| json!({"setting": key, "base": a, "new": b}))
        })
        .collect();
    let figures: Vec<Value> = FIGURES
        .iter()
        .filter_map(|&(_, name, path)| {
            let (a, b) = (figure(base, path)?, figure(new, path)?);
            let ratio = (a != 0.0).then(|| b / a);
            Some(json!({"figure": name, "base": a, "new": b, "ratio": ratio}))
        })
        .collect();
    json!({"settings_differ": differ, "figures": figures})
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

fn describe(r: &Value) -> String {
    let s = &r["settings"];
    format!(
        "{}, {}/{} connections, {} B, pipeline {}, {}, {} s, target {}",
        r["scenario"].as_str().unwrap_or("?"),
        r["connections"]["achieved"],
        r["connections"]["requested"],
        s["size"],
        s["pipeline"],
        if r["target_rate"].is_null() {
            "closed loop".to_string()
        } else {
            format!("open loop at {} msgs/s", r["target_rate"])
        },
        r["duration_s"],
        s["addr"].as_str().unwrap_or("?"),
    )
}

/// `--plot`: the two sweeps as two curves of one chart (the chart
/// `cargo bench -- sweep` draws for its servers), so two servers measured
/// anywhere, at any time, are compared as a picture too.
fn plot_sweeps(args: &CompareArgs, (base, new): (&Value, &Value), path: &Path) -> io::Result<()> {
    for (file, report) in [(&args.base, base), (&args.new, new)] {
        if report.get("steps").is_none() {
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
    let what = |file: &PathBuf, r: &Value| {
        let s = &r["settings"];
        format!(
            "{}: {} connections, {} B, pipeline {}, {} steps",
            name(file),
            r["connections"]["achieved"],
            s["size"],
            s["pipeline"],
            r["steps"].as_array().map_or(0, Vec::len)
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
        result["base"] = json!(args.base.display().to_string());
        result["new"] = json!(args.new.display().to_string());
        writeln!(out, "{result}")?;
        return Ok(());
    }
    writeln!(out, "base  {}: {}", args.base.display(), describe(&base))?;
    writeln!(out, "new   {}: {}", args.new.display(), describe(&new))?;
    let differ = result["settings_differ"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !differ.is_empty() {
        let list: Vec<String> = differ
            .iter()
            .map(|d| {
                format!(
                    "{} {} -> {}",
                    d["setting"].as_str().unwrap_or("?"),
                    d["base"],
                    d["new"]
                )
            })
            .collect();
        writeln!(out, "settings that differ: {}", list.join(", "))?;
    }
    writeln!(
        out,
        "{:<20} {:>14} {:>14} {:>9}",
        "", "base", "new", "new/base"
    )?;
    for row in result["figures"].as_array().into_iter().flatten() {
        let label = FIGURES
            .iter()
            .find(|f| row["figure"] == f.1)
            .map_or("?", |f| f.0);
        let ratio = row["ratio"]
            .as_f64()
            .map_or("-".to_string(), |r| format!("{r:.2}x"));
        writeln!(
            out,
            "{label:<20} {:>14} {:>14} {ratio:>9}",
            number(row["base"].as_f64().unwrap_or(0.0)),
            number(row["new"].as_f64().unwrap_or(0.0)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_figure_has_its_ratio_and_differing_settings_are_named() {
        let base = json!({"settings": {"size": 64}, "msgs_per_sec": 1000.0,
            "latency_us": {"p99": 100}, "errors": {"reset": 0}});
        let new = json!({"settings": {"size": 128}, "msgs_per_sec": 2500.0,
            "latency_us": {"p99": 50}, "errors": {"reset": 3}});
        let c = compare(&base, &new);
        let ratio = |name: &str| {
            c["figures"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["figure"] == name)
                .map(|f| f["ratio"].clone())
        };
        assert_eq!(ratio("msgs_per_sec"), Some(json!(2.5)));
        assert_eq!(ratio("p99_us"), Some(json!(0.5)));
        assert_eq!(ratio("errors"), Some(Value::Null), "no ratio over zero");
        assert_eq!(ratio("p50_us"), None, "missing in both: left out");
        assert_eq!(
            c["settings_differ"],
            json!([{"setting": "size", "base": 64, "new": 128}])
        );
    }

    #[test]
    fn numbers_print_as_integers_when_whole() {
        assert_eq!(number(1234.0), "1234");
        assert_eq!(number(1234.56), "1234.6");
        assert_eq!(number(0.456), "0.46");
    }
}
