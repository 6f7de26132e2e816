#!/usr/bin/env python3
"""What a scrape costs a busy server (docs/BENCHMARKS.md, "Metrics").

Starts `echo-reactor serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0`
(pinned to --server-cpus, default core 0) and has `echo-reactor bench
--scenario hold` hold --hold connections on it (default 19 000, pinned to
--bench-cpus, default core 1). Then, in one run:

1. scrape cost: --scrapes sequential `GET /metrics` (one connection each);
   the server's CPU time over them (/proc/PID/stat, utime+stime) divided
   by their number is the server time per scrape; the client-side
   latency of each (connect to last byte) gives p50/p99/max;
2. echo p99 with and without scrapes, side by side: --rounds pairs of
   `bench --connections 50 --size 64 --duration D` runs, interleaved
   (quiet then scraped, scraped then quiet, ...); in a scraped run a thread
   scrapes every --scrape-every seconds (default 0.1: ten times the rate
   of a 1 s Prometheus interval). Medians of each side's p99 and their
   ratio.

Everything started here is stopped here, by pid. Prints one JSON object on
stdout and a summary on stderr.

Usage: scripts/metrics-scrape.py [--bin target/release/echo-reactor] [--hold N]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def scrape(addr):
    """One GET /metrics; returns (seconds, body)."""
    start = time.perf_counter()
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    took = time.perf_counter() - start
    response = b"".join(chunks).decode()
    if not response.startswith("HTTP/1.1 200"):
        raise RuntimeError(f"scrape failed: {response[:200]!r}")
    return took, response.split("\r\n\r\n", 1)[1]


def sample(body, name):
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "echo-reactor"))
    parser.add_argument("--hold", type=int, default=19_000)
    parser.add_argument("--scrapes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--scrape-every", type=float, default=0.1)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--bench-cpus", default="1")
    args = parser.parse_args()

    server = subprocess.Popen(
        ["taskset", "-c", args.server_cpus, args.bin, "serve", "--listen", "127.0.0.1:0",
         "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started = []
    try:
        echo = server.stdout.readline().split()[-1]
        metrics_url = server.stdout.readline().split()[-1]
        host, port = metrics_url.removeprefix("http://").removesuffix("/metrics").rsplit(":", 1)
        metrics = (host, int(port))
        hold_secs = 60 + args.rounds * 2 * (args.duration + 2)
        holder = subprocess.Popen(
            ["taskset", "-c", args.bench_cpus, args.bin, "bench", "--addr", echo,
             "--scenario", "hold", "--connections", str(args.hold), "--duration",
             str(hold_secs), "--warmup", "0", "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(holder)
        deadline = time.time() + 60
        while True:
            _, body = scrape(metrics)
            active = sample(body, "echo_reactor_connections_active") or 0
            if active >= args.hold:
                break
            if time.time() > deadline or holder.poll() is not None:
                raise RuntimeError(f"only {active} of {args.hold} connections held")
            time.sleep(0.2)
        log(f"holding {int(active)} connections; {args.scrapes} scrapes")

        cpu_before = cpu_seconds(server.pid)
        latencies = [scrape(metrics)[0] for _ in range(args.scrapes)]
        cpu_per_scrape = (cpu_seconds(server.pid) - cpu_before) / args.scrapes
        _, body = scrape(metrics)
        scrape_bytes = len(body)

        def echo_p99(scraped):
            stop = threading.Event()
            scrapes = [0]

            def scraper():
                while not stop.wait(args.scrape_every):
                    scrape(metrics)
                    scrapes[0] += 1

            thread = threading.Thread(target=scraper) if scraped else None
            if thread:
                thread.start()
            try:
                out = subprocess.run(
                    ["taskset", "-c", args.bench_cpus, args.bin, "bench", "--addr", echo,
                     "--connections", "50", "--size", "64", "--duration", str(args.duration),
                     "--warmup", "1", "--json"],
                    check=True, capture_output=True, text=True).stdout
            finally:
                stop.set()
                if thread:
                    thread.join()
            report = json.loads(out)
            errors = sum(v for v in report["errors"].values() if isinstance(v, int))
            if errors:
                raise RuntimeError(f"bench errors: {report['errors']}")
            return report["latency_us"]["p99"], report["msgs_per_sec"], scrapes[0]

        quiet, scraped = [], []
        for round_ in range(args.rounds):
            # Alternate which side goes first, so a drift over the run (or
            # a second run always meeting a warmer or busier machine)
            # cannot pass for the scrapes' cost.
            for side in ((False, True) if round_ % 2 == 0 else (True, False)):
                (scraped if side else quiet).append(echo_p99(side))
            log(f"round {round_ + 1}: p99 quiet {quiet[-1][0]} us, "
                f"scraped {scraped[-1][0]} us ({scraped[-1][2]} scrapes)")
        quiet_p99 = statistics.median(r[0] for r in quiet)
        scraped_p99 = statistics.median(r[0] for r in scraped)
        result = {
            "held_connections": int(active),
            "scrape_bytes": scrape_bytes,
            "server_cpu_ms_per_scrape": round(cpu_per_scrape * 1000, 3),
            "scrape_latency_ms": {
                "p50": round(percentile(latencies, 0.5) * 1000, 3),
                "p99": round(percentile(latencies, 0.99) * 1000, 3),
                "max": round(max(latencies) * 1000, 3),
            },
            "echo_p99_us": {"quiet": [r[0] for r in quiet], "scraped": [r[0] for r in scraped],
                            "quiet_median": quiet_p99, "scraped_median": scraped_p99,
                            "ratio": round(scraped_p99 / quiet_p99, 3)},
            "echo_msgs_per_sec": {"quiet": [r[1] for r in quiet],
                                  "scraped": [r[1] for r in scraped]},
            "scrapes_per_scraped_run": [r[2] for r in scraped],
        }
        print(json.dumps(result))
        log(f"server CPU per scrape {result['server_cpu_ms_per_scrape']} ms; scrape latency "
            f"p50 {result['scrape_latency_ms']['p50']} ms p99 {result['scrape_latency_ms']['p99']} ms; "
            f"echo p99 quiet {quiet_p99} us, scraped {scraped_p99} us "
            f"(x{result['echo_p99_us']['ratio']})")
    finally:
        for proc in started + [server]:
            if proc.poll() is None:
                proc.terminate()
        for proc in started + [server]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
