#!/usr/bin/env bash
# Provide and cache promtool (Prometheus' rule checker) for the alert-rule tests; print its path.
#
#   scripts/install-promtool.sh               # install if needed; print the binary's path on stdout
#   PROMTOOL="$(scripts/install-promtool.sh)" # ... and use it
#   FORCE=1 scripts/install-promtool.sh       # reinstall even if the cached binary runs
#   SOURCE=go scripts/install-promtool.sh     # skip the Debian package, build from source
#
# Where it comes from, in order (tests/unit/telemetry/test_alerts.py runs `promtool check rules`
# and `promtool test rules` on deploy/prometheus/ and never skips):
#
# 1. Debian's `prometheus` package, which ships /usr/bin/promtool. The package is downloaded and
#    only promtool is unpacked (dpkg-deb -x): installing the package would add a prometheus
#    system user and a server. Takes ≈ 3 s. The version is whatever the release carries
#    (bookworm: 2.42); the rules use nothing newer.
# 2. Otherwise (no apt, or the package cannot be fetched): built from source with Go at a pinned
#    version. Prometheus' go.mod carries `replace` directives, which `go install pkg@version`
#    refuses, so the build runs in a throwaway module that repeats them. The first build
#    takes minutes (Prometheus pulls in the Kubernetes and cloud SDKs for service discovery).
#
# The binary goes to ${XDG_CACHE_HOME:-$HOME/.cache}/mcp-authz-broker/promtool/promtool and is
# reused while it runs. Progress goes to stderr, the path (one line) to stdout.
set -euo pipefail

PROMETHEUS_GO_VERSION="v0.315.0" # the Go module version of a Prometheus 3 release
MODULE="github.com/prometheus/prometheus"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/mcp-authz-broker"
DEST_DIR="$CACHE_ROOT/promtool"
PROMTOOL_BIN="$DEST_DIR/promtool"
SOURCE="${SOURCE:-auto}"

say() { echo "install-promtool: $*" >&2; }
die() {
    echo "install-promtool: ERROR: $*" >&2
    exit 1
}
runs() { [[ -x "$1" ]] && "$1" --version >/dev/null 2>&1; }

if [[ "${FORCE:-0}" != 1 ]] && runs "$PROMTOOL_BIN"; then
    say "cached: $PROMTOOL_BIN ($("$PROMTOOL_BIN" --version 2>&1 | head -1))"
    echo "$PROMTOOL_BIN"
    exit 0
fi

mkdir -p "$DEST_DIR" || die "cannot create $DEST_DIR"
# Work in a temporary directory and move into place only a binary that runs: an interrupted
# install never leaves a half-written promtool at the cached path.
work="$(mktemp -d "$DEST_DIR/.install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Unpacks promtool from Debian's prometheus package into $work/promtool.
from_debian() {
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || return 1
    local apt=(apt-get -q -o APT::Sandbox::User=root)
    if ! (cd "$work" && "${apt[@]}" download prometheus >&2); then
        [[ "$(id -u)" == 0 ]] || return 1
        say "refreshing the package lists (apt-get update)"
        "${apt[@]}" update >&2 || return 1
        (cd "$work" && "${apt[@]}" download prometheus >&2) || return 1
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/deb" || return 1
    mv "$work/deb/usr/bin/promtool" "$work/promtool"
}

# Builds promtool from source at the pinned version into $work/promtool.
from_source() {
    command -v go >/dev/null 2>&1 || return 1
    local mod="$work/module" gomod
    mkdir -p "$mod"
    (
        cd "$mod"
        go mod init promtool-build >&2 2>&1
        gomod="$(go mod download -json "$MODULE@$PROMETHEUS_GO_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
        [[ -f "$gomod" ]] || exit 1
        # Prometheus' Go language version and replace directives (single-line and block form), exactly
        # as it pins them: the same build, and the Go build cache is shared with any earlier one.
        go mod edit -go="$(awk '$1 == "go" { print $2; exit }' "$gomod")"
        awk '/^replace \($/ { block = 1 } block || /^replace / { print } /^\)/ { block = 0 }' "$gomod" >>go.mod
        go get "$MODULE/cmd/promtool@$PROMETHEUS_GO_VERSION" >&2
        CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/promtool" "$MODULE/cmd/promtool" >&2
    )
}

start=$(date +%s)
case "$SOURCE" in
auto)
    if from_debian; then
        how="Debian package prometheus"
    else
        say "Debian package not available; building from source with Go (takes minutes)"
        from_source || die "no promtool: neither Debian's prometheus package nor a Go build ($MODULE@$PROMETHEUS_GO_VERSION) worked; set MCP_BROKER_PROMTOOL to a promtool binary"
        how="go build $MODULE@$PROMETHEUS_GO_VERSION"
    fi
    ;;
debian) from_debian || die "could not unpack promtool from Debian's prometheus package" && how="Debian package prometheus" ;;
go) from_source || die "go build of $MODULE/cmd/promtool@$PROMETHEUS_GO_VERSION failed" && how="go build $MODULE@$PROMETHEUS_GO_VERSION" ;;
*) die "SOURCE must be auto, debian or go, not '$SOURCE'" ;;
esac

runs "$work/promtool" || die "the promtool obtained from $how does not run"
mv -f "$work/promtool" "$PROMTOOL_BIN"
say "installed from $how in $(($(date +%s) - start))s: $PROMTOOL_BIN ($("$PROMTOOL_BIN" --version 2>&1 | head -1))"
echo "$PROMTOOL_BIN"
