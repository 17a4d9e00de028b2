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

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-bench-deps: missing ${missing[*]}; install them with your package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-bench-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
echo "install-bench-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Debian's package may also start a system etcd on the default ports; the benchmark starts
# its own members on other ports, with their own data directories.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
