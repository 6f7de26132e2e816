#!/usr/bin/env bash
# Run the whole test suite N times in a row while other work keeps the
# machine busy, the way it runs on a newcomer's laptop or a shared CI box.
#
# A test that passes only on an idle machine is a test that waits on luck:
# a fixed sleep, a timer that fires early, a client that reports a reset
# instead of the refusal it was sent. This script is how such tests are
# found. Each run is `cargo test --no-fail-fast` (so one failing binary does
# not hide the others), with CORES busy loops pinned to the first cores.
#
# Usage: scripts/stress-tests.sh [RUNS] [BUSY_CORES]
#   RUNS        how many full runs (default 5)
#   BUSY_CORES  how many cores to keep busy (default 1: core 0)
# Extra arguments for cargo test go in STRESS_ARGS, e.g.
#   STRESS_ARGS="--test workers" scripts/stress-tests.sh 20
# Logs: one file per run in a temporary folder, printed at the end; the
# exit code is non-zero when any run failed, and the failing tests of every
# run are listed.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
busy_cores=${2:-1}
case $runs in '' | *[!0-9]*) echo "stress-tests: RUNS must be a whole number, got '$runs'" >&2; exit 2 ;; esac
case $busy_cores in '' | *[!0-9]*) echo "stress-tests: BUSY_CORES must be a whole number, got '$busy_cores'" >&2; exit 2 ;; esac

logs=$(mktemp -d "${TMPDIR:-/tmp}/stress-tests.XXXXXX")
busy_pids=()
stop_busy() {
  # Only the loops this script started, by pid.
  for pid in "${busy_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  busy_pids=()
}
trap stop_busy EXIT INT TERM

# Build first, unloaded: the runs below measure the tests, not the compiler.
# shellcheck disable=SC2086
cargo test --no-run ${STRESS_ARGS:-} -q 2>"$logs/build.log" || { cat "$logs/build.log" >&2; exit 1; }

for ((c = 0; c < busy_cores; c++)); do
  taskset -c "$c" sh -c 'while :; do :; done' &
  busy_pids+=("$!")
done
echo "stress-tests: $runs run(s), ${#busy_pids[@]} core(s) kept busy (pids ${busy_pids[*]:-none}); logs in $logs"

failed_runs=0
for ((i = 1; i <= runs; i++)); do
  log="$logs/run-$i.log"
  start=$(date +%s)
  # shellcheck disable=SC2086
  if cargo test --no-fail-fast ${STRESS_ARGS:-} >"$log" 2>&1; then
    verdict=green
  else
    verdict=RED
    failed_runs=$((failed_runs + 1))
  fi
  passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
  failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
  echo "run $i: $verdict in $(($(date +%s) - start)) s ($passed tests passed, $failed failed)"
  # The names of the failing tests, as libtest lists them under "failures:".
  grep -E '^    [a-z_0-9:]+$' "$log" | sort -u | sed 's/^ */    failed: /' || true
done
stop_busy

echo "stress-tests: $((runs - failed_runs)) of $runs runs green; logs in $logs"
[ "$failed_runs" -eq 0 ]
