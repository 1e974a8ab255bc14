"""Shadowing and poisoning heuristics over what the upstreams offer, and over tool results.

Listing checks (`RegistryScanner.scan(offers)`), across every server at once:

- names, compared as callers see them (after namespacing), per kind (tools, prompts):
  `name_collision` (identical), `name_case` (equal but for case), `confusable_name` (same
  TR39 skeleton: `git__status` spelt with a Cyrillic i, `rnem__x` against `mem__x`),
  `separator_variant` (equal once `_ - . space` are removed), and `nonstandard_name` (outside
  the MCP tool-name alphabet `[A-Za-z0-9_.-]`, 1 to 128 characters). A pair finding is charged to
  one item: the one that is not pinned when the other is, else the one listed later (config
  order, then listing order) — the newcomer is the likelier impostor. An identical name with
  no pin to tell the two apart is charged to both: withholding one would hand the name to the
  other.
- text, in every string of every definition (description, title, input and output schema
  strings *and* property names, annotations, prompt arguments): the hidden-instruction markers
  of broker/registry/markers.py, `cross_server_reference` (the name of another server's tool)
  and `tool_preference` ("always use this tool", "instead of any other tool", "do not use
  <another server's tool>").

Result checks (`RegistryScanner.scan_result`): the hidden-instruction markers in a tool
result's text content (and embedded text resources) and in every string of
`structuredContent`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from broker.catalog.names import public_name
from broker.registry.canonical import KIND_SINGULAR, canonical_definition, item_key
from broker.registry.confusables import Skeletons
from broker.registry.findings import DEFAULT_SEVERITIES, Finding, Severity, pointer, visible
from broker.registry.markers import MarkerScanner
from broker.registry.pins import Listing

NAMED_KINDS: Final = ("tools", "prompts")
MCP_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
SEPARATORS: Final = re.compile(r"[\s_.\-]+")
IDENTIFIER_LIKE: Final = re.compile(r"[_.\-0-9]|[a-z][A-Z]")
"""A separator, a digit or a camel hump: the name is an identifier, not a plain English word."""

_PREFERENCE = re.compile(
    r"\b(?:always|only|must|should)\s+(?:use|call|invoke|choose|pick)\s+this\s+tool\b"
    r"|\bprefer\s+this\s+tool\b"
    r"|\buse\s+this\s+tool\s+(?:instead|rather)\b"
    r"|\b(?:instead\s+of|rather\s+than|in\s+place\s+of)\s+(?:using\s+|calling\s+)?(?:any|all|the)?\s*"
    r"other\s+tools?\b"
    r"|\b(?:do\s+not|don'?t|never|avoid)\s+(?:use|call|invoke|using|calling)\s+(?:any\s+)?"
    r"(?:other|another|the\s+other)\s+tools?\b",
    re.IGNORECASE,
)
_STEERING_BEFORE = re.compile(
    r"(?:instead\s+of|rather\s+than|in\s+place\s+of|do\s+not|don'?t|never|avoid|not|replaces?|"
    r"deprecated|obsolete|broken)\W+(?:\w+\W+){0,3}$",
    re.IGNORECASE,
)

Trusted = Callable[[str, str, str], bool]
"""(server, kind, key) -> the item is pinned and unchanged: an established name, not a newcomer."""


@dataclass(frozen=True)
class ServerOffer:
    """One upstream's listing and whether its names are namespaced (`server__tool`)."""

    name: str
    listing: Listing
    namespace: bool = True


@dataclass(frozen=True, slots=True)
class _Named:
    server: str
    kind: str
    key: str
    public: str
    order: int


