#!/usr/bin/env bash
# Checks that internal dependencies point one way:
#   ring, replica <- coordinator <- http-api <- server
# A crate may depend only on the crates listed for it here.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A allowed=(
    [quorumkv-ring]=""
    [quorumkv-replica]=""
    [quorumkv-coordinator]="quorumkv-ring quorumkv-replica"
    [quorumkv-http-api]="quorumkv-coordinator"
    [quorumkv-server]="quorumkv-coordinator quorumkv-http-api quorumkv-replica"
)
status=0
for crate in "${!allowed[@]}"; do
    deps=$(cargo tree -p "$crate" --depth 1 -e normal --prefix none --offline 2>/dev/null \
        | awk 'NR > 1 {print $1}' | grep '^quorumkv-' | sort -u || true)
    for dep in $deps; do
        if [[ " ${allowed[$crate]} " != *" $dep "* ]]; then
            echo "layering: $crate must not depend on $dep" >&2
            status=1
        fi
    done
done
[ $status -eq 0 ] && echo "layering: ok"
exit $status
