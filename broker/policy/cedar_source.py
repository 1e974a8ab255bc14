"""Reading Cedar policy files so that every problem can name its file and line.

cedarpy reports parse errors without a location and validation errors by positional
policy ids (`policy3`); policy authors need `policies/cedar/fs.cedar:12`. Each file is
split into its statements (at top-level `;`, outside strings and comments), each
statement is parsed on its own, and the resulting table maps positional ids back to
file, line and the policy's own `@id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cedarpy


@dataclass(frozen=True, slots=True)
class PolicySource:
    file: Path
    line: int
    text: str
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def policy_id(self) -> str:
        return self.annotations.get("id", "")

    def where(self, root: Path) -> str:
        try:
            shown = self.file.relative_to(root)
        except ValueError:
            shown = self.file
        return f"{shown}:{self.line}"


@dataclass(frozen=True, slots=True)
class PolicyFiles:
    text: str
    """All policies, in file order, as one Cedar text (positional ids follow this order)."""
    sources: tuple[PolicySource, ...]
    files: tuple[Path, ...]

    def source_of(self, positional_id: str) -> PolicySource | None:
        if positional_id.startswith("policy") and positional_id[6:].isdigit():
            index = int(positional_id[6:])
            if index < len(self.sources):
                return self.sources[index]
        return None


def policy_files(directory: Path, pattern: str) -> list[Path]:
    """The files under `directory` matching `pattern`, skipping hidden names: a Kubernetes
    ConfigMap mount holds every file twice, once under a `..<timestamp>/` directory."""
    return sorted(
        p
        for p in directory.rglob(pattern)
        if not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def read_policy_files(directory: Path, root: Path) -> tuple[PolicyFiles | None, list[str]]:
    """Parse every `*.cedar` under `directory`; returns the set, or the problems found."""
    files = policy_files(directory, "*.cedar")
    problems: list[str] = []
    sources: list[PolicySource] = []
    seen_ids: dict[str, PolicySource] = {}
    if not files:
        problems.append(f"{directory}: no *.cedar policy files (every call would be denied)")
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
            continue
        for line, statement in split_statements(text):
            try:
                parsed = cedarpy.PolicySet.from_str(statement).to_pst()
            except ValueError as exc:
                problems.append(f"{_rel(path, root)}:{line}: syntax error: {exc}")
                continue
            policies = list(parsed.static_policies.values())
            if parsed.templates:
                problems.append(
                    f"{_rel(path, root)}:{line}: templates are not supported; write a static policy"
                )
                continue
            if len(policies) != 1:
                problems.append(f"{_rel(path, root)}:{line}: expected one policy in this statement")
                continue
            annotations = {str(k): str(v) for k, v in dict(policies[0].annotations).items()}
            source = PolicySource(path, line, statement, annotations)
            policy_id = source.policy_id
            if not policy_id:
                problems.append(
                    f'{_rel(path, root)}:{line}: the policy has no @id("..."); every policy needs one '
                    "so decisions and audit records can name it"
                )
            elif policy_id in seen_ids:
                other = seen_ids[policy_id]
                problems.append(
                    f"{_rel(path, root)}:{line}: @id({policy_id!r}) is already used at {other.where(root)}"
                )
            else:
                seen_ids[policy_id] = source
            sources.append(source)
    if problems:
        return None, problems
    return PolicyFiles("\n".join(s.text for s in sources), tuple(sources), tuple(files)), []


def split_statements(text: str) -> list[tuple[int, str]]:
    """The policy statements of a Cedar file with the line each starts on (1-based)."""
    statements: list[tuple[int, str]] = []
    begin: int | None = None  # index of the statement's first character (comments excluded)
    begin_line = 1
    line = 1
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif not ch.isspace() and begin is None:
            begin, begin_line = i, line
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif ch == ";" and begin is not None:
            statements.append((begin_line, text[begin : i + 1]))
            begin = None
        i += 1
    if begin is not None and text[begin:].strip():
        statements.append((begin_line, text[begin:].rstrip()))  # unterminated: reported as a syntax error
    return statements


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