class RegistryScanner:
    """Runs the heuristics; holds the compiled patterns and the TR39 data (build once, share)."""

    def __init__(
        self,
        severities: Mapping[str, Severity] | None = None,
        *,
        skeletons: Skeletons | None = None,
        markers: MarkerScanner | None = None,
    ) -> None:
        self.severities = dict(DEFAULT_SEVERITIES if severities is None else severities)
        self.skeletons = skeletons or Skeletons()
        self.markers = markers or MarkerScanner()

    def finding(
        self, code: str, server: str, kind: str, item: str, where: str, excerpt: str, related: str = ""
    ) -> Finding:
        return Finding(
            code, self.severities[code], server, item, where, excerpt, KIND_SINGULAR[kind], related
        )

    # -- listings --------------------------------------------------------------------------------

    def scan(self, offers: Sequence[ServerOffer], trusted: Trusted | None = None) -> list[Finding]:
        """Every finding over all `offers` (in config order)."""
        findings = self._names(offers, trusted or (lambda server, kind, key: False))
        names = _ToolNames(offers)
        for offer in offers:
            for kind in ("tools", "resource_templates", "prompts"):
                for item in getattr(offer.listing, kind):
                    key = item_key(kind, item)
                    if key is not None:
                        findings.extend(self._text(offer.name, kind, key, item, names))
        return unique(findings)

    def _names(self, offers: Sequence[ServerOffer], trusted: Trusted) -> list[Finding]:
        findings: list[Finding] = []
        for kind in NAMED_KINDS:
            named: list[_Named] = []
            for offer in offers:
                for item in getattr(offer.listing, kind):
                    key = item_key(kind, item)
                    if key is None:
                        continue
                    public = public_name(offer.name, key, offer.namespace)
                    named.append(_Named(offer.name, kind, key, public, len(named)))
                    if not MCP_NAME.fullmatch(key):
                        findings.append(
                            self.finding("nonstandard_name", offer.name, kind, key, "/name", visible(key))
                        )
            findings.extend(self._pairs(named, trusted))
        return findings

    def _pairs(self, named: list[_Named], trusted: Trusted) -> Iterator[Finding]:
        """Pairs of names that a person (or a model) could mistake for each other, most specific code."""
        reported: set[tuple[int, int]] = set()
        keys: list[tuple[str, Callable[[str], str]]] = [
            ("name_collision", lambda name: name),
            ("name_case", str.casefold),
            ("confusable_name", self.skeletons.skeleton),
            ("confusable_name", lambda name: self.skeletons.skeleton(_folded(name))),
            ("separator_variant", lambda name: self.skeletons.skeleton(SEPARATORS.sub("", _folded(name)))),
        ]
        for code, key in keys:
            groups: dict[str, list[_Named]] = {}
            for entry in named:
                groups.setdefault(key(entry.public), []).append(entry)
            for group in groups.values():
                for i, first in enumerate(group):
                    for second in group[i + 1 :]:
                        pair = (first.order, second.order)
                        if pair in reported or (code != "name_collision" and first.public == second.public):
                            continue
                        if code == "name_collision" and first.server == second.server:
                            continue  # one server listing a name twice: the catalog keeps the first
                        reported.add(pair)
                        blamed, other = _blame(first, second, trusted)
                        if code == "name_collision" and trusted(
                            blamed.server, blamed.kind, blamed.key
                        ) == trusted(other.server, other.kind, other.key):
                            # Withholding only one of two identical names would hand the name to
                            # the other, impostor or not: with no pin to tell them apart, both go.
                            yield self.finding(
                                code,
                                other.server,
                                other.kind,
                                other.key,
                                "/name",
                                f"{visible(other.public)} vs {visible(blamed.public)}",
                                related=blamed.public,
                            )
                        yield self.finding(
                            code,
                            blamed.server,
                            blamed.kind,
                            blamed.key,
                            "/name",
                            f"{visible(blamed.public)} vs {visible(other.public)}",
                            related=other.public,
                        )

    def _text(
        self, server: str, kind: str, key: str, item: Mapping[str, Any], names: _ToolNames
    ) -> Iterator[Finding]:
        definition = canonical_definition(kind, item)
        for where, text in strings_in(definition):
            for mark in self.markers.scan(text):
                yield self.finding(mark.code, server, kind, key, where, mark.excerpt)
            for match in _PREFERENCE.finditer(text):
                yield self.finding("tool_preference", server, kind, key, where, visible(match.group()))
            if where == "/name":
                continue
            for match in names.foreign(server, text):
                yield self.finding(
                    "cross_server_reference", server, kind, key, where, visible(_around(text, match))
                )
                if _STEERING_BEFORE.search(text[max(0, match.start() - 60) : match.start()]):
                    yield self.finding(
                        "tool_preference", server, kind, key, where, visible(_around(text, match))
                    )

    # -- results ---------------------------------------------------------------------------------

    def _probe(self, serialised: str) -> bool:
        return bool(self.markers.scan(serialised))

    def scan_result(self, server: str, tool: str, result: Mapping[str, Any]) -> list[Finding]:
        """Hidden-instruction markers in a tool result (`where` points into the result)."""
        findings: list[Finding] = []
        for where, text in result_strings(result, probe=self._probe):
            for mark in self.markers.scan(text):
                findings.append(self.finding(mark.code, server, "tools", tool, where, mark.excerpt))
        return unique(findings)


