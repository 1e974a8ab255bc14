"""Readable differences between pinned and live definitions (`mcp-broker registry diff`).

Descriptions are compared line by line (wrapped at sentence ends, so a sentence slipped into
a one-line description shows as its own `+` line); schemas and annotations as indented,
key-sorted JSON. Non-ASCII characters are escaped in both, so a homoglyph swap is visible.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from broker.registry.canonical import FIELDS, KIND_SINGULAR
from broker.registry.findings import visible
from broker.registry.pins import ItemState, PinStatus, RegistryState

_SENTENCE_END = re.compile(r"(?<=[.!?>])\s+(?=\S)")


def field_lines(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if name == "description" and isinstance(value, str):
        return [visible(line, 10_000) for part in value.split("\n") for line in _SENTENCE_END.split(part)]
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True).splitlines()


def item_diff(state: ItemState) -> list[str]:
    """A unified diff per changed field of one drifted item."""
    old = state.pin.definition if state.pin else {}
    new = state.live or {}
    out: list[str] = []
    for name in FIELDS[state.kind]:
        if old.get(name) == new.get(name):
            continue
        label = f"{state.server}/{KIND_SINGULAR[state.kind]}/{state.key} {name}"
        out.extend(
            difflib.unified_diff(
                field_lines(name, old.get(name)),
                field_lines(name, new.get(name)),
                fromfile=f"pinned {label}",
                tofile=f"live   {label}",
                lineterm="",
            )
        )
    return out


def text_lines(states: Sequence[RegistryState]) -> Iterator[str]:
    """The whole report: one header line per item that is not pinned-and-unchanged, diffs for drifts."""
    for state in states:
        for item in sorted(state.items.values(), key=lambda s: (s.kind, s.key)):
            if item.status is PinStatus.PINNED:
                continue
            what = f"{state.server}/{KIND_SINGULAR[item.kind]} {visible(item.key)}"
            if item.status is PinStatus.DRIFTED:
                yield f"~ drifted   {what} ({', '.join(item.changes)})"
                yield from (f"    {line}" for line in item_diff(item))
            elif item.status is PinStatus.UNPINNED:
                yield f"+ unpinned  {what}"
            else:
                yield f"- missing   {what}"


def json_report(states: Sequence[RegistryState]) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for state in states:
        for item in sorted(state.items.values(), key=lambda s: (s.kind, s.key)):
            entry: dict[str, Any] = {
                "server": item.server,
                "kind": KIND_SINGULAR[item.kind],
                "key": item.key,
                "status": item.status.value,
            }
            if item.status is PinStatus.DRIFTED:
                entry["changes"] = list(item.changes)
                entry["pinned"] = _fields(item.pin.definition if item.pin else {}, item.changes)
                entry["live"] = _fields(item.live or {}, item.changes)
                entry["diff"] = item_diff(item)
            items.append(entry)
    counts = {status.value: sum(1 for i in items if i["status"] == status.value) for status in PinStatus}
    return {"counts": counts, "items": items}


def _fields(definition: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {name: definition.get(name) for name in names}
