//! `echo-reactor serve`: its flags, the checks a command line must pass,
//! and starting the server (alone, as a supervisor, or as one of its
//! workers).
//!
//! Parsing is clap's (bad flags exit 2 with clap's message); every error a
//! user can cause after that is one line on stderr. Output: one
//! `listening on tcp ADDR` line per socket on stdout, flushed at once, and
//! a final `stats key=value ...` line on exit.
//!
//! Stdout is a report, not the service: when nobody reads it any more (a
//! closed pipe, `EPIPE`), `serve` logs a warning — with the stats line in
//! it, so they are not lost — and carries on; the exit code is the one the
//! shutdown earned (0). `println!` would panic there instead.
//!
//! This is a subcommand, like [`client`](crate::client) and
//! [`bench`](mod@crate::bench): only [`cli`](crate::cli) calls it, and it
//! uses only the library below it.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use log::{debug, info, warn};

use crate::affinity::{apply_cpu_affinity, parse_cpu_affinity, steer_incoming_cpu, CpuAffinity};
use crate::auth_key::load_auth_key;
use crate::fdlimit::{default_max_connections, nofile_limits, raise_nofile_limit};
use crate::inherit::{inherited_sockets, listening_fd};
use crate::machine::physical_memory_bytes;
use crate::pidfile::{hold_for_life, PidFile};
use crate::protocol::{
    AuthKey, Authenticated, Echo, Framing, FramingName, Greet, Json, Prefix, Protocol,
    ProtocolName, ProxyHeaderFirst, Upper, CHALLENGE_BYTES, HANDSHAKE_TIMEOUT,
    MIN_MAX_LINE_WITH_PROXY_HEADER,
};
use crate::reactor::Listening;
use crate::server::{BoundSocket, Config, Server, DEFAULT_BACKLOG};
use crate::sockets::somaxconn;
use crate::stdout::print_report;
use crate::supervisor::{self, WorkerSockets, WORKER_ENV};
use crate::units::{
    parse_addr, parse_bytes, parse_bytes_or_zero, parse_secs, parse_secs_or_zero, usage_error,
};
use crate::upgrade::{take_over, Announcement};
use crate::worker_stats::inherited_handover;

