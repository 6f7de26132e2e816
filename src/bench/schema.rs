//! The bench's JSON report (schema 2) as types: one struct per section,
//! `serde` `Serialize` + `Deserialize`, each field as `--json` writes it.
//!
//! A key that only some reports have (the open loop's figures, a
//! scenario's own section, a sweep's steps) is an `Option` left out when
//! `None`; a key every report has but whose figure may be unknown is an
//! `Option` written as `null`. A key that is absent in some reports and
//! `null` in others is an `Option<Option<_>>` ([`present`]). So a report
//! read into [`Report`] and written back is the same JSON, which the tests
//! check against every kind of run. A key missing when a report is read
//! takes its default (0, empty, `null`): reports written by other tools,
//! or by hand, read as far as they go.
//!
//! Every scenario builds a [`Report`] (`report.rs` has the common part);
//! `--json` writes it; the human summary, `bench merge`, `bench compare`
//! and `--plot` read it.

use serde::{Deserialize, Deserializer, Serialize};

/// The report's version (written by every run, checked by `bench merge` and `bench compare`):
/// 2 since `errors` holds counts only (their sum is the number of failed
/// connections) and the connect failures by OS reason have their own key,
/// `connect_failures`.
pub const SCHEMA: u64 = 2;

/// A key that is there (`Some`, its value `null` or not) or not there (`None`).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// One bench report: a run, a merge of runs, or a sweep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// The report's version (2).
    pub schema: u64,
    /// `echo`, `connect`, `hold` or `flood`.
    pub scenario: String,
    /// Every flag, as given.
    pub settings: Settings,
    /// Load-generator processes that made it.
    pub processes: u64,
    /// Local addresses the connections came from (empty: the kernel's choice).
    pub source_addrs: Vec<String>,
    /// The source addresses were chosen by the bench, not given.
    pub source_addrs_automatic: bool,
    /// The machine and the bench's version.
    pub environment: Environment,
    /// Connections asked for and achieved.
    pub connections: Connections,
    /// Seconds measured.
    pub duration_s: f64,
    /// Verified replies measured.
    pub messages: u64,
    /// Messages per second achieved.
    pub msgs_per_sec: f64,
    /// Bytes per second achieved.
    pub bytes_per_sec: f64,
    /// Open loop: the rate asked for (`null`: closed loop).
    pub target_rate: Option<f64>,
    /// Latency percentiles, microseconds (open loop: from the intended send time).
    pub latency_us: Percentiles,
    /// Open loop: from the actual send time (`null`: closed loop).
    pub latency_uncorrected_us: Option<Percentiles>,
    /// The latency histogram, HdrHistogram V2 compressed, base64.
    pub histogram: String,
    /// The uncorrected latency histogram (`null`: closed loop).
    pub histogram_uncorrected: Option<String>,
    /// Failed connections, by kind: counts only.
    pub errors: ErrorCounts,
    /// The connect failures of `errors.connect`, by OS reason.
    pub connect_failures: ConnectFailureCounts,
    /// The load generator's CPU time.
    pub client: Client,
    /// The server's CPU time and memory, when its pid is known.
    pub server: Server,
    /// Open loop: messages intended and never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
    /// Open loop: the generator's send lateness histogram (ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram_send_lateness: Option<String>,
    /// Open loop: achieved over requested rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achieved_ratio: Option<f64>,
    /// Open loop: under 95 % of the rate asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturated: Option<bool>,
    /// Open loop: how late the generator sent, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lateness_us: Option<SendLateness>,
    /// Echo and flood: the kernel's TCP memory over the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Kernel>,
    /// Flood: what the flooders did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood: Option<Flood>,
    /// Echo and flood: msgs/s and latency per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<Vec<Second>>,
    /// Connect: connections per second and their latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Connect>,
    /// Hold: answers after the hold and the server's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// Sweep: its rates and objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
    /// Sweep: one entry per step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Step>>,
    /// Sweep: the highest step within the objective (`null`: none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub knee: Option<Option<Knee>>,
    /// `--processes`: each load generator's own figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_generators: Option<Vec<LoadGenerator>>,
    /// `bench merge`: the files merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<String>>,
    /// Stopped by a signal: the figures cover the part measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<bool>,
    /// The signal that stopped the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted_by: Option<String>,
    /// Why nothing could be measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every flag of the run, as given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `--addr` (or the child server's).
    pub addr: String,
    /// `--connections`.
    pub connections: u64,
    /// `--size`.
    pub size: u64,
    /// `--duration`, seconds.
    pub duration_s: f64,
    /// `--warmup`, seconds.
    pub warmup_s: f64,
    /// `--pipeline`.
    pub pipeline: u64,
    /// `--rate`.
    pub rate: Option<f64>,
    /// `--threads`.
    pub threads: u64,
    /// `--protocol`.
    pub protocol: String,
    /// `--scenario`.
    pub scenario: String,
    /// `--json`.
    pub json: bool,
    /// `--server-pid`.
    pub server_pid: Option<u32>,
    /// `--server-fresh`.
    pub server_fresh: bool,
    /// No `--addr`: the bench started the server.
    pub child_server: bool,
    /// `--flooders`.
    pub flooders: Option<u64>,
    /// `--flood-bytes`.
    pub flood_bytes: u64,
    /// `--processes`.
    pub processes: u64,
    /// `--connect-timeout`, seconds (not given: absent; the deadline used is
    /// `connections.connect_timeout_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_s: Option<f64>,
    /// `--source-addrs`.
    pub source_addrs: Vec<String>,
    /// `--sweep`.
    pub sweep: Option<String>,
    /// `--slo-p99-us`.
    pub slo_p99_us: u64,
    /// `--plot`.
    pub plot: Option<String>,
    /// `--histogram-log`.
    pub histogram_log: Option<String>,
}

