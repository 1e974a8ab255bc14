"""`policy fmt`: format Cedar (cedarpy.format_policies, only when nothing is lost) and Rego (opa fmt)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from broker.policytools.cedarfiles import cedar_files, format_text
from broker.policytools.common import EXIT_FINDINGS, EXIT_OK, ToolError, shown, write_atomically
from broker.policytools.engines import PolicySet, find_opa
from broker.policytools.rego import excluded, format_in_place, policy_files, unformatted


@dataclass
class FmtReport:
    check: bool
    changed: list[Path] = field(default_factory=list)
    unchanged: int = 0
    refused: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_FINDINGS if self.refused or (self.check and self.changed) else EXIT_OK

    def lines(self) -> list[str]:
        if self.check:
            out = [f"{shown(p)}: not formatted; run mcp-broker policy fmt" for p in self.changed]
        else:
            out = [f"formatted {shown(p)}" for p in self.changed]
        out.extend(self.refused)
        verb = "would be formatted" if self.check else "formatted"
        files = f"{len(self.changed)} file{'s' if len(self.changed) != 1 else ''}"
        summary = f"{files} {verb}, {self.unchanged} already formatted"
        if self.refused:
            summary += f", {len(self.refused)} not formatted (see above)"
        out.append(summary)
        return out


def format_policies(
    policy_set: PolicySet, *, check: bool, excludes: Sequence[str], opa: str | None
) -> FmtReport:
    if not policy_set.policies.is_dir():
        raise ToolError(f"the policy directory {policy_set.label} does not exist; pass --policies DIR")
    report = FmtReport(check)
    for path in cedar_files(policy_set):
        if excluded(path, policy_set.policies, excludes):
            continue
        text = path.read_text(encoding="utf-8")
        formatted, why = format_text(text)
        if formatted is None:
            report.refused.append(f"{shown(path)}: {why}")
        elif formatted == text:
            report.unchanged += 1
        else:
            report.changed.append(path)
            if not check:
                write_atomically(path, formatted)
    rego = policy_files(policy_set.policies / "rego", ".rego", policy_set.policies, excludes)
    if rego:
        binary = find_opa(opa)
        changed, unreadable = unformatted(binary, rego)
        report.refused.extend(f"{line}; not formatted" for line in unreadable)
        report.unchanged += len(rego) - len(changed) - len(unreadable)
        report.changed.extend(changed)
        if not check:
            format_in_place(binary, changed)
    return report
