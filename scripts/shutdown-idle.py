#!/usr/bin/env python3
"""How long `serve` takes to exit after SIGTERM while N idle clients are
connected (docs/BENCHMARKS.md, "Shutdown with idle clients").

Starts `BIN serve --listen 127.0.0.1:0`, opens N connections that never
send (one process, so N stays under its open-file limit), waits until the
server has accepted them all (a stats line with active=N), sends SIGTERM
and measures until the server exits; prints the time and the final
stats' lingers / linger_timeouts. Everything started here is stopped here.

Usage: scripts/shutdown-idle.py [--bin target/release/echo-reactor] [--grace S] N
"""
import argparse
import re
import resource
import signal
import socket
import subprocess
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/echo-reactor")
    p.add_argument("--grace", default="5")
    p.add_argument("n", type=int)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = subprocess.Popen(
        [a.bin, "serve", "--listen", "127.0.0.1:0", "--shutdown-grace", a.grace,
         "--stats-interval", "0.2", "--backlog", "4096"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        clients = []
        for _ in range(a.n):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            err = server.stderr.readline()
            if f" active={a.n} " in err:
                break
        else:
            sys.exit("the server never reported every connection accepted")
        start = time.monotonic()
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=120)
        took = time.monotonic() - start
        stats = out + err
        lingers = re.search(r" lingers=(\d+)", stats)
        timeouts = re.search(r" linger_timeouts=(\d+)", stats)
        print(f"{a.n} idle clients: exit {took:.3f} s after SIGTERM, "
              f"lingers={lingers and lingers.group(1)} "
              f"linger_timeouts={timeouts and timeouts.group(1)}")
        for c in clients:
            c.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
