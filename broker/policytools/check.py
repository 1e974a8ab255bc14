"""`policy check`: everything about the policies that can be wrong before a decision is made.

Cedar: the broker's loader (parse, `@id` rules, strict validation against the schema) and
the format check. Rego: `opa check --strict`, `opa fmt`, and `opa test` when there are
`*_test.rego` files. Cases: every case file against its schema and the catalog. Every
problem is listed, not just the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from broker.policytools.cases import load_cases
from broker.policytools.cedarfiles import cedar_files, format_text, validation_problems
from broker.policytools.common import EXIT_FINDINGS, EXIT_OK, ToolError, shown
from broker.policytools.engines import PolicySet, find_opa
from broker.policytools.rego import check_strict, excluded, policy_files, run_tests, unformatted

NOT_FORMATTED = "not formatted; run mcp-broker policy fmt"


@dataclass
class CheckReport:
    problems: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, found: Sequence[str]) -> None:
        self.problems.setdefault(section, []).extend(found)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.problems.values())

    @property
    def exit_code(self) -> int:
        return EXIT_FINDINGS if self.count else EXIT_OK

    def lines(self) -> list[str]:
        out = [p for found in self.problems.values() for p in found]
        per = ", ".join(f"{s} {len(v)}" for s, v in self.problems.items() if v)
        checked = "; ".join(self.notes)
        if self.count:
            out.append(
                f"policy check: {self.count} problem{'s' if self.count != 1 else ''} ({per}); {checked}"
            )
        else:
            out.append(f"policy check: OK; {checked}")
        return out


def check_cedar(policy_set: PolicySet, excludes: Sequence[str], report: CheckReport) -> None:
    files = cedar_files(policy_set)
    if not files:
        report.notes.append("cedar: no cedar/ files")
        return
    report.add("cedar", validation_problems(policy_set))
    for path in files:
        if excluded(path, policy_set.policies, excludes):
            continue
        text = path.read_text(encoding="utf-8")
        formatted, why = format_text(text)
        if formatted is not None and formatted != text:
            report.add("cedar", [f"{shown(path)}: {NOT_FORMATTED}"])
        elif formatted is None and why and not why.startswith("cannot be parsed"):
            report.add("cedar", [f"{shown(path)}: not formatted, and {why}"])
    report.notes.append(f"cedar: {len(files)} file{'s' if len(files) != 1 else ''}")


def check_rego(policy_set: PolicySet, excludes: Sequence[str], opa: str | None, report: CheckReport) -> None:
    files = policy_files(policy_set.policies / "rego", ".rego", policy_set.policies, excludes)
    if not files:
        report.notes.append("rego: no rego/ files")
        return
    binary = find_opa(opa)
    strict = check_strict(binary, files)
    report.add("rego", strict)
    changed, unreadable = unformatted(binary, files)
    report.add("rego", [f"{shown(p)}: {NOT_FORMATTED}" for p in changed])
    if not strict:
        report.add("rego", unreadable)
    tests = [p for p in files if p.name.endswith("_test.rego")]
    if tests and not strict:
        data = [
            p
            for suffix in (".json", ".yaml", ".yml")
            for p in policy_files(policy_set.policies / "rego", suffix, policy_set.policies, excludes)
        ]
        report.add("rego", run_tests(binary, [*files, *data]))
    note = f"rego: {len(files)} file{'s' if len(files) != 1 else ''}"
    report.notes.append(note + (f" ({len(tests)} with tests)" if tests else ""))


def check_cases(paths: Sequence[Path] | None, catalog: Path | None, report: CheckReport) -> None:
    if paths is None:
        default = Path("policy-tests")
        if not default.is_dir():
            report.notes.append("cases: no policy-tests/")
            return
        paths = [default]
    loaded = load_cases(paths, catalog)
    report.add("cases", [str(p) for p in loaded.problems])
    report.notes.append(
        f"cases: {len(loaded.cases)} in {len(loaded.files)} file{'s' if len(loaded.files) != 1 else ''}"
    )


def check_all(
    policy_set: PolicySet,
    excludes: Sequence[str],
    opa: str | None,
    cases: Sequence[Path] | None,
    catalog: Path | None,
) -> CheckReport:
    if not policy_set.policies.is_dir():
        raise ToolError(f"the policy directory {policy_set.label} does not exist; pass --policies DIR")
    report = CheckReport()
    check_cedar(policy_set, excludes, report)
    check_rego(policy_set, excludes, opa, report)
    check_cases(cases, catalog, report)
    return report
