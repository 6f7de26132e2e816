//! `--sweep`: how much load before latency goes bad.
//!
//! A sweep is a series of open-loop runs ("steps") at rising target rates,
//! each verified and measured exactly as a normal `--rate` run (the same
//! code: fresh connections, warmup, measured window, drain). The knee is
//! the highest step whose corrected p99 is within `--slo-p99-us` and that
//! had no errors: the most load the server takes while still meeting the
//! objective.
//!
//! `--sweep auto` first measures the closed-loop capacity `C` with a short
//! probe (same connections and pipeline), then steps linearly from `C/10`
//! to `1.15 C`: evenly spaced steps find the knee to within one step
//! (0.15 C), where geometric ones would be coarsest exactly where the knee
//! is. Choices made here, for a sweep from a tenth of the capacity to past
//! saturation: 8 steps; the probe is 2 s after a 0.5 s warmup.

use std::fmt;
use std::io;
use std::time::Duration;

use super::latency::new_histogram;
use super::latency::{decode, encode};
use super::schema::{ConnectFailureCounts, ErrorCounts, Knee, Probe, Report, Step, Sweep};
use super::timeline::LogFile;
use super::{base_report, percentiles, run_echo, BenchArgs, Scenario, Target};

/// Steps of an `auto` sweep.
pub const AUTO_STEPS: usize = 8;
/// The first and last `auto` step, as fractions of the closed-loop capacity.
const AUTO_FROM: f64 = 0.10;
const AUTO_TO: f64 = 1.15;
/// The closed-loop probe of `auto`.
const PROBE: Duration = Duration::from_secs(2);
const PROBE_WARMUP: Duration = Duration::from_millis(500);

/// The rates of `--sweep`.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepRates {
    /// These total rates, msgs/s, in order.
    List(Vec<f64>),
    /// From a closed-loop probe.
    Auto,
}

impl fmt::Display for SweepRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SweepRates::Auto => write!(f, "auto"),
            SweepRates::List(rates) => {
                let text: Vec<String> = rates.iter().map(|r| r.to_string()).collect();
                write!(f, "{}", text.join(","))
            }
        }
    }
}

/// Parse `auto` or a comma-separated list of positive, rising rates.
pub fn parse_rates(text: &str) -> Result<SweepRates, String> {
    if text.trim() == "auto" {
        return Ok(SweepRates::Auto);
    }
    let mut rates = Vec::new();
    for part in text.split(',') {
        let rate: f64 = part.trim().parse().map_err(|_| {
            format!("{part:?} is not a rate (msgs/s); give e.g. 10000,20000,40000 or auto")
        })?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!(
                "{part:?}: a rate must be a positive number of msgs/s"
            ));
        }
        if rates.last().is_some_and(|&last| rate <= last) {
            return Err(format!("{part:?}: rates must rise step by step"));
        }
        rates.push(rate);
    }
    Ok(SweepRates::List(rates))
}

/// Settings a sweep cannot work with (one line each).
pub fn validate(args: &BenchArgs) -> Result<(), String> {
    if args.plot.is_some() && args.scenario == Scenario::Connect {
        return Err("--plot draws message latency: not the connect scenario".into());
    }
    if args.sweep.is_none() {
        return match (&args.histogram_log, args.scenario, args.processes) {
            (Some(_), Scenario::Connect | Scenario::Hold, _) => {
                Err("--histogram-log applies to the echo and flood scenarios only".into())
            }
            (Some(_), _, p) if p > 1 => Err(
                "--histogram-log needs one load-generator process (the intervals are not merged across --processes)"
                    .into(),
            ),
            _ => Ok(()),
        };
    }
    if args.rate.is_some() {
        return Err("--sweep sets the rate of each step: leave out --rate".into());
    }
    if args.scenario != Scenario::Echo {
        return Err("--sweep applies to the echo scenario only".into());
    }
    if args.processes > 1 {
        return Err("--sweep runs one load-generator process (leave out --processes)".into());
    }
    // Each step runs as `--rate RATE`: refuse one it could not schedule
    // here, as `--rate` itself is refused, not mid-sweep.
    if let Some(SweepRates::List(rates)) = &args.sweep {
        for &rate in rates {
            super::schedule::check_rate(rate, args.connections)
                .map_err(|why| format!("--sweep step: {why}"))?;
        }
    }
    Ok(())
}

/// The target rates of an `auto` sweep for a closed-loop capacity.
pub fn auto_rates(capacity: f64) -> Vec<f64> {
    let step = (AUTO_TO - AUTO_FROM) / (AUTO_STEPS - 1) as f64;
    (0..AUTO_STEPS)
        .map(|i| (capacity * (AUTO_FROM + step * i as f64)).round().max(1.0))
        .collect()
}

/// The knee: the highest step within the SLO and without errors, as
/// its index; `None` if no step qualifies.
pub fn knee(steps: &[Step], slo_p99_us: u64) -> Option<usize> {
    steps.iter().rposition(|step| within(step, slo_p99_us))
}

