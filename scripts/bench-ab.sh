#!/usr/bin/env bash
# Side-by-side A/B of two quorumkv binaries: the nodes' CPU per operation of each, under
# the same load at the same time.
#
# Runs one after the other on this machine differ by up to 15% from each other whatever
# the build (its other tenants, its clock, the page cache), which hides changes of a few
# percent. Here both builds run at once instead, each a 3-node cluster (one worker thread
# per node) loaded by its own load generator with 32 clients, so both live through the
# same moods of the machine; and the two swap port ranges from one pair to the next. The
# figure compared is the CPU time the three nodes of a cluster spent per operation it
# served (from /proc), which does not depend on how the two clusters happened to share
# the cores.
#
# Usage: scripts/bench-ab.sh A_BINARY B_BINARY [WORKLOAD] [PAIRS] [SECONDS]
#   WORKLOAD: write (default), read, or any other workload of quorumkv-bench;
#   PAIRS: pairs of runs (default 4); SECONDS: length of each run (default 20).
# Prints each pair and the median of B's CPU per operation over A's (below 1: B is cheaper).
# Environment: CARGO_TARGET_DIR (for quorumkv-bench), BENCH_PORT_BASE (default 27500),
# BENCH_OUT (default bench-results; server logs go to its logs/).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

if [ $# -lt 2 ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
binary_a=$(realpath "$1")
binary_b=$(realpath "$2")
workload=${3:-write}
pairs=${4:-4}
seconds=${5:-20}
bench_binaries 27500
for bin in "$binary_a" "$binary_b"; do
    [ -x "$bin" ] || { echo "bench-ab: $bin is not an executable" >&2; exit 2; }
done
low=($((base + 1)) $((base + 2)) $((base + 3)))
high=($((base + 11)) $((base + 12)) $((base + 13)))
require_free_ports "${low[@]}" "${high[@]}"
bench_workdir quorumkv-ab

# cpu_ticks PID...: user and system time of the processes, in clock ticks.
cpu_ticks() {
    local total=0 fields
    for pid in "$@"; do
        # The fields after the command name, which may hold spaces, start at the state.
        read -r -a fields <<<"$(sed 's/^.*) //' "/proc/$pid/stat")"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

ticks_per_second=$(getconf CLK_TCK)
ratios=()
for pair in $(seq "$pairs"); do
    # Odd pairs give A the low ports, even pairs the high ones.
    if [ $((pair % 2)) -eq 1 ]; then ports_a=("${low[@]}") ports_b=("${high[@]}")
    else ports_a=("${high[@]}") ports_b=("${low[@]}"); fi
    pids=()
    quorumkv=$binary_a start_quorumkv "a$pair" none "${ports_a[@]}"
    quorumkv=$binary_b start_quorumkv "b$pair" none "${ports_b[@]}"
    nodes_a=("${pids[@]:0:3}") nodes_b=("${pids[@]:3:3}")
    for endpoints in "$(urls "${ports_a[@]}")" "$(urls "${ports_b[@]}")"; do
        "$bench" run --endpoints "$endpoints" --workload write --preload 100000 --seconds 1 \
            --no-progress >/dev/null 2>&1
    done
    before_a=$(cpu_ticks "${nodes_a[@]}") before_b=$(cpu_ticks "${nodes_b[@]}")
    "$bench" run --endpoints "$(urls "${ports_a[@]}")" --workload "$workload" --clients 32 \
        --seconds "$seconds" --no-progress --out "$work/a$pair.json" >/dev/null &
    load_a=$!
    "$bench" run --endpoints "$(urls "${ports_b[@]}")" --workload "$workload" --clients 32 \
        --seconds "$seconds" --no-progress --out "$work/b$pair.json" >/dev/null &
    load_b=$!
    wait "$load_a" "$load_b"
    after_a=$(cpu_ticks "${nodes_a[@]}") after_b=$(cpu_ticks "${nodes_b[@]}")
    line=$(python3 - "$work/a$pair.json" "$work/b$pair.json" \
        $((after_a - before_a)) $((after_b - before_b)) "$ticks_per_second" <<'EOF'
import json, sys
a, b = (json.load(open(path)) for path in sys.argv[1:3])
ticks_a, ticks_b, hz = (int(x) for x in sys.argv[3:6])
us_a = ticks_a / hz / a["ops"] * 1e6
us_b = ticks_b / hz / b["ops"] * 1e6
errors = a["error_count"] + b["error_count"]
print(f"{us_b / us_a:.3f} A {a['ops_per_sec']:8.0f} ops/s {us_a:6.1f} us/op | "
      f"B {b['ops_per_sec']:8.0f} ops/s {us_b:6.1f} us/op | errors {errors}")
EOF
    )
    ratios+=("${line%% *}")
    echo "pair $pair: ${line#* } | B/A ${line%% *}"
    stop_pids=("${pids[@]}")
    for pid in "${stop_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${stop_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work/a$pair" "$work/b$pair"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '
    { r[NR] = $1 }
    END { m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
          printf "median B/A CPU per operation over %d pairs: %.3f\n", NR, m }'
