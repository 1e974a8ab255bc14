#!/usr/bin/env bash
# Install the peer MCP gateways the benchmark report compares the broker with, each in its own
# virtualenv under the cache (never in the project's venv: mcp-proxy pins `mcp` 1.x, ContextForge
# brings ~200 packages and needs Python >= 3.12).
#
#   scripts/install-peers.sh            # install what is missing; one status line per peer on stdout
#   FORCE=1 scripts/install-peers.sh    # reinstall both
#   PEERS_PYTHON312=/path/to/python3.12 scripts/install-peers.sh   # the interpreter for ContextForge
#
# Layout (bench/peers.py reads the same paths):
#   ${XDG_CACHE_HOME:-$HOME/.cache}/mcp-authz-broker/peers/mcp-proxy-<version>/venv/bin/mcp-proxy
#   ${XDG_CACHE_HOME:-$HOME/.cache}/mcp-authz-broker/peers/contextforge-<version>/venv/bin/mcpgateway
# A peer that cannot be installed here gets a FAILED file with the one-line reason next to its venv,
# and the report shows "not run: <reason>" for it. This script never fails the build because of a
# peer: it exits 0 after trying both (exit 1 only for a broken invocation).
set -euo pipefail

MCP_PROXY_VERSION="0.13.0"
CONTEXTFORGE_VERSION="1.1.0"
PEERS_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/mcp-authz-broker/peers"

say() { echo "install-peers: $*" >&2; }

# A Python >= 3.12 for ContextForge: $PEERS_PYTHON312, python3.13/python3.12 on PATH (pyenv shims
# that only complain are skipped: each candidate must run), or a pyenv-installed 3.12/3.13.
find_python312() {
    local candidates=()
    [[ -n "${PEERS_PYTHON312:-}" ]] && candidates+=("$PEERS_PYTHON312")
    candidates+=(python3.13 python3.12)
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    if [[ -d "$root/versions" ]]; then
        while IFS= read -r dir; do candidates+=("$dir/bin/python"); done < <(
            find "$root/versions" -maxdepth 1 -name '3.1[23].*' | sort -rV
        )
    fi
    local c
    for c in "${candidates[@]}"; do
        if "$c" -c 'import sys; raise SystemExit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
            "$c" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

# install_peer NAME VERSION PYTHON EXECUTABLE PIP_REQUIREMENT...
install_peer() {
    local name="$1" version="$2" python="$3" exe="$4"
    shift 4
    local dir="$PEERS_ROOT/$name-$version"
    if [[ "${FORCE:-0}" != 1 && -x "$dir/venv/bin/$exe" && -f "$dir/OK" ]]; then
        say "cached: $name $version"
        echo "$name $version ok $dir/venv/bin/$exe"
        return 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    say "installing $name $version with $("$python" --version 2>&1) (quiet; log: $dir/install.log)"
    local start=$SECONDS
    if "$python" -m venv "$dir/venv" >"$dir/install.log" 2>&1 &&
        "$dir/venv/bin/python" -m pip install -q --upgrade pip >>"$dir/install.log" 2>&1 &&
        "$dir/venv/bin/python" -m pip install -q "$@" >>"$dir/install.log" 2>&1 &&
        [[ -x "$dir/venv/bin/$exe" ]]; then
        touch "$dir/OK"
        say "installed $name $version in $((SECONDS - start))s"
        echo "$name $version ok $dir/venv/bin/$exe"
    else
        local reason
        reason="pip install of $name==$version failed: $(grep -E 'ERROR|error:' "$dir/install.log" | tail -1 | cut -c1-200)"
        echo "$reason" >"$dir/FAILED"
        say "$reason"
        echo "$name $version failed"
    fi
}

mkdir -p "$PEERS_ROOT"

# mcp-proxy runs on the project's interpreter (Python 3.10+), in its own venv.
install_peer mcp-proxy "$MCP_PROXY_VERSION" "${PYTHON:-python3}" mcp-proxy "mcp-proxy==$MCP_PROXY_VERSION"

cf_dir="$PEERS_ROOT/contextforge-$CONTEXTFORGE_VERSION"
if py312="$(find_python312)"; then
    install_peer contextforge "$CONTEXTFORGE_VERSION" "$py312" mcpgateway \
        "mcp-contextforge-gateway==$CONTEXTFORGE_VERSION"
else
    mkdir -p "$cf_dir"
    echo "no Python >= 3.12 found (ContextForge $CONTEXTFORGE_VERSION requires it; set PEERS_PYTHON312)" \
        >"$cf_dir/FAILED"
    say "$(cat "$cf_dir/FAILED")"
    echo "contextforge $CONTEXTFORGE_VERSION failed"
fi

