#!/usr/bin/env python3
"""Figures of the binary upgrade (docs/BENCHMARKS.md, "Upgrading without
downtime"): how long a SIGUSR2 takes to hand over, what it does to a
--rate bench's p99, and an upgrade with 100 000 connections held.

  handover  ROUNDS upgrades in a row of `serve --workers W --pid-file P`,
            nothing connected: the time from SIGUSR2 to the new
            supervisor's "all W workers accepting" line, to the old one
            hearing it ("upgrade: new generation pid P accepting"), to the
            pid file naming the new pid, and to the old supervisor's exit.
  p99       a `bench --rate R --connections C` run of S seconds against
            `serve --workers W`, SIGUSR2 half-way through, beside the same
            run without one: the p99 of the second the handover fell in
            (the bench's per-second timeline, `seconds` in its JSON; the
            seconds are placed in time by its --histogram-log), against the
            median of the run's other seconds.
  held      `serve --workers W` holding N connections (`bench --scenario
            hold --processes P`), SIGUSR2 while they are held; the hold
            ends, every connection echoes once (served by the old workers)
            and closes; the old generation drains and exits. Reports the
            handover time, the drain (from the old workers' descriptors
            beginning to fall, the bench's first closes, to the old
            supervisor's "drained, exiting"), both generations' memory, the
            bench's errors.

Each line printed is one run; the summary lines follow. The binary is
copied into a temporary directory first, so the upgrade starts that copy
(a rebuild meanwhile changes nothing). Every process started here is
stopped here, by pid. Timings are read on this side: each server log line
is stamped when it arrives on the pipe.

Usage: scripts/upgrade-figures.py [--bin target/release/echo-reactor]
         handover [--workers 2] [--rounds 7]
       | p99 [--workers 2] [--rate 10000] [--connections 100] [--seconds 10] [--rounds 3]
       | held [--workers 7] [--connections 100000] [--processes 6] [--hold 20]
"""
import argparse
import json
import os
import queue
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

DEADLINE = 120  # seconds any one wait may take before the run is abandoned


