#!/usr/bin/env bash
# Installs Debian packages for the project's scripts: `apt-install.sh <who> <package>...`.
# Runs `apt-get update` first (a fresh machine has no package lists), uses sudo when not
# root, and prints only one line (on standard error) saying what it installs. `who` names
# the calling script in messages.
set -euo pipefail

who=$1
shift
[ $# -gt 0 ] || exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$who: missing $*; install them with your package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "$who: need root or sudo to install $*" >&2; exit 1; }
    sudo="sudo"
fi
echo "$who: installing $*" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
