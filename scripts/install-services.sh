#!/usr/bin/env bash
# Install the services the tests start themselves (Debian packages): redis-server for now.
#
#   scripts/install-services.sh     # a fast no-op when everything is on PATH
#
# The tests start their own redis-server on 127.0.0.1 on a free port and stop it again; this script
# only puts the binary there. It does not start or enable any system service. Needs root (apt-get),
# which the project's machines and CI have.
set -euo pipefail

say() { echo "install-services: $*" >&2; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)

if [[ ${#missing[@]} -eq 0 ]]; then
    say "present: redis-server ($(redis-server --version | awk '{print $3}'))"
    exit 0
fi

say "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
command -v redis-server >/dev/null 2>&1 || { say "ERROR: redis-server still not on PATH"; exit 1; }
say "installed: redis-server ($(redis-server --version | awk '{print $3}'))"
