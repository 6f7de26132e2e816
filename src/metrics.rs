//! What `GET /metrics` says: the counters the loop already keeps
//! (`stats.rs`), plus the process's descriptors and memory, in the
//! Prometheus text exposition format (version 0.0.4) — encoded by the
//! `prometheus` crate, not by hand. No sockets, no mio.
//!
//! Why that crate and not `prometheus-client`: the latter writes only
//! OpenMetrics, whose `# TYPE` lines name a counter without its `_total`,
//! and `promtool check metrics` (which lints the classic format) rejects
//! every counter of it as having no help text. The classic format is what
//! every Prometheus server and `promtool` read.
//!
//! Nothing here runs per message. A scrape builds a fresh registry from one
//! [`StatsSnapshot`] (the loop's numbers as of its last turn) and encodes
//! it; the loop's own counters stay plain integers. Every name of ours is
//! prefixed `echo_reactor_`; counters end `_total`;
//! the process figures take the names every Prometheus exporter uses
//! (`process_open_fds`, `process_resident_memory_bytes`), so standard
//! dashboards find them.
//!
//! With `--workers`, the snapshot is the sum over the workers
//! (`worker_stats.rs`) and the process figures are summed over the worker
//! processes; gauges add up as well as counters do (each worker holds its
//! share), and `memory_pressure` becomes "workers under pressure".

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::fdlimit::open_fds_in;
use crate::stats::{CloseReason, StatsSnapshot};

/// Why a metrics request was refused, each with its own count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    /// The request head passed `http::MAX_REQUEST_HEAD_BYTES` (431).
    TooLarge,
    /// Not HTTP (400).
    Invalid,
    /// Not complete within the request deadline: closed without an answer.
    Timeout,
    /// Too many metrics requests in progress at once: answered 503, then
    /// a lingering close.
    Busy,
}

impl HttpRefusal {
    /// Every refusal, in counter order.
    pub const ALL: [HttpRefusal; 4] = [
        HttpRefusal::TooLarge,
        HttpRefusal::Invalid,
        HttpRefusal::Timeout,
        HttpRefusal::Busy,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            HttpRefusal::TooLarge => "too_large",
            HttpRefusal::Invalid => "invalid",
            HttpRefusal::Timeout => "timeout",
            HttpRefusal::Busy => "busy",
        }
    }

    /// Its index in [`HttpCounters::refused`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The metrics endpoint's own tallies (kept by the endpoint, not on the
/// per-message path).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpCounters {
    /// Requests answered (any status but the refusals').
    pub answered: u64,
    /// Requests refused, by [`HttpRefusal`].
    pub refused: [u64; 4],
}

impl HttpCounters {
    /// Add another worker's tallies.
    pub fn add(&mut self, other: &HttpCounters) {
        self.answered += other.answered;
        for (sum, n) in self.refused.iter_mut().zip(other.refused) {
            *sum += n;
        }
    }
}

/// A process's descriptors and resident memory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessFigures {
    /// Open file descriptors.
    pub open_fds: u64,
    /// Resident set size, bytes.
    pub resident_memory_bytes: u64,
}

impl ProcessFigures {
    /// Read them from `/proc/PID` (`None`: this process). `held_fds` is
    /// the process's own count of the descriptors it holds: the figure
    /// where the kernel gives no count and a walk of `/proc/PID/fd` would
    /// be long (`fdlimit::open_fds_in`), so a scrape's work is bounded at
    /// any number of connections. Figures the system does not give (no
    /// `/proc`) are 0, or `held_fds`.
    pub fn read(pid: Option<u32>, held_fds: u64) -> Self {
        Self::read_walking(pid, held_fds, true)
    }

    /// [`ProcessFigures::read`], and with `may_walk` false never a walk of
    /// `/proc/PID/fd`: the kernel's count or `held_fds` (a scrape summing
    /// many workers has spent its walking budget on the others).
    pub fn read_walking(pid: Option<u32>, held_fds: u64, may_walk: bool) -> Self {
        let dir = match pid {
            Some(pid) => format!("/proc/{pid}"),
            None => "/proc/self".to_string(),
        };
        let held = usize::try_from(held_fds).unwrap_or(usize::MAX);
        let fd_dir = std::path::PathBuf::from(format!("{dir}/fd"));
        ProcessFigures {
            open_fds: if may_walk {
                open_fds_in(&fd_dir, held)
            } else {
                // Past the walk limit open_fds_in never walks: the kernel's
                // count if it gives one, else the `usize::MAX` passed in.
                match open_fds_in(&fd_dir, usize::MAX) {
                    usize::MAX => held,
                    kernel => kernel,
                }
            } as u64,
            resident_memory_bytes: resident_bytes_of(&dir),
        }
    }

