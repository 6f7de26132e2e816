#!/usr/bin/env python3
"""Server CPU spent on a JSON value dribbled in small segments (it was quadratic
before the incremental scanner).

Starts `SERVER serve --protocol json` on an ephemeral port, sends `[` and
12 000 x `0, ` in one write (36 KB), then 3 000 x `0, ` as separate
segments (TCP_NODELAY) 50 us apart, then `0]\\n`, and checks the one reply.
Prints the server's CPU time (from /proc/PID/schedstat, in ns) spent
during the 3 000 segments and for the whole value. A framing that
re-parses the unconsumed input on every segment is quadratic here; a
linear one spends about as much as on the value sent in one piece.

Usage: scripts/json-dribble.py [SERVER [HEAD]]
       (default target/release/echo-reactor, and 12000 segments' worth sent at once)
"""
import signal
import socket
import subprocess
import sys
import time

SEGMENTS, SEGMENT, PACE_S = 3_000, b"0, ", 50e-6


def cpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])  # time on CPU; the server is one thread


def main():
    server = sys.argv[1] if len(sys.argv) > 1 else "target/release/echo-reactor"
    head = int(sys.argv[2]) if len(sys.argv) > 2 else 12_000
    proc = subprocess.Popen(
        [server, "serve", "--listen", "127.0.0.1:0", "--protocol", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = proc.stdout.readline().decode()  # "listening on tcp 127.0.0.1:PORT"
        port = int(line.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = cpu_ns(proc.pid)
        sock.sendall(b"[" + SEGMENT * head)
        time.sleep(0.2)  # let the server take the head before the dribble starts
        before = cpu_ns(proc.pid)
        for _ in range(SEGMENTS):
            sock.sendall(SEGMENT)
            due = time.perf_counter() + PACE_S
            while time.perf_counter() < due:
                pass
        time.sleep(0.2)  # the last segments are read
        after = cpu_ns(proc.pid)
        sock.sendall(b"0]\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        end = cpu_ns(proc.pid)
        zeros = head + SEGMENTS + 1
        assert reply == b"[" + b"0," * (zeros - 1) + b"0]\n", reply[:80]
        print(
            f"dribble of {SEGMENTS} x {len(SEGMENT)} B into a "
            f"{len(SEGMENT) * zeros // 1000} KB array: server CPU "
            f"{(after - before) / 1e6:.1f} ms during the dribble, "
            f"{(end - start) / 1e6:.1f} ms for the whole value"
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