/// Flags of `echo-reactor serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP address to listen on, IPv4 or IPv6 (`[::1]:8888`); repeatable; port 0 picks one.
    /// Without --listen, --udp or --unix: 127.0.0.1:8888.
    #[arg(long = "listen", value_name = "ADDR", value_parser = parse_addr)]
    pub listen: Vec<SocketAddr>,
    /// UDP address to serve datagrams on (one datagram = one message); repeatable.
    #[arg(long = "udp", value_name = "ADDR", value_parser = parse_addr)]
    pub udp: Vec<SocketAddr>,
    /// Unix stream socket path (a stale socket file is replaced; removed on exit).
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// What the server says.
    #[arg(long, value_enum, default_value_t = ProtocolName::Echo)]
    pub protocol: ProtocolName,
    /// How `prefix` and `greet` find message boundaries [default: line]
    /// (other protocols ignore it, with a warning).
    #[arg(long, value_enum)]
    pub framing: Option<FramingName>,
    /// The prefix of the `prefix` protocol [default: Echo=>] (other
    /// protocols ignore it, with a warning).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Require the HMAC-SHA256 handshake on stream sockets; the key is this
    /// file's bytes (one trailing newline stripped). Without it,
    /// ECHO_REACTOR_AUTH_KEY, if set, holds the key itself.
    #[arg(long, value_name = "PATH")]
    pub auth_key_file: Option<PathBuf>,
    /// Every TCP and Unix stream connection must begin with a PROXY protocol
    /// header, v1 or v2 (what HAProxy's send-proxy / send-proxy-v2 send):
    /// its client address is the one logged. No valid header within the
    /// handshake time (5 s, or --idle-timeout if shorter): closed and counted.
    #[arg(long)]
    pub proxy_protocol: bool,
    /// Unsent bytes per connection before reading from it pauses (e.g. 1048576, 64KiB, 1.5MiB; 1MB is 10^6).
    /// At most --max-memory (a worker's share of it), or the machine's memory without a budget.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_buffered: usize,
    /// Longest message (a line before its newline, a JSON value) a protocol
    /// accepts, whole or partial; past it the connection closes.
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = parse_bytes)]
    pub max_line: usize,
    /// Bytes held for all connections together before reads of connections
    /// with unread replies pause and, at the budget, the worst holders are
    /// closed; 0 = no budget. At least 1MiB, at most this machine's memory.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_memory_budget)]
    pub max_memory: usize,
    /// UDP reply bytes per second per source network (IPv4 /24, IPv6 /56;
    /// loopback exempt) before replies are dropped and counted, so spoofed
    /// requests cannot aim the server at a victim; 0 = no limit.
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_bytes_or_zero)]
    pub udp_reply_budget: usize,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// Connections served at once; more are accepted and closed at once
    /// [default: the open-file limit minus a reserve]. Above the hard
    /// open-file limit minus that reserve it is refused.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Close connections with no traffic for this long (at least 0.001).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose pending output has not moved for this long (at least 0.001).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub stall_timeout: Duration,
    /// Log a stats line this often (at least 0.001).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub stats_interval: Option<Duration>,
    /// Worker processes, each the same single-threaded reactor with its share
    /// of --max-memory and its own open-file limit; 1 to 256, `auto` = one per CPU.
    #[arg(long, value_name = "N|auto", default_value = "1", value_parser = parse_workers)]
    pub workers: usize,
    /// Pin each worker to one CPU: `auto` (worker i on the i-th CPU this
    /// process may run on, going round if there are more workers) or a list
    /// like `0,1` or `0-3` (worker i on entry i; one entry per worker, a CPU
    /// may repeat). Without --workers the one process is pinned to the first.
    /// A CPU this process may not run on (taskset, cpuset) is refused.
    #[arg(long, value_name = "auto|LIST", value_parser = parse_cpu_affinity)]
    pub cpu_affinity: Option<CpuAffinity>,
    /// With --workers and --cpu-affinity: each worker's TCP and UDP sockets
    /// take the connections and datagrams the kernel received on that
    /// worker's CPU (SO_INCOMING_CPU; Linux 6.2+), instead of the hash's
    /// even spread. Clients whose packets all arrive on one CPU all go to
    /// one worker (docs/SCALING.md).
    #[arg(long, requires = "cpu_affinity")]
    pub incoming_cpu: bool,
    /// Serve Prometheus metrics (`/metrics`) and a health check (`/healthz`:
    /// 200 while accepting, 503 once shutdown begins) over HTTP on this TCP
    /// address, on the same loop (docs/OPERATIONS.md).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub metrics: Option<SocketAddr>,
    /// On SIGINT/SIGTERM, flush pending output for at most this long (0: close at once).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs_or_zero)]
    pub shutdown_grace: Duration,
    /// Write the supervisor's pid to this file (rewritten when an upgrade's
    /// new generation takes over; SIGUSR2 upgrades). Runs the supervisor
    /// even with --workers 1, so that an upgrade has one to hand the
    /// sockets over.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// On SIGQUIT (an upgrade's old workers), serve the connections held for
    /// at most this long after accepting stops, then close what remains
    /// as on SIGTERM (at least 0.001).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub drain_timeout: Duration,
}

