#!/usr/bin/env bash
# Starts a local 3-node quorumkv cluster on 127.0.0.1:7001-7003 with data under ./data,
# prints a few requests to try, and stops all three cleanly (SIGTERM) on Ctrl-C.
# The nodes share the cluster secret in ./data/cluster-secret, made on the first run, and
# the machine's cores: a third each, at least one (WORKERS overrides).
set -euo pipefail
BIN=${BIN:-target/release/quorumkv}
DATA=${DATA:-data}
PORTS=(7001 7002 7003)
SEEDS=$(printf '127.0.0.1:%s,' "${PORTS[@]}"); SEEDS=${SEEDS%,}
WORKERS=${WORKERS:-$(($(nproc) / ${#PORTS[@]}))}
[ "$WORKERS" -ge 1 ] || WORKERS=1

pids=()
stop() {
    echo
    echo "stopping the cluster..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "stopped."
}
trap stop EXIT
trap 'exit 0' INT TERM

mkdir -p "$DATA"
# A node with peers refuses to start without the cluster secret: make one, readable by
# this user only, and keep it across runs (every node of the cluster needs the same).
SECRET="$DATA/cluster-secret"
if [ ! -s "$SECRET" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET")
fi
for i in 1 2 3; do
    port=${PORTS[$((i - 1))]}
    "$BIN" serve --node-id "node$i" --listen "127.0.0.1:$port" --data-dir "$DATA/node$i" \
        --seeds "$SEEDS" --cluster-secret-file "$SECRET" --worker-threads "$WORKERS" \
        >>"$DATA/node$i.log" 2>&1 &
    pids+=($!)
done

for i in $(seq 1 100); do
    if curl -fsS http://127.0.0.1:7001/v1/cluster 2>/dev/null | grep -q '"ready":true'; then break; fi
    sleep 0.1
done

cat <<TXT
quorumkv: 3 nodes on 127.0.0.1:7001-7003 (logs in data/node*.log). Try:

  curl -i -X PUT --data-binary 'hello' -H 'Content-Type: text/plain' 'http://127.0.0.1:7001/v1/buckets/demo/keys/greeting?w=2'
  curl -i 'http://127.0.0.1:7002/v1/buckets/demo/keys/greeting?r=2'
  curl -i -X DELETE 'http://127.0.0.1:7003/v1/buckets/demo/keys/greeting'
  curl -s http://127.0.0.1:7001/v1/cluster
  $BIN cluster status

Ctrl-C stops all three.
TXT
wait
