"""Decision cases: load case files, check them (file:line), build the broker's authorization requests.

A shorthand case's request is built by the broker's own `build_request` (so arguments are
summarised exactly as in production), for a `Principal`, over the resource document the
catalog snapshot holds for the named tool / prompt / resource / server. Format:
docs/policy-cli.md and schemas/policy-test.schema.json.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from broker.identity.principal import Principal
from broker.policy.arguments import ArgumentSummary
from broker.policy.engine import AuthzRequest
from broker.policy.request import ACTION_FOR_METHOD, LIST_ACTION_FOR_KIND, CallFacts, build_request
from broker.policytools.catalog import CATALOG_NAME, Snapshot, read_snapshot
from broker.policytools.common import Problem, ToolError, YamlDocument, load_yaml, shown
from broker.policytools.schemas import case_file_validator, schema_problems

FIXED_TIME: Final = datetime(2026, 1, 7, 10, 0, 0, tzinfo=UTC)
"""When a case happens unless it says otherwise: a Wednesday (weekday 2), 10:00 UTC."""
FACTS: Final = CallFacts(transport="streamable-http", protocol_version="2025-11-25", session="policy-test")
PRINCIPAL_DEFAULTS: Final[Mapping[str, Any]] = {
    "type": "User",
    "id": "tester",
    "tenant": None,
    "roles": [],
    "claims": {},
    "acting_for": None,
}
METHODS: Final[Mapping[str, str]] = {
    **ACTION_FOR_METHOD,
    **{f"{kind}/list": action for kind, action in LIST_ACTION_FOR_KIND.items()},
}
TARGETS: Final = ("tool", "prompt", "resource", "server", "resource_document")
TARGET_TYPE: Final = {"tool": "Tool", "prompt": "Prompt", "resource": "Resource", "server": "Server"}
ACTIONS_FOR_TYPE: Final[Mapping[str, tuple[str, ...]]] = {
    "Tool": ("call_tool", "approve", "self_approve"),
    "Resource": ("read_resource", "complete", "approve", "self_approve"),
    "Prompt": ("get_prompt", "complete", "approve", "self_approve"),
    "Server": ("list_tools", "list_resources", "list_prompts", "view_dashboard"),
}
SHORTHAND_KEYS: Final = frozenset(
    {"principal", "action", "method", *TARGETS, "arguments", "listing", "context"}
)


@dataclass(frozen=True)
class Case:
    file: Path
    line: int
    name: str
    request: AuthzRequest
    expect: str | None
    reasons: tuple[str, ...] = ()
    engines: tuple[str, ...] | None = None
    summary: ArgumentSummary | None = None
    """The argument summary build_request made (shorthand cases)."""

    @property
    def where(self) -> str:
        return f"{shown(self.file)}:{self.line}"

    def runs_on(self, engine: str) -> bool:
        return self.engines is None or engine in self.engines


@dataclass
class CaseSet:
    cases: list[Case] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def case_files(paths: Sequence[Path]) -> list[Path]:
    """The case files named or found (recursively, *.yaml / *.yml except catalog.yaml) under `paths`."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p
                for p in sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")])
                if p.name != CATALOG_NAME
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            if path.name == CATALOG_NAME:
                raise ToolError(f"{shown(path)} is the catalog snapshot, not a case file; give case files")
            found.append(path)
        else:
            raise ToolError(
                f"{shown(path)} does not exist; give case files or directories (default policy-tests/)"
            )
    unique = list(dict.fromkeys(found))
    if not unique:
        names = ", ".join(shown(p) for p in paths)
        raise ToolError(f"no case files (*.yaml) in {names}; write some (docs/policy-cli.md)")
    return unique


class SnapshotCache:
    """catalog.yaml files by path, read once; their problems reported once."""

    def __init__(self, override: Path | None) -> None:
        self.override = override
        self._loaded: dict[Path, Snapshot | None] = {}
        self.problems: list[Problem] = []

    def path_for(self, case_file: Path) -> Path:
        return self.override if self.override is not None else case_file.parent / CATALOG_NAME

    def get(self, case_file: Path) -> tuple[Path, Snapshot | None]:
        path = self.path_for(case_file)
        key = path.resolve()
        if key not in self._loaded:
            snapshot, problems = read_snapshot(path)
            self._loaded[key] = snapshot
            self.problems.extend(problems)
        return path, self._loaded[key]


def load_cases(paths: Sequence[Path], catalog: Path | None = None) -> CaseSet:
    """Every case of every case file under `paths`; each problem with its file:line."""
    result = CaseSet(files=case_files(paths))
    snapshots = SnapshotCache(catalog)
    for path in result.files:
        doc, problems = load_yaml(path)
        result.problems.extend(problems)
        if doc is None:
            continue
        cases, problems = cases_of(doc, path, snapshots)
        result.cases.extend(cases)
        result.problems.extend(problems)
    result.problems[:0] = snapshots.problems
    return result


def cases_of(doc: YamlDocument, path: Path, snapshots: SnapshotCache) -> tuple[list[Case], list[Problem]]:
    """The cases of one parsed case file; a case with a problem is reported, not run."""
    found = schema_problems(case_file_validator(), doc.data, doc)
    problems = [p for _, p in found]
    if any(len(p) < 2 or p[0] != "cases" for p, _ in found):
        return [], problems  # the file's shape or its defaults are wrong: no case can be trusted
    broken = {p[1] for p, _ in found}
    raw_cases: list[Any] = doc.data.get("cases") or []
    defaults: Mapping[str, Any] = doc.data.get("defaults") or {}
    problems.extend(_duplicate_names(doc, raw_cases))
    cases: list[Case] = []
    for index, raw in enumerate(raw_cases):
        if index in broken:
            continue
        case, case_problems = build_case(doc, path, index, raw, defaults, snapshots.get)
        problems.extend(case_problems)
        if case is not None:
            cases.append(case)
    problems.sort(key=lambda p: p.line or 0)
    return cases, problems


