//! The bench's sweeps, charts and histogram logs, as a user runs them:
//! a sweep against a server that answers at most R msgs/s must find its
//! knee near R; the charts must be SVG holding the series they claim; the
//! interval log must read back, sample for sample, with HdrHistogram's own
//! reader.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use support::bench;

fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A directory of one test's own; removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("echo-reactor-charts-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An echo server that answers at most `rate` messages per second in
/// total: a token bucket shared by every connection (each reply takes the
/// next free slot, `1/rate` after the previous one). A thread per
/// connection, std only: the simplest server with a known capacity.
///
/// The bucket forgives up to [`CATCH_UP`] of lateness: a thread that
/// overslept its slot (timer slack, a busy machine) lets the next replies
/// go at once until the schedule is met again, so the capacity stays
/// `rate` on a loaded machine too, instead of losing every late wake-up.
/// A longer stall still costs capacity, so the tests compare with what
/// the server [`served`](RateLimited::served), not only with `rate`.
fn rate_limited_server(rate: f64, size: usize) -> RateLimited {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let next_slot = Arc::new(Mutex::new(Instant::now()));
    let replies = Arc::new(Mutex::new(Vec::new()));
    let server = RateLimited {
        addr,
        replies: replies.clone(),
    };
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let next_slot = next_slot.clone();
            let replies = replies.clone();
            thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut msg = vec![0u8; size];
                while stream.read_exact(&mut msg).is_ok() {
                    let slot = {
                        let mut next = next_slot.lock().unwrap();
                        let now = Instant::now();
                        let forgiven = now.checked_sub(CATCH_UP).unwrap_or(now);
                        let slot = (*next).max(forgiven);
                        *next = slot + interval;
                        slot
                    };
                    thread::sleep(slot.saturating_duration_since(Instant::now()));
                    if stream.write_all(&msg).is_err() {
                        break;
                    }
                    replies.lock().unwrap().push(Instant::now());
                }
            });
        }
    });
    server
}

/// How late the rate-limited server may fall behind its schedule and
/// still catch up (see [`rate_limited_server`]): longer than the stalls a
/// loaded machine gives a thread, short enough that a burst after one
/// stays well below a step's worth of messages.
const CATCH_UP: Duration = Duration::from_millis(200);

/// A running [`rate_limited_server`].
struct RateLimited {
    addr: SocketAddr,
    /// When each reply was written.
    replies: Arc<Mutex<Vec<Instant>>>,
}

impl RateLimited {
    /// Replies per second the server wrote in the `window` that begins
    /// `skip` after its first reply.
    fn served(&self, skip: Duration, window: Duration) -> f64 {
        let replies = self.replies.lock().unwrap();
        let Some(&first) = replies.first() else {
            return 0.0;
        };
        let (from, to) = (first + skip, first + skip + window);
        let count = replies.iter().filter(|&&t| from <= t && t < to).count();
        count as f64 / window.as_secs_f64()
    }
}

/// The tests that find a knee measure timing: one at a time, so they do
/// not share the two cores with each other.
static TIMING: Mutex<()> = Mutex::new(());

/// The `<polyline>`s of an SVG with at least `min_points` points, by stroke colour.
fn polylines_by_colour(svg: &str, min_points: usize) -> std::collections::BTreeMap<String, usize> {
    let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
    let mut lines = std::collections::BTreeMap::new();
    for node in doc.descendants().filter(|n| n.has_tag_name("polyline")) {
        let points = node
            .attribute("points")
            .unwrap_or("")
            .split_whitespace()
            .count();
        if points >= min_points {
            *lines
                .entry(node.attribute("stroke").unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
    }
    lines
}

/// Every text of an SVG (labels, legend, titles).
fn texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.descendants().filter_map(|t| t.text()).collect::<String>())
        .collect()
}

