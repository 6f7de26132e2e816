#!/usr/bin/env bash
# User-space instructions per echoed message of several echo-reactor builds,
# at any load shape: the A/B companion of instructions-per-message.sh
# (same marginal method, callgrind counts do not depend on machine load).
#
#   (Ir_long - Ir_short) / (messages_long - messages_short)
#
# from a SHORT s and a 2 x SHORT s closed-loop run against `BIN serve` under
# callgrind (start-up, accepting and shutdown cancel out). The load is
# this worktree's `echo-reactor bench` (LOAD, default
# $CARGO_TARGET_DIR/release/echo-reactor or target/release/echo-reactor),
# pinned to core 1.
#
# Usage: scripts/instructions-ab.sh CONNECTIONS SIZE SHORT BIN [BIN...]
#   e.g. scripts/instructions-ab.sh 50 4096 3 /work/target-base/release/echo-reactor target/release/echo-reactor
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,15p "$0"; exit 2; }
connections=$1 size=$2 short=$3
shift 3
load=${LOAD:-${CARGO_TARGET_DIR:-target}/release/echo-reactor}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run BIN SECONDS -> prints "instructions messages"
run() {
  local bin=$1 secs=$2 out="$work/cg" addr="" pid
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve --listen 127.0.0.1:0 \
    >"$work/stdout" 2>/dev/null &
  pid=$!
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^listening on tcp //p' "$work/stdout"); [ -n "$addr" ] && break
    sleep 0.1
  done
  local messages
  messages=$(taskset -c 1 "$load" bench --addr "$addr" --connections "$connections" --size "$size" \
    --duration "$secs" --warmup 0 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages"])')
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(grep -E '^(summary|totals):' "$out" | head -n 1 | awk '{print $2}') $messages"
}

for bin in "$@"; do
  read -r i1 m1 < <(run "$bin" "$short")
  read -r i2 m2 < <(run "$bin" $((2 * short)))
  python3 -c "print(f'$bin, $connections x $size B: {($i2-$i1)/($m2-$m1):.0f} instructions per message  (runs: $m1 msgs / $i1 Ir, $m2 msgs / $i2 Ir)')"
done
