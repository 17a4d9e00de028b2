#!/usr/bin/env bash
# Profiles one quorumkv node under the write or read workload of the benchmark table: a
# local 3-node cluster (--sync none), 100,000 keys preloaded, then 32 clients writing
# 100-byte values at w=2 (or reading them at r=2) while perf samples node 1 (CPU-clock
# sampling, so it also works where hardware counters are not exposed; DWARF call
# graphs, as release builds keep no frame pointers). Writes the reports to
# bench-results/profile-*.txt, a flame graph to bench-results/profile-flamegraph.svg
# (its folded stacks beside it), and prints the reports' heads.
# Every process is stopped on exit.
#
# Usage: scripts/profile.sh [SECONDS] [write|read]   (seconds of sampling, default 10;
# workload, default write)
# Environment: CARGO_TARGET_DIR, BENCH_PORT_BASE (default 27100; uses BASE+51 to BASE+53),
# BENCH_OUT (default bench-results).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

seconds=${1:-10}
workload=${2:-write}
case $workload in
    write) quorum=(--w 2) label="writes w=2" ;;
    read) quorum=(--r 2) label="reads r=2" ;;
    *) echo "profile: the workload is write or read, not $workload" >&2; exit 2 ;;
esac
bench_binaries 27100
ports=($((base + 51)) $((base + 52)) $((base + 53)))

command -v perf >/dev/null || { echo "profile: perf is missing (Debian: apt-get install linux-perf)" >&2; exit 1; }
if ! perf stat -e cpu-clock true >/dev/null 2>&1; then
    echo "profile: perf cannot count events here (see /proc/sys/kernel/perf_event_paranoid)" >&2
    exit 1
fi
require_free_ports "${ports[@]}"

bench_workdir quorumkv-profile

start_quorumkv profile none "${ports[@]}"
node1=${pids[0]}

# One process preloads, then writes or reads: it keeps each key's causal context, as the
# matrix does.
"$bench" run --target quorumkv --endpoints "$(urls "${ports[@]}")" --workload "$workload" \
    --clients 32 --keys 100000 --preload 100000 "${quorum[@]}" --seconds $((seconds + 6)) --no-progress \
    >"$out/profile-load.txt" 2>"$out/logs/profile-load.err" &
load=$!
pids+=("$load")
for _ in $(seq 1200); do
    grep -q preloaded "$out/logs/profile-load.err" 2>/dev/null && break
    kill -0 "$load" 2>/dev/null || { echo "profile: the load generator stopped" >&2; exit 1; }
    sleep 0.1
done
sleep 2
perf record -q -e cpu-clock -F 499 --call-graph dwarf,8192 -p "$node1" -o "$work/perf.data" \
    -- sleep "$seconds" 2>/dev/null
wait "$load"

# perf pads its columns to the widest symbol; trailing blanks and empty columns go.
report() { perf report -i "$work/perf.data" --stdio "$@" 2>/dev/null | sed 's/[ -]*$//' | grep -v '^$'; }
report --no-children --sort dso -g none >"$out/profile-dso.txt"
report --no-children --sort dso,symbol -g none --percent-limit 0.5 >"$out/profile-self.txt"
report --children --sort symbol -g none --percent-limit 3 >"$out/profile-inclusive.txt"
perf script -i "$work/perf.data" 2>/dev/null >"$work/perf.script"
"$bench" flamegraph --perf-script "$work/perf.script" --out "$out/profile-flamegraph.svg" \
    --title "quorumkv node 1, $label, 32 clients"

sed -n 1p "$out/profile-load.txt"
echo "--- node 1, CPU time by binary"
grep -m 8 '%' "$out/profile-dso.txt"
echo "--- node 1, hottest functions (self time)"
grep -m 25 '%' "$out/profile-self.txt"
echo "--- node 1, inclusive time (children included), top frames"
grep -m 40 '%' "$out/profile-inclusive.txt"
