#!/usr/bin/env python3
"""Past one process: the measurements behind docs/BENCHMARKS.md ("Past one
process: workers and 100 000 connections") and docs/SCALING.md.

Every run starts `echo-reactor serve --listen 127.0.0.1:0 --workers W`
(pinned with taskset to --server-cpus, default core 0), runs
`echo-reactor bench --json --addr ... --server-pid ...` against it (pinned
to --bench-cpus, default core 1), stops the server with SIGTERM and reads
its final stats (stdout: the sum; stderr: `worker N final stats ...`).
Everything started here is stopped here, by pid.

A watcher samples /proc/meminfo and /proc/net/sockstat every 100 ms. The
machine is shared: a scale point starts only when the machine's TCP is
near idle (other sessions' tests flood it now and then), is run again if
other sockets came or went during it, and is stopped at once (server and
bench killed by pid) if the kernel's TCP memory passes tcp_mem's lowest
mark or MemAvailable falls under --min-available-gib.

  scale.py spread  [--rounds R] N...   per-worker accepted at N connections, --workers 2
  scale.py cpu     [--rounds R]        server CPU per message, --workers 2 vs 1, 1000 x 64 B
  scale.py scale   N...                hold (every connection answers once; user and
                                       kernel memory per connection) and echo (msgs/s, p99)
  scale.py restart                     SIGKILL a worker: queued and arriving connections

With --cpu-affinity auto|LIST every server is started with that flag:
each worker pinned to one CPU (auto: the i-th of --server-cpus).

Prints one JSON object per run on stdout (and a summary on stderr).
Usage: scripts/scale.py [--bin target/release/echo-reactor] [--server-cpus LIST]
                        [--bench-cpus LIST] [--cpu-affinity auto|LIST] SUBCOMMAND ...
"""
import argparse
import json
import math
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---- what the kernel says ----

def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024  # kB -> bytes
    return out


def sockstat_tcp():
    """`TCP: inuse I orphan O tw T alloc A mem M` as a dict (mem in pages)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                return {fields[i]: int(fields[i + 1]) for i in range(0, len(fields), 2)}
    return {}


def tcp_mem_pages():
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        return [int(x) for x in f.read().split()]


def slabinfo():
    """Bytes held per slab cache (active objects x object size); {} if unreadable."""
    try:
        with open("/proc/slabinfo") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return {}
    out = {}
    for line in lines:
        fields = line.split()
        out[fields[0]] = int(fields[1]) * int(fields[3])
    return out


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def context_switches(pid):
    """Voluntary + involuntary context switches of `pid` and its children."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Watch(threading.Thread):
    """Samples kernel memory every 100 ms; trips (and calls `on_trip`) when
    the machine's TCP memory or free memory crosses its limit."""

    def __init__(self, min_available, on_trip=None):
        super().__init__(daemon=True)
        self.samples = []
        # tcp_mem's lowest mark: below it the kernel limits nothing. Past
        # it (ours and everyone else's) the run is stopped, long before
        # the "pressure" mark where every socket on the machine is trimmed.
        self.limit_pages = tcp_mem_pages()[0]
        self.min_available = min_available
        self.on_trip = on_trip
        self.tripped = None
        self.halt = threading.Event()
        self.peak_slabinfo = None
        self.peak_inuse = -1

    def sample(self):
        m, s = meminfo(), sockstat_tcp()
        row = {
            "t": time.monotonic(),
            "slab": m["Slab"],
            "sunreclaim": m["SUnreclaim"],
            "available": m["MemAvailable"],
            "inuse": s.get("inuse", 0),
            "tw": s.get("tw", 0),
            "mem_pages": s.get("mem", 0),
        }
        self.samples.append(row)
        if row["inuse"] > self.peak_inuse:
            self.peak_inuse = row["inuse"]
            self.peak_slabinfo = None  # taken again below, at the new peak
        if self.peak_slabinfo is None and row["inuse"] >= self.peak_inuse:
            self.peak_slabinfo = slabinfo()
        if self.tripped is None:
            if row["mem_pages"] > self.limit_pages:
                self.tripped = f"TCP memory {row['mem_pages']} pages > {self.limit_pages} (tcp_mem low)"
            elif row["available"] < self.min_available:
                self.tripped = f"MemAvailable {row['available'] >> 20} MiB < {self.min_available >> 20} MiB"
            if self.tripped:
                log("STOP:", self.tripped)
                if self.on_trip:
                    self.on_trip()
        return row

    def run(self):
        while not self.halt.wait(0.1):
            self.sample()

    def stop(self):
        self.halt.set()
        self.join()


