#!/usr/bin/env bash
# Installs what the browser test of the status page needs: Debian's headless-capable
# Chromium and a font for its screenshots. Idempotent and quiet when everything is already
# there. Prints the browser's path on standard output, for the test to use.
set -euo pipefail

find_browser() {
    for name in chromium chromium-browser google-chrome; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

have_font() {
    ls /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf >/dev/null 2>&1
}

missing=()
find_browser >/dev/null || missing+=(chromium)
have_font || missing+=(fonts-dejavu-core)

if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-browser: missing ${missing[*]}; install them with your package manager" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "install-browser: need root or sudo to install ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "install-browser: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
find_browser
