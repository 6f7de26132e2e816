//! Running one scenario in this process (`echo`/`flood`, `connect`,
//! `hold`): the main thread's side — it starts the load threads, meets
//! them at the barriers, keeps the clock and the progress lines, samples
//! CPU time and memory, and builds the report from what they measured.

use std::io;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::args::{BenchArgs, Scenario};
use super::driver::{self, Load, Measured, Pacing};
use super::flood::{self, FloodLoad};
use super::latency::encode;
use super::latency::new_histogram;
use super::progress::{Counters, LineClock, Printer};
use super::report::{
    base_report, fill_connect_time, fill_cpu, fill_errors, fill_open_loop, flood_figures,
    hold_per_connection, percentiles,
};
use super::schema::{Connect, Hold, Kernel, OpenLoop, Report};
use super::timeline::Timeline;
use super::{failures, interrupt, schedule, split, sysinfo, CpuWindow, Target};

/// After the measured window, how long replies still in flight may take.
const DRAIN: Duration = Duration::from_secs(5);

/// Hold: the answers after the hold get this much more than [`DRAIN`] (at least).
const HOLD_EXTRA_DRAIN: Duration = Duration::from_secs(10);

/// The echo scenario, and the flood scenario (echo beside flooders).
pub(super) fn run_echo(
    args: &BenchArgs,
    target: &Target,
    progress: bool,
) -> io::Result<(Report, Timeline)> {
    let (addr, server_pid) = (target.addr, target.server_pid);
    let flooders = match args.scenario {
        Scenario::Flood => args.flooders.unwrap_or(0),
        _ => 0,
    };
    let shares = split(args.connections, args.threads);
    // Load threads and this thread meet once connected; then this thread
    // passes the gate (the other processes are connected too), and the
    // load threads, the flood thread if any and this thread start together.
    let connected = Arc::new(Barrier::new(args.threads + 1));
    let start = Arc::new(Barrier::new(args.threads + 1 + usize::from(flooders > 0)));
    // Watched from before the first connection: the connections are part
    // of what the server holds.
    let watch = sysinfo::Watch::start(server_pid);
    let counters: Vec<Arc<Counters>> = shares.iter().map(|_| Counters::shared()).collect();
    let handles: Vec<_> = shares
        .iter()
        .enumerate()
        .map(|(index, &(first, count))| {
            let load = Load {
                addr,
                size: args.size,
                pipeline: args.pipeline,
                pacing: args.rate.map(|rate| Pacing {
                    period_ps: schedule::check_rate(rate, args.connections)
                        .expect("checked by validate"),
                    connections: args.connections,
                    first_id: args.first_connection_id,
                }),
                warmup: args.warmup,
                duration: args.duration,
                drain: DRAIN,
                connect_deadline: args.connect_deadline(),
                sources: target.sources.addrs.clone(),
                proxy_header: args.proxy_header,
            };
            let first = first + args.first_connection_id;
            let (connected, start) = (connected.clone(), start.clone());
            let progress = counters[index].clone();
            thread::spawn(move || {
                driver::run_echo(&load, first, count, (&connected, &start), &progress)
            })
        })
        .collect();
    let flood = (flooders > 0).then(|| {
        let load = FloodLoad {
            addr,
            connections: flooders,
            bytes_each: args.flood_bytes as u64,
            warmup: args.warmup,
            duration: args.duration,
            connect_deadline: args.connect_deadline(),
            sources: target.sources.addrs.clone(),
        };
        let start = start.clone();
        thread::spawn(move || flood::run_flood(&load, &start))
    });
    let mut printer = Printer::new(progress, counters);
    printer.connecting(args.connections);
    connected.wait();
    target.gate.pass("connected")?;
    start.wait();
    let began = Instant::now();
    let mut timeline = Timeline::new(began, args.warmup, args.duration);
    printer.load_starts();
    let measure_from = began + args.warmup;
    let measure_until = measure_from + args.duration;
    let mut cpu_start = None;
    let mut cpu_end = None;
    // This thread's clock alone decides when the lines fall.
    let mut lines = LineClock::new(began, args.warmup, args.duration);
    let mut stopped_at = None;
    while !handles.iter().all(thread::JoinHandle::is_finished) {
        thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if stopped_at.is_none() && interrupt::requested() {
            stopped_at = Some(now);
        }
        if cpu_start.is_none() && now >= measure_from {
            cpu_start = Some(CpuWindow::sample(server_pid));
        }
        if cpu_end.is_none() && (now >= measure_until || stopped_at.is_some()) {
            cpu_end = Some(CpuWindow::sample(server_pid));
        }
        if let (Some(measuring), None) = (lines.due(now), stopped_at) {
            if let Some(second) = printer.tick(measuring) {
                timeline.add(now, &second);
            }
        }
    }
    // The load threads notice a stop on their own and may all have ended
    // before this loop's next look: the stop is then seen here.
    if stopped_at.is_none() && interrupt::requested() {
        stopped_at = Some(Instant::now());
    }
    let (_, last) = printer.finish();
    // The last, partial second ends with the measured window at the latest.
    timeline.add(Instant::now().min(measure_until), &last);
    let cpu_end = cpu_end.unwrap_or_else(|| CpuWindow::sample(server_pid));
    let cpu_start = cpu_start.unwrap_or_else(|| CpuWindow::sample(server_pid));
    let mut total = Measured::new(0, Default::default());
    for handle in handles {
        total.merge(&handle.join().expect("load thread panicked"));
    }
    let flood = flood.map(|handle| handle.join().expect("flood thread panicked"));
    let peaks = watch.finish();
    // Cut short by a signal: the rates are over the part measured.
    let secs = match stopped_at {
        Some(at) => at
            .min(measure_until)
            .saturating_duration_since(measure_from),
        None => args.duration,
    }
    .as_secs_f64();
    let mut report = base_report(args, target);
    report.duration_s = secs;
    report.connections.achieved = total.connected as u64;
    fill_connect_time(&mut report, total.connect_time);
    report.messages = total.messages;
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    report.msgs_per_sec = per_sec(total.messages);
    report.bytes_per_sec = per_sec(total.messages * args.size as u64);
    report.latency_us = percentiles(&total.latency);
    // Serialized once, here at the end: nothing per message.
    report.histogram = encode(&total.latency);
    if args.rate.is_some() {
        report.latency_uncorrected_us = Some(percentiles(&total.latency_uncorrected));
        report.histogram_uncorrected = Some(encode(&total.latency_uncorrected));
        report.open_loop = Some(OpenLoop {
            intended: total.intended,
            unsent: total.unsent,
        });
        report.histogram_send_lateness = Some(encode(&total.send_lateness));
        fill_open_loop(&mut report, &total.send_lateness);
    }
    fill_errors(&mut report, &total.errors);
    fill_cpu(&mut report, &cpu_start, &cpu_end, total.messages);
    report.server.rss_bytes = server_pid.and_then(sysinfo::process_rss);
    report.server.rss_peak_bytes = peaks.rss.map(|p| p.bytes);
    report.server.rss_peak_source = Some(peaks.rss.map(|p| p.source.to_string()));
    let limits = sysinfo::kernel_tcp_memory_limits();
    report.kernel = Some(Kernel {
        tcp_mem_peak_bytes: peaks.kernel_tcp,
        tcp_mem_pressure_bytes: limits.map(|l| l[1]),
        tcp_mem_high_bytes: limits.map(|l| l[2]),
    });
    report.flood = flood.map(|flood| flood_figures(&flood, args));
    report.seconds = Some(timeline.seconds_measured());
    Ok((report, timeline))
}

pub(super) fn run_connect(args: &BenchArgs, target: &Target) -> io::Result<Report> {
    let (addr, server_pid) = (target.addr, target.server_pid);
    let start = Arc::new(Barrier::new(args.threads + 1));
    let handles: Vec<_> = split(args.connections, args.threads)
        .into_iter()
        .map(|(first, concurrency)| {
            let (start, duration) = (start.clone(), args.duration);
            let sources = target.sources.addrs.clone();
            let first = first + args.first_connection_id;
            thread::spawn(move || {
                driver::run_connect(addr, (&sources, first), concurrency, duration, &start)
            })
        })
        .collect();
    // Nothing to connect beforehand: the threads wait at `start` while the
    // other processes, if any, get ready.
    target.gate.pass("ready")?;
    let queue_before = sysinfo::listen_queue_counters();
    start.wait();
    let cpu_start = CpuWindow::sample(server_pid);
    let (mut completed, mut latency) = (0, new_histogram());
    let (mut failed, mut slots_up) = (failures::ConnectFailures::default(), 0);
    for handle in handles {
        let part = handle.join().expect("connect thread panicked");
        completed += part.completed;
        failed.add(&part.failed);
        slots_up += part.slots_up;
        let _ = latency.add(&part.latency);
    }
    let cpu_end = CpuWindow::sample(server_pid);
    let queue_after = sysinfo::listen_queue_counters();
    let mut report = base_report(args, target);
    let secs = args.duration.as_secs_f64();
    // Achieved: how many of the --connections concurrent slots ever
    // completed a connection (a target that refuses achieves none).
    report.connections.achieved = slots_up as u64;
    report.messages = 0;
    report.errors.connect = failed.total();
    report.connect_failures = failed.to_counts();
    let queue = queue_before.zip(queue_after);
    report.connect = Some(Connect {
        completed,
        connections_per_sec: completed as f64 / secs,
        latency_us: percentiles(&latency),
        histogram: encode(&latency),
        listen_overflows: queue.map(|(a, b)| b.0.saturating_sub(a.0)),
        listen_drops: queue.map(|(a, b)| b.1.saturating_sub(a.1)),
        // The kernel counts these for the whole network namespace: every
        // listener here, not only the target (and nothing of a remote one).
        listen_counters_scope: "network namespace".into(),
    });
    fill_cpu(&mut report, &cpu_start, &cpu_end, 0);
    Ok(report)
}

