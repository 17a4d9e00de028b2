#!/usr/bin/env bash
# Runs the benchmark matrix (`quorumkv-bench matrix`) against servers it starts itself, all
# on 127.0.0.1 with data under one temporary directory:
#   - a 3-node quorumkv cluster with --sync none, and another with --sync always;
#   - a 3-member etcd cluster (each member its own ports and data directory);
#   - the ceiling server (`quorumkv-bench serve-ceiling`).
# Every process is stopped when the script exits, on failure and Ctrl-C too. Results, plots
# and server logs go to bench-results/; the generated section of BENCHMARKS.md is replaced.
#
# Usage: scripts/bench.sh quick|full
# Environment: CARGO_TARGET_DIR (where the binaries are), BENCH_PORT_BASE (default 27100;
# ports BASE+1 to BASE+40 are used), BENCH_OUT (default bench-results).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

profile=${1:-full}
case "$profile" in
    quick) command_shown="make bench-quick" ;;
    full) command_shown="make bench" ;;
    *) echo "usage: $0 quick|full" >&2; exit 2 ;;
esac
bench_binaries 27100
command -v etcd >/dev/null || { echo "bench: etcd is missing; run scripts/install-bench-deps.sh" >&2; exit 1; }

qkv_ports=($((base + 1)) $((base + 2)) $((base + 3)))
sync_ports=($((base + 11)) $((base + 12)) $((base + 13)))
etcd_client_ports=($((base + 21)) $((base + 22)) $((base + 23)))
etcd_peer_ports=($((base + 31)) $((base + 32)) $((base + 33)))
ceiling_port=$((base + 40))
require_free_ports "${qkv_ports[@]}" "${sync_ports[@]}" "${etcd_client_ports[@]}" \
    "${etcd_peer_ports[@]}" "$ceiling_port"

rm -rf "$out/logs"
bench_workdir quorumkv-bench

start_etcd() {
    local cluster="" i
    for i in 1 2 3; do
        cluster+="etcd$i=http://127.0.0.1:${etcd_peer_ports[$((i - 1))]},"
    done
    cluster=${cluster%,}
    for i in 1 2 3; do
        local client=${etcd_client_ports[$((i - 1))]} peer=${etcd_peer_ports[$((i - 1))]}
        # 8 GiB of backend quota: the value-size rows write a few hundred MiB, and etcd keeps
        # every revision until compaction.
        etcd --name "etcd$i" --data-dir "$work/etcd$i" \
            --listen-client-urls "http://127.0.0.1:$client" \
            --advertise-client-urls "http://127.0.0.1:$client" \
            --listen-peer-urls "http://127.0.0.1:$peer" \
            --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token quorumkv-bench \
            --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) \
            --logger zap --log-level warn \
            >"$out/logs/etcd$i.log" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        wait_for "etcd$i" "http://127.0.0.1:${etcd_client_ports[$((i - 1))]}/health" '"health":"true"'
    done
}

echo "bench: starting servers (data under $work)"
start_quorumkv quorumkv none "${qkv_ports[@]}"
start_quorumkv quorumkv-sync always "${sync_ports[@]}"
start_etcd
# A lifetime bound, so that it cannot outlive a killed script by long.
"$bench" serve-ceiling --listen "127.0.0.1:$ceiling_port" --body-bytes 100 --max-seconds 7200 \
    >"$out/logs/ceiling.log" 2>&1 &
pids+=($!)
wait_for ceiling "http://127.0.0.1:$ceiling_port/"

"$bench" matrix --profile "$profile" \
    --quorumkv "$(urls "${qkv_ports[@]}")" \
    --quorumkv-sync "$(urls "${sync_ports[@]}")" \
    --etcd "$(urls "${etcd_client_ports[@]}")" \
    --ceiling "$(urls "$ceiling_port")" \
    --out "$out" --benchmarks-md BENCHMARKS.md --command "$command_shown"