/// A step within the SLO, with no errors: a candidate for the knee.
fn within(step: &Step, slo_p99_us: u64) -> bool {
    step.latency_us.p99.is_some_and(|p| p <= slo_p99_us) && step.errors.total() == 0
}

/// Run the sweep; returns the report (`steps`, `knee`, summed counts).
pub(super) fn run(
    args: &BenchArgs,
    target: &Target,
    progress: bool,
    mut log: Option<&mut LogFile<io::BufWriter<std::fs::File>>>,
) -> io::Result<Report> {
    let mut report = base_report(args, target);
    let (rates, probe) = match &args.sweep {
        Some(SweepRates::List(rates)) => (rates.clone(), None),
        _ => {
            let mut probe_args = args.clone();
            probe_args.sweep = None;
            probe_args.duration = PROBE;
            probe_args.warmup = PROBE_WARMUP;
            if progress {
                eprintln!("sweep: probing the closed-loop capacity for {PROBE:?}");
            }
            let (probe, _) = run_echo(&probe_args, target, false)?;
            let capacity = probe.msgs_per_sec;
            if capacity < 1.0 || probe.errors.total() > 0 {
                return Err(io::Error::other(format!(
                    "sweep auto: the closed-loop probe measured {capacity:.0} msgs/s with errors {}; no range to sweep",
                    serde_json::to_string(&probe.errors).unwrap_or_default()
                )));
            }
            let rates = auto_rates(capacity);
            for &rate in &rates {
                super::schedule::check_rate(rate, args.connections).map_err(|why| {
                    io::Error::other(format!("sweep auto: a step from the probe: {why}"))
                })?;
            }
            let probe = Probe {
                msgs_per_sec: capacity,
                duration_s: PROBE.as_secs_f64(),
            };
            (rates, Some(probe))
        }
    };
    let mut steps = Vec::new();
    let mut errors = ErrorCounts::default();
    let (mut messages, mut client_cpu, mut total_s) = (0u64, 0.0, 0.0);
    // Of the whole sweep: every step's latencies, the server's CPU time,
    // the connect failures by reason.
    let mut latency = new_histogram();
    let mut server_cpu: Option<f64> = None;
    let mut failures = ConnectFailureCounts::default();
    for (index, &rate) in rates.iter().enumerate() {
        if super::interrupt::requested() {
            // Ctrl-C (in the probe or a step): the summary covers the steps
            // run so far. The next would each stop at once, their unopened
            // connections counted as connect errors.
            break;
        }
        if progress {
            eprintln!(
                "sweep: step {} of {} at {rate:.0} msgs/s",
                index + 1,
                rates.len()
            );
        }
        let mut step_args = args.clone();
        step_args.sweep = None;
        step_args.rate = Some(rate);
        let (step, mut seconds) = run_echo(&step_args, target, progress)?;
        if let Some(log) = log.as_deref_mut() {
            seconds.write_intervals(log, Some(&format!("rate={rate}")))?;
        }
        errors.add(&step.errors);
        failures.add(&step.connect_failures);
        messages += step.messages;
        // The window measured: shorter than --duration if Ctrl-C ended it.
        total_s += step.duration_s;
        client_cpu += step.client.cpu_s;
        if let Some(cpu) = step.server.cpu_s {
            server_cpu = Some(server_cpu.unwrap_or(0.0) + cpu);
        }
        if let Ok(h) = decode(&step.histogram) {
            let _ = latency.add(&h);
        }
        report.connections.achieved = step.connections.achieved;
        steps.push(Step {
            target_rate: rate,
            msgs_per_sec: step.msgs_per_sec,
            messages: step.messages,
            connections: step.connections.achieved,
            latency_us: step.latency_us,
            latency_uncorrected_us: step.latency_uncorrected_us,
            errors: step.errors,
            connect_failures: Some(step.connect_failures),
            client_cpu_s: step.client.cpu_s,
            server_cpu_s: step.server.cpu_s,
            histogram: step.histogram,
            seconds: step.seconds.unwrap_or_default(),
        });
    }
    let knee = knee(&steps, args.slo_p99_us).map(|i| {
        let s = &steps[i];
        Knee {
            step: i as u64 + 1,
            target_rate: s.target_rate,
            msgs_per_sec: s.msgs_per_sec,
            p99_us: s.latency_us.p99,
        }
    });
    // Stopped before any window was measured: no time, no rate (not 0/0).
    let per_sec = |n: u64| {
        if total_s > 0.0 {
            n as f64 / total_s
        } else {
            0.0
        }
    };
    report.duration_s = total_s;
    report.messages = messages;
    report.msgs_per_sec = per_sec(messages);
    report.bytes_per_sec = per_sec(messages * args.size as u64);
    report.latency_us = percentiles(&latency);
    report.histogram = encode(&latency);
    report.server.cpu_s = server_cpu;
    report.errors = errors;
    report.connect_failures = failures;
    report.client.cpu_s = client_cpu;
    report.sweep = Some(Sweep {
        rates,
        slo_p99_us: args.slo_p99_us,
        probe,
    });
    report.steps = Some(steps);
    report.knee = Some(knee);
    Ok(report)
}

/// A figure as table text (`-` when unknown).
fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |n| n.to_string())
}

/// The text summary of a sweep: one table, a line per step.
pub fn print_table(report: &Report) {
    print!("{}", table(report));
}

/// A number as the JSON report writes it (`1.0`, not `1`).
fn figure(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())
}

/// [`print_table`]'s text.
pub fn table(r: &Report) -> String {
    let s = &r.settings;
    let steps = r.steps.as_deref().unwrap_or_default();
    let mut out = format!(
        "sweep of {} steps, {} s each (+{} s warmup): {} connections, {} B messages, pipeline {}, {} thread(s), target {}\n",
        steps.len(),
        figure(s.duration_s),
        figure(s.warmup_s),
        r.connections.requested,
        s.size,
        s.pipeline,
        s.threads,
        s.addr,
    );
    let sweep = r.sweep.as_ref();
    if let Some(c) = sweep.and_then(|s| s.probe).map(|p| p.msgs_per_sec) {
        out += &format!("closed-loop probe: {c:.0} msgs/s; steps from a tenth of it to past it\n");
    }
    out += &format!(
        "{:>5} {:>11} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>7}\n",
        "step",
        "target/s",
        "achieved/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "uncorr.",
        "",
        "errors"
    );
    out += &format!(
        "{:>5} {:>11} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>7}\n",
        "", "", "", "", "", "", "", "p99 us", "", ""
    );
    let knee = r.knee.flatten();
    let slo = sweep.map_or(0, |s| s.slo_p99_us);
    for (i, step) in steps.iter().enumerate() {
        let l = &step.latency_us;
        out += &format!(
            "{:>5} {:>11.0} {:>11.0} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>7}\n",
            i + 1,
            step.target_rate,
            step.msgs_per_sec,
            cell(l.p50),
            cell(l.p99),
            cell(l.p999),
            cell(l.max),
            cell(step.latency_uncorrected_us.and_then(|u| u.p99)),
            if knee.is_some_and(|k| k.step == i as u64 + 1) {
                "<- knee"
            } else if within(step, slo) {
                ""
            } else {
                "over SLO"
            },
            step.errors.total(),
        );
    }
    out += &match knee {
        Some(k) => format!(
            "knee: {:.0} msgs/s achieved (step {}, target {}) with p99 {} us within the SLO of {slo} us\n",
            k.msgs_per_sec,
            k.step,
            figure(k.target_rate),
            k.p99_us.map_or_else(|| "null".to_string(), |p| p.to_string())
        ),
        None => format!("knee: none (no step had p99 within {slo} us and no errors)\n"),
    };
    let e = &r.errors;
    out += &format!(
        "errors: connect {}  mismatch {}  reset {}  server_closed {}  timeout {}; load generator cpu {:.3} s\n",
        e.connect, e.mismatch, e.reset, e.server_closed, e.timeout, r.client.cpu_s
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(p99: u64, timeout: u64) -> Step {
        Step {
            latency_us: crate::bench::schema::Percentiles {
                p99: Some(p99),
                ..Default::default()
            },
            errors: ErrorCounts {
                timeout,
                ..ErrorCounts::default()
            },
            ..Step::default()
        }
    }

    #[test]
    fn a_step_the_server_closed_connections_in_is_not_the_knee() {
        let mut closed = step(100, 0);
        closed.errors.server_closed = 2;
        let steps = [step(100, 0), closed];
        assert_eq!(knee(&steps, 1000), Some(0));
    }
    #[test]
    fn rates_parse_or_are_refused_with_a_reason() {
        assert_eq!(parse_rates("auto"), Ok(SweepRates::Auto));
        assert_eq!(
            parse_rates("100, 200,400"),
            Ok(SweepRates::List(vec![100.0, 200.0, 400.0]))
        );
        assert!(parse_rates("100,x").unwrap_err().contains("not a rate"));
        assert!(parse_rates("0").unwrap_err().contains("positive"));
        assert!(parse_rates("200,100").unwrap_err().contains("rise"));
        assert_eq!(SweepRates::List(vec![1.0, 2.5]).to_string(), "1,2.5");
    }

    #[test]
    fn auto_steps_go_from_a_tenth_of_capacity_to_past_it() {
        let rates = auto_rates(10_000.0);
        assert_eq!(rates.len(), AUTO_STEPS);
        assert_eq!(rates[0], 1000.0);
        assert_eq!(*rates.last().unwrap(), 11_500.0);
        assert!(rates.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn the_knee_is_the_highest_step_within_the_slo_without_errors() {
        let steps = [step(100, 0), step(900, 0), step(800, 3), step(5000, 0)];
        assert_eq!(knee(&steps, 1000), Some(1));
        assert_eq!(knee(&steps, 50), None);
        assert_eq!(knee(&steps, 10_000), Some(3));
    }
}
