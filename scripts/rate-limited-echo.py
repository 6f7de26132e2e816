#!/usr/bin/env python3
"""An echo server that answers at most RATE messages per second in total:
a server with a known capacity, for checking that `echo-reactor bench
--sweep` finds the knee where it is (docs/BENCHMARKS.md, "Rate sweeps").

Every connection reads fixed-size messages; each reply takes the next free
slot of one shared schedule, 1/RATE after the previous one (a token bucket
of depth one), then is written back. A thread per connection, standard
library only. Prints `listening on tcp 127.0.0.1:PORT`, then serves until
killed.

  rate-limited-echo.py RATE [SIZE]     (SIZE: the bench's --size, default 64)
"""
import socket
import sys
import threading
import time


def main():
    rate = float(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    interval = 1.0 / rate
    lock = threading.Lock()
    next_slot = [time.monotonic()]

    def serve(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while True:
                message = b""
                while len(message) < size:
                    chunk = conn.recv(size - len(message))
                    if not chunk:
                        return
                    message += chunk
                with lock:
                    slot = max(next_slot[0], time.monotonic())
                    next_slot[0] = slot + interval
                wait = slot - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                conn.sendall(message)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    print(f"listening on tcp 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
