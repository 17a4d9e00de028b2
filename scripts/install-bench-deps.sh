#!/usr/bin/env bash
# Installs what `make bench` needs beyond a build of quorumkv: etcd (the server, for the
# comparison cluster) and curl (to wait for the servers to be ready). Idempotent and quiet
# when everything is already there.
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

# Debian's package may also start a system etcd on the default ports; the benchmark
# starts its own members on other ports, with their own data directories.
"$(dirname "$0")/apt-install.sh" install-bench-deps "${missing[@]}"
