#!/usr/bin/env bash
# User-space instructions per echoed message, counted by valgrind's callgrind
# (deterministic: instruction counts do not depend on machine load).
#
# Marginal method: run the same closed-loop load (C connections x 64 B) for
# two durations against a server under callgrind; the fixed costs (start-up,
# accepting, shutdown) cancel out of
#     (instructions_long - instructions_short) / (messages_long - messages_short).
#
# Two loads, each server (CONNS="1 50" by default):
# - 1 connection in strict ping-pong: every message is one wake-up, so the
#   figure is a whole turn of the loop (epoll_wait, the clock, the timers,
#   the budget, publishing) plus the message, and it is stable to about ±1;
# - 50 connections: each epoll_wait returns several events, so the turn's
#   fixed cost is shared, and the figure moves by a few instructions with
#   how many events each poll returns (the machine's load).
#
# echo-reactor-2-workers runs `serve --workers 2` with callgrind following the
# re-executed workers (--trace-children), and sums every process's count.
# echo-reactor-metrics and echo-reactor-2-workers-metrics are the same with
# `--metrics 127.0.0.1:0` (the endpoint on, not scraped: its cost on the
# per-message path).
#
# Usage: scripts/instructions-per-message.sh [echo-reactor|echo-reactor-metrics|echo-reactor-2-workers|echo-reactor-2-workers-metrics|tokio|c-epoll]...
#        (default: all three; needs valgrind, a release build, `cargo bench --no-run`,
#        and cc for the C peer). Messages are counted by the load generator
#        (every reply verified), the same way for every server.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q
bin=$target/release/echo-reactor
if [ $# -eq 0 ] || [[ " $* " == *" tokio "* ]]; then  # the tokio peer is a bench binary
  cargo bench --no-run -q 2>/dev/null
  bench_exe=$(ls -t "$target"/release/deps/echo-* | grep -v '\.d$' | head -n 1)
fi
c_peer=yes
if ! command -v cc >/dev/null 2>&1; then
  c_peer="no C compiler (cc)"
elif ! cc_err=$(cc -O2 -Wall -o "$target"/c_epoll_echo benches/c_epoll_echo.c 2>&1); then
  c_peer="cc -O2 benches/c_epoll_echo.c failed: $(printf '%s' "$cc_err" | head -n 1)"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run SERVER SECONDS CONNS -> prints "instructions messages"
run() {
  local server=$1 secs=$2 conns=$3 out="$work/cg.$1.$2.$3" port addr pid
  case $server in
    echo-reactor) cmd=("$bin" serve --listen 127.0.0.1:0) ;;
    echo-reactor-2-workers) cmd=("$bin" serve --listen 127.0.0.1:0 --workers 2) ;;
    echo-reactor-metrics) cmd=("$bin" serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0) ;;
    echo-reactor-2-workers-metrics) cmd=("$bin" serve --listen 127.0.0.1:0 --workers 2 --metrics 127.0.0.1:0) ;;
    tokio) cmd=("$bench_exe" --peer tokio) ;;
    c-epoll) port=$(free_port); cmd=("$target"/c_epoll_echo "$port") ;;
  esac
  valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$out.%p" "${cmd[@]}" >"$work/stdout" 2>/dev/null &
  pid=$!
  for _ in $(seq 1 300); do
    if [ "$server" = c-epoll ]; then addr=127.0.0.1:$port; python3 -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && break
    else addr=$(sed -n 's/^listening on tcp //p' "$work/stdout"); [ -n "$addr" ] && break; fi
    sleep 0.1
  done
  # Under valgrind, workers start long after the supervisor prints its
  # address: wait until one answers, so the short run is not spent starting.
  python3 - "$addr" <<'PY' || true
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
deadline = time.time() + 60
while time.time() < deadline:
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.settimeout(2); s.sendall(b"x")
            if s.recv(1) == b"x":
                break
    except OSError:
        time.sleep(0.2)
PY
  local messages
  messages=$(taskset -c 1 "$bin" bench --addr "$addr" --connections "$conns" --size 64 --duration "$secs" --warmup 0 --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"])')
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # workers drain first
  kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  local instructions
  # One file per process (the supervisor and each worker): their sum.
  instructions=$(for f in "$out".*; do grep -E '^(summary|totals):' "$f" | head -n 1 | awk '{print $2}'; done \
    | awk '{s += $1} END {print s}')
  echo "$instructions $messages"
}

servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(echo-reactor tokio c-epoll)
for server in "${servers[@]}"; do
  if [ "$server" = c-epoll ] && [ "$c_peer" != yes ]; then
    echo "c-epoll: skipped: $c_peer" >&2
    continue
  fi
  for conns in ${CONNS:-1 50}; do
    read -r i1 m1 < <(run "$server" 3 "$conns")
    read -r i2 m2 < <(run "$server" 6 "$conns")
    python3 -c "print(f'$server, $conns connection(s): {($i2-$i1)/($m2-$m1):.0f} instructions per message  (runs: $m1 msgs / $i1 Ir, $m2 msgs / $i2 Ir)')"
  done
done