/// Where the run was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Environment {
    /// The kernel's release.
    pub kernel: String,
    /// CPUs available.
    pub cpus: u64,
    /// The open-file limit (soft).
    pub nofile_soft: u64,
    /// The open-file limit (hard).
    pub nofile_hard: u64,
    /// The crate's version.
    pub version: String,
}

/// Connections asked for and achieved, and how long they took to come up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Connections {
    /// `--connections`.
    pub requested: u64,
    /// Established (connect: slots that completed one).
    pub achieved: u64,
    /// Echo, hold, flood: seconds from the first connect to the last
    /// connection up (the slowest thread's); with `--processes`, from
    /// starting the load generators to the last one connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_s: Option<f64>,
    /// Echo, hold, flood: `achieved` over `connect_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connects_per_sec: Option<f64>,
    /// Echo, hold, flood: the connect deadline they had (`--connect-timeout`,
    /// or the default for this many connections), seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_s: Option<f64>,
}

/// Latency percentiles, microseconds; `null` when none was measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p999: Option<u64>,
    /// The largest.
    pub max: Option<u64>,
}

/// Failed connections by kind, each counted once: their sum is the total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorCounts {
    /// Never came up.
    pub connect: u64,
    /// A wrong reply.
    pub mismatch: u64,
    /// Reset by the server.
    pub reset: u64,
    /// Closed cleanly by the server mid-run.
    pub server_closed: u64,
    /// Replies missing when the drain ended.
    pub timeout: u64,
}

impl ErrorCounts {
    /// Failed connections, whatever the kind.
    pub fn total(&self) -> u64 {
        self.connect + self.mismatch + self.reset + self.server_closed + self.timeout
    }

    /// Add another run's counts.
    pub fn add(&mut self, other: &ErrorCounts) {
        self.connect += other.connect;
        self.mismatch += other.mismatch;
        self.reset += other.reset;
        self.server_closed += other.server_closed;
        self.timeout += other.timeout;
    }
}