fn has_text(texts: &[String], wanted: &str) -> bool {
    texts.iter().any(|t| t.contains(wanted))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const R: f64 = 2000.0;

#[test]
fn a_sweep_finds_the_knee_of_a_rate_limited_server_and_draws_it() {
    let _one_at_a_time = TIMING.lock().unwrap_or_else(|e| e.into_inner());
    let addr = rate_limited_server(R, 64).addr.to_string();
    let dir = Scratch::new("sweep");
    let svg = dir.path("sweep.svg");
    // Two steps below R, two well above it; 1 s each. The SLO leaves room
    // for a stall of a loaded machine below R (any stall of more than 1 %
    // of a step shows in its corrected p99), while the steps above R wait
    // on their growing queue for longer than that (see below).
    let out = bench(&[
        "--addr",
        &addr,
        "--json",
        "--connections",
        "20",
        "--sweep",
        "1000,1700,3000,4000",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--slo-p99-us",
        "200000",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let r = json_of(&out);
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4, "{r}");
    for (step, rate) in steps.iter().zip([1000.0, 1700.0, 3000.0, 4000.0]) {
        assert_eq!(step["target_rate"], rate);
        for key in [
            "msgs_per_sec",
            "latency_us",
            "latency_uncorrected_us",
            "errors",
        ] {
            assert!(!step[key].is_null(), "{key} in {step}");
        }
    }
    // The knee: the highest step within the SLO, within 20 % of R.
    let summary: Vec<String> = steps
        .iter()
        .map(|s| {
            format!(
                "{} -> {} p50 {} p99 {} uncorrected p50 {} p99 {} errors {}",
                s["target_rate"],
                s["msgs_per_sec"],
                s["latency_us"]["p50"],
                s["latency_us"]["p99"],
                s["latency_uncorrected_us"]["p50"],
                s["latency_uncorrected_us"]["p99"],
                s["errors"]
            )
        })
        .collect();
    let knee = r["knee"]["msgs_per_sec"].as_f64().expect("a knee");
    assert!(
        (knee - R).abs() <= 0.2 * R,
        "knee {knee} msgs/s, server limited to {R}: {summary:#?}"
    );
    // Above R the queue grows all step long. Asked for T msgs/s and
    // answered at X (what the server achieved in this step: below R when
    // the machine is busy), the message intended at time t is answered at
    // t T/X: by the end of the 1 s window its wait has grown past
    // 1 s (1 - X/T). The corrected latency (from the intended send time)
    // must show that wait; the uncorrected one (from the actual send) only
    // sees the server's own pace, 20 messages in flight at 1/R each. The
    // medians are compared, as one stall moves a p99 but not a median.
    let at = |i: usize, key: &str, p: &str| steps[i][key][p].as_f64().unwrap();
    for i in [2, 3] {
        let target = steps[i]["target_rate"].as_f64().unwrap();
        let achieved = steps[i]["msgs_per_sec"].as_f64().unwrap();
        let queue_wait_us = 1e6 * (1.0 - achieved / target);
        assert!(
            at(i, "latency_us", "p99") >= 0.8 * queue_wait_us,
            "step {i}: corrected p99 shows the queue's wait of {queue_wait_us:.0} us: {summary:#?}"
        );
        assert!(
            at(i, "latency_us", "p50") > 5.0 * at(i, "latency_uncorrected_us", "p50"),
            "step {i}: the uncorrected latency does not see the queue: {summary:#?}"
        );
    }
    // The chart: one series per percentile (each a line through every
    // step), the SLO, the knee, the axes named.
    let svg = read(&svg);
    let series = polylines_by_colour(&svg, steps.len());
    assert_eq!(series.len(), 3, "one line per percentile: {series:?}");
    let texts = texts(&svg);
    for label in [
        "p50",
        "p99",
        "p99.9",
        "SLO: p99 ≤ 200 ms",
        "knee:",
        "achieved throughput (messages per second)",
        "latency (log scale)",
        "20 connections",
    ] {
        assert!(has_text(&texts, label), "{label:?} not in {texts:?}");
    }
}

#[test]
fn an_auto_sweep_steps_from_a_tenth_of_capacity_to_past_it() {
    let _one_at_a_time = TIMING.lock().unwrap_or_else(|e| e.into_inner());
    let server = rate_limited_server(R, 64);
    let addr = server.addr.to_string();
    // The SLO: room for a stall of a loaded machine below capacity, less
    // than the queue's wait by the end of the step past it (1 s x 0.13).
    let out = bench(&[
        "--addr",
        &addr,
        "--json",
        "--connections",
        "20",
        "--sweep",
        "auto",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--slo-p99-us",
        "100000",
    ]);
    let r = json_of(&out);
    let capacity = r["sweep"]["probe"]["msgs_per_sec"]
        .as_f64()
        .expect("probed");
    // The probe (the first traffic: 0.5 s warmup, then 2 s measured) reads
    // the rate the server achieved; on a busy machine that is below R.
    let served = server.served(Duration::from_millis(500), Duration::from_secs(2));
    assert!(
        (capacity - served).abs() < 0.1 * served,
        "closed-loop probe {capacity} msgs/s, the server served {served} msgs/s (limited to {R})"
    );
    let rates: Vec<f64> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["target_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(rates.len(), 8, "{rates:?}");
    assert!((rates[0] - capacity / 10.0).abs() <= 1.0, "{rates:?}");
    assert!(
        *rates.last().unwrap() > capacity,
        "past saturation: {rates:?}"
    );
    let knee = r["knee"]["msgs_per_sec"].as_f64().expect("a knee");
    assert!(
        (knee - capacity).abs() <= 0.2 * capacity,
        "knee {knee} msgs/s, capacity {capacity} msgs/s: {:?}",
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (
                &s["target_rate"],
                &s["msgs_per_sec"],
                &s["latency_us"]["p99"]
            ))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_sweep_table_has_a_line_per_step_and_names_the_knee() {
    let addr = rate_limited_server(R, 64).addr.to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--connections",
        "4",
        "--sweep",
        "200,400",
        "--duration",
        "0.5",
        "--warmup",
        "0",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u32>().is_ok())
        })
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].contains("200") && rows[1].contains("400"), "{text}");
    assert!(text.contains("knee:"), "{text}");
}

