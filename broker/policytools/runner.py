"""`policy test`: every case through the broker's engine adapters; failures and disagreements.

Each engine is started once and decides every case in batches. A case passes when every
engine it runs on gives the expected effect with the expected reason ids, and, when two
engines ran it, they agree: a disagreement fails the case even if one engine matches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.policy.decision import Decision
from broker.policytools.cases import Case, load_cases
from broker.policytools.common import EXIT_FINDINGS, EXIT_OK, Problem, shown
from broker.policytools.engines import PolicySet, decide_all, started_engines


@dataclass
class CaseResult:
    case: Case
    decisions: dict[str, Decision] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    disagreement: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures and self.disagreement is None


@dataclass
class SuiteReport:
    engines: tuple[str, ...]
    results: list[CaseResult]
    problems: list[Problem]
    skipped: int = 0

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)

    @property
    def disagreements(self) -> int:
        return sum(1 for r in self.results if r.disagreement)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if not self.failed and not self.problems else EXIT_FINDINGS

    def summary(self) -> str:
        parts = [f"{self.passed} passed", f"{self.failed} failed"]
        if len(self.engines) > 1:
            parts.append(f"{self.disagreements} disagreement{'s' if self.disagreements != 1 else ''}")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.problems:
            parts.append(f"{len(self.problems)} case-file problem{'s' if len(self.problems) != 1 else ''}")
        return ", ".join(parts)


def reason_text(decision: Decision) -> str:
    if decision.error:
        return f"policy_error: {decision.error[:300]}"
    return ", ".join(r.id for r in decision.reasons) or "none"


def effect_label(decision: Decision) -> str:
    return f"{decision.effect.value} (policy_error)" if decision.error else decision.effect.value


def judge(case: Case, engine: str, decision: Decision) -> str | None:
    """The failure line of `case` under `engine`, or None when it got what it expects."""
    got = decision.effect.value
    ids = {r.id for r in decision.reasons}
    missing = [r for r in case.reasons if r not in ids]
    if got == case.expect and not missing:
        return None
    wanted = case.expect or "?"
    if missing and got == case.expect:
        wanted = f"{case.expect} with reasons {', '.join(missing)}"
    return (
        f"{case.where}: {case.name}: expected {wanted}, got {effect_label(decision)} "
        f"(reasons: {reason_text(decision)}) [{engine}]"
    )


async def run_cases(
    cases: Sequence[Case], policy_set: PolicySet, names: Sequence[str], opa: str | None
) -> list[CaseResult]:
    results = [CaseResult(case) for case in cases]
    async with started_engines(names, policy_set, opa) as engines:
        for name, engine in engines.items():
            chosen = [r for r in results if r.case.runs_on(name)]
            decisions = await decide_all(engine, [r.case.request for r in chosen])
            for result, decision in zip(chosen, decisions, strict=True):
                result.decisions[name] = decision
    for result in results:
        for name, decision in result.decisions.items():
            failure = judge(result.case, name, decision)
            if failure:
                result.failures.append(failure)
        effects = {n: d.effect.value for n, d in result.decisions.items()}
        if len(set(effects.values())) > 1:
            pairs = " ".join(f"{n}={e}" for n, e in effects.items())
            result.disagreement = f"DISAGREE {result.case.where}: {result.case.name}: {pairs}"
    return results


async def run_suite(
    paths: Sequence[Path], policy_set: PolicySet, names: Sequence[str], opa: str | None, catalog: Path | None
) -> SuiteReport:
    loaded = load_cases(paths, catalog)
    runnable = [c for c in loaded.cases if any(c.runs_on(n) for n in names)]
    results = await run_cases(runnable, policy_set, names, opa) if runnable else []
    return SuiteReport(tuple(names), results, loaded.problems, skipped=len(loaded.cases) - len(runnable))


def text_lines(report: SuiteReport, verbose: bool) -> list[str]:
    lines = [str(p) for p in report.problems]
    for result in report.results:
        lines.extend(result.failures)
        if result.disagreement:
            lines.append(result.disagreement)
        if verbose and result.passed:
            effects = " ".join(f"{n}={d.effect.value}" for n, d in result.decisions.items())
            lines.append(f"ok {result.case.where}: {result.case.name} [{effects}]")
    lines.append(report.summary())
    return lines


def json_report(report: SuiteReport) -> str:
    cases: list[dict[str, Any]] = []
    for result in report.results:
        case = result.case
        cases.append(
            {
                "file": shown(case.file),
                "line": case.line,
                "name": case.name,
                "expect": case.expect,
                "reasons": list(case.reasons),
                "status": "pass" if result.passed else "fail",
                "decisions": {
                    name: {
                        "effect": d.effect.value,
                        "reasons": [r.to_json() for r in d.reasons],
                        "error": d.error,
                        "policy_version": d.policy_version,
                    }
                    for name, d in result.decisions.items()
                },
                "failures": result.failures,
                "disagreement": result.disagreement,
            }
        )
    document = {
        "engines": list(report.engines),
        "summary": {
            "passed": report.passed,
            "failed": report.failed,
            "disagreements": report.disagreements,
            "skipped": report.skipped,
            "problems": len(report.problems),
        },
        "problems": [{"file": p.file, "line": p.line, "message": p.message} for p in report.problems],
        "cases": cases,
    }
    return json.dumps(document, indent=2, sort_keys=True)
