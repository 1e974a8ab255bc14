"""Run the MCP conformance suite (`conformance server --suite all`) and compare two runs check by check.

A run writes one ``server-<scenario>-<timestamp>/checks.json`` per scenario (format in
docs/testing-tools.md §4). ``load_checks`` turns a results directory into
``{(scenario, check_id, occurrence): check}`` (INFO traces left out by default, their ids repeat);
``compare_runs`` lists every check whose status differs between a reference run (the fixture served
directly) and a candidate run (the same fixture behind the broker).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.fixtures import REPO_ROOT

CONFORMANCE_SH = REPO_ROOT / "scripts" / "conformance.sh"
DIR_RE = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")

CheckKey = tuple[str, str, int]
"""(scenario, check id, occurrence of that id within the scenario)."""


@dataclass
class ConformanceRun:
    url: str
    outdir: Path
    returncode: int
    summary_line: str
    stderr: str
    checks: dict[CheckKey, dict[str, Any]]
    info_checks: dict[CheckKey, dict[str, Any]]

    def counts(self) -> Counter[str]:
        return Counter(check["status"] for check in self.checks.values())

    def scenarios(self) -> set[str]:
        return {key[0] for key in self.checks} | {key[0] for key in self.info_checks}

    def describe(self) -> str:
        """Suite verdict plus every FAILURE/WARNING, for assertion messages."""
        lines = [f"{self.url}: exit {self.returncode}, {self.summary_line or '(no summary line)'}"]
        for (scenario, check_id, n), check in sorted(self.checks.items()):
            if check["status"] in ("FAILURE", "WARNING"):
                lines.append(f"  {check['status']} {scenario} [{check_id}#{n}] {_message(check)}")
        if self.stderr and not self.checks:
            lines.append(self.stderr[-3000:])
        return "\n".join(lines)


def run_conformance(url: str, outdir: Path, *extra: str, timeout: float = 120.0) -> ConformanceRun:
    """`scripts/conformance.sh URL OUTDIR --suite all` (Node 22) into a fresh OUTDIR; parse its checks."""
    if outdir.exists() and any(outdir.iterdir()):
        raise ValueError(f"{outdir} is not empty: use a fresh directory per run")
    outdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["bash", str(CONFORMANCE_SH), url, str(outdir), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode in (2, 3):
        suite_output = outdir / "suite-output.txt"
        tail = suite_output.read_text(errors="replace")[-3000:] if suite_output.exists() else ""
        raise RuntimeError(f"conformance.sh failed to run (exit {done.returncode}):\n{done.stderr}\n{tail}")
    return ConformanceRun(
        url=url,
        outdir=outdir,
        returncode=done.returncode,
        summary_line=done.stdout.strip(),
        stderr=done.stderr,
        checks=load_checks(outdir),
        info_checks=load_checks(outdir, only_info=True),
    )


def load_checks(
    outdir: Path, *, include_info: bool = False, only_info: bool = False
) -> dict[CheckKey, dict[str, Any]]:
    """{(scenario, check_id, occurrence): check} for every checks.json under `outdir`."""
    out: dict[CheckKey, dict[str, Any]] = {}
    for path in sorted(Path(outdir).glob("server-*/checks.json")):
        match = DIR_RE.match(path.parent.name)
        if match is None:
            continue
        seen: Counter[str] = Counter()
        for check in json.loads(path.read_text(encoding="utf-8")):
            is_info = check["status"] == "INFO"
            if (only_info and not is_info) or (is_info and not (include_info or only_info)):
                continue
            key = (match["scenario"], check["id"], seen[check["id"]])
            seen[check["id"]] += 1
            if key in out:
                raise ValueError(f"{outdir} holds more than one run of {match['scenario']}")
            out[key] = check
    return out


Tolerance = Callable[[dict[str, Any] | None, dict[str, Any] | None, "ConformanceRun"], bool]
"""(reference check, candidate check, candidate run) -> the difference is acceptable."""


@dataclass
class Difference:
    key: CheckKey
    reference: dict[str, Any] | None
    candidate: dict[str, Any] | None
    tolerated_because: str | None = None

    def line(self, reference_label: str = "direct", candidate_label: str = "broker") -> str:
        scenario, check_id, n = self.key
        line = (
            f"{scenario} [{check_id}#{n}]: {reference_label}={_status(self.reference)} "
            f"{candidate_label}={_status(self.candidate)}"
        )
        for label, check in ((reference_label, self.reference), (candidate_label, self.candidate)):
            message = _message(check) if check is not None else ""
            if message:
                line += f"\n    {label}: {message}"
        if self.tolerated_because:
            line += f"\n    tolerated: {self.tolerated_because}"
        return line


@dataclass
class Comparison:
    differences: list[Difference] = field(default_factory=list)

    @property
    def regressions(self) -> list[Difference]:
        return [d for d in self.differences if d.tolerated_because is None]

    @property
    def tolerated(self) -> list[Difference]:
        return [d for d in self.differences if d.tolerated_because is not None]

    def report(self, reference_label: str = "direct", candidate_label: str = "broker") -> str:
        parts = []
        if self.regressions:
            parts.append(f"{len(self.regressions)} check(s) differ:")
            parts.extend("  " + d.line(reference_label, candidate_label) for d in self.regressions)
        if self.tolerated:
            parts.append(f"{len(self.tolerated)} tolerated difference(s):")
            parts.extend("  " + d.line(reference_label, candidate_label) for d in self.tolerated)
        return "\n".join(parts) or "no differences"


def compare_runs(
    reference: ConformanceRun,
    candidate: ConformanceRun,
    tolerances: Mapping[tuple[str, str], tuple[str, Tolerance]] | None = None,
) -> Comparison:
    """Every non-INFO check whose status differs (a check missing on one side counts as MISSING).

    `tolerances` maps (scenario, check id) to (reason, predicate); a difference is tolerated only if
    its predicate accepts it. On the candidate side a check reported as INFO (i.e. not SUCCESS) is
    looked up in `candidate.info_checks` so the predicate can see its details.
    """
    comparison = Comparison()
    for key in sorted(reference.checks.keys() | candidate.checks.keys()):
        ref = reference.checks.get(key)
        cand = candidate.checks.get(key)
        if _status(ref) == _status(cand):
            continue
        if cand is None:
            cand_info = candidate.info_checks.get((key[0], key[1], 0))
            cand = cand_info if cand_info is not None else None
        difference = Difference(key, ref, cand)
        tolerance = (tolerances or {}).get((key[0], key[1]))
        if tolerance is not None and tolerance[1](ref, cand, candidate):
            difference.tolerated_because = tolerance[0]
        comparison.differences.append(difference)
    return comparison


def statuses(run: ConformanceRun, wanted: Iterable[str] = ("SUCCESS",)) -> set[CheckKey]:
    wanted = set(wanted)
    return {key for key, check in run.checks.items() if check["status"] in wanted}


def without_scenarios(run: ConformanceRun, scenarios: Iterable[str]) -> ConformanceRun:
    """A copy of `run` without the checks of `scenarios` (to compare the rest separately)."""
    drop = set(scenarios)
    return replace(
        run,
        checks={k: c for k, c in run.checks.items() if k[0] not in drop},
        info_checks={k: c for k, c in run.info_checks.items() if k[0] not in drop},
    )


def only_scenarios(run: ConformanceRun, scenarios: Iterable[str]) -> ConformanceRun:
    keep = set(scenarios)
    return without_scenarios(run, run.scenarios() - keep)


def responses_seen(run: ConformanceRun, scenario: str) -> list[dict[str, Any]]:
    """JSON-RPC responses the suite traced (INFO `details.body`) in a raw-HTTP scenario such as
    `server-sse-polling`, in order; empty if the tool's answer never arrived."""
    seen: list[dict[str, Any]] = []
    for (name, _check_id, _n), check in sorted(run.info_checks.items(), key=lambda kv: kv[1]["timestamp"]):
        body = (check.get("details") or {}).get("body")
        if not isinstance(body, dict) or name != scenario:
            continue
        if "id" in body and ("result" in body or "error" in body) and body not in seen:
            seen.append(body)
    return seen


def _status(check: dict[str, Any] | None) -> str:
    return "MISSING" if check is None else str(check["status"])


def _message(check: dict[str, Any] | None) -> str:
    if check is None:
        return ""
    message = check.get("errorMessage") or ""
    if not message and check["status"] != "SUCCESS":
        details = check.get("details")
        if isinstance(details, dict) and isinstance(details.get("message"), str):
            message = details["message"]
        else:
            message = check.get("description", "")
    return str(message)
