# Shared by the benchmark and profiling scripts (sourced, not run): their set-up, starting
# servers on loopback, waiting for them, and stopping every one of them when the script
# exits.
#
# The caller sets quorumkv, bench, out and base with `bench_binaries`, and work with
# `bench_workdir` (which also arranges for `stop_all` at exit) before starting anything.

pids=()

# bench_binaries DEFAULT_PORT_BASE: sets quorumkv and bench (the release binaries under
# CARGO_TARGET_DIR, default target), out (BENCH_OUT, default bench-results) and base
# (BENCH_PORT_BASE, default DEFAULT_PORT_BASE); fails when a binary is missing.
bench_binaries() {
    local target_dir=${CARGO_TARGET_DIR:-target}
    quorumkv=$target_dir/release/quorumkv
    bench=$target_dir/release/quorumkv-bench
    out=${BENCH_OUT:-bench-results}
    base=${BENCH_PORT_BASE:-$1}
    for bin in "$quorumkv" "$bench"; do
        if [ ! -x "$bin" ]; then
            echo "$(basename "$0"): $bin is missing; build with cargo build --release --bins" >&2
            return 1
        fi
    done
}

# bench_workdir NAME: makes the temporary directory ($work, named after NAME) and the log
# directory, and has every server started here stopped when the script exits or is
# interrupted.
bench_workdir() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    mkdir -p "$out/logs"
    trap stop_all EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Stops every process started here: SIGTERM, up to 10 s for a clean exit (RocksDB flush,
# etcd's last snapshot), then SIGKILL; removes the temporary directory.
stop_all() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        echo "$(basename "$0"): failed (exit $status); server logs are in $out/logs/" >&2
    fi
    exit "$status"
}

# require_free_ports PORT...: fails if anything listens on one of them.
require_free_ports() {
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$(basename "$0"): port $port is in use; set BENCH_PORT_BASE to another base" >&2
            return 1
        fi
    done
}

# wait_for NAME URL [PATTERN]: polls for up to 30 s until the URL answers 2xx (and its body
# matches PATTERN when one is given).
wait_for() {
    for _ in $(seq 300); do
        if [ -z "${3:-}" ]; then
            curl -fsS --max-time 1 -o /dev/null "$2" 2>/dev/null && return 0
        elif curl -fsS --max-time 1 "$2" 2>/dev/null | grep -q "$3"; then
            return 0
        fi
        sleep 0.1
    done
    echo "$(basename "$0"): $1 did not become ready ($2)" >&2
    return 1
}

# threads_per_node NODES: the worker threads each of NODES nodes sharing this machine gets,
# its share of the cores and at least one (see BENCHMARKS.md, "Threads per node").
threads_per_node() {
    local share=$(($(nproc) / $1))
    echo $((share > 0 ? share : 1))
}

# start_quorumkv NAME SYNC PORT...: a cluster of one node per port, data under $work/NAME,
# logs in $out/logs/NAME-nodeI.log; returns once every node reports the ring formed. The
# nodes share a cluster secret made for this run, as every multi-node cluster must, and
# the machine's cores (threads_per_node).
start_quorumkv() {
    local name=$1 sync=$2; shift 2
    local seeds secret=$work/$name/cluster-secret threads
    threads=$(threads_per_node $#)
    seeds=$(printf '127.0.0.1:%s,' "$@"); seeds=${seeds%,}
    mkdir -p "$work/$name"
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret")
    local i=0
    for port in "$@"; do
        i=$((i + 1))
        "$quorumkv" serve --node-id "node$i" --listen "127.0.0.1:$port" \
            --data-dir "$work/$name/node$i" --seeds "$seeds" --sync "$sync" --log-format text \
            --worker-threads "$threads" --cluster-secret-file "$secret" \
            >"$out/logs/$name-node$i.log" 2>&1 &
        pids+=($!)
    done
    for port in "$@"; do
        wait_for "$name on $port" "http://127.0.0.1:$port/v1/cluster" '"ready":true'
    done
}

# urls PORT...: http://127.0.0.1:PORT, comma-separated.
urls() {
    local list
    list=$(printf 'http://127.0.0.1:%s,' "$@")
    echo "${list%,}"
}