/// The connect failures by OS reason (their sum is `errors.connect`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectFailureCounts {
    /// `ECONNREFUSED`.
    pub refused: u64,
    /// `ETIMEDOUT`.
    pub timed_out: u64,
    /// Not up within the bench's connect deadline.
    pub gave_up: u64,
    /// Not up when the run was interrupted.
    pub stopped: u64,
    /// `EADDRNOTAVAIL`.
    pub no_ports: u64,
    /// `EMFILE`/`ENFILE`.
    pub no_descriptors: u64,
    /// No route to the target.
    pub unreachable: u64,
    /// Anything else.
    pub other: u64,
    /// The OS's text for the first `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_reason: Option<String>,
}

impl ConnectFailureCounts {
    /// Add another run's counts (the OS's text: the first one known).
    pub fn add(&mut self, other: &ConnectFailureCounts) {
        self.refused += other.refused;
        self.timed_out += other.timed_out;
        self.gave_up += other.gave_up;
        self.stopped += other.stopped;
        self.no_ports += other.no_ports;
        self.no_descriptors += other.no_descriptors;
        self.unreachable += other.unreachable;
        self.other += other.other;
        if self.other_reason.is_none() {
            self.other_reason.clone_from(&other.other_reason);
        }
    }
}

/// The load generator's CPU time over the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Client {
    /// Seconds.
    pub cpu_s: f64,
    /// Microseconds per message (runs of messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_msg: Option<f64>,
}

/// The server's figures, when its pid is known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Server {
    /// Its pid.
    pub pid: Option<u32>,
    /// CPU seconds over the measured window.
    pub cpu_s: Option<f64>,
    /// Resident memory at the end, bytes.
    pub rss_bytes: Option<u64>,
    /// The peak resident memory over the run, bytes.
    pub rss_peak_bytes: Option<u64>,
    /// Where the peak comes from (`VmHWM`, or sampled).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub rss_peak_source: Option<Option<String>>,
    /// CPU microseconds per message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_msg: Option<f64>,
    /// The child server's system calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<u64>,
    /// The child server's system calls per echoed message (echo only).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub syscalls_per_msg: Option<Option<f64>>,
    /// The child server's peak bytes held in buffers.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub peak_held_bytes: Option<Option<u64>>,
}

/// Open loop: every message intended in the window, and those never sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenLoop {
    /// Intended in the measured window.
    pub intended: u64,
    /// Of those, never sent.
    pub unsent: u64,
}

/// How late the generator sent the messages sent on schedule, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SendLateness {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// The largest.
    pub max: Option<f64>,
    /// Sends on schedule measured.
    pub sends: u64,
}

/// The kernel's TCP socket memory, machine-wide, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Kernel {
    /// The peak over the run.
    pub tcp_mem_peak_bytes: Option<u64>,
    /// Where the kernel starts trimming buffers.
    pub tcp_mem_pressure_bytes: Option<u64>,
    /// Where the kernel refuses.
    pub tcp_mem_high_bytes: Option<u64>,
}

/// The flood scenario's flooders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Flood {
    /// `--flooders`.
    pub requested: Option<u64>,
    /// Connected.
    pub connections: u64,
    /// Failed to connect.
    pub connect_failed: u64,
    /// `--flood-bytes`.
    pub bytes_each: u64,
    /// Bytes sent by all of them.
    pub bytes_sent: u64,
    /// Sent all of `bytes_each`.
    pub finished: u64,
    /// Closed by the server.
    pub closed_by_server: u64,
    /// Failed otherwise.
    pub failed: u64,
    /// The flood thread ran under `SCHED_IDLE`, behind the measured
    /// clients (in every run, when merged); `false`: it competed with them
    /// for the load core. `None` in reports from before it was recorded.
    pub sched_idle: Option<bool>,
}

/// One second of the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Second {
    /// Its end, seconds into the window.
    pub t_s: f64,
    /// Replies in it.
    pub messages: u64,
    /// Its rate.
    pub msgs_per_sec: f64,
    /// Its p99, microseconds.
    pub p99_us: Option<u64>,
    /// Its largest latency, microseconds.
    pub max_us: Option<u64>,
}

