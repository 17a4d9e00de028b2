#!/usr/bin/env bash
# Long-run memory and data-size figures: a 3-node cluster with default settings
# (--sync none) under write-only load (32 clients, w=2, 100-byte values) for MEMORY_SECONDS
# (default 1200) over MEMORY_KEYS keys (default 5,000,000), sampling each node's resident
# set every 10 s. Then, on the data that load left (most of the keys written), one short
# write run and one read run; and the same two runs on a fresh cluster holding 100,000
# keys, so the two data sizes are compared in one sitting. Writes the RSS samples and the
# runs under bench-results/memory/ and prints a summary.
#
# Usage: scripts/bench-memory.sh   (make bench-memory)
# Environment: CARGO_TARGET_DIR, BENCH_PORT_BASE (default 27300), BENCH_OUT (default
# bench-results), MEMORY_SECONDS, MEMORY_KEYS, MEMORY_RUN_SECONDS (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

bench_binaries 27300
seconds=${MEMORY_SECONDS:-1200}
keys=${MEMORY_KEYS:-5000000}
run_seconds=${MEMORY_RUN_SECONDS:-10}

big=($((base + 1)) $((base + 2)) $((base + 3)))
small=($((base + 11)) $((base + 12)) $((base + 13)))
require_free_ports "${big[@]}" "${small[@]}"
bench_workdir quorumkv-memory
results=$out/memory
mkdir -p "$results"
rm -f "$results/rss.csv" "$results/runs.jsonl"

# rss_mib PID: the resident set of a process, in MiB.
rss_mib() {
    awk '/^VmRSS:/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"
}

echo "bench-memory: ${seconds}s of writes over $keys keys (data under $work)"
start_quorumkv big none "${big[@]}"
nodes=("${pids[@]}")
echo "seconds,node1_mib,node2_mib,node3_mib" >"$results/rss.csv"
"$bench" run --endpoints "$(urls "${big[@]}")" --workload write --clients 32 --w 2 \
    --keys "$keys" --value-bytes 100 --seconds "$seconds" --no-progress \
    --label "long-writes" --out "$results/runs.jsonl" >"$results/long-writes.txt" &
load=$!
started=$SECONDS
while kill -0 "$load" 2>/dev/null; do
    row="$((SECONDS - started))"
    for pid in "${nodes[@]}"; do row+=",$(rss_mib "$pid")"; done
    echo "$row" >>"$results/rss.csv"
    sleep 10
done
wait "$load"
on_disk=$(du -sm "$work/big" | cut -f1)

for label in writes reads; do
    workload=${label%s}
    "$bench" run --endpoints "$(urls "${big[@]}")" --workload "$workload" --clients 32 \
        --w 2 --r 2 --keys "$keys" --value-bytes 100 --seconds "$run_seconds" --no-progress \
        --label "$label-$keys-keys" --out "$results/runs.jsonl" >/dev/null
done
row="after"
for pid in "${nodes[@]}"; do row+=",$(rss_mib "$pid")"; done
echo "$row" >>"$results/rss.csv"
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

start_quorumkv small none "${small[@]}"
first=1
for label in writes reads; do
    workload=${label%s}
    preload=()
    [ "$first" = 1 ] && preload=(--preload 100000)
    first=0
    "$bench" run --endpoints "$(urls "${small[@]}")" --workload "$workload" --clients 32 \
        --w 2 --r 2 --keys 100000 --value-bytes 100 --seconds "$run_seconds" --no-progress \
        "${preload[@]}" --label "$label-100000-keys" --out "$results/runs.jsonl" >/dev/null
done

python3 - "$results" "$on_disk" "$keys" <<'EOF'
import csv, json, sys
results, on_disk, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = list(csv.reader(open(f"{results}/rss.csv")))[1:]
timed = [r for r in rows if r[0] != "after"]
peak = max(max(map(float, r[1:])) for r in rows)
last = timed[-1]
mid = timed[len(timed) // 2]
print(f"resident set per node (MiB): at {mid[0]} s {', '.join(mid[1:])}; at {last[0]} s "
      f"{', '.join(last[1:])}; peak {peak:.0f}; {on_disk} MiB on disk over 3 nodes")
for line in open(f"{results}/runs.jsonl"):
    run = json.loads(line)
    print(f"{run['label']}: {run['ops_per_sec']:.0f} ops/s, p99 {run['latency_ms']['p99']:.1f} ms, "
          f"{run['error_count']} errors ({run['key_count']} keys)")
EOF