def unique(findings: Sequence[Finding]) -> list[Finding]:
    """One finding per code, item, place and counterpart (an opening and a closing tag are one finding)."""
    seen: set[tuple[str, ...]] = set()
    out: list[Finding] = []
    for finding in findings:
        key = (finding.code, finding.server, finding.kind, finding.item, finding.where, finding.related)
        if key not in seen:
            seen.add(key)
            out.append(finding)
    return out


def strings_in(value: Any, *path: str | int) -> Iterator[tuple[str, str]]:
    """(JSON pointer, string) for every string in `value`, mapping keys included (pointer to the key)."""
    if isinstance(value, str):
        yield pointer(*path), value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            key_text = str(key)
            if path and not key_text.isidentifier():
                yield pointer(*path, key_text), key_text
            yield from strings_in(item, *path, key_text)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from strings_in(item, *path, index)


def result_strings(
    result: Mapping[str, Any], probe: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, str]]:
    """The strings of a tool result the model reads: text content, text resources, structuredContent."""
    content = result.get("content")
    if isinstance(content, list):
        for index, block in enumerate(content):
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                yield pointer("content", index, "text"), block["text"]
            resource = block.get("resource")
            if (
                block.get("type") == "resource"
                and isinstance(resource, Mapping)
                and isinstance(resource.get("text"), str)
            ):
                yield pointer("content", index, "resource", "text"), resource["text"]
    structured = result.get("structuredContent")
    if structured is None:
        return
    if probe is not None and isinstance(structured, dict | list):
        # One scan of the serialised value; the walk (a pointer per string) only if it finds something.
        try:
            serialised = orjson.dumps(structured).decode("utf-8")
        except (TypeError, orjson.JSONEncodeError):
            serialised = None
        if serialised is not None and not probe(serialised):
            return
    yield from strings_in(structured, "structuredContent")


def _folded(name: str) -> str:
    """Case and compatibility forms folded (fullwidth letters, ligatures), as NFKC_Casefold does."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def _blame(first: _Named, second: _Named, trusted: Trusted) -> tuple[_Named, _Named]:
    first_trusted = trusted(first.server, first.kind, first.key)
    second_trusted = trusted(second.server, second.kind, second.key)
    if first_trusted and not second_trusted:
        return second, first
    if second_trusted and not first_trusted:
        return first, second
    return (second, first) if second.order > first.order else (first, second)


class _ToolNames:
    """Every server's tool names that can be recognised in text, and which servers offer each.

    Public names (`server__tool`) always; bare names only when they are clearly identifiers
    (`read_text_file`, `getUser`, `tool2`), not plain words like `add` or `echo`. One pattern
    for all servers, compiled once per scan.
    """

    def __init__(self, offers: Sequence[ServerOffer]) -> None:
        self._owners: dict[str, set[str]] = {}
        for offer in offers:
            for item in offer.listing.tools:
                key = item_key("tools", item)
                if key is None:
                    continue
                self._owners.setdefault(public_name(offer.name, key, True), set()).add(offer.name)
                if not offer.namespace or (len(key) >= 4 and IDENTIFIER_LIKE.search(key)):
                    self._owners.setdefault(key, set()).add(offer.name)
        alternatives = "|".join(re.escape(t) for t in sorted(self._owners, key=len, reverse=True))
        self._pattern = (
            re.compile(rf"(?<![A-Za-z0-9_])(?:{alternatives})(?![A-Za-z0-9_])") if alternatives else None
        )

    def foreign(self, server: str, text: str) -> Iterator[re.Match[str]]:
        """Mentions in `text` of tools that `server` itself does not offer."""
        if self._pattern is None:
            return
        for match in self._pattern.finditer(text):
            if server not in self._owners[match.group()]:
                yield match


def _around(text: str, match: re.Match[str]) -> str:
    start = max(0, match.start() - 40)
    return ("…" if start else "") + text[start : match.end() + 40]
