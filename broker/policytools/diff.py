"""`policy diff`: which decisions a change of policies changes.

The same requests (the decision cases, plus the requests of an audit log) are decided by
the policies at a git ref and by the working tree's, each side through the broker's
engine adapters. The ref's `policies/` and Cedar schema are extracted with `git archive` /
`git show` into a temporary directory: the working tree is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.policy.decision import Decision
from broker.policy.engine import AuthzRequest
from broker.policytools.cases import load_cases
from broker.policytools.common import EXIT_FINDINGS, EXIT_OK, Problem, ToolError, YamlDocument, shown
from broker.policytools.engines import PolicySet, decide_all, started_engines
from broker.policytools.runner import effect_label
from broker.policytools.schemas import request_validator, schema_problems
from broker.progress import ProgressCallback

DECIDE_BATCH = 500  # requests per decide_all call: its own batch size, so one OPA query each


@dataclass(frozen=True)
class Item:
    """One request both sides decide."""

    source: str
    label: str
    request: AuthzRequest
    engines: tuple[str, ...] | None = None

    def runs_on(self, engine: str) -> bool:
        return self.engines is None or engine in self.engines


@dataclass
class Change:
    item: Item
    transitions: dict[str, tuple[Decision, Decision]]

    def text(self) -> str:
        labels = {n: f"{effect_label(b)} → {effect_label(a)}" for n, (b, a) in self.transitions.items()}
        if len(set(labels.values())) == 1:
            return f"{next(iter(labels.values()))} [{', '.join(labels)}]"
        return "; ".join(f"{n}: {t}" for n, t in labels.items())

    def kinds(self) -> set[str]:
        return {f"{b.effect.value} → {a.effect.value}" for b, a in self.transitions.values()}


@dataclass
class DiffReport:
    ref: str
    engines: tuple[str, ...]
    items: list[Item]
    changes: list[Change]
    sources: dict[str, int] = field(default_factory=dict)
    """How many requests came from where (cases, the audit log)."""
    skipped_log_lines: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_FINDINGS if self.changes else EXIT_OK

    def groups(self) -> list[tuple[str, str, list[Change]]]:
        grouped: dict[tuple[str, str], list[Change]] = {}
        for change in self.changes:
            grouped.setdefault(
                (target_of(change.item.request), principal_of(change.item.request)), []
            ).append(change)
        return [(t, p, grouped[(t, p)]) for t, p in sorted(grouped)]

    def transition_counts(self) -> str:
        counted: Counter[str] = Counter()
        for change in self.changes:
            counted.update(change.kinds())
        return ", ".join(f"{n} {k}" for k, n in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0])))

    def scope(self) -> str:
        origin = ", ".join(f"{n} {what}" for what, n in self.sources.items())
        n = self.skipped_log_lines
        skipped = f", {n} log line{'s' if n != 1 else ''} without a request skipped" if n else ""
        return (
            f"{len(self.items)} request{'s' if len(self.items) != 1 else ''} ({origin}{skipped}) "
            f"under {', '.join(self.engines)}; base {self.ref} vs working tree"
        )

    def summary(self) -> str:
        if not self.changes:
            return f"no decision changes: {self.scope()}"
        n = len(self.changes)
        groups = len(self.groups())
        return (
            f"{n} decision{'s' if n != 1 else ''} changed ({self.transition_counts()}) in "
            f"{groups} group{'s' if groups != 1 else ''}; {self.scope()}"
        )


def target_of(request: AuthzRequest) -> str:
    resource = request.get("resource") or {}
    return f"{resource.get('type', '?')} {resource.get('id', '?')}"


def principal_of(request: AuthzRequest) -> str:
    principal = request.get("principal") or {}
    text = f"{principal.get('type', '?')} {principal.get('id', '?')}"
    details = []
    if principal.get("roles"):
        details.append(",".join(principal["roles"]))
    if principal.get("tenant"):
        details.append(f"tenant {principal['tenant']}")
    return text + (f" [{'; '.join(details)}]" if details else "")


# -- inputs ----------------------------------------------------------------------------------------


def case_items(paths: Sequence[Path], catalog: Path | None) -> list[Item]:
    loaded = load_cases(paths, catalog)
    if loaded.problems:
        raise ToolError(
            "the case files have problems (see above); fix them (mcp-broker policy test lists them too)",
            details=[str(p) for p in loaded.problems],
        )
    return [Item(c.where, c.name, c.request, c.engines) for c in loaded.cases]


def log_items(path: Path) -> tuple[list[Item], int]:
    """The requests of a JSON Lines audit log: each line's `request` member (a full request document)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolError(f"cannot read the audit log {shown(path)}: {exc}") from None
    items: list[Item] = []
    problems: list[Problem] = []
    skipped = 0
    validator = request_validator()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            problems.append(Problem(shown(path), number, f"not JSON: {exc}"))
            continue
        if not isinstance(record, dict) or "request" not in record:
            skipped += 1
            continue
        doc = YamlDocument(shown(path), record, {(): number})
        found = schema_problems(validator, record["request"], doc, ("request",))
        if found:
            problems.extend(p for _, p in found)
            continue
        request = record["request"]
        items.append(Item(f"{shown(path)}:{number}", str(request.get("action", "")), request))
    if problems:
        raise ToolError(
            f"the audit log {shown(path)} has lines that are not authorization requests (see above)",
            details=[str(p) for p in problems],
        )
    return items, skipped


