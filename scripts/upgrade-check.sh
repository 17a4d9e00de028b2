#!/usr/bin/env bash
# Checks an upgrade of a running cluster's data from one build to another, end to end:
# a 3-node cluster of OLD_BIN takes writes, overwrites, concurrent writes (siblings) and
# deletes at w=2; then one node is killed (SIGKILL, mid-flight state included) and the
# other two stop cleanly; all three restart on NEW_BIN over the same data directories.
# Before any quorum read can repair anything, every key must still be held by at least two
# nodes' own copies (`local=true`); then every key must read back at r=2 as written: the
# value, both siblings, or 404 for a deleted key. Last, OLD_BIN must refuse to open the
# upgraded data (a rollback must fail loudly, not serve an empty store).
#
# Run it for every change of the on-disk layout (docs/formats.md), with OLD_BIN built from
# the commit before the change.
#
# Usage: scripts/upgrade-check.sh OLD_BIN NEW_BIN
# Environment: BENCH_PORT_BASE (default 27500), UPGRADE_KEYS (default 1000), BENCH_OUT
# (default bench-results; the node logs go to its logs/ directory).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
    echo "usage: $0 OLD_BIN NEW_BIN (two quorumkv binaries)" >&2
    exit 2
fi
old=$1 new=$2
keys=${UPGRADE_KEYS:-1000}
base=${BENCH_PORT_BASE:-27500}
out=${BENCH_OUT:-bench-results}
ports=($((base + 1)) $((base + 2)) $((base + 3)))
require_free_ports "${ports[@]}"
bench_workdir quorumkv-upgrade

# A tenth of the keys get a second, concurrent write (siblings); another tenth is deleted.
kind() {
    if [ $(($1 % 10)) -eq 1 ]; then echo siblings
    elif [ $(($1 % 10)) -eq 2 ]; then echo deleted
    else echo value
    fi
}
node_url() { echo "http://127.0.0.1:${ports[$(($1 % 3))]}"; }
key_url() { echo "$(node_url "$1")/v1/buckets/upgrade/keys/k$2"; }

# put NODE KEY VALUE [CONTEXT]: a write at w=2 that must be acknowledged.
put() {
    local status
    status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -X PUT \
        ${4:+-H "X-Causal-Context: $4"} --data-binary "$3" "$(key_url "$1" "$2")?w=2")
    [ "$status" = 204 ] || { echo "upgrade-check: PUT k$2 answered $status" >&2; return 1; }
}

# context NODE KEY: the causal context of a read at r=2.
context() {
    curl -sS -D - -o /dev/null --max-time 10 "$(key_url "$1" "$2")?r=2" |
        awk 'tolower($1) == "x-causal-context:" { sub(/\r$/, "", $2); print $2 }'
}

echo "upgrade-check: $keys keys on a cluster of $(basename "$old") (data under $work)"
quorumkv=$old
start_quorumkv up none "${ports[@]}"
for i in $(seq 0 $((keys - 1))); do
    put "$i" "$i" "first-$i"
    # An overwrite with the context read: it supersedes the first value.
    put $((i + 1)) "$i" "v$i" "$(context $((i + 2)) "$i")"
    case $(kind "$i") in
        siblings) put $((i + 2)) "$i" "w$i" ;;
        deleted)
            status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 -X DELETE \
                -H "X-Causal-Context: $(context "$i" "$i")" "$(key_url "$i" "$i")?w=2")
            [ "$status" = 204 ] || { echo "upgrade-check: DELETE k$i answered $status" >&2; exit 1; }
            ;;
    esac
done

echo "upgrade-check: node 3 killed, nodes 1 and 2 stopped; restarting on $(basename "$new")"
kill -KILL "${pids[2]}"
kill -TERM "${pids[0]}" "${pids[1]}"
# (The shell would report the killed node on stderr.)
for pid in "${pids[@]}"; do { wait "$pid"; } 2>/dev/null || true; done
pids=()
quorumkv=$new
start_quorumkv up none "${ports[@]}"

failures=0
fail() {
    echo "upgrade-check: $*" >&2
    failures=$((failures + 1))
}
# Own copies first: a quorum read would repair what the upgrade lost.
for i in $(seq 0 $((keys - 1))); do
    held=0
    for n in 0 1 2; do
        status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 \
            "$(key_url "$n" "$i")?local=true")
        case $status in
            200 | 300) held=$((held + 1)) ;;
            404) ;;
            *) fail "local read of k$i on node $((n + 1)) answered $status" ;;
        esac
    done
    if [ "$(kind "$i")" = deleted ]; then
        # Two copies or more hold the tombstone (404 locally); one may have missed it.
        [ "$held" -le 1 ] || fail "k$i: deleted, yet $held own copies hold a value"
    else
        [ "$held" -ge 2 ] || fail "k$i: $held own copies hold it, at least 2 expected"
    fi
done
for i in $(seq 0 $((keys - 1))); do
    body=$(curl -sS -w '\n%{http_code}' --max-time 10 "$(key_url $((i + 1)) "$i")?r=2")
    status=${body##*$'\n'} body=${body%$'\n'*}
    case $(kind "$i") in
        value) [ "$status" = 200 ] && [ "$body" = "v$i" ] ||
            fail "k$i read $status '$body', expected 200 'v$i'" ;;
        deleted) [ "$status" = 404 ] || fail "k$i read $status, expected 404" ;;
        siblings)
            v=$(printf 'v%s' "$i" | base64) w=$(printf 'w%s' "$i" | base64)
            [ "$status" = 300 ] && [[ $body == *"\"$v\""* ]] && [[ $body == *"\"$w\""* ]] ||
                fail "k$i read $status '$body', expected 300 with both siblings"
            ;;
    esac
done
# What the new build logged of the move (its own messages; none when nothing moved).
grep -h "records moved" "$out"/logs/up-node*.log | sed 's/\x1b\[[0-9;]*m//g; s/^/upgrade-check: /' || true

# A rollback: the old build must refuse the upgraded store, not serve it as empty.
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
for pid in "${pids[@]}"; do wait "$pid" || true; done
pids=()
status=0
timeout 20 "$old" serve --node-id node1 --listen "127.0.0.1:${ports[0]}" \
    --data-dir "$work/up/node1" --seeds "127.0.0.1:${ports[0]}" \
    --cluster-secret-file "$work/up/cluster-secret" >"$out/logs/up-rollback.log" 2>&1 ||
    status=$?
if [ "$status" -eq 0 ] || [ "$status" -eq 124 ]; then
    fail "$(basename "$old") opened the upgraded store (exit $status)"
else
    echo "upgrade-check: $(basename "$old") refuses the upgraded store: $(tail -1 "$out/logs/up-rollback.log")"
fi
if [ "$failures" -gt 0 ]; then
    echo "upgrade-check: FAILED, $failures problems" >&2
    exit 1
fi
echo "upgrade-check: all $keys keys read back as written after the upgrade"
