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
    "$(dirname "$0")/apt-install.sh" install-browser "${missing[@]}"
fi
find_browser