impl ServeArgs {
    /// The library configuration these flags describe.
    pub fn to_config(&self) -> Config {
        let defaults = Config::default();
        let nothing_asked = self.listen.is_empty() && self.udp.is_empty() && self.unix.is_none();
        Config {
            listen: if nothing_asked {
                defaults.listen
            } else {
                self.listen.clone()
            },
            udp: self.udp.clone(),
            unix: self.unix.clone(),
            backlog: self.backlog,
            max_buffered: self.max_buffered,
            max_line: self.max_line,
            max_memory: self.max_memory,
            udp_reply_budget: self.udp_reply_budget,
            max_connections: self
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            idle_timeout: self.idle_timeout,
            stall_timeout: Some(self.stall_timeout),
            stats_interval: self.stats_interval,
            shutdown_grace: self.shutdown_grace,
            drain_timeout: self.drain_timeout,
            metrics: self.metrics,
            handle_signals: true,
        }
    }
}

/// The default `--prefix`.
pub const DEFAULT_PREFIX: &str = "Echo=>";

/// One warning per flag given that the chosen protocol ignores.
pub fn ignored_flags(args: &ServeArgs) -> Vec<String> {
    let mut warnings = Vec::new();
    let protocol = args
        .protocol
        .to_possible_value()
        .expect("no hidden protocols");
    if args.prefix.is_some() && args.protocol != ProtocolName::Prefix {
        warnings.push(format!(
            "--prefix is ignored: only --protocol prefix uses it (this is {})",
            protocol.get_name()
        ));
    }
    if args.incoming_cpu && args.workers < 2 {
        warnings.push(
            "--incoming-cpu is ignored without --workers 2 or more: one process takes every \
             connection"
                .to_string(),
        );
    }
    let framed = matches!(args.protocol, ProtocolName::Prefix | ProtocolName::Greet);
    if let (Some(framing), false) = (args.framing, framed) {
        let framing = framing.to_possible_value().expect("no hidden framings");
        warnings.push(format!(
            "--framing {} is ignored: only --protocol prefix and greet use it (this is {})",
            framing.get_name(),
            protocol.get_name()
        ));
    }
    warnings
}

/// Refuse limits that cannot work: more connections than the open-file
/// limit can ever allow, and a per-connection buffer larger than the
/// memory that could hold it. `hard` is the hard open-file limit: the
/// server raises its soft limit to it before serving, so that is the
/// ceiling (and `ulimit -Hn`, `LimitNOFILE=` raise it).
pub fn check_limits(args: &ServeArgs, config: &Config, hard: u64) -> io::Result<()> {
    let workers = args.workers.max(1);
    let listening = config.listen.len() + config.udp.len() + usize::from(config.unix.is_some());
    if let Some(asked) = args.max_connections {
        let per_worker = asked.div_ceil(workers as u64);
        let ceiling = default_max_connections(hard, listening) as u64;
        if per_worker > ceiling {
            let each = if workers > 1 {
                format!(" ({per_worker} per worker)")
            } else {
                String::new()
            };
            return Err(usage_error(format!(
                "--max-connections {asked}{each} cannot be reached: the hard open-file limit is {hard}, \
                 and {} descriptors are kept for the server itself, so at most {ceiling}; \
                 raise the limit (ulimit -Hn, LimitNOFILE= in systemd){}",
                hard.saturating_sub(ceiling),
                if workers > 1 { " or use more --workers" } else { " or ask for fewer" }
            )));
        }
    }
    let memory = physical_memory_bytes();
    if let Some(memory) = memory.filter(|&memory| config.max_memory as u64 > memory) {
        return Err(usage_error(format!(
            "--max-memory {} is more than this machine's memory ({memory} bytes): the budget \
             would never act; lower it, or give 0 for no budget",
            config.max_memory
        )));
    }
    if config.max_memory != 0 {
        let share = config.max_memory / workers;
        if share < MIN_MEMORY_BUDGET_BYTES {
            // Each worker enforces its share alone: a smaller one would
            // evict the partial lines of a few clients (and raising it in
            // silence would make the budget a lie).
            let least = workers * MIN_MEMORY_BUDGET_BYTES;
            return Err(usage_error(format!(
                "--max-memory {} over --workers {workers} leaves each worker {share} bytes, \
                 under the {MIN_MEMORY_BUDGET_BYTES} (1MiB) a worker needs: give --max-memory \
                 {}MiB ({least}) or more, fewer --workers, or --max-memory 0 for no budget",
                config.max_memory,
                least / MIN_MEMORY_BUDGET_BYTES
            )));
        }
        if config.max_buffered > share {
            let whose = if workers > 1 {
                format!(
                    "a worker's share of --max-memory ({share} bytes of {})",
                    config.max_memory
                )
            } else {
                format!("--max-memory {share}")
            };
            return Err(usage_error(format!(
                "--max-buffered {} is larger than {whose}: one connection would meet the \
                 server-wide budget before its own limit; lower it or raise --max-memory",
                config.max_buffered
            )));
        }
    } else if let Some(memory) = memory {
        if config.max_buffered as u64 > memory {
            return Err(usage_error(format!(
                "--max-buffered {} is more than this machine's memory ({memory} bytes): it would never pause a reader",
                config.max_buffered
            )));
        }
    }
    Ok(())
}

