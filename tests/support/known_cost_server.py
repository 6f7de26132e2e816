"""An echo server whose memory per connection is known: a test fixture.

Usage: known_cost_server.py WORKERS BYTES_PER_CONNECTION SHARED_FILE SHARED_BYTES

The parent binds 127.0.0.1:0, prints `listening on tcp ADDR`, forks WORKERS
workers that share the listener, and waits. Each worker holds exactly
BYTES_PER_CONNECTION bytes of its own (written, so resident) for each
connection it accepts, and echoes what it reads. On its first connection a
worker also maps SHARED_FILE and reads SHARED_BYTES of it: pages shared by
every worker, the way a real worker maps more of the program's text as it
first runs the code that serves. They are no connection's cost.
"""

import mmap
import os
import selectors
import signal
import socket
import sys


def worker(listener, per_connection, shared_path, shared_bytes):
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    held = {}
    shared = None
    while True:
        for key, _ in sel.select():
            if key.fileobj is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue  # another worker took it
                conn.setblocking(False)
                held[conn.fileno()] = (conn, b"\x01" * per_connection)
                sel.register(conn, selectors.EVENT_READ)
                if shared is None:
                    with open(shared_path, "rb") as f:
                        shared = mmap.mmap(f.fileno(), shared_bytes, prot=mmap.PROT_READ)
                    sum(shared[i] for i in range(0, shared_bytes, mmap.PAGESIZE))
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:
                data = b""
            if not data:
                sel.unregister(conn)
                del held[conn.fileno()]
                conn.close()
                continue
            conn.setblocking(True)  # replies are small: never a long wait
            conn.sendall(data)
            conn.setblocking(False)


def main():
    workers, per_connection = int(sys.argv[1]), int(sys.argv[2])
    shared_path, shared_bytes = sys.argv[3], int(sys.argv[4])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            worker(listener, per_connection, shared_path, shared_bytes)
            os._exit(0)
        children.append(pid)
    host, port = listener.getsockname()
    print(f"listening on tcp {host}:{port}", flush=True)

    def stop(*_):
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    for _ in children:
        os.wait()


if __name__ == "__main__":
    main()