/// The connect scenario's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Connect {
    /// Connections established (then closed).
    pub completed: u64,
    /// Their rate.
    pub connections_per_sec: f64,
    /// Time to established, microseconds.
    pub latency_us: Percentiles,
    /// Its histogram.
    pub histogram: String,
    /// The kernel's `ListenOverflows` over the run.
    pub listen_overflows: Option<u64>,
    /// The kernel's `ListenDrops` over the run.
    pub listen_drops: Option<u64>,
    /// What those counters cover.
    pub listen_counters_scope: String,
}

/// The hold scenario's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hold {
    /// Connections that answered after the hold.
    pub answered: u64,
    /// The server's RSS before connecting.
    pub rss_before_bytes: Option<u64>,
    /// With every connection idle.
    pub rss_idle_bytes: Option<u64>,
    /// After each echoed once.
    pub rss_after_echo_bytes: Option<u64>,
    /// The server was started for this run.
    pub rss_fresh_server: bool,
    /// Its peak RSS before the run.
    pub rss_peak_before_bytes: Option<u64>,
    /// Growth per connection, idle: of the private anonymous memory when
    /// it is known (`anon_*`), else of the resident memory.
    pub rss_per_conn_idle_bytes: Option<f64>,
    /// Growth per connection, after one echo each.
    pub rss_per_conn_after_echo_bytes: Option<f64>,
    /// Why there is no figure per connection.
    pub rss_per_conn_unknown: Option<String>,
    /// The server's private anonymous memory (`RssAnon`, summed over its
    /// processes) before connecting: the figures per connection are its
    /// growth when known (shared program pages are not in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anon_before_bytes: Option<u64>,
    /// With every connection idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anon_idle_bytes: Option<u64>,
    /// After each echoed once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anon_after_echo_bytes: Option<u64>,
    /// The server's processes (itself and those under it) before connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_processes_before: Option<u64>,
    /// With every connection idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_processes_idle: Option<u64>,
}

/// A sweep's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sweep {
    /// The steps' target rates.
    pub rates: Vec<f64>,
    /// The objective for the knee.
    pub slo_p99_us: u64,
    /// `auto`: the closed-loop probe.
    pub probe: Option<Probe>,
}

/// The closed-loop probe of `--sweep auto`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Probe {
    /// The capacity measured.
    pub msgs_per_sec: f64,
    /// How long.
    pub duration_s: f64,
}

/// One step of a sweep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Step {
    /// Its rate.
    pub target_rate: f64,
    /// Achieved.
    pub msgs_per_sec: f64,
    /// Replies measured.
    pub messages: u64,
    /// Connections achieved.
    pub connections: u64,
    /// Corrected latency.
    pub latency_us: Percentiles,
    /// Uncorrected latency.
    pub latency_uncorrected_us: Option<Percentiles>,
    /// Its errors.
    pub errors: ErrorCounts,
    /// Its connect failures by reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_failures: Option<ConnectFailureCounts>,
    /// The load generator's CPU seconds.
    pub client_cpu_s: f64,
    /// The server's CPU seconds.
    pub server_cpu_s: Option<f64>,
    /// Its latency histogram.
    pub histogram: String,
    /// Its seconds.
    pub seconds: Vec<Second>,
}

/// A sweep's knee.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Knee {
    /// Its step, from 1.
    pub step: u64,
    /// The step's rate.
    pub target_rate: f64,
    /// Achieved.
    pub msgs_per_sec: f64,
    /// Its corrected p99.
    pub p99_us: Option<u64>,
}

/// One of `--processes` load generators.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadGenerator {
    /// Connections achieved.
    pub connections: u64,
    /// Replies measured.
    pub messages: u64,
    /// Achieved rate.
    pub msgs_per_sec: f64,
    /// Its latency.
    pub latency_us: Percentiles,
    /// Its errors.
    pub errors: ErrorCounts,
    /// Its time to connect, seconds (echo, hold, flood).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_s: Option<f64>,
}