def _duplicate_names(doc: YamlDocument, raw_cases: Iterable[Any]) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for index, raw in enumerate(raw_cases):
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue
        line = doc.line_of(("cases", index, "name"))
        if name in first:
            problems.append(
                Problem(doc.source, line, f"duplicate case name {name!r} (first at line {first[name]})")
            )
        else:
            first[name] = line
    return problems


def build_case(
    doc: YamlDocument,
    path: Path,
    index: int,
    raw: Mapping[str, Any],
    defaults: Mapping[str, Any],
    snapshot_for: Callable[[Path], tuple[Path, Snapshot | None]],
) -> tuple[Case | None, list[Problem]]:
    """One schema-valid case as a Case, or the problems that keep it from running."""
    at: tuple[str | int, ...] = ("cases", index)
    line = doc.line_of(at)
    engines = tuple(raw.get("engines") or defaults.get("engines") or ())

    def make(request: AuthzRequest, summary: ArgumentSummary | None = None) -> Case:
        return Case(
            file=path,
            line=line,
            name=str(raw.get("name", f"case {index + 1}")),
            request=request,
            expect=raw.get("expect"),
            reasons=tuple(raw.get("reasons") or ()),
            engines=engines or None,
            summary=summary,
        )

    if "request" in raw:
        extra = sorted(set(raw) & SHORTHAND_KEYS)
        if extra:
            message = f"a case with `request` takes no {', '.join(extra)}: the request is used as it is"
            return None, [doc.problem((*at, extra[0]), message)]
        return make(copy.deepcopy(dict(raw["request"]))), []

    def problem(key: str, message: str) -> tuple[None, list[Problem]]:
        return None, [doc.problem((*at, key) if key else at, message)]

    targets = [t for t in TARGETS if t in raw]
    if len(targets) != 1:
        given = f" (got {', '.join(targets)})" if targets else ""
        return problem(
            "", f"give exactly one target: tool, prompt, resource, server or resource_document{given}"
        )
    target = targets[0]
    if "action" in raw and "method" in raw:
        return problem("method", "give action or method, not both")
    action = _action(raw) or _action(defaults) or "call_tool"

    if target == "resource_document":
        resource = copy.deepcopy(dict(raw["resource_document"]))
    else:
        name = str(raw[target])
        catalog_path, snapshot = snapshot_for(path)
        if snapshot is None:
            if not catalog_path.is_file():
                return problem(
                    target,
                    f"{target} {name!r} cannot be looked up: {shown(catalog_path)} does not exist; "
                    f"generate it with `mcp-broker policy catalog -c CONFIG -o {shown(catalog_path)}` "
                    "or give resource_document",
                )
            return problem(
                target, f"{target} {name!r} cannot be looked up: {shown(catalog_path)} has problems"
            )
        found = snapshot.lookup(target, name)
        if found is None:
            return problem(
                target,
                f"unknown {target} {name!r}: not in {snapshot.label}{snapshot.suggestion(target, name)}; "
                "regenerate the catalog (mcp-broker policy catalog) or give resource_document",
            )
        resource = found

    kind = str(resource.get("type"))
    if action not in ACTIONS_FOR_TYPE.get(kind, ()):
        fitting = ", ".join(ACTIONS_FOR_TYPE.get(kind, ()))
        key = "action" if "action" in raw else ("method" if "method" in raw else target)
        return problem(key, f"action {action} does not apply to a {kind} (use {fitting})")

    principal_doc = deep_merge(
        PRINCIPAL_DEFAULTS, defaults.get("principal") or {}, raw.get("principal") or {}
    )
    principal = Principal(
        type=principal_doc["type"],
        id=str(principal_doc["id"]),
        tenant=principal_doc["tenant"],
        roles=tuple(principal_doc["roles"] or ()),
        claims=dict(principal_doc["claims"] or {}),
        acting_for=principal_doc["acting_for"],
    )
    overrides = deep_merge(defaults.get("context") or {}, raw.get("context") or {})
    now = FIXED_TIME
    if "time" in overrides:
        try:
            now = datetime.fromisoformat(str(overrides["time"]).replace("Z", "+00:00")).astimezone(UTC)
        except ValueError as exc:
            return problem("context", f"context.time {overrides['time']!r} is not an RFC 3339 time: {exc}")
    arguments = raw["arguments"] if "arguments" in raw else defaults.get("arguments")
    listing = raw["listing"] if "listing" in raw else defaults.get("listing", False)
    request, summary = build_request(
        principal, action, resource, arguments, FACTS, listing=bool(listing), now=now
    )
    context = request["context"]
    for key, value in overrides.items():
        if key == "approval":
            context["approval"] = {**context["approval"], **value}
        elif key != "time":
            context[key] = value
    return make(request, summary), []


def _action(raw: Mapping[str, Any]) -> str | None:
    if raw.get("action"):
        return str(raw["action"])
    if raw.get("method"):
        return METHODS[str(raw["method"])]
    return None


def deep_merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; mappings merge recursively, everything else (lists too) is replaced."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = deep_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged
