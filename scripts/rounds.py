#!/usr/bin/env python3
"""Interleaved rounds of `echo-reactor bench` against several servers; medians.

Every run gets a fresh server, started by this script pinned to core 0
(`taskset -c 0`; `--server-cpus`), and the load (`BENCH bench --addr ...
--server-pid PID --json ...`) pinned to core 1 (`--load-cpus`; '' for
either: unpinned). In each round every load point runs against
every server, one after another (the server order rotates each round), so
drift on a shared machine hits them alike. After each run the server gets
SIGTERM, by its pid; echo-reactor's final stats line supplies its own
counters (peak_held_bytes, closed_evicted, memory_pressure_episodes, and
read + write + poll calls per echoed message: `sys/msg`).

`others` is everyone else's CPU during a run, in cores (the machine's busy
time from /proc/stat minus this server's and this load generator's): on a
shared machine it says which runs were disturbed. With `--retries N`, a run
during which others used more than `--busy` cores is made again, and the
quietest attempt is kept.

Usage:
  scripts/rounds.py [--rounds N] [--bench PATH] [--out FILE.jsonl] [--quiet SECS]
                    [--retries N --busy CORES] [--server-cpus LIST] [--load-cpus LIST]
      --server 'NAME=COMMAND ...' (repeatable; the command prints
               `listening on tcp ADDR` first; `{port}` in it, if present, is
               replaced by a free port and the server is then waited for
               by connecting, for servers that print nothing)
      --load 'NAME=BENCH ARGS ...' (repeatable)

Example (the memory budget's throughput A/B):
  scripts/rounds.py --rounds 3 \\
    --server 'base=/work/target-base/release/echo-reactor serve --listen 127.0.0.1:0' \\
    --server 'this=target/release/echo-reactor serve --listen 127.0.0.1:0' \\
    --load '50x4096=--connections 50 --size 4096 --duration 5 --warmup 1' \\
    --load '1x8MiB=--connections 1 --size 8388608 --duration 5 --warmup 1'
"""
import argparse
import json
import os
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

# taskset lists (`--server-cpus`, `--load-cpus`); '' runs unpinned.
CPUS = {"server": "0", "load": "1"}


def pinned(who, argv):
    """`argv` under `taskset -c` for `who`'s CPUs, or as it is."""
    return ["taskset", "-c", CPUS[who]] + argv if CPUS[who] else argv


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command):
    """Start a server on the server CPUs; returns (process, address)."""
    port = free_port() if "{port}" in command else None
    argv = pinned("server", shlex.split(command.replace("{port}", str(port or ""))))
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    if port is None:
        line = proc.stdout.readline().decode()
        match = re.search(r"listening on tcp (\S+)", line)
        if not match:
            proc.kill()
            sys.exit(f"{command}: no startup line ({line!r})")
        return proc, match.group(1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit(f"{command}: never accepted on {port}")


def stop(proc):
    """SIGTERM the server (by pid), wait, and return its stats counters."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    stats = {}
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("stats "):
            stats = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    return {k: int(v) for k, v in stats.items() if v.isdigit()}


def cpu_idle_fraction(seconds):
    """Share of all CPUs' time spent idle over `seconds` (/proc/stat)."""
    def sample():
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def tcp_mem_bytes():
    """The machine's TCP socket memory now (/proc/net/sockstat, in pages)."""
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def wait_for_quiet(max_wait):
    """Wait (at most `max_wait` s) until the machine looks quiet: both CPUs
    at least 95 % idle over half a second and under 64 MiB of TCP memory in
    use (other users' floods trim every socket's buffers). Returns the
    seconds waited, or None if it never got quiet."""
    began = time.monotonic()
    while time.monotonic() - began < max_wait:
        if tcp_mem_bytes() < 64 << 20 and cpu_idle_fraction(0.5) >= 0.95:
            return time.monotonic() - began
    return None


def busy_seconds():
    """CPU time spent busy by all CPUs since boot (/proc/stat), in seconds."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid):
    """utime + stime of a live process (/proc/PID/stat), in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(bench, command, load_args):
    proc, addr = start(command)
    argv = pinned("load", [bench, "bench", "--addr", addr,
                           "--server-pid", str(proc.pid), "--json"] + shlex.split(load_args))
    # Everyone else's CPU time during the run: the machine's busy time
    # minus this server's and this load generator's.
    began, busy0, server0 = time.monotonic(), busy_seconds(), process_cpu_seconds(proc.pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(argv, capture_output=True, env=dict(os.environ, RUST_LOG="off"))
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (process_cpu_seconds(proc.pid) - server0
            + children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime)
    others = max(0.0, (busy_seconds() - busy0 - ours) / (time.monotonic() - began))
    stats = stop(proc)
    try:
        report = json.loads(result.stdout.decode().splitlines()[0])
    except (IndexError, ValueError):
        report = {"failed": result.stderr.decode(errors="replace")[-500:]}
    report["server_stats"] = stats
    report["others_cores"] = others
    return report


def syscalls_per_message(report):
    """The server's own read + write + poll calls per echoed message (its
    stats cover the warm-up too, so do its bytes_out; a flood's echoes
    count as messages here)."""
    stats, size = report.get("server_stats", {}), pick(report, "settings", "size")
    echoed = stats.get("bytes_out", 0) // size if size else 0
    calls = [stats.get(k) for k in ("read_calls", "write_calls", "poll_calls")]
    if not echoed or None in calls:
        return None
    return sum(calls) / echoed


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def pick(report, *path):
    for key in path:
        if not isinstance(report, dict) or report.get(key) is None:
            return None
        report = report[key]
    return report


def errors(reports):
    found = []
    for r in reports:
        if "failed" in r:
            found.append("bench failed")
            continue
        e = {k: v for k, v in r.get("errors", {}).items() if v}
        if e:
            found.append(" ".join(f"{k} {v}" for k, v in e.items()))
    return "; ".join(found) or "0"


def cell(value, fmt):
    """`value` formatted, or a "-" as wide."""
    width = re.match(r"\d*", fmt).group()
    return format("-", ">" + width) if value is None else format(value, fmt)


def table(servers, loads, runs):
    mib = 1048576
    head = (f"{'load':<12} {'server':<14} {'msgs/s':>10} {'MB/s':>8} {'spread':>7} {'p50 us':>8} "
            f"{'p99 us':>9} {'srv us/msg':>10} {'sys/msg':>8} {'RSS MiB':>8} {'held MiB':>8} {'TCP MiB':>8} "
            f"{'evicted':>7} {'press.':>6} {'closed':>6} {'sent MiB':>9} {'others':>6}  errors")
    print(head)
    for load, _ in loads:
        for name, _ in servers:
            rs = runs[(load, name)]
            ok = [r for r in rs if "failed" not in r]
            rates = [pick(r, "msgs_per_sec") for r in ok]
            rate = median(rates)
            spread = (50 * (max(rates) - min(rates)) / rate) if len(rates) > 1 and rate else None
            m = lambda *path: median([pick(r, *path) for r in ok])  # noqa: E731
            stat = lambda key: median([r["server_stats"].get(key) for r in ok])  # noqa: E731
            div = lambda v, d: None if v is None else v / d  # noqa: E731
            print(f"{load:<12} {name:<14} {cell(rate, '10.0f')} {cell(div(m('bytes_per_sec'), 1e6), '8.1f')} "
                  f"{'±' + format(spread, '.0f') + '%' if spread is not None else '-':>7} "
                  f"{cell(m('latency_us', 'p50'), '8.0f')} {cell(m('latency_us', 'p99'), '9.0f')} "
                  f"{cell(m('server', 'cpu_us_per_msg'), '10.2f')} "
                  f"{cell(median([syscalls_per_message(r) for r in ok]), '8.2f')} "
                  f"{cell(div(m('server', 'rss_peak_bytes'), mib), '8.1f')} "
                  f"{cell(div(stat('peak_held_bytes'), mib), '8.1f')} "
                  f"{cell(div(m('kernel', 'tcp_mem_peak_bytes'), mib), '8.0f')} "
                  f"{cell(stat('closed_evicted'), '7.0f')} {cell(stat('memory_pressure_episodes'), '6.0f')} "
                  f"{cell(m('flood', 'closed_by_server'), '6.0f')} "
                  f"{cell(div(m('flood', 'bytes_sent'), mib), '9.1f')} {cell(m('others_cores'), '6.2f')}  {errors(rs)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bench", default="target/release/echo-reactor")
    parser.add_argument("--out", help="append every run's report here, one JSON line each")
    parser.add_argument("--server", action="append", required=True)
    parser.add_argument("--load", action="append", required=True)
    parser.add_argument("--retries", type=int, default=0,
                        help="make a run again (keeping the quietest) when others used more than --busy cores")
    parser.add_argument("--busy", type=float, default=0.25, metavar="CORES")
    parser.add_argument("--quiet", type=float, default=0, metavar="SECS",
                        help="before each run, wait up to SECS for a quiet machine (see wait_for_quiet)")
    parser.add_argument("--server-cpus", default=CPUS["server"], metavar="LIST",
                        help="taskset list for the servers ('' = unpinned)")
    parser.add_argument("--load-cpus", default=CPUS["load"], metavar="LIST",
                        help="taskset list for the load generator ('' = unpinned)")
    args = parser.parse_args()
    CPUS.update(server=args.server_cpus, load=args.load_cpus)
    servers = [tuple(s.split("=", 1)) for s in args.server]
    loads = [tuple(s.split("=", 1)) for s in args.load]
    runs = {(load, name): [] for load, _ in loads for name, _ in servers}
    out = open(args.out, "a") if args.out else None
    for round_ in range(args.rounds):
        order = servers[round_ % len(servers):] + servers[:round_ % len(servers)]
        for load, load_args in loads:
            for name, command in order:
                # A run during which others used more than --busy cores is
                # made again (up to --retries times); the quietest is kept.
                attempts = []
                for _ in range(1 + args.retries):
                    waited = wait_for_quiet(args.quiet) if args.quiet else 0.0
                    report = run(args.bench, command, load_args)
                    report["quiet_wait_s"] = waited
                    attempts.append(report)
                    if report["others_cores"] <= args.busy:
                        break
                report = min(attempts, key=lambda r: r["others_cores"])
                report["attempts"] = len(attempts)
                runs[(load, name)].append(report)
                p99 = pick(report, "latency_us", "p99")
                print(f"  round {round_ + 1}: {load} {name}: {pick(report, 'msgs_per_sec')} msgs/s, "
                      f"p99 {p99} us, errors {errors([report])}, "
                      f"others {report['others_cores']:.2f} cores ({len(attempts)} attempts), waited for quiet "
                      f"{'never quiet' if waited is None else format(waited, '.1f') + ' s'}",
                      file=sys.stderr, flush=True)
                if out:
                    out.write(json.dumps({"round": round_ + 1, "load": load, "server": name,
                                          "report": report}) + "\n")
                    out.flush()
    table(servers, loads, runs)


if __name__ == "__main__":
    main()
