#!/usr/bin/env bash
# Build and cache the pinned Open Policy Agent binary (the real OPA, from source, with Go).
#
#   scripts/install-opa.sh                  # build if needed; print the binary's path on stdout
#   OPA="$(scripts/install-opa.sh)"         # ... and use it
#   FORCE=1 scripts/install-opa.sh          # rebuild even if the cached binary is fine
#
# Why from source: OPA publishes no Python wheel, and the substitutes (regopy, the golib bindings)
# are not OPA (docs/opa.md). `go install` through the Go module proxy gives the exact pinned release
# with checksums verified against sum.golang.org. CGO_ENABLED=0: a static binary, no C toolchain.
#
# The binary goes to ${XDG_CACHE_HOME:-$HOME/.cache}/mcp-authz-broker/opa-v<version>/opa and is reused
# between runs and checkouts; when it is there and `opa version` reports the pinned version, this is
# a fast no-op. The Go build cache stays at Go's default, so a rebuild after FORCE=1 is quick.
# Progress goes to stderr, the path (one line) to stdout. Needs `go` >= the version OPA's go.mod asks.
set -euo pipefail

OPA_VERSION="1.22.0"
MODULE="github.com/open-policy-agent/opa"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/mcp-authz-broker"
DEST_DIR="$CACHE_ROOT/opa-v$OPA_VERSION"
OPA_BIN="$DEST_DIR/opa"

say() { echo "install-opa: $*" >&2; }
die() {
    echo "install-opa: ERROR: $*" >&2
    exit 1
}

# Prints the version `opa version` reports ("Version: 1.22.0"), or nothing if it does not run.
installed_version() {
    [[ -x "$OPA_BIN" ]] || return 0
    "$OPA_BIN" version 2>/dev/null | awk -F': *' '$1 == "Version" { print $2; exit }' || true
}

if [[ "${FORCE:-0}" != 1 && "$(installed_version)" == "$OPA_VERSION" ]]; then
    say "cached: $OPA_BIN (OPA $OPA_VERSION)"
    echo "$OPA_BIN"
    exit 0
fi

command -v go >/dev/null 2>&1 ||
    die "'go' not found on PATH; OPA $OPA_VERSION is built from source with Go (https://go.dev/dl/), or set MCP_BROKER_OPA to an existing opa $OPA_VERSION binary"

mkdir -p "$DEST_DIR" || die "cannot create $DEST_DIR"
# Build into a temporary GOBIN and move into place only once it runs and reports the pinned
# version: an interrupted or failed build never leaves a half-written binary at the cached path.
tmp_bin="$(mktemp -d "$DEST_DIR/.build.XXXXXX")"
trap 'rm -rf "$tmp_bin"' EXIT

say "building OPA $OPA_VERSION with $(go version) (first build takes a few minutes)"
start=$(date +%s)
if ! CGO_ENABLED=0 GOBIN="$tmp_bin" GOFLAGS="${GOFLAGS:-} -trimpath" \
    go install -ldflags='-s -w' "$MODULE@v$OPA_VERSION" >&2; then
    die "go install $MODULE@v$OPA_VERSION failed (see the Go output above; module proxy: $(go env GOPROXY))"
fi
elapsed=$(($(date +%s) - start))

[[ -x "$tmp_bin/opa" ]] || die "go install succeeded but produced no $tmp_bin/opa"
got="$("$tmp_bin/opa" version 2>/dev/null | awk -F': *' '$1 == "Version" { print $2; exit }' || true)"
[[ "$got" == "$OPA_VERSION" ]] || die "built binary reports version '${got:-?}', expected $OPA_VERSION"
mv -f "$tmp_bin/opa" "$OPA_BIN"

say "built OPA $OPA_VERSION in ${elapsed}s: $OPA_BIN"
echo "$OPA_BIN"