/// `--workers`: a count from 1, or `auto` (the number of CPUs).
pub fn parse_workers(text: &str) -> Result<usize, String> {
    if text == "auto" {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{text}' is not a worker count (1 to {MAX_WORKERS}, or auto)"
        )),
    }
}

/// The most `--workers` accepted: far more processes than cores only adds
/// context switches.
pub const MAX_WORKERS: usize = 256;

/// The smallest `--max-memory` other than 0: below it, every partial line
/// of a few clients would be evicted.
pub const MIN_MEMORY_BUDGET_BYTES: usize = 1024 * 1024;

/// `--max-memory`: `0` (no budget) or at least [`MIN_MEMORY_BUDGET_BYTES`].
pub fn parse_memory_budget(text: &str) -> Result<usize, String> {
    match parse_bytes_or_zero(text)? {
        bytes if bytes != 0 && bytes < MIN_MEMORY_BUDGET_BYTES => Err(format!(
            "'{text}' is below the smallest budget, 1MiB (or 0 for no budget)"
        )),
        bytes => Ok(bytes),
    }
}

/// Run `serve`: check the command line, then serve until a signal (or
/// supervise `--workers`). Errors are meant to be printed as one line.
pub fn run(args: &ServeArgs) -> io::Result<()> {
    // First, before any thread starts: threads inherit their CPU mask.
    let pinned = apply_cpu_affinity(
        args.cpu_affinity.as_ref(),
        args.workers,
        worker_index().map(|(index, _)| index),
    )?;
    // A worker's own sockets, steered to the CPU it runs on.
    let steer = pinned.filter(|_| args.incoming_cpu && worker_index().is_some());
    let mut config = args.to_config();
    let (_, hard) = nofile_limits()?;
    check_limits(args, &config, hard)?;
    // Before any worker starts: they inherit it. Refused only by a kernel
    // without it, where there is nothing to opt out of.
    if !crate::machine::keep_small_pages() {
        debug!("transparent huge pages: could not opt out (prctl PR_SET_THP_DISABLE)");
    }
    if std::env::var_os(WORKER_ENV).is_none() {
        // Once, by the supervisor or the only process, not by every worker.
        for warning in ignored_flags(args) {
            warn!("{warning}");
        }
    }
    worker_share(&mut config)?;
    let auth = load_auth_key(args.auth_key_file.as_deref())?;
    if auth.is_some() && !config.udp.is_empty() {
        return Err(usage_error(
            "--udp cannot be combined with the auth handshake (--auth-key-file or ECHO_REACTOR_AUTH_KEY): \
             datagrams cannot be authenticated this way",
        ));
    }
    if auth.is_some() && config.max_line < CHALLENGE_BYTES {
        // A partial answer waits in the input buffer like a partial line;
        // past --max-line the connection would close before it completes.
        return Err(usage_error(format!(
            "--max-line {} is shorter than the {CHALLENGE_BYTES}-byte handshake answer: \
             with an auth key it must be at least {CHALLENGE_BYTES}",
            config.max_line
        )));
    }
    if args.proxy_protocol && config.max_line < MIN_MAX_LINE_WITH_PROXY_HEADER {
        // A partial header waits in the input buffer like a partial line.
        return Err(usage_error(format!(
            "--max-line {} is shorter than the longest PROXY header accepted: with \
             --proxy-protocol it must be at least {MIN_MAX_LINE_WITH_PROXY_HEADER}",
            config.max_line
        )));
    }
    // The client gets 5 s to answer, or the idle timeout if that is shorter.
    // The same bound applies to the PROXY header.
    let timeout = config
        .idle_timeout
        .map_or(HANDSHAKE_TIMEOUT, |idle| idle.min(HANDSHAKE_TIMEOUT));
    // A pid file names a supervisor: one that can hand the sockets over
    // to an upgrade, even for a single worker.
    if (args.workers > 1 || args.pid_file.is_some()) && std::env::var(WORKER_ENV).is_err() {
        return supervise(args, &config);
    }
    let framing = Framing::from(args.framing.unwrap_or(FramingName::Line));
    let proxy = args.proxy_protocol;
    match args.protocol {
        ProtocolName::Echo => serve_guarded(&config, Echo, auth, proxy, timeout, steer),
        ProtocolName::Upper => serve_guarded(&config, Upper, auth, proxy, timeout, steer),
        ProtocolName::Prefix => {
            let prefix = args.prefix.as_deref().unwrap_or(DEFAULT_PREFIX);
            let prefix = Prefix::new(prefix.as_bytes(), framing);
            serve_guarded(&config, prefix, auth, proxy, timeout, steer)
        }
        ProtocolName::Greet => {
            serve_guarded(&config, Greet::new(framing), auth, proxy, timeout, steer)
        }
        ProtocolName::Json => serve_guarded(&config, Json, auth, proxy, timeout, steer),
    }
}