class Server:
    """`serve ARGS --pid-file` from a copy of the binary; stderr lines
    stamped on arrival (the new generations share the pipe)."""

    def __init__(self, binary, work, args):
        self.pid_file = os.path.join(work, "echo-reactor.pid")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
             "--pid-file", self.pid_file, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "RUST_LOG": "info"})
        self.lines = queue.Queue()
        self.seen = []  # lines read, not yet waited for
        threading.Thread(target=self._follow, daemon=True).start()
        self.addr = self.proc.stdout.readline().split()[-1]
        self.metrics = self.proc.stdout.readline().split()[-1]
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.wait_line("workers accepting")
        self.supervisor = self.proc.pid  # the live one: updated by upgrade()

    def _follow(self):
        for line in self.proc.stderr:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def wait_line(self, needle, after=0.0):
        """The first line containing `needle` stamped after `after`: (stamp, line)."""
        end = time.monotonic() + DEADLINE
        while True:
            for i, (stamp, line) in enumerate(self.seen):
                if needle in line and stamp >= after:
                    del self.seen[i]  # each line answers one wait
                    return stamp, line
            try:
                self.seen.append(self.lines.get(timeout=max(0.0, end - time.monotonic())))
            except queue.Empty:
                sys.exit(f"the server never said {needle!r}")

    def pid_in_file(self):
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def scrape(self, name):
        with urllib.request.urlopen(self.metrics, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def upgrade(self):
        """SIGUSR2 to the live supervisor; returns the stamps (seconds after
        the signal) of the new generation accepting, the old one hearing
        it, the pid file's rename, and the new supervisor's pid."""
        old = self.supervisor
        sent = time.monotonic()
        os.kill(old, signal.SIGUSR2)
        renamed = None
        while renamed is None and time.monotonic() < sent + DEADLINE:
            pid = self.pid_in_file()
            if pid is not None and pid != old:
                renamed = time.monotonic() - sent
            else:
                time.sleep(0.001)
        accepting, _ = self.wait_line("workers accepting", after=sent)
        heard, line = self.wait_line("upgrade: new generation pid", after=sent)
        self.supervisor = int(re.search(r"pid (\d+)", line).group(1))
        return {"accepting_s": accepting - sent, "heard_s": heard - sent,
                "pid_file_s": renamed, "old": old, "new": self.supervisor}

    def stop(self):
        """SIGTERM to every supervisor still running (the first is our
        child; later ones are its descendants, ended by pid)."""
        for pid in {self.proc.pid, self.supervisor}:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        wait_exit(self.supervisor)


def wait_exit(pid, deadline=DEADLINE):
    """Wait for a process (not our child) to be gone: seconds it took."""
    start = time.monotonic()
    while os.path.exists(f"/proc/{pid}") and not zombie(pid):
        if time.monotonic() - start > deadline:
            sys.exit(f"pid {pid} did not exit")
        time.sleep(0.005)
    return time.monotonic() - start


def zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def open_fds(pids):
    """Descriptors the processes hold (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def spread(values, unit="ms", scale=1000):
    values = sorted(values)
    return (f"median {statistics.median(values) * scale:.0f} {unit}, "
            f"range {values[0] * scale:.0f}–{values[-1] * scale:.0f} {unit} "
            f"({len(values)} runs)")


def handover(a, binary, work):
    server = Server(binary, work, ["--workers", str(a.workers)])
    try:
        runs = []
        for i in range(a.rounds):
            r = server.upgrade()
            r["old_exit_s"] = r["heard_s"] + wait_exit(r["old"])
            runs.append(r)
            print(f"round {i + 1}: accepting {r['accepting_s'] * 1000:.1f} ms, "
                  f"old supervisor told {r['heard_s'] * 1000:.1f} ms, pid file "
                  f"{r['pid_file_s'] * 1000:.1f} ms, old supervisor exited "
                  f"{r['old_exit_s'] * 1000:.1f} ms after SIGUSR2")
        for key, what in [("accepting_s", "new generation accepting"),
                          ("heard_s", "old supervisor told"),
                          ("pid_file_s", "pid file renamed"),
                          ("old_exit_s", "old supervisor exited (nothing held)")]:
            print(f"{what}: {spread([r[key] for r in runs])}")
    finally:
        server.stop()


def interval_starts(log_path):
    """The wall-clock start of each interval of a --histogram-log."""
    base, starts = None, []
    with open(log_path) as f:
        for line in f:
            m = re.match(r"#\[StartTime: ([\d.]+)", line)
            if m:
                base = float(m.group(1))
            elif line and (line[0].isdigit() or line.startswith("Tag=")):
                fields = line.split(",")
                if fields[0].startswith("Tag="):
                    fields = fields[1:]
                starts.append(base + float(fields[0]))
    return starts


def p99_run(a, binary, work, upgrade):
    server = Server(binary, work, ["--workers", str(a.workers)])
    log = os.path.join(work, "seconds.hlog")
    bench = None
    try:
        bench = subprocess.Popen(
            [binary, "bench", "--addr", server.addr, "--connections", str(a.connections),
             "--rate", str(a.rate), "--duration", str(a.seconds), "--warmup", "0",
             "--json", "--histogram-log", log],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        end = time.monotonic() + DEADLINE
        while (server.scrape("echo_reactor_connections_active") or 0) < a.connections:
            if time.monotonic() > end:
                sys.exit("the bench never connected")
            time.sleep(0.05)
        time.sleep(a.seconds / 2)  # half-way through the run (a figure, not a test)
        span = None
        if upgrade:
            wall = time.time()
            r = server.upgrade()
            span = (wall, wall + r["heard_s"])
        out, _ = bench.communicate(timeout=a.seconds + DEADLINE)
        report = json.loads(out)
        seconds = report["seconds"]
        starts = interval_starts(log)
        if len(starts) != len(seconds):
            sys.exit(f"{len(starts)} intervals in the log, {len(seconds)} seconds in the JSON")
        errors = sum(v for v in report["errors"].values())
        # The seconds the handover overlapped (SIGUSR2 to the old
        # supervisor hearing the new one accepts); the last, partial second
        # is left out of the others.
        during = [s for s, t in zip(seconds, starts)
                  if span and t < span[1] and t + 1 > span[0]]
        others = [s for s, t in zip(seconds, starts)
                  if s not in during and s["messages"] > 0][:-1]
        return {
            "p99_us": report["latency_us"]["p99"],
            "during_p99_us": max((s["p99_us"] or 0) for s in during) if during else None,
            "during_max_us": max((s["max_us"] or 0) for s in during) if during else None,
            "others_p99_us": statistics.median(s["p99_us"] for s in others if s["p99_us"]),
            "others_max_us": statistics.median(s["max_us"] for s in others if s["max_us"]),
            "errors": errors,
            "msgs": report["messages"],
            "achieved": report["connections"]["achieved"],
            "rate": report["msgs_per_sec"],
        }
    finally:
        if bench and bench.poll() is None:
            bench.kill()
            bench.wait()
        server.stop()


def p99(a, binary, work):
    rows = {True: [], False: []}
    for i in range(a.rounds):
        for upgrade in (True, False):
            r = p99_run(a, binary, work, upgrade)
            rows[upgrade].append(r)
            what = "with SIGUSR2" if upgrade else "without"
            during = (f"handover second p99 {r['during_p99_us']} µs (max {r['during_max_us']} µs), "
                      if upgrade else "")
            print(f"round {i + 1} {what}: {r['achieved']} connections, "
                  f"{r['rate']:.0f} msgs/s, {r['msgs']} replies verified, errors {r['errors']}; "
                  f"{during}other seconds' median p99 {r['others_p99_us']:.0f} µs "
                  f"(max {r['others_max_us']:.0f} µs), "
                  f"run p99 {r['p99_us']} µs")
    up, calm = rows[True], rows[False]
    print(f"the handover's second, p99: median {statistics.median(r['during_p99_us'] for r in up):.0f} µs, "
          f"range {min(r['during_p99_us'] for r in up)}–{max(r['during_p99_us'] for r in up)} µs")
    ratios = sorted(r["during_p99_us"] / r["others_p99_us"] for r in up)
    print(f"the handover's second's p99 over its run's other seconds' median p99: "
          + ", ".join(f"{x:.2f}" for x in ratios)
          + f" (median {statistics.median(ratios):.2f})")
    print(f"the handover's second, max: median "
          f"{statistics.median(r['during_max_us'] for r in up):.0f} µs; the other seconds' "
          f"max (median of medians): with SIGUSR2 "
          f"{statistics.median(r['others_max_us'] for r in up):.0f} µs, without "
          f"{statistics.median(r['others_max_us'] for r in calm):.0f} µs")
    print(f"the other seconds, p99 (median of medians): with SIGUSR2 "
          f"{statistics.median(r['others_p99_us'] for r in up):.0f} µs, without "
          f"{statistics.median(r['others_p99_us'] for r in calm):.0f} µs")
    print(f"whole run p99: with SIGUSR2 {statistics.median(r['p99_us'] for r in up):.0f} µs, "
          f"without {statistics.median(r['p99_us'] for r in calm):.0f} µs; errors "
          f"{sum(r['errors'] for r in up + calm)}")


def held(a, binary, work):
    server = Server(binary, work, ["--workers", str(a.workers), "--backlog", "4096"])
    bench = None
    try:
        old_workers = children(server.supervisor)
        rss_before = rss_bytes(old_workers)
        started = time.monotonic()
        bench = subprocess.Popen(
            [binary, "bench", "--addr", server.addr, "--scenario", "hold",
             "--connections", str(a.connections), "--processes", str(a.processes),
             "--duration", str(a.hold), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        end = time.monotonic() + DEADLINE
        while (server.scrape("echo_reactor_connections_active") or 0) < a.connections:
            if time.monotonic() > end or bench.poll() is not None:
                sys.exit("the bench never connected them all")
            time.sleep(0.2)
        connected = time.monotonic() - started
        rss_held = rss_bytes(old_workers)
        r = server.upgrade()
        new_workers = children(r["new"])
        for _ in old_workers:  # every old worker has closed its listeners
            server.wait_line("SIGQUIT: draining")
        rss_new = rss_bytes(new_workers)
        held_after = server.scrape("echo_reactor_connections_active")
        print(f"{a.connections} connected in {connected:.1f} s; old workers' RSS "
              f"{rss_before / 2**20:.0f} MiB before, {rss_held / 2**20:.0f} MiB holding them")
        print(f"SIGUSR2 -> new generation accepting {r['accepting_s'] * 1000:.0f} ms, "
              f"old supervisor told {r['heard_s'] * 1000:.0f} ms, pid file {r['pid_file_s'] * 1000:.0f} ms; "
              f"new generation's RSS {rss_new / 2**20:.0f} MiB, its active connections {held_after:.0f}")
        # The drain: from the bench's first closes (the old workers'
        # descriptors falling) to the old supervisor's last line.
        samples, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic(), open_fds(old_workers)))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = bench.communicate(timeout=a.hold + DEADLINE)
        report = json.loads(out)
        drained_stamp, _ = server.wait_line("drained, exiting")
        stop.set()
        sampler.join()
        status = server.proc.wait(timeout=DEADLINE)  # the first supervisor: our child
        wait_exit(r["old"])
        held_level = samples[0][1]
        closing = next(t for t, n in samples if n < held_level - 1000)
        print(f"hold over: {report['hold']['answered']} answered, errors {report['errors']}; "
              f"the bench began closing, and {drained_stamp - closing:.2f} s later the old "
              f"supervisor said 'drained, exiting'; exit status {status}")
    finally:
        if bench and bench.poll() is None:
            bench.send_signal(signal.SIGINT)
            bench.wait(timeout=DEADLINE)
        server.stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/echo-reactor")
    sub = p.add_subparsers(dest="what", required=True)
    h = sub.add_parser("handover")
    h.add_argument("--workers", type=int, default=2)
    h.add_argument("--rounds", type=int, default=7)
    q = sub.add_parser("p99")
    q.add_argument("--workers", type=int, default=2)
    q.add_argument("--rate", type=int, default=10000)
    q.add_argument("--connections", type=int, default=100)
    q.add_argument("--seconds", type=int, default=10)
    q.add_argument("--rounds", type=int, default=3)
    d = sub.add_parser("held")
    d.add_argument("--workers", type=int, default=7)
    d.add_argument("--connections", type=int, default=100000)
    d.add_argument("--processes", type=int, default=6)
    d.add_argument("--hold", type=int, default=20)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="echo-reactor-upgrade-figures-")
    try:
        binary = os.path.join(work, "echo-reactor")
        shutil.copy2(a.bin, binary)
        {"handover": handover, "p99": p99, "held": held}[a.what](a, binary, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
