"""`policy explain`: one request's decision, the policies that determined it and what the engine saw."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.policy.cedar import argument_tags
from broker.policy.cedar_source import read_policy_files
from broker.policy.decision import Decision
from broker.policy.engine import AuthzRequest
from broker.policytools.cases import Case, SnapshotCache, cases_of
from broker.policytools.common import ToolError, YamlDocument, load_yaml, shown
from broker.policytools.diff import principal_of, target_of
from broker.policytools.engines import PolicySet, started_engines
from broker.policytools.schemas import request_validator, schema_problems

REQUEST_KEYS = frozenset({"principal", "action", "resource", "context"})
SUMMARY_KEYS = ("arguments", "argument_digest", "paths", "hosts", "argument_limits", "problems")


@dataclass
class Subject:
    request: AuthzRequest
    case: Case | None


def load_subject(path: Path, case_name: str | None, catalog: Path | None) -> Subject:
    """A full authorization request document, a single case, or one case (--case) of a case file."""
    doc, problems = load_yaml(path)
    if doc is None or problems:
        raise ToolError(f"{shown(path)} cannot be read (see above)", details=[str(p) for p in problems])
    data = doc.data
    if not isinstance(data, dict):
        raise ToolError(f"{shown(path)} must hold a request document or a case (a mapping)")
    if set(data) == REQUEST_KEYS:
        found = schema_problems(request_validator(), data, doc)
        if found:
            raise ToolError(
                f"{shown(path)} is not a valid authorization request (see above; "
                "schemas/authz-request.schema.json)",
                details=[str(p) for _, p in found],
            )
        return Subject(data, None)
    if "cases" not in data:
        single = {"name": path.name, "expect": "allow", **data}
        lines = {("cases", 0, *k): v for k, v in doc.lines.items()}
        lines[("cases", 0)] = doc.lines.get((), 1)
        doc = YamlDocument(doc.source, {"cases": [single]}, lines)
        case_name = str(single["name"])
    cases, problems = cases_of(doc, path, SnapshotCache(catalog))
    names = [c.name for c in cases]
    if case_name is None and len(cases) == 1 and not problems:
        case_name = names[0]
    if case_name is None:
        raise ToolError(
            f"{shown(path)} has {len(doc.data.get('cases') or [])} cases; pick one with --case NAME"
        )
    chosen = next((c for c in cases if c.name == case_name), None)
    if chosen is None:
        raise ToolError(
            f"no runnable case named {case_name!r} in {shown(path)}"
            + (" (see the problems above)" if problems else f"; cases: {', '.join(names)}"),
            details=[str(p) for p in problems],
        )
    if "expect" not in data and "cases" not in data:
        chosen = Case(
            chosen.file, chosen.line, chosen.name, chosen.request, None, chosen.reasons, chosen.engines
        )
    return Subject(chosen.request, chosen)


def cedar_locations(policy_set: PolicySet) -> dict[str, str]:
    """Cedar @id → file:line (relative to the working directory)."""
    files, _ = read_policy_files(policy_set.policies / "cedar", Path.cwd())
    if files is None:
        return {}
    return {s.policy_id: s.where(Path.cwd()) for s in files.sources if s.policy_id}


def rego_mentions(policy_set: PolicySet, ids: Sequence[str]) -> dict[str, str]:
    """Reason id → the first non-test .rego line that has it as a string (where a rule names it)."""
    found: dict[str, str] = {}
    folder = policy_set.policies / "rego"
    files = (
        [p for p in sorted(folder.rglob("*.rego")) if not p.name.endswith("_test.rego")]
        if folder.is_dir()
        else []
    )
    for reason in ids:
        pattern = re.compile(r'"' + re.escape(reason) + r'"')
        for path in files:
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if pattern.search(line):
                    found[reason] = f"{shown(path.resolve())}:{number}"
                    break
            if reason in found:
                break
    return found


async def explain(
    subject: Subject, policy_set: PolicySet, names: Sequence[str], opa: str | None
) -> dict[str, Any]:
    request = subject.request
    async with started_engines(names, policy_set, opa) as engines:
        decisions: dict[str, Decision] = {n: await e.decide(request) for n, e in engines.items()}
    cedar_where = cedar_locations(policy_set) if "cedar" in decisions else {}
    rego_where = (
        rego_mentions(policy_set, [r.id for r in decisions["opa"].reasons]) if "opa" in decisions else {}
    )
    context = request.get("context") or {}
    result: dict[str, Any] = {
        "request": request,
        "summary": {k: context.get(k) for k in SUMMARY_KEYS},
        "decisions": {},
    }
    if "cedar" in decisions:
        result["cedar_argument_tags"] = argument_tags(context.get("arguments"))
    for name, decision in decisions.items():
        where = cedar_where if name == "cedar" else rego_where
        result["decisions"][name] = {
            "effect": decision.effect.value,
            "policy_version": decision.policy_version,
            "error": decision.error,
            "reasons": [{**r.to_json(), "where": where.get(r.id)} for r in decision.reasons],
        }
    if subject.case is not None:
        case = subject.case
        result["case"] = {
            "where": case.where,
            "name": case.name,
            "expect": case.expect,
            "reasons": list(case.reasons),
        }
    return result


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def text_lines(result: dict[str, Any]) -> list[str]:
    request = result["request"]
    context = request.get("context") or {}
    lines = [f"request: {principal_of(request)} · {request.get('action')} · {target_of(request)}"]
    if "case" in result:
        case = result["case"]
        lines[0] += f"  (case {case['name']!r}, {case['where']})"
    summary = result["summary"]
    lines.append("arguments as the engines saw them:")
    lines.append(f"  arguments: {_compact(summary['arguments'])}")
    for key in ("paths", "hosts", "problems", "argument_limits"):
        lines.append(f"  {key}: {_compact(summary[key])}")
    lines.append(f"  argument_digest: {summary['argument_digest']}")
    if "cedar_argument_tags" in result:
        lines.append(f"  cedar tags: {_compact(result['cedar_argument_tags'])}")
    other = {k: v for k, v in context.items() if k not in SUMMARY_KEYS}
    lines.append(f"context: {_compact(other)}")
    for name, decision in result["decisions"].items():
        lines.append(f"{name}: {decision['effect']} (policy version {decision['policy_version']})")
        if decision["error"]:
            lines.append(f"  policy_error: {decision['error']}")
            continue
        for reason in decision["reasons"]:
            where = f"  {reason['where']}" if reason.get("where") else ""
            message = f"  {reason['message']}" if reason.get("message") else ""
            lines.append(f"  {reason['id']}{where}{message}")
    case = result.get("case")
    if case and case["expect"]:
        verdicts = []
        for name, decision in result["decisions"].items():
            ids = {r["id"] for r in decision["reasons"]}
            ok = decision["effect"] == case["expect"] and all(r in ids for r in case["reasons"])
            verdicts.append(f"{name} {'as expected' if ok else 'NOT as expected'}")
        wanted = case["expect"] + (f" with reasons {', '.join(case['reasons'])}" if case["reasons"] else "")
        lines.append(f"expected: {wanted}: {'; '.join(verdicts)}")
    return lines
