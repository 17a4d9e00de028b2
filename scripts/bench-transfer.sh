#!/usr/bin/env bash
# Measures how fast a membership change moves data: a 3-node cluster (--sync none) is
# loaded with TRANSFER_KEYS keys of TRANSFER_VALUE_BYTES, a fourth node joins, and the
# script times the change until the cluster is balanced; then, on a second cluster loaded
# with four nodes, the fourth leaves and the script times that until it has exited. Throughput counts the anti-entropy bytes the
# receiving nodes exchanged (quorumkv_transfer_bytes_total) over the time from the end of
# the 5 s settling delay to the commit; values moved are estimated from the ring.
#
# Usage: scripts/bench-transfer.sh   (make bench-transfer)
# Environment: CARGO_TARGET_DIR, BENCH_PORT_BASE (default 27200), BENCH_OUT (default
# bench-results), TRANSFER_KEYS (default 200000), TRANSFER_VALUE_BYTES (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

bench_binaries 27200
keys=${TRANSFER_KEYS:-200000}
value_bytes=${TRANSFER_VALUE_BYTES:-1024}
settle=5

ports=($((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)))
leave_ports=($((base + 11)) $((base + 12)) $((base + 13)) $((base + 14)))
require_free_ports "${ports[@]}" "${leave_ports[@]}"
bench_workdir quorumkv-transfer

# view PORT FIELD: a top-level number of GET /v1/cluster.
view() {
    curl -fsS --max-time 2 "http://127.0.0.1:$1/v1/cluster" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}

# transfer_bytes PORT: the node's quorumkv_transfer_bytes_total (0 when absent).
transfer_bytes() {
    curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" |
        awk '$1 == "quorumkv_transfer_bytes_total" { total += $2 } END { printf "%d\n", total }'
}

# wait_balanced SECONDS PORT...: until every node reports no transfers and the same ring.
wait_balanced() {
    local bound=$1; shift
    local deadline=$((SECONDS + bound))
    while [ "$SECONDS" -lt "$deadline" ]; do
        local ok=1 versions=()
        for port in "$@"; do
            local total pending
            total=$(view "$port" transfers_total 2>/dev/null) || { ok=0; break; }
            pending=$(view "$port" pending_transfers 2>/dev/null) || { ok=0; break; }
            [ "$total" = 0 ] && [ "$pending" = 0 ] || ok=0
            versions+=("$(view "$port" ring_version 2>/dev/null)")
        done
        if [ "$ok" = 1 ] && [ "$(printf '%s\n' "${versions[@]}" | sort -u | wc -l)" = 1 ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "bench-transfer: not balanced within ${bound}s" >&2
    return 1
}

echo "bench-transfer: 3 nodes, $keys keys of $value_bytes bytes (data under $work)"
start_quorumkv transfer none "${ports[@]:0:3}"
"$bench" run --endpoints "$(urls "${ports[@]:0:3}")" --workload read --seconds 1 \
    --keys "$keys" --preload "$keys" --value-bytes "$value_bytes" --no-progress >/dev/null
size=$(du -sm "$work/transfer" | cut -f1)
echo "bench-transfer: loaded; $size MiB on disk over 3 nodes"

secret=$work/transfer/cluster-secret
started=$(date +%s.%N)
"$quorumkv" serve --node-id node4 --listen "127.0.0.1:${ports[3]}" \
    --data-dir "$work/transfer/node4" --seeds "$(printf '127.0.0.1:%s,' "${ports[@]:0:3}" | sed 's/,$//')" \
    --sync none --log-format text --cluster-secret-file "$secret" \
    --worker-threads "$(threads_per_node 4)" \
    >"$out/logs/transfer-node4.log" 2>&1 &
pids+=($!)
node4=$!
sleep 1
wait_balanced 1800 "${ports[@]}"
joined=$(date +%s.%N)
received=$(transfer_bytes "${ports[3]}")
on_node4=$(du -sm "$work/transfer/node4" | cut -f1)
python3 - "$started" "$joined" "$settle" "$received" "$on_node4" <<'EOF'
import sys
started, joined, settle, received, on_disk = map(float, sys.argv[1:])
moving = joined - started - settle
print(f"join 3 -> 4: balanced {joined - started:.1f} s after start ({moving:.1f} s of transfers "
      f"after the {settle:.0f} s settling delay); node4 exchanged {received / 1e6:.1f} MB: "
      f"{received / 1e6 / moving:.1f} MB/s; {on_disk:.0f} MiB on its disk")
EOF

# The leave is measured on a cluster loaded with four nodes from the start: after the join
# above, the three others still hold the copies they handed over (nothing deletes them),
# so node4's leave would move next to nothing.
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
echo "bench-transfer: 4 other nodes, $keys keys of $value_bytes bytes"
start_quorumkv leave none "${leave_ports[@]}"
"$bench" run --endpoints "$(urls "${leave_ports[@]}")" --workload read --seconds 1 \
    --keys "$keys" --preload "$keys" --value-bytes "$value_bytes" --no-progress >/dev/null
leaver=${pids[-1]}
stayers=("${leave_ports[@]:0:3}")
sum_bytes() {
    local total=0 port
    for port in "$@"; do total=$((total + $(transfer_bytes "$port"))); done
    echo "$total"
}
sent_before=$(sum_bytes "${stayers[@]}")
started=$(date +%s.%N)
curl -fsS -X POST "http://127.0.0.1:${leave_ports[3]}/v1/cluster/leave" >/dev/null
for _ in $(seq 18000); do kill -0 "$leaver" 2>/dev/null || break; sleep 0.1; done
wait "$leaver" && status=0 || status=$?
left=$(date +%s.%N)
wait_balanced 600 "${stayers[@]}"
sent_after=$(sum_bytes "${stayers[@]}")
python3 - "$started" "$left" "$settle" "$sent_before" "$sent_after" "$status" <<'EOF'
import sys
started, left, settle, before, after, status = map(float, sys.argv[1:])
moving = left - started - settle
exchanged = after - before
print(f"leave 4 -> 3: node4 exited {int(status)} after {left - started:.1f} s ({moving:.1f} s of "
      f"transfers); the receivers exchanged {exchanged / 1e6:.1f} MB: {exchanged / 1e6 / moving:.1f} MB/s")
EOF