/// Serve `protocol`, behind the handshake when a key is given, and behind
/// a PROXY header (which comes first on the wire) with `--proxy-protocol`.
/// Each combination is its own type, so a server without them runs exactly
/// the protocol's code: neither costs anything when off.
fn serve_guarded<P: Protocol>(
    config: &Config,
    protocol: P,
    auth: Option<AuthKey>,
    proxy_header: bool,
    timeout: Duration,
    steer: Option<usize>,
) -> io::Result<()> {
    if proxy_header {
        info!("proxy protocol: connections must begin with a PROXY v1 or v2 header within {timeout:?}");
    }
    match (auth, proxy_header) {
        (Some(key), false) => {
            info!("auth: clients must answer the HMAC-SHA256 challenge within {timeout:?}");
            serve_with(config, Authenticated::new(protocol, key, timeout), steer)
        }
        (Some(key), true) => {
            info!("auth: clients must answer the HMAC-SHA256 challenge within {timeout:?}");
            let inner = Authenticated::new(protocol, key, timeout);
            serve_with(config, ProxyHeaderFirst::new(inner, timeout), steer)
        }
        (None, true) => serve_with(config, ProxyHeaderFirst::new(protocol, timeout), steer),
        (None, false) => serve_with(config, protocol, steer),
    }
}