# -- the base side ---------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"cannot run git: {exc}") from None


@contextlib.contextmanager
def policies_at(ref: str, head: PolicySet) -> Iterator[PolicySet]:
    """The policies (and Cedar schema) at `ref`, extracted into a temporary directory."""
    policies = head.policies.resolve()
    found = _git(policies if policies.is_dir() else Path.cwd(), "rev-parse", "--show-toplevel")
    if found.returncode != 0:
        raise ToolError(f"{head.label} is not in a git repository; policy diff compares with a git ref")
    root = Path(found.stdout.decode().strip()).resolve()
    if _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise ToolError(f"unknown git ref {ref!r}; fetch it first (git fetch origin) or name a commit")
    try:
        relative = policies.relative_to(root)
    except ValueError:
        raise ToolError(f"{head.label} is outside the git repository {root}") from None
    archive = _git(root, "archive", "--format=tar", ref, "--", relative.as_posix())
    if archive.returncode != 0:
        raise ToolError(f"{relative.as_posix()}/ does not exist at {ref}; nothing to compare with")
    with tempfile.TemporaryDirectory(prefix="mcp-broker-diff-") as tmp:
        base = Path(tmp)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(base, filter="data")
        schema = head.schema.resolve()
        try:
            schema_rel = schema.relative_to(root)
        except ValueError:
            schema_rel = None  # a schema outside the repository is the same on both sides
        if schema_rel is not None:
            shown_schema = _git(root, "show", f"{ref}:{schema_rel.as_posix()}")
            if shown_schema.returncode == 0:
                schema = base / schema_rel
                schema.parent.mkdir(parents=True, exist_ok=True)
                schema.write_bytes(shown_schema.stdout)
        yield PolicySet(base / relative, schema, f"{relative.as_posix()}/ at {ref}")


# -- comparing -------------------------------------------------------------------------------------


