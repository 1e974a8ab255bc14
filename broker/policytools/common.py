"""What every policy command shares: problems with file:line, YAML that knows its lines, errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXIT_OK = 0
EXIT_FINDINGS = 1
"""Something was found: a failing case, a problem, an unformatted file, a changed decision."""
EXIT_ERROR = 2
"""The command could not do its job (bad arguments, policies that do not load, no git ref…)."""

JsonPath = tuple[str | int, ...]


class ToolError(Exception):
    """Stops a command (exit 2). The message is one line saying what to do; `details` come first."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a file, shown as `file:line: message` (or `file: message`)."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


def shown(path: Path | str) -> str:
    """A path as the user should see it: relative to the working directory when it is below it."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class YamlDocument:
    """Parsed YAML plus the line of every key and list item (1-based)."""

    source: str
    data: Any
    lines: dict[JsonPath, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int:
        """The line of `path`, or of its nearest parent that exists."""
        parts = tuple(path)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get((), 1)

    def problem(self, path: Sequence[str | int], message: str) -> Problem:
        return Problem(self.source, self.line_of(path), message)


def load_yaml(path: Path) -> tuple[YamlDocument | None, list[Problem]]:
    """Read a YAML (or JSON) file with the line of every element; duplicate keys are problems."""
    source = shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(source, None, f"cannot read: {exc}")]
    return parse_yaml(text, source)


def parse_yaml(text: str, source: str) -> tuple[YamlDocument | None, list[Problem]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [Problem(source, line, f"not valid YAML: {what}")]
    doc = YamlDocument(source, data)
    problems: list[Problem] = []
    if node is not None:
        doc.lines[()] = node.start_mark.line + 1
        _walk(node, (), doc.lines, problems, source, set())
    return doc, problems


def _walk(
    node: yaml.Node,
    path: JsonPath,
    lines: dict[JsonPath, int],
    problems: list[Problem],
    source: str,
    active: set[int],
) -> None:
    if id(node) in active:  # a recursive alias: the parser result says the rest
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key == "<<":
                _walk(value_node, path, lines, problems, source, active)
                continue
            if key in seen:
                problems.append(Problem(source, line, f"duplicate key {key!r} (first at line {seen[key]})"))
            seen.setdefault(key, line)
            child = (*path, key)
            lines.setdefault(child, line)
            _walk(value_node, child, lines, problems, source, active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines.setdefault(child, item.start_mark.line + 1)
            _walk(item, child, lines, problems, source, active)
    active.discard(id(node))


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def setup_logging(verbose: bool) -> None:
    """Warnings and errors on stderr (info with -v); engine failures show up in the decisions."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # A request the Cedar adapter cannot evaluate is logged with a traceback; here it is a
    # policy_error decision that the command reports anyway.
    logging.getLogger("broker.policy.cedar").setLevel(logging.INFO if verbose else logging.CRITICAL)
    # OPA's startup notes and an upstream's start failure (the command reports it) are noise here.
    for noisy in ("mcp", "httpx", "httpx2", "httpcore2", "broker.policy.opa", "broker.upstream"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