# ---- the server and the bench ----

class Server:
    # Flags every server gets (`--cpu-affinity X`, set from the command line).
    common_flags = ()

    def __init__(self, binary, workers, cpus, extra=()):
        cmd = ["taskset", "-c", cpus] if cpus else []
        cmd += [binary, "serve", "--listen", "127.0.0.1:0", "--workers", str(workers),
                *self.common_flags, *extra]
        self.workers = workers
        self.stderr = tempfile.TemporaryFile(mode="w+")
        # taskset execs the server: the pid is the server's (the supervisor's).
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on tcp "):
            raise RuntimeError(f"server said {line!r}")
        self.addr = line.split()[-1]
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while workers > 1 and len(children(self.pid)) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.01)

    def kill(self):
        for pid in children(self.pid):
            os.kill(pid, signal.SIGKILL)
        self.proc.kill()

    def stop(self):
        """SIGTERM; the summed final stats and each worker's accepted count."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rest = self.proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            self.kill()
            rest = self.proc.communicate()[0]
        final = parse_stats(next((l for l in rest.splitlines() if l.startswith("stats ")), ""))
        self.stderr.seek(0)
        self.log_text = self.stderr.read()
        per_worker = {}
        for line in self.log_text.splitlines():
            m = re.search(r"worker (\d+) final (stats .*)", line)
            if m:
                per_worker.setdefault(int(m.group(1)), []).append(parse_stats(m.group(2)))
        return final, per_worker


def parse_stats(line):
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def bench(binary, server, cpus, args, timeout=600):
    cmd = ["taskset", "-c", cpus] if cpus else []
    cmd += [binary, "bench", "--json", "--addr", server.addr, "--server-pid", str(server.pid), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RUST_LOG": "off"})
    return proc


def finish(proc, timeout=600):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = {"failed": err.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
    report["exit_code"] = proc.returncode
    return report


def errors_of(report):
    e = report.get("errors") or {}
    return sum(v for v in e.values() if isinstance(v, int))


def emit(obj):
    print(json.dumps(obj), flush=True)


# ---- spread ----

def cmd_spread(a):
    for n in a.connections:
        for round_ in range(1, a.rounds + 1):
            server = Server(a.bin, 2, a.server_cpus)
            report = finish(bench(a.bin, server, a.bench_cpus, [
                "--connections", str(n), "--processes", str(max(1, math.ceil(n / 18000))),
                "--scenario", "hold", "--server-fresh", "--duration", "1"]))
            final, per_worker = server.stop()
            accepted = [per_worker[i][-1]["accepted"] for i in sorted(per_worker)]
            even = n / 2
            worst = max(abs(x - even) / even for x in accepted) if accepted else None
            emit({"what": "spread", "connections": n, "round": round_, "accepted": accepted,
                  "sum": final.get("accepted"), "worst_off_even": worst, "errors": errors_of(report)})
            log(f"spread {n}: round {round_}: per worker {accepted}, off even by at most "
                f"{100 * worst:.1f} %, errors {errors_of(report)}")


# ---- cpu: 2 workers vs 1 ----

def cmd_cpu(a):
    per_msg = {1: [], 2: []}
    for round_ in range(1, a.rounds + 1):
        order = (1, 2) if round_ % 2 else (2, 1)  # interleaved, alternating who goes first
        for workers in order:
            server = Server(a.bin, workers, a.server_cpus)
            switches = context_switches(server.pid)
            report = finish(bench(a.bin, server, a.bench_cpus, [
                "--connections", "1000", "--size", "64", "--duration", str(a.duration), "--warmup", "1"]))
            switches = context_switches(server.pid) - switches
            final, per_worker = server.stop()
            messages = max(1, final.get("bytes_in", 0) / 64)  # the whole run, warm-up and drain too
            us = report.get("server", {}).get("cpu_us_per_msg")
            per_msg[workers].append(us)
            split = [w[-1]["accepted"] for _, w in sorted(per_worker.items())]
            emit({"what": "cpu", "round": round_, "workers": workers, "server_us_per_msg": us,
                  "msgs_per_sec": report.get("msgs_per_sec"), "p99_us": report.get("latency_us", {}).get("p99"),
                  "client_us_per_msg": report.get("client", {}).get("cpu_us_per_msg"),
                  "server_cpu_s": report.get("server", {}).get("cpu_s"), "messages": report.get("messages"),
                  "errors": errors_of(report), "accepted_per_worker": split,
                  "syscalls_per_msg": (final.get("read_calls", 0) + final.get("write_calls", 0)
                                       + final.get("poll_calls", 0)) / messages,
                  "poll_calls_per_msg": final.get("poll_calls", 0) / messages,
                  "context_switches_per_msg": switches / messages})
            log(f"cpu round {round_}: {workers} worker(s): server {us:.2f} us/msg, "
                f"{report.get('msgs_per_sec', 0):.0f} msgs/s, errors {errors_of(report)}")
    m1, m2 = statistics.median(per_msg[1]), statistics.median(per_msg[2])
    paired = statistics.median(b / a for a, b in zip(per_msg[1], per_msg[2]))
    emit({"what": "cpu-summary", "median_us_per_msg": {"1": m1, "2": m2}, "ratio_2_to_1": m2 / m1,
          "median_paired_ratio": paired, "rounds": a.rounds})
    log(f"median server us/msg: 1 worker {m1:.2f}, 2 workers {m2:.2f}, ratio of medians {m2 / m1:.3f}, "
        f"median of the rounds' ratios {paired:.3f}")


# ---- scale ----

def wait_for_quiet(limit_s=600):
    """Other sessions on this machine flood TCP now and then (their tests):
    start only when the machine's TCP memory and sockets are near idle,
    so they neither share this run's kernel figures nor add to its load."""
    low = tcp_mem_pages()[0]
    start, calm_since = time.monotonic(), None
    while time.monotonic() - start < limit_s:
        s = sockstat_tcp()
        calm = s.get("mem", 0) < low // 20 and s.get("inuse", 0) < 200 and s.get("tw", 0) < 10000
        if calm:
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= 3:
                return True
        else:
            calm_since = None
        time.sleep(0.5)
    return False


