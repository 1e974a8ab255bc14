"""What the registry heuristics report: typed findings, each with a stable code and a severity.

A finding is data, not a log line: the CLI prints it, the audit log records it, the
policy sees its code in `resource.flags`, and the severity decides whether the item is
only flagged (`warn`) or withheld from lists and calls (`quarantine`). Severities are
per code and configurable (`registry.findings`), with the defaults below.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final


class Severity(enum.Enum):
    WARN = "warn"
    QUARANTINE = "quarantine"


DEFAULT_SEVERITIES: Final[Mapping[str, Severity]] = {
    # Shadowing: one tool posing as another.
    "name_collision": Severity.QUARANTINE,
    "name_case": Severity.QUARANTINE,
    "confusable_name": Severity.QUARANTINE,
    "separator_variant": Severity.WARN,
    "nonstandard_name": Severity.WARN,
    # Poisoning: text written for the model, not for the person reading the listing.
    "hidden_tag": Severity.QUARANTINE,
    "override_instruction": Severity.QUARANTINE,
    "conceal_from_user": Severity.QUARANTINE,
    "invisible_character": Severity.QUARANTINE,
    "bidi_control": Severity.QUARANTINE,
    "encoded_blob": Severity.WARN,
    "cross_server_reference": Severity.WARN,
    "tool_preference": Severity.WARN,
}
"""Every finding code, and what it does unless `registry.findings` says otherwise."""

CODES: Final[frozenset[str]] = frozenset(DEFAULT_SEVERITIES)

EXCERPT_CHARS: Final = 120


@dataclass(frozen=True, slots=True)
class Finding:
    """One suspicious thing in a definition (or a tool result).

    `where` is a JSON pointer (RFC 6901) into the canonical definition of `item`
    (`/description`, `/inputSchema/properties/path/description`), or into the result for
    result findings (`/content/0/text`). `excerpt` shows the match with invisible
    characters made visible (`<U+200B>`), so a reviewer sees what the model would read.
    `related` names the other item of a pair finding (shadowing).
    """

    code: str
    severity: Severity
    server: str
    item: str
    where: str
    excerpt: str
    kind: str = "tool"
    related: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "severity": self.severity.value,
            "server": self.server,
            "kind": self.kind,
            "item": self.item,
            "where": self.where,
            "excerpt": self.excerpt,
        }
        if self.related:
            out["related"] = self.related
        return out

    def line(self) -> str:
        """One human-readable line: `quarantine hidden_tag notes/tool read_note /description: …`."""
        also = f" (vs {visible(self.related)})" if self.related else ""
        return (
            f"{self.severity.value:<10} {self.code:<22} {self.server}/{self.kind} {visible(self.item)}{also} "
            f"{visible(self.where) or '/'}: {self.excerpt}"
        )


def severity_table(overrides: Mapping[str, str | Severity]) -> dict[str, Severity]:
    """The defaults with `overrides` applied; an unknown code or severity is a ValueError."""
    table = dict(DEFAULT_SEVERITIES)
    for code, value in overrides.items():
        if code not in CODES:
            raise ValueError(f"unknown finding code {code!r} (known: {', '.join(sorted(CODES))})")
        table[code] = value if isinstance(value, Severity) else Severity(value)
    return table


def visible(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` shortened to `limit` characters, control and invisible characters shown as `<U+XXXX>`."""
    out: list[str] = []
    size = 0
    for ch in text:
        piece = ch if _printable(ch) else f"<U+{ord(ch):04X}>"
        out.append(piece)
        size += len(piece)
        if size >= limit:
            out.append("…")
            break
    return "".join(out)


def _printable(ch: str) -> bool:
    # isprintable() is False for every format (Cf), control (Cc) and separator character
    # except the ASCII space: exactly the ones a reviewer could not see.
    return ch.isprintable()


def pointer(*parts: str | int) -> str:
    """A JSON pointer from path parts, escaping `~` and `/` as RFC 6901 says."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