class _DecisionCount:
    """Decisions made so far on both sides, for a progress callback (both sides run at once)."""

    def __init__(self, total: int, progress: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


async def _decide(
    items: Sequence[Item],
    policy_set: PolicySet,
    names: Sequence[str],
    opa: str | None,
    count: _DecisionCount | None = None,
) -> dict[str, dict[int, Decision]]:
    decided: dict[str, dict[int, Decision]] = {}
    async with started_engines(names, policy_set, opa) as engines:
        for name, engine in engines.items():
            chosen = [i for i, item in enumerate(items) if item.runs_on(name)]
            decisions: list[Decision] = []
            # decide_all's own batches (one OPA query each), counted one batch at a time
            for start in range(0, len(chosen), DECIDE_BATCH):
                batch = chosen[start : start + DECIDE_BATCH]
                decisions += await decide_all(engine, [items[i].request for i in batch], DECIDE_BATCH)
                if count is not None:
                    count.add(len(batch))
            decided[name] = dict(zip(chosen, decisions, strict=True))
    return decided


async def compare(
    items: Sequence[Item],
    base: PolicySet,
    head: PolicySet,
    names: Sequence[str],
    opa: str | None,
    progress: ProgressCallback | None = None,
) -> list[Change]:
    """The items whose decision differs; `progress(done, total)` counts decisions on both sides."""
    total = 2 * sum(1 for name in names for item in items if item.runs_on(name))
    count = _DecisionCount(total, progress) if progress is not None else None
    before, after = await asyncio.gather(
        _decide(items, base, names, opa, count), _decide(items, head, names, opa, count)
    )
    changes = []
    for index, item in enumerate(items):
        transitions = {
            name: (before[name][index], after[name][index])
            for name in names
            if index in before[name] and before[name][index].effect is not after[name][index].effect
        }
        if transitions:
            changes.append(Change(item, transitions))
    return changes


# -- output ----------------------------------------------------------------------------------------


def text_lines(report: DiffReport) -> list[str]:
    lines = []
    for target, principal, changes in report.groups():
        lines.append(f"{target} · {principal}: {len(changes)} changed")
        for change in changes:
            label = f"{change.item.label}: " if change.item.label else ""
            lines.append(f"  {change.item.source}: {label}{change.text()}")
    lines.append(report.summary())
    return lines


MARKDOWN_LIMIT = 60_000
"""Characters of markdown at most: a GitHub comment holds 65,536."""


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: DiffReport) -> str:
    out = ["### Policy decision changes", ""]
    if not report.changes:
        out.append(f"No decision changes: {_md(report.scope())}.")
        return "\n".join(out) + "\n"
    out.append(
        f"**{len(report.changes)} of {len(report.items)} requests change** "
        f"({_md(report.transition_counts())}), base `{_md(report.ref)}` vs this change, "
        f"engines {', '.join(report.engines)}."
    )
    size = sum(len(line) + 1 for line in out)
    shown_changes = 0
    for target, principal, changes in report.groups():
        section = ["", f"#### `{_md(target)}` · {_md(principal)} — {len(changes)}", ""]
        section.append("| request | " + " | ".join(report.engines) + " |")
        section.append("|---|" + "---|" * len(report.engines))
        for change in changes:
            label = f" {change.item.label}" if change.item.label else ""
            cells = []
            for name in report.engines:
                if name in change.transitions:
                    b, a = change.transitions[name]
                    cells.append(f"**{effect_label(b)} → {effect_label(a)}**")
                else:
                    cells.append("unchanged" if change.item.runs_on(name) else "—")
            section.append(f"| `{_md(change.item.source)}`{_md(label)} | " + " | ".join(cells) + " |")
        section_size = sum(len(line) + 1 for line in section)
        if size + section_size > MARKDOWN_LIMIT:
            left = len(report.changes) - shown_changes
            out += ["", f"… and {left} more changed decisions: run `mcp-broker policy diff` for all of them."]
            break
        out += section
        size += section_size
        shown_changes += len(changes)
    out += ["", f"<sub>{_md(report.summary())}</sub>"]
    return "\n".join(out) + "\n"


def json_report(report: DiffReport) -> str:
    document: dict[str, Any] = {
        "base": report.ref,
        "engines": list(report.engines),
        "requests": len(report.items),
        "sources": report.sources,
        "changes": [
            {
                "source": c.item.source,
                "label": c.item.label,
                "target": target_of(c.item.request),
                "principal": principal_of(c.item.request),
                "transitions": {
                    n: {"before": b.effect.value, "after": a.effect.value, "after_error": a.error}
                    for n, (b, a) in c.transitions.items()
                },
            }
            for c in report.changes
        ],
        "summary": report.summary(),
    }
    return json.dumps(document, indent=2, sort_keys=True)


async def run_diff(
    ref: str,
    head: PolicySet,
    names: Sequence[str],
    opa: str | None,
    case_paths: Sequence[Path] | None,
    catalog: Path | None,
    audit_log: Path | None,
    progress: ProgressCallback | None = None,
) -> DiffReport:
    """`progress(done, total)`: decisions made of those needed (for the CLI's progress bar)."""
    items: list[Item] = []
    sources: dict[str, int] = {}
    if case_paths is not None:
        found = case_items(case_paths, catalog)
        items += found
        sources["cases"] = len(found)
    skipped = 0
    if audit_log is not None:
        logged, skipped = log_items(audit_log)
        items += logged
        sources[f"from {shown(audit_log)}"] = len(logged)
    head.require(names)
    with policies_at(ref, head) as base:
        changes = await compare(items, base, head, names, opa, progress)
    return DiffReport(ref, tuple(names), items, changes, sources, skipped)