    /// Add another process's figures.
    pub fn add(&mut self, other: &ProcessFigures) {
        self.open_fds += other.open_fds;
        self.resident_memory_bytes += other.resident_memory_bytes;
    }
}

/// `/proc/PID/statm`'s second field is resident pages.
fn resident_bytes_of(dir: &str) -> u64 {
    let Ok(statm) = std::fs::read_to_string(format!("{dir}/statm")) else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_size).unwrap_or(4096)
}

/// Everything one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// The loop's counters (summed over workers).
    pub stats: StatsSnapshot,
    /// The metrics endpoint's own tallies (summed over workers).
    pub http: HttpCounters,
    /// Descriptors and memory (summed over worker processes).
    pub process: ProcessFigures,
    /// Shutdown began (`/healthz` answers 503).
    pub shutting_down: bool,
    /// Worker processes whose numbers are included (1 without `--workers`).
    pub workers: u64,
}

/// The registry a scrape is encoded from; names are given whole.
struct Scrape {
    registry: Registry,
}

impl Scrape {
    fn register(&self, metric: impl Collector + 'static) {
        // Fails only for a name registered twice: a bug the tests catch.
        if let Err(e) = self.registry.register(Box::new(metric)) {
            debug_assert!(false, "register a metric: {e}");
        }
    }

    /// `echo_reactor_NAME_total`, a counter.
    fn counter(&self, name: &str, help: &str, value: u64) {
        if let Ok(counter) = IntCounter::with_opts(ours(&format!("{name}_total"), help)) {
            counter.inc_by(value);
            self.register(counter);
        }
    }

    /// `echo_reactor_NAME_total{label="..."}`, one series per value.
    fn counter_by(&self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        let opts = ours(&format!("{name}_total"), help);
        if let Ok(family) = IntCounterVec::new(opts, &[label]) {
            for &(label_value, value) in values {
                family.with_label_values(&[label_value]).inc_by(value);
            }
            self.register(family);
        }
    }

    /// `echo_reactor_NAME`, a gauge.
    fn gauge(&self, name: &str, help: &str, value: u64) {
        self.gauge_named(ours(name, help), value);
    }

    fn gauge_named(&self, opts: Opts, value: u64) {
        if let Ok(gauge) = IntGauge::with_opts(opts) {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            self.register(gauge);
        }
    }
}

fn ours(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("echo_reactor")
}

