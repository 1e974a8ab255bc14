"""Cedar files: strict validation through the broker's own loader, and safe formatting.

Validation is `CedarEngine`'s: the same parse, `@id` rules and strict schema validation the
broker applies at load and reload, with file:line messages. Formatting is
`cedarpy.format_policies`, accepted only when nothing is lost: the formatted text must hold
the same comments (as a multiset) and the same policies with the same annotations (compared
as Cedar's JSON form). Otherwise the file is left alone and the reason is reported.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import cedarpy

from broker.policy.cedar import CedarEngine
from broker.policy.engine import PolicyLoadError
from broker.policytools.engines import PolicySet, relative_messages


def validation_problems(policy_set: PolicySet) -> list[str]:
    """Every problem the broker's Cedar loader reports for `policy_set` (file:line messages)."""
    engine = CedarEngine(policy_set.policies.resolve(), policy_set.schema.resolve())

    async def load() -> list[str]:
        try:
            await engine.start()
        except PolicyLoadError as exc:
            return relative_messages(str(exc), policy_set.policies)
        finally:
            await engine.stop()
        return []

    return asyncio.run(load())


def comments(text: str) -> Counter[str]:
    """The `//` comments of a Cedar text (outside strings), whitespace-trimmed."""
    found: Counter[str] = Counter()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            found[text[i + 2 : end].strip()] += 1
            i = end
            continue
        i += 1
    return found


def _as_json(text: str) -> Any:
    return json.loads(cedarpy.policies_to_json_str(text))


def format_text(text: str) -> tuple[str | None, str | None]:
    """(formatted text, None), or (None, why it must not be rewritten)."""
    try:
        formatted = cedarpy.format_policies(text)
    except ValueError as exc:
        return None, f"cannot be parsed ({exc}); mcp-broker policy check shows where"
    if formatted == text:
        return text, None
    lost = comments(text) - comments(formatted)
    if lost:
        first = next(iter(lost))
        return None, (
            f"cedarpy's formatter would drop {sum(lost.values())} comment(s) (e.g. // {first}); "
            "not rewritten: format it by hand"
        )
    try:
        same = _as_json(text) == _as_json(formatted)
    except ValueError:
        same = False
    if not same:
        return None, "cedarpy's formatter would change the policies or their annotations; not rewritten"
    return formatted, None


def cedar_files(policy_set: PolicySet) -> list[Path]:
    folder = policy_set.policies / "cedar"
    return sorted(folder.rglob("*.cedar")) if folder.is_dir() else []
