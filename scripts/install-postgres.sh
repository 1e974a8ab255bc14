#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, postgres, pg_ctl) are installed; print their directory.
#
#   scripts/install-postgres.sh               # install Debian's `postgresql` if needed; print the bin dir
#   PG_BIN="$(scripts/install-postgres.sh)"   # ... and use it
#
# The scale-out tests (tests/integration/stores) run a throwaway server of their own with these
# binaries (tests/support/postgres.py): initdb into a temporary directory, 127.0.0.1 only, stopped at
# the end. Nothing here starts a server. When the package is already installed this is a directory
# lookup, well under a second.
#
# Debian puts the binaries in /usr/lib/postgresql/<major>/bin (only psql & co. are on PATH); the newest
# major version present wins. Installing needs root (CI runs as root); the package is told not to
# create and start its own "main" cluster, which nothing here uses.
# Progress goes to stderr, the directory (one line) to stdout.
set -euo pipefail

say() { echo "install-postgres: $*" >&2; }
die() {
    echo "install-postgres: ERROR: $*" >&2
    exit 1
}

# Prints the newest /usr/lib/postgresql/<major>/bin holding initdb, postgres and pg_ctl, or nothing.
find_bin_dir() {
    local dir best="" best_major=-1 major
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/postgres" && -x "$dir/pg_ctl" ]] || continue
        major="$(basename "$(dirname "$dir")")"
        [[ "$major" =~ ^[0-9]+$ ]] || continue
        if ((major > best_major)); then
            best_major=$major
            best=$dir
        fi
    done
    echo "$best"
}

bin_dir="$(find_bin_dir)"
if [[ -n "$bin_dir" ]]; then
    say "found: $bin_dir"
    echo "$bin_dir"
    exit 0
fi

[[ "$(id -u)" == 0 ]] ||
    die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin; install them as root: apt-get install -y postgresql"
command -v apt-get >/dev/null 2>&1 ||
    die "PostgreSQL server binaries not found and apt-get is not available (not Debian?): install PostgreSQL >= 13"

# Debian's package would create and start a "main" cluster on port 5432; the tests run their own.
mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/mcp-authz-broker.conf

say "installing Debian's postgresql package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2 || die "apt-get update failed"
apt-get install -y -q --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"

bin_dir="$(find_bin_dir)"
[[ -n "$bin_dir" ]] || die "postgresql installed, but no /usr/lib/postgresql/*/bin with initdb, postgres and pg_ctl"
say "installed: $bin_dir"
echo "$bin_dir"
