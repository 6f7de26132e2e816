"""The smallest correct selectors echo server: minimal_echo.rs, line for line.

One selector, a listener, connections found through register(data=), and
what the tutorials skip: reads drained until BlockingIOError, partial sends
kept for the writable event, EOF with replies still owed, and running out
of descriptors. Standard library only. Python's selectors are level-triggered
where mio is edge-triggered: the lines that differ say "Level-triggered".
Run: python3 examples/minimal_echo.py [IP:PORT], then
`cargo run -- client --addr 127.0.0.1:9000 hello`.
"""

import os
import selectors
import socket
import sys

LISTENER = None  # the listener's data; a client's data is its Conn (mio: its Token)


class Conn:
    def __init__(self, stream):
        self.stream = stream
        self.unsent = bytearray()  # bytes the kernel has not taken yet, in order
        self.peer_done = False  # EOF seen: close once `unsent` is empty


def main():
    poll = selectors.DefaultSelector()  # epoll on Linux, level-triggered
    arg = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9000"  # port 0: any
    host, _, port = arg.rpartition(":")
    if not host or not port.isdigit():
        print(f"usage: minimal_echo.py [IP:PORT], e.g. 127.0.0.1:9000 (not {arg!r})", file=sys.stderr)
        sys.exit(2)  # a usage error: one line, no traceback
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host.strip("[]"), int(port)), family=family)
    listener.setblocking(False)
    poll.register(listener, selectors.EVENT_READ, LISTENER)
    buf_size = 64 * 1024
    spare = open(os.devnull)  # a descriptor kept for EMFILE
    print(f"listening on tcp {arg.rpartition(':')[0]}:{listener.getsockname()[1]}", flush=True)

    while True:
        events = poll.select(None)  # EINTR: Python retries it for us (PEP 475)
        for key, mask in events:
            if key.data is LISTENER:
                # One event may stand for many waiting clients: accept them all.
                while True:
                    try:
                        stream, _ = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as e:
                        # Out of descriptors (EMFILE): the client stays queued (level-triggered
                        # we would be told again at once: a spin). Refuse it with the spare.
                        print(f"accept: {e}", file=sys.stderr)
                        spare.close()  # frees one descriptor
                        try:
                            listener.accept()[0].close()  # closed at once: a clean refusal
                            refused = True
                        except OSError:
                            refused = False
                        spare = open(os.devnull)
                        if not refused:
                            break  # not EMFILE: stop, no spin
                        continue
                    stream.setblocking(False)
                    # Level-triggered: EVENT_WRITE only while bytes wait (see below).
                    poll.register(stream, selectors.EVENT_READ, Conn(stream))
                continue
            conn = key.data
            # Writable: finish what a partial send left behind.
            done = bool(mask & selectors.EVENT_WRITE) and flush(conn)
            if mask & selectors.EVENT_READ and not done and not conn.peer_done:
                # Edge-triggered mio must read until BlockingIOError; level-triggered
                # selectors would ask again, but draining here keeps the twins alike.
                while True:
                    try:
                        data = conn.stream.recv(buf_size)
                    except BlockingIOError:
                        break
                    except OSError:
                        done = True  # reset or worse
                        break
                    if not data:
                        conn.peer_done = True  # EOF: recv returned b''
                        break
                    conn.unsent += data
                    if flush(conn):
                        done = True
                        break
            # Half-close: the peer sent FIN but may still read; close once every reply left.
            if done or (conn.peer_done and not conn.unsent):
                poll.unregister(conn.stream)
                conn.stream.close()
                continue
            # Level-triggered: a registered EVENT_WRITE fires on every select()
            # while the send buffer has room, and EVENT_READ on every select()
            # after EOF. Ask for each only while it means work (mio: registered once).
            want = 0 if conn.peer_done else selectors.EVENT_READ
            want |= selectors.EVENT_WRITE if conn.unsent else 0
            if want != key.events:
                poll.modify(conn.stream, want, conn)


def flush(conn):
    """Send as much of `unsent` as the kernel takes now. Returns True if the
    connection is dead. The rest stays, in order, for the next writable event."""
    while conn.unsent:
        try:
            n = conn.stream.send(conn.unsent)
        except BlockingIOError:
            return False  # buffer full: wait
        except OSError:
            return True
        if n == 0:
            return True
        del conn.unsent[:n]  # maybe partial: drop only what was sent
    return False


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
