#!/usr/bin/env bash
# One `hold` at a large scale, for docs/BENCHMARKS.md ("A million connections").
#
# Starts `serve --workers W` (release build, SERVE_ARGS added, e.g.
# "--backlog 4096"), waits until every worker is up (so the bench's reading
# "before" holds all of them), then runs
#   bench --scenario hold --connections N --processes P --duration HOLD
#         --addr ADDR --server-pid SUPERVISOR --server-fresh --json [BENCH_ARGS...]
# while sampling /proc/meminfo (MemAvailable, Slab) and /proc/net/sockstat
# (TCP sockets in use, TCP buffer pages) once a second. Stops the server by
# its pid. Everything goes to OUT: env (limits and sysctls), mem (readings
# before, with the server up, after the bench, after the server stopped),
# samples, report.json, serve.err, bench.err.
#
# Usage: scripts/hold-at-scale.sh OUT W P N HOLD [BENCH_ARGS...]
# e.g.   SERVE_ARGS="--backlog 4096" scripts/hold-at-scale.sh /tmp/m 56 56 1000000 10 --connect-timeout 240
# Bounded: the bench is killed after 900 s.
set -u
cd "$(dirname "$0")/.."
out=$1 workers=$2 processes=$3 connections=$4 hold=$5
shift 5
cargo build --release -q
bin=${CARGO_TARGET_DIR:-target}/release/echo-reactor
mkdir -p "$out"
mem() {
    awk '/^MemAvailable:|^Slab:/ { printf "%s %s kB ", $1, $2 }' /proc/meminfo
    grep '^TCP:' /proc/net/sockstat
}
{
    echo "ulimit -n $(ulimit -n)"
    for s in fs.nr_open fs.file-max net.ipv4.ip_local_port_range net.core.somaxconn net.ipv4.tcp_mem; do
        echo "$s = $(sysctl -n $s)"
    done
} > "$out/env"
echo "before: $(mem)" > "$out/mem"
# shellcheck disable=SC2086 # SERVE_ARGS is a list of flags
"$bin" serve --listen 127.0.0.1:0 --workers "$workers" ${SERVE_ARGS:-} > "$out/serve.out" 2> "$out/serve.err" &
server=$!
for _ in $(seq 300); do grep -q 'listening on tcp' "$out/serve.out" && break; sleep 0.1; done
addr=$(awk '/listening on tcp/ { print $4; exit }' "$out/serve.out")
# The supervisor prints its address before it starts the workers.
for _ in $(seq 300); do
    [ "$(wc -w < /proc/$server/task/$server/children)" -eq "$workers" ] && break
    sleep 0.1
done
sleep 1
echo "server up: $(mem)" >> "$out/mem"
(while kill -0 "$server" 2> /dev/null; do echo "$(date +%s.%N) $(mem)"; sleep 1; done) > "$out/samples" &
sampler=$!
start=$(date +%s)
timeout 900 "$bin" bench --addr "$addr" --server-pid "$server" --server-fresh --scenario hold \
    --connections "$connections" --processes "$processes" --duration "$hold" --json "$@" \
    > "$out/report.json" 2> "$out/bench.err"
echo "bench exit $? after $(($(date +%s) - start)) s" >> "$out/mem"
echo "bench done: $(mem)" >> "$out/mem"
kill -INT "$server"
wait "$server"
sleep 2
echo "after: $(mem)" >> "$out/mem"
kill "$sampler" 2> /dev/null
cat "$out/env" "$out/mem"