def cmd_scale(a):
    for n in a.connections:
        workers = a.workers or max(1, math.ceil(n / 17000))
        processes = max(1, math.ceil(n / 17000))
        for scenario in a.scenarios.split(","):
            for attempt in range(1, a.attempts + 1):
                if not wait_for_quiet():
                    log("the machine did not become quiet; measuring anyway")
                result = scale_point(a, n, workers, processes, scenario)
                result["attempt"] = attempt
                # Valid when nobody else's sockets came or went during the run:
                # the sockets added are this run's 2 per connection (+ listeners).
                clean = abs(result["tcp_sockets_added"] - 2 * n) <= max(50, n // 50)
                result["clean"] = clean and not result["tripped"]
                emit(result)
                if result["clean"]:
                    break
                log(f"attempt {attempt}: other sessions' sockets or memory mixed in; again")
            if result.get("tripped") and result["tripped"].startswith("MemAvailable"):
                log("stopping: the machine's memory limit was reached")
                return


def scale_point(a, n, workers, processes, scenario):
    holder = {}

    def trip():
        for key in ("bench", "server"):
            obj = holder.get(key)
            if obj is None:
                continue
            if key == "bench":
                for pid in children(obj.pid):
                    os.kill(pid, signal.SIGKILL)
                obj.kill()
            else:
                obj.kill()

    watch = Watch(a.min_available_gib << 30, trip)
    base = [watch.sample() for _ in range(10) if time.sleep(0.1) is None]
    base_slabinfo = slabinfo()
    baseline = {k: statistics.median(r[k] for r in base) for k in ("slab", "sunreclaim", "inuse", "mem_pages")}
    watch.start()
    started = time.monotonic()
    server = holder["server"] = Server(a.bin, workers, a.server_cpus)
    args = ["--connections", str(n), "--processes", str(processes), "--scenario", scenario]
    if scenario == "hold":
        # A server started for this run: its memory growth is per connection.
        args += ["--server-fresh", "--duration", str(a.hold_s)]
    else:
        args += ["--duration", str(a.echo_s), "--warmup", "1"]
    proc = holder["bench"] = bench(a.bin, server, a.bench_cpus, args)
    report = finish(proc, timeout=900)
    final, per_worker = server.stop()
    watch.stop()
    wall = time.monotonic() - started
    plateau = [r for r in watch.samples if r["inuse"] >= watch.peak_inuse - max(10, n // 1000)]
    peak = {k: statistics.median(r[k] for r in plateau) for k in ("slab", "sunreclaim", "inuse")} if plateau else {}
    sockets = (peak.get("inuse", 0) - baseline["inuse"]) if peak else 0
    result = {
        "what": "scale", "scenario": scenario, "connections": n, "workers": workers, "processes": processes,
        "achieved": report.get("connections", {}).get("achieved"), "errors": report.get("errors"),
        "exit_code": report.get("exit_code"), "failed": report.get("failed"),
        "msgs_per_sec": report.get("msgs_per_sec"), "p99_us": report.get("latency_us", {}).get("p99"),
        "server_us_per_msg": report.get("server", {}).get("cpu_us_per_msg"),
        "client_us_per_msg": report.get("client", {}).get("cpu_us_per_msg"),
        "hold": report.get("hold"), "sources": report.get("settings", {}).get("source_addrs"),
        "accepted": final.get("accepted"),
        "accepted_per_worker": [w[-1]["accepted"] for _, w in sorted(per_worker.items())],
        "tcp_sockets_added": sockets,
        "slab_delta_bytes": peak.get("slab", 0) - baseline["slab"] if peak else None,
        "sunreclaim_delta_bytes": peak.get("sunreclaim", 0) - baseline["sunreclaim"] if peak else None,
        "tcp_mem_pages_base": baseline["mem_pages"],
        "tcp_mem_pages_peak": max((r["mem_pages"] for r in watch.samples), default=None),
        "tcp_mem_pages_plateau": statistics.median(r["mem_pages"] for r in plateau) if plateau else None,
        "plateau_s": (plateau[-1]["t"] - plateau[0]["t"]) if plateau else 0,
        "min_available_bytes": min((r["available"] for r in watch.samples), default=None),
        "wall_s": wall, "tripped": watch.tripped, "loadavg_after": os.getloadavg()[0],
    }
    # Time to connect: from the first 1 % of this run's sockets to 99 %.
    rising = [r["t"] for r in watch.samples if r["inuse"] - baseline["inuse"] >= 0.01 * 2 * n]
    full = [r["t"] for r in watch.samples if r["inuse"] - baseline["inuse"] >= 0.99 * 2 * n]
    if rising and full:
        result["connect_s"] = full[0] - rising[0]
        result["connects_per_sec"] = 0.98 * n / max(result["connect_s"], 0.1)
    if sockets > 0:
        result["slab_per_socket_bytes"] = result["slab_delta_bytes"] / sockets
        result["slab_per_connection_bytes"] = result["slab_delta_bytes"] / (sockets / 2)
    if watch.peak_slabinfo and base_slabinfo and sockets > 0:
        grown = {k: v - base_slabinfo.get(k, 0) for k, v in watch.peak_slabinfo.items()}
        top = sorted(grown.items(), key=lambda kv: -kv[1])[:8]
        result["slab_caches_per_socket"] = {k: round(v / sockets) for k, v in top}
    hold = report.get("hold") or {}
    log(f"{scenario} {n}: {result['achieved']}/{n}, errors {result['errors']}, "
        f"msgs/s {result['msgs_per_sec']}, p99 {result['p99_us']} us, "
        f"RSS/conn {hold.get('rss_per_conn_idle_bytes')}, sockets +{sockets}, "
        f"slab/socket {result.get('slab_per_socket_bytes')}, tcp mem peak {result['tcp_mem_pages_peak']} pages, "
        f"{wall:.0f} s")
    return result


# ---- restart ----

def echo_once(addr, payload, timeout):
    """Connect, send, read the echo. ('ok', seconds) or (the error's name, seconds)."""
    host, port = addr.rsplit(":", 1)
    start = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = s.recv(len(payload) - len(got))
                if not chunk:
                    return "closed", time.monotonic() - start
                got += chunk
            return ("ok" if got == payload else "mismatch"), time.monotonic() - start
    except ConnectionRefusedError:
        return "refused", time.monotonic() - start
    except ConnectionResetError:
        return "reset", time.monotonic() - start
    except socket.timeout:
        return "timeout", time.monotonic() - start
    except OSError as e:
        return type(e).__name__, time.monotonic() - start


def cmd_restart(a):
    # 1. Queued: stop worker 0 (SIGSTOP), open connections that each send a
    #    line (those the kernel hashes to worker 0's socket wait in its
    #    accept queue), then SIGKILL it and see who answers them.
    server = Server(a.bin, 2, a.server_cpus)
    victim = sorted(children(server.pid))[0]
    os.kill(victim, signal.SIGSTOP)
    conns = []
    host, port = server.addr.rsplit(":", 1)
    for i in range(a.queued):
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(b"queued %d\n" % i)
        conns.append(s)
    time.sleep(0.5)  # the live worker answers its share
    answered_before = sum(1 for s in conns if readable(s))
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    outcomes, waits = {}, []
    for i, s in enumerate(conns):
        want = b"queued %d\n" % i
        try:
            got = b""
            while len(got) < len(want):
                chunk = s.recv(len(want) - len(got))
                if not chunk:
                    break
                got += chunk
            kind = "ok" if got == want else ("closed" if not got else "mismatch")
        except ConnectionResetError:
            kind = "reset"
        except socket.timeout:
            kind = "timeout"
        outcomes[kind] = outcomes.get(kind, 0) + 1
        waits.append(time.monotonic() - killed_at)
        s.close()
    replaced = [p for p in children(server.pid) if p != victim]
    final, per_worker = server.stop()
    result = {"what": "restart-queued", "connections": a.queued, "answered_before_kill": answered_before,
              "outcomes": outcomes, "last_answer_after_kill_s": max(waits), "workers_after": len(replaced),
              "accepted": final.get("accepted")}
    emit(result)
    log(f"queued: {a.queued} connections, {answered_before} answered by the live worker before the kill; "
        f"after SIGKILL of the stopped one: {outcomes}, the last {max(waits) * 1000:.0f} ms after the kill")

    # 2. Arriving: connections keep coming (each connects, echoes one line,
    #    closes) from a few threads while worker 0 is SIGKILLed.
    server = Server(a.bin, 2, a.server_cpus)
    victim = sorted(children(server.pid))[0]
    results, lock, halt = [], threading.Lock(), threading.Event()

    def client(k):
        i = 0
        while not halt.is_set():
            t0 = time.monotonic()
            kind, took = echo_once(server.addr, b"arriving %d %d\n" % (k, i), 30)
            with lock:
                results.append((t0, kind, took))
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
    for t in threads:
        t.start()
    time.sleep(a.before_s)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    time.sleep(a.after_s)
    halt.set()
    for t in threads:
        t.join()
    final, per_worker = server.stop()
    outcomes = {}
    for _, kind, _ in results:
        outcomes[kind] = outcomes.get(kind, 0) + 1
    around = [took for t0, kind, took in results if kind == "ok" and killed_at - 0.5 <= t0 <= killed_at + 0.5]
    normal = [took for t0, kind, took in results if kind == "ok" and t0 < killed_at - 0.5]
    result = {"what": "restart-arriving", "clients": a.clients, "connections": len(results), "outcomes": outcomes,
              "slowest_around_kill_s": max(around, default=None),
              "median_before_kill_s": statistics.median(normal) if normal else None,
              "accepted": final.get("accepted"),
              "exits_logged": server.log_text.count("exited (killed by signal 9)")}
    emit(result)
    log(f"arriving: {len(results)} connections from {a.clients} threads, SIGKILL of worker 0 after "
        f"{a.before_s} s: {outcomes}; slowest within 0.5 s of the kill {result['slowest_around_kill_s']}, "
        f"median before {result['median_before_kill_s']}")


def readable(s):
    return bool(select.select([s], [], [], 0)[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="target/release/echo-reactor")
    p.add_argument("--server-cpus", default="0", help="taskset list for the server ('' = unpinned)")
    p.add_argument("--bench-cpus", default="1", help="taskset list for the bench ('' = unpinned)")
    p.add_argument("--min-available-gib", type=int, default=8)
    p.add_argument("--cpu-affinity", metavar="auto|LIST",
                   help="serve --cpu-affinity: each worker pinned to one CPU of --server-cpus")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("spread")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("connections", type=int, nargs="+")
    s = sub.add_parser("cpu")
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--duration", type=float, default=5)
    s = sub.add_parser("scale")
    s.add_argument("--workers", type=int, default=0, help="default: one per 17 000 connections")
    s.add_argument("--hold-s", type=float, default=3)
    s.add_argument("--echo-s", type=float, default=5)
    s.add_argument("--attempts", type=int, default=3)
    s.add_argument("--scenarios", default="hold,echo")
    s.add_argument("connections", type=int, nargs="+")
    s = sub.add_parser("restart")
    s.add_argument("--queued", type=int, default=200)
    s.add_argument("--clients", type=int, default=4)
    s.add_argument("--before-s", type=float, default=1.0)
    s.add_argument("--after-s", type=float, default=1.5)
    a = p.parse_args()
    if a.cpu_affinity:
        Server.common_flags = ("--cpu-affinity", a.cpu_affinity)
    {"spread": cmd_spread, "cpu": cmd_cpu, "scale": cmd_scale, "restart": cmd_restart}[a.cmd](a)


if __name__ == "__main__":
    main()
