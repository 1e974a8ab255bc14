"""The obligations the registry acts on, from a policy decision or from the config.

Two obligation types (everything else in `Decision.obligations` belongs to someone else and
is ignored here):

```json
{"type": "redact", "detectors": ["secrets", "email", "ticket_id"], "replacement": "[REDACTED:{type}]"}
{"type": "result_scan", "action": "annotate"}
```

- `redact.detectors`: built-in detector names, the groups `secrets`, `pii`, `all`, or names
  of patterns configured under `registry.dlp.patterns`. A policy can only *name* patterns:
  regexes are compiled from the config, never from a decision (no per-call compiling, no
  policy-supplied ReDoS). Left out: `secrets`. `replacement` may use `{type}`.
- `result_scan.action`: `record` (audit only), `annotate`, `strip` or `block` — see
  broker/registry/results.py.

Rego returns these in its `obligations` list as they are. Cedar has no obligations, so the
broker reads two annotations on the policies that determined an allow:
`@redact("secrets,email")` and `@result_scan("block")` (`obligations_from_annotations`).

A malformed obligation of these types is an `ObligationError`: the caller must fail closed
(an unapplied redaction duty must not let the data through).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from broker.registry.dlp import BUILTIN_DETECTORS, DETECTOR_GROUPS

DEFAULT_REPLACEMENT: Final = "[REDACTED:{type}]"
RESULT_ACTIONS: Final = ("record", "annotate", "strip", "block")
"""In increasing strength: combining obligations keeps the strongest."""


class ObligationError(ValueError):
    """An obligation this broker must apply is malformed: fail closed."""


@dataclass(frozen=True, slots=True)
class Redact:
    detectors: frozenset[str]
    replacement: str = DEFAULT_REPLACEMENT

    def to_json(self) -> dict[str, Any]:
        return {"type": "redact", "detectors": sorted(self.detectors), "replacement": self.replacement}


@dataclass(frozen=True, slots=True)
class ResultScan:
    action: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "result_scan", "action": self.action}


Obligation = Redact | ResultScan


def parse_obligations(raw: Any, patterns: Mapping[str, str] | Iterable[str] = ()) -> list[Obligation]:
    """The registry's obligations in `raw` (a list of objects); other types are skipped."""
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        raise ObligationError("obligations must be a list of objects")
    known_patterns = set(patterns)
    out: list[Obligation] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ObligationError(f"obligation {index} is not an object")
        kind = item.get("type")
        if kind == "redact":
            out.append(_redact(item, index, known_patterns))
        elif kind == "result_scan":
            action = item.get("action")
            if action not in RESULT_ACTIONS:
                raise ObligationError(
                    f"obligation {index}: result_scan.action must be one of {', '.join(RESULT_ACTIONS)}"
                )
            out.append(ResultScan(str(action)))
    return out


def _redact(item: Mapping[str, Any], index: int, patterns: set[str]) -> Redact:
    detectors = item.get("detectors", ["secrets"])
    if isinstance(detectors, str):
        detectors = [d.strip() for d in detectors.split(",") if d.strip()]
    if not isinstance(detectors, list | tuple) or not detectors:
        raise ObligationError(f"obligation {index}: redact.detectors must be a non-empty list of names")
    names: set[str] = set()
    for name in detectors:
        if name in DETECTOR_GROUPS:
            names.update(DETECTOR_GROUPS[name])
        elif name == "all":
            names.update(BUILTIN_DETECTORS)
            names.update(patterns)
        elif name in BUILTIN_DETECTORS or name in patterns:
            names.add(str(name))
        else:
            raise ObligationError(
                f"obligation {index}: unknown detector {name!r} "
                f"(built-in: {', '.join(sorted(BUILTIN_DETECTORS))}; "
                f"groups: secrets, pii, all; configured: {', '.join(sorted(patterns)) or 'none'})"
            )
    replacement = item.get("replacement", DEFAULT_REPLACEMENT)
    if not isinstance(replacement, str) or len(replacement) > 200:
        raise ObligationError(f"obligation {index}: redact.replacement must be a short string")
    try:
        replacement.format(type="x")
    except (KeyError, IndexError, ValueError):
        raise ObligationError(
            f"obligation {index}: redact.replacement may only use the placeholder {{type}}"
        ) from None
    return Redact(frozenset(names), replacement)


def combine(obligations: Iterable[Obligation]) -> tuple[Redact | None, ResultScan | None]:
    """One redaction (union of detectors; the first custom replacement) and the strongest result action."""
    detectors: set[str] = set()
    replacement = DEFAULT_REPLACEMENT
    action: str | None = None
    for obligation in obligations:
        if isinstance(obligation, Redact):
            detectors |= obligation.detectors
            if replacement == DEFAULT_REPLACEMENT:
                replacement = obligation.replacement
        elif action is None or RESULT_ACTIONS.index(obligation.action) > RESULT_ACTIONS.index(action):
            action = obligation.action
    redact = Redact(frozenset(detectors), replacement) if detectors else None
    return redact, (ResultScan(action) if action is not None else None)


def obligations_from_annotations(annotations: Mapping[str, str]) -> list[dict[str, Any]]:
    """Obligations from Cedar policy annotations: `@redact("secrets,email")`, `@result_scan("block")`,
    `@rate_limit("10/minute")` (counted per principal and tool, named after the policy's `@id`)."""
    out: list[dict[str, Any]] = []
    if "rate_limit" in annotations:
        limits = [t.strip() for t in annotations["rate_limit"].split(",") if t.strip()]
        name = annotations.get("id", "policy")
        out.append({"type": "rate_limit", "name": name, "limits": limits, "per": ["principal", "tool"]})
    if "redact" in annotations:
        names = [n.strip() for n in annotations["redact"].split(",") if n.strip()] or ["secrets"]
        out.append({"type": "redact", "detectors": names})
    if "result_scan" in annotations:
        out.append({"type": "result_scan", "action": annotations["result_scan"].strip()})
    return out