pub(super) fn run_hold(args: &BenchArgs, target: &Target, progress: bool) -> io::Result<Report> {
    let (addr, server_pid) = (target.addr, target.server_pid);
    let meet = Arc::new(Barrier::new(args.threads + 1));
    let before = server_pid.and_then(sysinfo::tree_memory);
    // Above the RSS, it says the server held more before: it ran already.
    let peak_before = server_pid.and_then(sysinfo::process_rss_hwm);
    let shares = split(args.connections, args.threads);
    let counters: Vec<Arc<Counters>> = shares.iter().map(|_| Counters::shared()).collect();
    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(index, (first, count))| {
            let load = Load {
                addr,
                size: args.size,
                pipeline: 1,
                pacing: None,
                warmup: Duration::ZERO,
                duration: args.duration,
                // Asking every connection once takes about as long as
                // connecting them did: the answers get the connects' time.
                drain: (DRAIN + HOLD_EXTRA_DRAIN).max(args.connect_deadline()),
                connect_deadline: args.connect_deadline(),
                sources: target.sources.addrs.clone(),
                proxy_header: args.proxy_header,
            };
            let first = first + args.first_connection_id;
            let meet = meet.clone();
            let progress = counters[index].clone();
            thread::spawn(move || driver::run_hold(&load, (first, count), &meet, &progress))
        })
        .collect();
    Printer::new(progress, counters).connecting(args.connections);
    meet.wait(); // 1: all connected
    target.gate.pass("connected")?; // ... in every process
    let cpu_start = CpuWindow::sample(server_pid);
    let idle = server_pid.and_then(sysinfo::tree_memory);
    // The hold itself: nobody sends anything (until a signal, if any).
    let hold_until = Instant::now() + args.duration;
    while Instant::now() < hold_until && !interrupt::requested() {
        thread::sleep(
            hold_until
                .saturating_duration_since(Instant::now())
                .min(interrupt::CHECK_EVERY),
        );
    }
    let cpu_end = CpuWindow::sample(server_pid);
    meet.wait(); // 2: hold over; every connection now answers once
    meet.wait(); // 3: answered
    target.gate.pass("answered")?; // ... in every process
    let after = server_pid.and_then(sysinfo::tree_memory);
    meet.wait(); // 4: let go
    let mut total = Measured::new(0, Default::default());
    for handle in handles {
        total.merge(&handle.join().expect("hold thread panicked"));
    }
    let (connected, answered) = (total.connected, total.messages);
    let mut report = base_report(args, target);
    report.connections.achieved = connected as u64;
    fill_connect_time(&mut report, total.connect_time);
    report.messages = answered;
    // The one echo per connection after the hold.
    report.latency_us = percentiles(&total.latency);
    report.histogram = encode(&total.latency);
    fill_errors(&mut report, &total.errors);
    let rss = |m: Option<sysinfo::TreeMemory>| m.map(|m| m.rss);
    let anon = |m: Option<sysinfo::TreeMemory>| m.map(|m| m.anon);
    let processes = |m: Option<sysinfo::TreeMemory>| m.map(|m| m.processes);
    report.server.rss_bytes = rss(after);
    report.hold = Some(Hold {
        answered,
        rss_before_bytes: rss(before),
        rss_idle_bytes: rss(idle),
        rss_after_echo_bytes: rss(after),
        rss_fresh_server: target.fresh_server,
        rss_peak_before_bytes: peak_before,
        anon_before_bytes: anon(before),
        anon_idle_bytes: anon(idle),
        anon_after_echo_bytes: anon(after),
        server_processes_before: processes(before),
        server_processes_idle: processes(idle),
        ..Hold::default()
    });
    hold_per_connection(&mut report);
    fill_cpu(&mut report, &cpu_start, &cpu_end, 0);
    Ok(report)
}