/// Run one server process for `protocol`: the only process, or one worker
/// of a supervisor. Raises the open-file limit, serves the sockets handed
/// over (socket activation, or a worker's from its supervisor:
/// `LISTEN_FDS`) or binds `config`'s own, and prints the final stats.
/// `steer`: the CPU a worker's TCP and UDP sockets take their connections
/// from (`--incoming-cpu`).
fn serve_with<P: Protocol>(config: &Config, protocol: P, steer: Option<usize>) -> io::Result<()> {
    // Every connection is a descriptor: take all the process may have.
    // (Not fatal: macOS, for one, refuses a soft limit of RLIM_INFINITY.)
    let (soft, hard) = raise_nofile_limit().or_else(|e| {
        warn!("could not raise the open-file limit: {e}; keeping the current one");
        nofile_limits()
    })?;
    let worker = std::env::var(WORKER_ENV).is_ok();
    let mut config = config.clone();
    // A worker serves the metrics listener its supervisor bound, not its own.
    let handover = match worker_index() {
        Some((index, count)) => {
            config.metrics = None;
            inherited_handover(index, count)?
        }
        None => None,
    };
    let config = &config;
    let mut server = match inherited_sockets()? {
        // Socket activation, or a worker of ours: serve what we were handed.
        Some(sockets) => {
            if let Some(cpu) = steer {
                steer_to(cpu, &sockets);
            }
            Server::adopt(config, protocol, sockets)?
        }
        None if worker => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{WORKER_ENV} is set but no sockets were handed over (LISTEN_FDS)"),
            ))
        }
        None => Server::bind(config, protocol)?,
    };
    if let Some(handover) = handover {
        server.serve_as_worker(handover)?;
    }
    if !worker {
        print_listening(server.bound(), server.metrics_addr());
    }
    let effective_backlog = somaxconn().map_or(config.backlog, |cap| config.backlog.min(cap));
    info!(
        "limits: open files {soft} (hard {hard}), max connections {}, backlog {effective_backlog} (asked {}), \
         max buffered {} bytes per connection, memory budget {}",
        server.max_connections(),
        config.backlog,
        config.max_buffered,
        match config.max_memory {
            0 => "none".to_string(),
            bytes => format!("{bytes} bytes for all connections"),
        }
    );
    let stats = server.run()?;
    if let Err(e) = print_report(&format!("{stats}\n")) {
        warn!("stdout: cannot print the final stats ({e}); they were: {stats}");
    }
    Ok(())
}

/// The `listening on ...` lines, one per socket, and the metrics endpoint's.
fn print_listening(bound: &[BoundSocket], metrics: Option<SocketAddr>) {
    let mut listening: String = bound
        .iter()
        .map(|socket| format!("listening on {socket}\n"))
        .collect();
    if let Some(addr) = metrics {
        listening.push_str(&format!("listening on metrics http://{addr}/metrics\n"));
    }
    if let Err(e) = print_report(&listening) {
        warn!("stdout: cannot print the listening lines ({e}); serving anyway");
    }
}

