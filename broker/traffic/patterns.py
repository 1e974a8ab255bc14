"""Name patterns in traffic rules: exact names, `*`, and `prefix*` such as `github__*`.

Only a trailing `*` is a wildcard (no `?`, no character classes): the names the broker matches
(principal keys, tenants, public tool names) contain no glob syntax of their own, and a prefix
test is a few hundred nanoseconds where a compiled regex is several times that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NamePattern:
    text: str

    def __post_init__(self) -> None:
        if not self.text:
            raise ValueError("a pattern cannot be empty")
        if "*" in self.text[:-1]:
            raise ValueError(f"pattern {self.text!r}: only a trailing '*' is a wildcard")

    def matches(self, name: str | None) -> bool:
        if name is None:
            return self.text == "*"
        if self.text[-1] == "*":
            return name.startswith(self.text[:-1])
        return name == self.text


@dataclass(frozen=True, slots=True)
class Match:
    """The `match:` of a rule: every field given must match; an empty match matches every call."""

    principal: NamePattern | None = None
    tenant: NamePattern | None = None
    tool: NamePattern | None = None

    def accepts(self, principal: str, tenant: str | None, tool: str) -> bool:
        return (
            (self.principal is None or self.principal.matches(principal))
            and (self.tenant is None or self.tenant.matches(tenant))
            and (self.tool is None or self.tool.matches(tool))
        )


def parse_match(raw: object, where: str) -> Match:
    """Build a `Match` from its YAML mapping; `where` names the key in error messages."""
    if raw is None:
        return Match()
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a mapping with principal, tenant and/or tool")
    unknown = set(raw) - {"principal", "tenant", "tool"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    fields: dict[str, NamePattern] = {}
    for key in ("principal", "tenant", "tool"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"{where}.{key}: must be a string pattern")
        try:
            fields[key] = NamePattern(value)
        except ValueError as exc:
            raise ValueError(f"{where}.{key}: {exc}") from None
    return Match(**fields)