#[test]
fn a_single_run_charts_its_spectrum_to_the_max_and_its_seconds_and_logs_every_sample() {
    let dir = Scratch::new("run");
    let (svg, log) = (dir.path("run.svg"), dir.path("run.hlog"));
    let out = bench(&[
        "--json",
        "--connections",
        "4",
        "--rate",
        "1000",
        "--duration",
        "2.5",
        "--warmup",
        "0.5",
        "--plot",
        svg.to_str().unwrap(),
        "--histogram-log",
        log.to_str().unwrap(),
    ]);
    let r = json_of(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = r["messages"].as_u64().unwrap();
    assert!(messages > 0);
    // Second by second, adding up to the run.
    let seconds = r["seconds"].as_array().expect("seconds");
    assert!((2..=4).contains(&seconds.len()), "{seconds:?}");
    let filed: u64 = seconds
        .iter()
        .map(|s| s["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(filed, messages);

    // The interval log, read back by HdrHistogram's own reader.
    let bytes = std::fs::read(&log).unwrap();
    let mut logged = 0;
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(&bytes) {
        if let LogEntry::Interval(interval) = entry.expect("a well-formed interval log") {
            let raw = STANDARD.decode(interval.encoded_histogram()).unwrap();
            let h: Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).unwrap();
            assert_eq!(interval.duration(), Duration::from_secs(1));
            logged += h.len();
            intervals += 1;
        }
    }
    assert_eq!(logged, messages, "every sample in the log");
    assert_eq!(intervals, seconds.len());

    // The chart: the spectrum (corrected and uncorrected), msgs/s and p99
    // per second, percentile labels on the spectrum's axis, and the
    // spectrum's legend gives the run's max.
    let svg = read(&svg);
    let lines = polylines_by_colour(&svg, 3);
    assert!(lines.len() >= 3, "spectrum + per-second lines: {lines:?}");
    let texts = texts(&svg);
    let max = r["latency_us"]["max"].as_f64().unwrap();
    let max_text = echo_reactor::bench::plot::latency_text(max);
    for label in [
        "99%",
        "99.9%",
        "percentile (axis: 1/(1-p), log scale)",
        "latency (log scale)",
        "msgs/s",
        &format!("max {max_text}"),
        "open loop at 1k msgs/s requested",
    ] {
        assert!(has_text(&texts, label), "{label:?} not in {texts:?}");
    }
}

#[test]
fn the_servers_chart_has_a_curve_per_server() {
    let dir = Scratch::new("servers");
    let svg = dir.path("servers.svg");
    let sweep = |scale: f64| {
        json!({"sweep": {"slo_p99_us": 1000}, "steps": (1..=5).map(|i| json!({
            "msgs_per_sec": 1000.0 * i as f64,
            "latency_us": {"p99": (scale * 100.0 * i as f64) as u64},
        })).collect::<Vec<_>>()})
    };
    let reports = vec![
        ("echo-reactor".to_string(), sweep(1.0)),
        ("tokio".to_string(), sweep(2.0)),
        ("threads".to_string(), sweep(3.0)),
    ];
    let reports: Vec<(String, echo_reactor::bench::schema::Report)> = reports
        .into_iter()
        .map(|(name, r)| (name, serde_json::from_value(r).unwrap()))
        .collect();
    echo_reactor::bench::plot::servers_chart(&reports, "test subtitle", &svg).unwrap();
    let svg = read(&svg);
    assert_eq!(polylines_by_colour(&svg, 5).len(), 3);
    let texts = texts(&svg);
    for label in [
        "echo-reactor",
        "tokio",
        "threads",
        "p99 latency (log scale)",
        "test subtitle",
    ] {
        assert!(has_text(&texts, label), "{label:?} not in {texts:?}");
    }
}

#[test]
fn chart_and_log_settings_that_cannot_work_are_refused() {
    for (args, says) in [
        (vec!["--sweep", "auto", "--rate", "100"], "leave out --rate"),
        (vec!["--sweep", "100,50"], "rise"),
        // A step --rate would refuse: refused up front, not a panic mid-sweep.
        (vec!["--sweep", "100,1e12"], "cannot be scheduled"),
        (vec!["--sweep", "1e-300"], "between messages"),
        (
            vec!["--scenario", "connect", "--plot", "x.svg"],
            "not the connect scenario",
        ),
        (
            vec!["--sweep", "auto", "--scenario", "hold"],
            "echo scenario only",
        ),
        (
            vec![
                "--histogram-log",
                "/nonexistent-dir/x.hlog",
                "--duration",
                "1",
            ],
            "/nonexistent-dir/x.hlog",
        ),
    ] {
        let out = bench(&args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
}

#[test]
fn compare_plots_two_sweeps_as_two_curves_and_refuses_a_run_that_is_not_one() {
    let dir = Scratch::new("compare");
    let sweep = |scale: f64| {
        json!({"schema": 2, "scenario": "echo", "settings": {"size": 64},
               "sweep": {"slo_p99_us": 1000}, "steps": (1..=4).map(|i| json!({
            "msgs_per_sec": 1000.0 * i as f64,
            "latency_us": {"p99": (scale * 100.0 * i as f64) as u64},
        })).collect::<Vec<_>>()})
    };
    let (base, new, svg) = (
        dir.path("reactor-a.json"),
        dir.path("reactor-b.json"),
        dir.path("ab.svg"),
    );
    std::fs::write(&base, sweep(1.0).to_string()).unwrap();
    std::fs::write(&new, sweep(3.0).to_string()).unwrap();
    let out = bench(&[
        "compare",
        base.to_str().unwrap(),
        new.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let chart = read(&svg);
    assert_eq!(
        polylines_by_colour(&chart, 4).len(),
        2,
        "a curve per report"
    );
    let texts = texts(&chart);
    for label in ["reactor-a", "reactor-b", "p99 latency (log scale)"] {
        assert!(has_text(&texts, label), "{label:?} not in {texts:?}");
    }
    // A single run has no curve to draw: refused, saying why.
    let run = dir.path("run.json");
    std::fs::write(&run, json!({"schema": 2, "scenario": "echo"}).to_string()).unwrap();
    let out = bench(&[
        "compare",
        base.to_str().unwrap(),
        run.to_str().unwrap(),
        "--plot",
        dir.path("no.svg").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no `steps`"), "{err}");
}