/// Encode `exposition` in the Prometheus text format.
pub fn encode_text(exposition: &Exposition) -> String {
    let s = &exposition.stats;
    let scrape = Scrape {
        registry: Registry::new(),
    };
    scrape.gauge_named(
        Opts::new(
            "process_open_fds",
            "Open file descriptors (summed over worker processes).",
        ),
        exposition.process.open_fds,
    );
    scrape.gauge_named(
        Opts::new(
            "process_resident_memory_bytes",
            "Resident memory in bytes (summed over worker processes).",
        ),
        exposition.process.resident_memory_bytes,
    );
    scrape.counter(
        "connections_accepted",
        "Connections accepted and served.",
        s.accepted,
    );
    scrape.gauge("connections_active", "Connections open now.", s.active);
    let closed: Vec<(&str, u64)> = CloseReason::ALL
        .iter()
        .map(|&reason| (reason.name(), s.closed_by(reason)))
        .collect();
    scrape.counter_by(
        "connections_closed",
        "Connections closed, by why they ended (the stats line's closed_* keys).",
        "reason",
        &closed,
    );
    scrape.counter(
        "connections_rejected",
        "Connections closed at once because --max-connections were open.",
        s.rejected,
    );
    scrape.counter(
        "connections_shed",
        "Connections turned away while the process was out of descriptors.",
        s.shed,
    );
    scrape.counter("bytes_received", "Bytes read from clients.", s.bytes_in);
    scrape.counter("bytes_sent", "Bytes written to clients.", s.bytes_out);
    scrape.counter(
        "datagrams_received",
        "UDP datagrams received.",
        s.datagrams_in,
    );
    scrape.counter("datagrams_sent", "UDP replies sent.", s.datagrams_out);
    scrape.counter(
        "datagrams_dropped",
        "UDP replies dropped because the socket would block or the send failed.",
        s.datagrams_dropped,
    );
    scrape.counter(
        "datagrams_limited",
        "UDP replies not sent: their source network was over --udp-reply-budget.",
        s.datagrams_limited,
    );
    scrape.counter("read_calls", "read/recv system calls made.", s.read_calls);
    scrape.counter(
        "write_calls",
        "write/send system calls made.",
        s.write_calls,
    );
    scrape.counter("poll_calls", "epoll_wait calls made.", s.poll_calls);
    scrape.counter(
        "read_pauses",
        "Times a connection stopped being read because its output passed --max-buffered.",
        s.read_pauses,
    );
    scrape.counter(
        "lingers",
        "Connections the server ended while the client might still send (lingering close).",
        s.lingers,
    );
    scrape.counter(
        "linger_timeouts",
        "Lingering closes that ran out of time before the client closed.",
        s.linger_timeouts,
    );
    scrape.counter(
        "discarded_bytes",
        "Input read and dropped while lingering.",
        s.bytes_discarded,
    );
    scrape.gauge(
        "held_bytes",
        "Bytes held in connection buffers now (unsent output and unparsed input).",
        s.held_bytes,
    );
    scrape.gauge(
        "held_capacity_bytes",
        "Heap capacity of connection buffers now (what --max-memory bounds).",
        s.held_capacity,
    );
    scrape.gauge(
        "peak_held_bytes",
        "The most bytes held in connection buffers at once since start.",
        s.peak_held_bytes,
    );
    scrape.gauge(
        "memory_pressure",
        "Reactors over the --max-memory high-water mark now (0 or 1 per worker).",
        s.memory_pressure,
    );
    scrape.counter(
        "memory_pressure_episodes",
        "Times held memory crossed the high-water mark of --max-memory.",
        s.memory_pressure_episodes,
    );
    scrape.counter(
        "metrics_requests_answered",
        "Requests the metrics endpoint answered.",
        exposition.http.answered,
    );
    let refused: Vec<(&str, u64)> = HttpRefusal::ALL
        .iter()
        .map(|&why| (why.name(), exposition.http.refused[why.index()]))
        .collect();
    scrape.counter_by(
        "metrics_requests_refused",
        "Metrics requests refused: head too large, not HTTP, too slow, too many at once.",
        "reason",
        &refused,
    );
    scrape.gauge(
        "shutting_down",
        "1 from the moment shutdown begins (/healthz answers 503), else 0.",
        u64::from(exposition.shutting_down),
    );
    scrape.gauge(
        "workers",
        "Worker processes whose numbers this scrape includes.",
        exposition.workers,
    );
    let mut text = String::with_capacity(8 * 1024);
    if let Err(e) = TextEncoder::new().encode_utf8(&scrape.registry.gather(), &mut text) {
        log::warn!("encode the metrics: {e}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_exposition_names_each_counter_with_help_type_and_total() {
        let mut stats = StatsSnapshot {
            accepted: 7,
            active: 2,
            bytes_in: 640,
            held_bytes: 5,
            ..StatsSnapshot::default()
        };
        stats.closed[CloseReason::Evicted as usize] = 3;
        let text = encode_text(&Exposition {
            stats,
            process: ProcessFigures {
                open_fds: 11,
                resident_memory_bytes: 4096,
            },
            workers: 1,
            ..Exposition::default()
        });
        assert_eq!(
            line_value(&text, "echo_reactor_connections_accepted_total"),
            Some(7)
        );
        assert_eq!(
            line_value(&text, "echo_reactor_connections_active"),
            Some(2)
        );
        assert_eq!(
            line_value(&text, "echo_reactor_bytes_received_total"),
            Some(640)
        );
        assert_eq!(line_value(&text, "echo_reactor_held_bytes"), Some(5));
        assert_eq!(
            line_value(
                &text,
                "echo_reactor_connections_closed_total{reason=\"evicted\"}"
            ),
            Some(3)
        );
        assert_eq!(line_value(&text, "process_open_fds"), Some(11));
        assert_eq!(
            line_value(&text, "process_resident_memory_bytes"),
            Some(4096)
        );
        assert!(
            text.contains("# TYPE echo_reactor_connections_accepted_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP echo_reactor_connections_accepted_total "),
            "{text}"
        );
        assert!(
            text.contains("# TYPE echo_reactor_connections_active gauge"),
            "{text}"
        );
    }

    #[test]
    fn this_process_has_descriptors_and_resident_memory() {
        let me = ProcessFigures::read(None, 0);
        if std::path::Path::new("/proc/self/statm").exists() {
            assert!(me.open_fds >= 3, "{me:?}");
            assert!(me.resident_memory_bytes > 0, "{me:?}");
        }
    }
}
