#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a while and prints how many inputs each executed.
#
#   scripts/fuzz.sh SECONDS          each target for SECONDS; new inputs go to a scratch
#                                    directory, the committed corpus is only read
#   scripts/fuzz.sh SECONDS --grow   the same, but new inputs are added to fuzz/corpus/
#                                    (minimize with `cargo fuzz cmin` before committing)
#
# A crash stops the run with the target's output; the input that crashed is saved under
# fuzz/artifacts/<target>/. Installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [--grow]}
grow=${2:-}
CARGO=${CARGO:-cargo}
CARGO_FUZZ_VERSION=0.13.2

# cargo-fuzz passes unstable flags to rustc (sanitizer, coverage instrumentation); this
# lets a stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
if ! $CARGO fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    # Built in a temporary directory of its own, not in the project's target directory.
    env -u CARGO_TARGET_DIR $CARGO install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

# A target directory of their own: the fuzz builds use other compiler flags, and sharing
# one with the normal build would make each rebuild the other.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
fuzz=($CARGO fuzz)
build_flags=(--fuzz-dir fuzz --target-dir "$target_dir")
"${fuzz[@]}" build "${build_flags[@]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $("${fuzz[@]}" list --fuzz-dir fuzz); do
    corpus=fuzz/corpus/$target
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    if [ "$grow" = "--grow" ]; then
        dirs=("$corpus")
    else
        mkdir -p "$scratch/$target"
        dirs=("$scratch/$target" "$corpus")
    fi
    options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
    [ -f "fuzz/$target.dict" ] && options+=(-dict="fuzz/$target.dict")
    log=$scratch/$target.log
    if ! "${fuzz[@]}" run "${build_flags[@]}" "$target" "${dirs[@]}" -- "${options[@]}" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $target FAILED; the input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    echo "fuzz: $target: ${runs:-?} executions in ${seconds}s, no crash"
done
