#!/usr/bin/env bash
# Install the browser the dashboard's end-to-end test drives: Debian's chromium and chromium-driver.
#
#   scripts/install-browser.sh     # a fast no-op when both are on PATH; prints KEY=value lines
#
# tests/e2e/test_dashboard.py starts chromedriver on 127.0.0.1 (a free port) and speaks the W3C
# WebDriver protocol to it over HTTP (httpx, no extra Python dependency); chromedriver starts a
# headless chromium with a fresh profile. Both packages come from the same Debian source package,
# so the driver always matches the browser's version: no browser download, no version skew.
# Needs root (apt-get), which the project's machines and CI have. Progress goes to stderr, the
# paths (CHROMIUM=…, CHROMEDRIVER=…) to stdout.
set -euo pipefail

say() { echo "install-browser: $*" >&2; }

find_chromium() { command -v chromium || command -v chromium-browser || true; }
find_driver() { command -v chromedriver || true; }

if [[ -z "$(find_chromium)" || -z "$(find_driver)" ]]; then
    command -v apt-get >/dev/null 2>&1 || { say "ERROR: no apt-get: install chromium and chromedriver by hand"; exit 1; }
    say "installing chromium chromium-driver (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2; then
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
    fi
fi

CHROMIUM="$(find_chromium)"
CHROMEDRIVER="$(find_driver)"
[[ -n "$CHROMIUM" && -n "$CHROMEDRIVER" ]] || { say "ERROR: chromium or chromedriver still not on PATH"; exit 1; }
say "present: $("$CHROMIUM" --version 2>/dev/null | head -1); $("$CHROMEDRIVER" --version | head -1)"
echo "CHROMIUM=$CHROMIUM"
echo "CHROMEDRIVER=$CHROMEDRIVER"