/// `serve --workers N` (N > 1, or a `--pid-file`): bind (or take over)
/// every socket, print the `listening on` lines once, and supervise the
/// workers (`supervisor.rs`).
fn supervise(args: &ServeArgs, config: &Config) -> io::Result<()> {
    let pid_file = args.pid_file.clone().map(PidFile::new);
    let (mut sockets, takeover) = match take_over(config.backlog, args.workers)? {
        // A new generation: the old one's sockets; the old supervisor
        // rewrites the pid file once our workers accept.
        Some((sockets, takeover)) => (sockets, Some(takeover)),
        None => {
            pid_file.as_ref().map(PidFile::claim).transpose()?; // held: refused, nothing bound
            let sockets = match inherited_sockets()? {
                Some(inherited) => WorkerSockets::inherited(inherited, args.workers),
                None => WorkerSockets::bind(config, args.workers)?,
            };
            (sockets, None)
        }
    };
    let metrics = match (config.metrics, sockets.metrics_addr()) {
        // Handed over: the same listener, already bound.
        (Some(_), Some(handed)) => Some(handed),
        (Some(addr), None) => Some(sockets.serve_metrics(addr)?),
        (None, _) => None,
    };
    if let (Some(file), None) = (&pid_file, &takeover) {
        // Only once bound: a second server started by mistake fails to
        // bind and leaves the running one's file alone.
        let lock = file.write_locked(std::process::id());
        hold_for_life(lock.inspect_err(|_| sockets.remove_unix_file())?);
    }
    print_listening(&sockets.bound, metrics);
    let share = config.max_memory / args.workers;
    let budget = match share {
        0 => "with no memory budget".to_string(),
        // The real total: each worker enforces its share, rounded down.
        _ => format!(
            "each with a {share} byte share of --max-memory: {} bytes in all",
            share * args.workers
        ),
    };
    info!("supervising {} workers, {budget}", args.workers);
    let ready = Announcement { pid_file, takeover };
    let args_again = std::env::args_os().skip(1).collect();
    let code = supervisor::run(sockets, args.workers, args_again, ready)?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// `--incoming-cpu`: have the kernel hand this worker's TCP and UDP
/// sockets what it received on `cpu`. Each worker has its own member of
/// every `SO_REUSEPORT` group, so the group picks, per SYN or datagram, the
/// member whose CPU processed it (else its hash). Sockets handed over by
/// systemd are shared by all workers instead: there it chooses nothing.
/// A failure leaves the hash's spread, with a warning: serving matters
/// more than steering.
fn steer_to(cpu: usize, sockets: &[(BoundSocket, Listening)]) {
    for (bound, socket) in sockets {
        if matches!(socket, Listening::Unix(_)) {
            continue; // one socket shared by all workers: nothing to choose
        }
        match steer_incoming_cpu(listening_fd(socket), cpu) {
            Ok(()) => info!("{bound}: taking what CPU {cpu} received (--incoming-cpu)"),
            Err(e) => warn!("{bound}: --incoming-cpu: {e}; connections spread by hash"),
        }
    }
}

/// `(index, count)` from [`WORKER_ENV`] in a worker, else `None`.
fn worker_index() -> Option<(usize, usize)> {
    let value = std::env::var(WORKER_ENV).ok()?;
    let (index, count) = value.split_once('/')?;
    Some((index.parse().ok()?, count.parse().ok()?))
}

/// A worker's share of the server-wide settings: `--max-memory` and
/// `--max-connections` are split evenly (a worker's open-file limit is its
/// own already).
fn worker_share(config: &mut Config) -> io::Result<()> {
    let Ok(value) = std::env::var(WORKER_ENV) else {
        return Ok(());
    };
    let workers = value
        .split_once('/')
        .and_then(|(_, n)| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{WORKER_ENV}={value}: expected INDEX/COUNT"),
            )
        })?;
    config.max_memory /= workers; // at least the minimum: `check_limits`
    config.max_connections = config.max_connections.map(|n| n.div_ceil(workers));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `serve`'s flags alone, as clap parses them (the whole command line is `cli`'s).
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn serve_args(flags: &[&str]) -> ServeArgs {
        Serve::try_parse_from(["serve"].iter().chain(flags))
            .unwrap()
            .args
    }

    #[test]
    fn flags_the_protocol_ignores_are_named_in_one_warning_each() {
        assert!(ignored_flags(&serve_args(&["--protocol", "prefix", "--prefix", "> "])).is_empty());
        assert!(
            ignored_flags(&serve_args(&["--protocol", "greet", "--framing", "chunk"])).is_empty()
        );
        assert!(ignored_flags(&serve_args(&["--protocol", "json"])).is_empty());
        let steered = ["--cpu-affinity", "auto", "--incoming-cpu"];
        assert!(
            ignored_flags(&serve_args(&[&steered[..], &["--workers", "2"]].concat())).is_empty()
        );
        assert_eq!(
            ignored_flags(&serve_args(&steered)),
            ["--incoming-cpu is ignored without --workers 2 or more: one process takes every connection"]
        );
        let warnings = ignored_flags(&serve_args(&["--prefix", "> "]));
        assert_eq!(
            warnings,
            ["--prefix is ignored: only --protocol prefix uses it (this is echo)"]
        );
        let warnings = ignored_flags(&serve_args(&["--protocol", "json", "--framing", "chunk"]));
        assert_eq!(
            warnings,
            ["--framing chunk is ignored: only --protocol prefix and greet use it (this is json)"]
        );
        assert_eq!(
            ignored_flags(&serve_args(&[
                "--protocol",
                "upper",
                "--framing",
                "line",
                "--prefix",
                "x"
            ]))
            .len(),
            2
        );
    }

    #[test]
    fn limits_that_cannot_work_are_refused_naming_the_flag_and_the_way_out() {
        let check = |flags: &[&str], hard: u64| {
            let args = serve_args(flags);
            check_limits(&args, &args.to_config(), hard)
        };
        // One listener, so 33 descriptors are the server's own.
        assert!(check(&["--max-connections", "31"], 64).is_ok());
        let err = check(&["--max-connections", "1000"], 64).unwrap_err();
        assert!(crate::units::is_usage_error(&err));
        let text = err.to_string();
        assert!(
            text.starts_with("--max-connections 1000 cannot be reached"),
            "{text}"
        );
        assert!(
            text.contains("hard open-file limit is 64") && text.contains("at most 31"),
            "{text}"
        );
        assert!(text.contains("ulimit -Hn"), "{text}");
        // Each worker has its own limit.
        assert!(check(&["--max-connections", "60", "--workers", "2"], 64).is_ok());

        assert!(check(&["--max-buffered", "64MiB"], 64).is_ok());
        let text = check(&["--max-buffered", "65MiB"], 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("--max-buffered 68157440 is larger than --max-memory 67108864"),
            "{text}"
        );
        let text = check(&["--max-buffered", "40MiB", "--workers", "2"], 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(text.contains("a worker's share of --max-memory"), "{text}");
        let text = check(
            &["--max-buffered", "100000GiB", "--max-memory", "0"],
            1 << 20,
        )
        .unwrap_err()
        .to_string();
        assert!(text.contains("more than this machine's memory"), "{text}");
        assert!(check(&["--max-buffered", "64MiB", "--max-memory", "0"], 1 << 20).is_ok());
    }

    #[test]
    fn a_memory_budget_larger_than_the_machine_is_refused() {
        let memory = physical_memory_bytes().expect("Linux says how much memory it has");
        let check = |budget: &str| {
            let args = serve_args(&["--max-memory", budget]);
            check_limits(&args, &args.to_config(), 1 << 20)
        };
        let more = (memory + (1 << 30)).to_string();
        let err = check(&more).unwrap_err();
        assert!(crate::units::is_usage_error(&err));
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "--max-memory {more} is more than this machine's memory ({memory} bytes)"
            )),
            "{text}"
        );
        assert!(
            check("1PB").is_err(),
            "a petabyte is more than any machine here"
        );
        let half = (memory / 2).to_string();
        assert!(check(&half).is_ok());
        assert!(check("0").is_ok(), "0 is no budget at all");
    }

    #[test]
    fn a_worker_s_share_of_the_budget_below_the_minimum_is_refused_naming_what_works() {
        let check = |flags: &[&str]| {
            let args = serve_args(flags);
            check_limits(&args, &args.to_config(), 1 << 20)
        };
        let err = check(&[
            "--workers",
            "2",
            "--max-memory",
            "1MiB",
            "--max-buffered",
            "4KiB",
        ])
        .unwrap_err();
        assert!(crate::units::is_usage_error(&err));
        let text = err.to_string();
        assert!(
            text.starts_with(
                "--max-memory 1048576 over --workers 2 leaves each worker 524288 bytes"
            ),
            "{text}"
        );
        assert!(
            text.contains("give --max-memory 2MiB (2097152) or more"),
            "{text}"
        );
        assert!(check(&[
            "--workers",
            "2",
            "--max-memory",
            "2MiB",
            "--max-buffered",
            "4KiB"
        ])
        .is_ok());
        // The default budget, 64 MiB, holds 64 workers' minimum, not 65.
        assert!(check(&["--workers", "64"]).is_ok());
        let text = check(&["--workers", "65"]).unwrap_err().to_string();
        assert!(text.contains("give --max-memory 65MiB"), "{text}");
        assert!(check(&["--workers", "256", "--max-memory", "0"]).is_ok());
    }
}
