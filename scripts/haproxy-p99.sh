#!/usr/bin/env bash
# Latency through HAProxy against direct, for docs/BENCHMARKS.md ("Behind HAProxy").
#
# Starts two `serve --proxy-protocol --metrics` instances (release build) and
# HAProxy with contrib/haproxy/haproxy.cfg as committed, waits until both pass
# their /healthz checks, then runs the same closed-loop bench ROUNDS times each,
# interleaved: through HAProxy, and straight to one instance (`--proxy-header
# v2`, so the server does the same work). Prints one line per run and the
# medians of p50/p99 and msgs/s.
#
# Usage: scripts/haproxy-p99.sh [CONNECTIONS] [SECONDS] [ROUNDS]   (default 50 10 3)
# Needs haproxy (apt-get install haproxy) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-50}
secs=${2:-10}
rounds=${3:-3}
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q
bin=$target/release/echo-reactor
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for i in 1 2; do
  RUST_LOG=warn "$bin" serve --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --proxy-protocol >"$work/out$i" &
  pids+=($!)
done
for i in 1 2; do
  for _ in $(seq 1 100); do grep -q '^listening on metrics' "$work/out$i" && break; sleep 0.1; done
done
addr() { sed -n 's/^listening on tcp //p' "$work/out$1"; }
mport() { sed -n 's|^listening on metrics http://.*:\([0-9]*\)/metrics|\1|p' "$work/out$1"; }
front=127.0.0.1:$(free_port)
ECHO_FRONTEND=$front ECHO_R1=$(addr 1) ECHO_R2=$(addr 2) \
  ECHO_R1_METRICS_PORT=$(mport 1) ECHO_R2_METRICS_PORT=$(mport 2) ECHO_HAPROXY_ADMIN=$work/admin.sock \
  "$haproxy" -db -f contrib/haproxy/haproxy.cfg >/dev/null 2>"$work/haproxy.log" &
pids+=($!)
for _ in $(seq 1 100); do
  up=$(python3 - "$work/admin.sock" <<'EOF' 2>/dev/null || true
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536): data += chunk
rows = [l.split(",") for l in data.decode().splitlines()]
col = {name.lstrip("# "): i for i, name in enumerate(rows[0])}
print(sum(1 for r in rows[1:] if len(r) > col["check_status"] and r[col["svname"]].startswith("r")
          and r[col["status"]] == "UP" and r[col["check_status"]] == "L7OK"))
EOF
)
  [ "$up" = 2 ] && break
  sleep 0.2
done
[ "$up" = 2 ] || { echo "the servers never passed their /healthz checks" >&2; cat "$work/haproxy.log" >&2; exit 1; }

run() {  # name addr [extra bench flags]
  local name=$1 addr=$2; shift 2
  "$bin" bench --addr "$addr" --connections "$connections" --duration "$secs" --warmup 1 --json "$@" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); e=r["errors"]; l=r["latency_us"]
assert not any(e.values()), e
print(sys.argv[1], round(r["msgs_per_sec"]), l["p50"], l["p99"], l["p999"])' "$name"
}
echo "# run msgs/s p50_us p99_us p99.9_us  ($connections connections, ${secs}s, closed loop, 64 B)"
for _ in $(seq 1 "$rounds"); do
  run haproxy "$front" | tee -a "$work/results"
  run direct "$(addr 1)" --proxy-header v2 | tee -a "$work/results"
done
python3 - "$work/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for name in ("haproxy", "direct"):
    mine = [list(map(float, r[1:])) for r in rows if r[0] == name]
    med = [statistics.median(c) for c in zip(*mine)]
    print(f"median {name:8} msgs/s {med[0]:.0f}  p50 {med[1]:.0f} us  p99 {med[2]:.0f} us  p99.9 {med[3]:.0f} us")
EOF
