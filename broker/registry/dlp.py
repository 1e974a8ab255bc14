"""Output DLP: redact secrets and personal data from tool results before they reach the agent.

Detectors are compiled regular expressions run only around literal anchors
(broker/registry/anchored.py: most results contain no `-----BEGIN`, no `AKIA`, no `eyJ`, so
most detectors cost one `str.find`), with a validator where a pattern alone is too loose
(Luhn, an issuer prefix and number boundaries for card numbers, behind a byte-level gate).
Measured against detect-secrets (docs/registry.md, "Why compiled regexes"): its
plugin scan of a 100 KB result costs two orders of magnitude more than the 2 ms budget of
the whole guard, and it reports lines, not spans, so it cannot redact in place.

What is redacted: the text of `text` content blocks, the text of embedded `resource`
contents, every string of `structuredContent`, and `contents[].text` of `resources/read`
results. Matches never overlap (the earliest, then longest, wins) and each is replaced by the
obligation's replacement (`[REDACTED:{type}]`); where a detector has a `v` group (a bearer
token after `Bearer `, a secret after `aws_secret_access_key=`), only that group is replaced.

A result with nothing to redact is returned as the **same object**: the caller serialises
exactly what the upstream sent (byte-identical). A result with something to redact is a
copy; the upstream's result is never mutated. The summary counts matches per detector and
never holds a value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from broker.registry.anchored import Anchored, case_variants


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


_CARD_PREFIX = re.compile(
    r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|3(?:0[0-5]|[68])|6(?:011|5|4[4-9])|35"
)


def card_number_ok(candidate: str) -> bool:
    """13 to 19 digits with a known issuer prefix and a valid Luhn check digit, not one repeated digit."""
    digits = re.sub(r"[ -]", "", candidate)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    return _CARD_PREFIX.match(digits) is not None and luhn_ok(digits)


class Finder(Protocol):
    def finditer(self, text: str) -> Iterator[re.Match[str]]: ...


@dataclass(frozen=True, slots=True)
class Detector:
    """A named finder (an anchored pattern, or a plain one) and an optional validator of each match."""

    name: str
    finder: Finder
    check: Callable[[str, int, int], bool] | None = None
    """(text, start, end) → is this match a real one (a Luhn-valid card number…)."""


def _anchored(
    name: str, regex: str, anchors: Iterable[str], before: int = 0, after: int = 0, *, exact: bool = True
) -> Detector:
    """A detector whose matches start `before` characters ahead of an anchor (exact), or anywhere near one."""
    return Detector(name, Anchored(re.compile(regex), tuple(anchors), before, after, exact))


_CARD_GATE = bytes(
    ord("d") if chr(b).isdigit() and b < 128 else ord("s") if b in b" -" else ord("x") for b in range(256)
)


class _CardCandidates:
    """Card-number candidates behind a cheap gate: 13 digits in a row, or two groups of 4 split by `-`/space.

    The gate (UTF-8 encode + bytes.translate + two `in` tests, ~0.1 ms per 100 KB) keeps the
    character-class regex, which tries every position, off texts without such digit runs.
    """

    def __init__(self) -> None:
        self._pattern = re.compile(r"[0-9](?:[0-9]|[ -](?=[0-9])){11,22}[0-9]")

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        shape = text.encode("utf-8", "surrogatepass").translate(_CARD_GATE)
        if b"ddddddddddddd" not in shape and b"ddddsdddd" not in shape:
            return iter(())
        return self._pattern.finditer(text)


def _word_start(text: str, start: int, end: int) -> bool:
    """The match does not continue a longer word (what a leading lookbehind would check, slowly)."""
    return start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_")


def _card_check(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    if before.isdigit() or before in "-." or after.isdigit():
        return False  # part of a longer number, a version or a range
    return card_number_ok(text[start:end])


BUILTIN: Final[tuple[Detector, ...]] = (
    _anchored(
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]{0,16384}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\]*)",
        ["-----BEGIN "],
        after=16_500,
    ),
    # A literal first character: re itself jumps between the "A"s, faster than four finds.
    Detector("aws_access_key", re.compile(r"A(?:KIA|SIA|BIA|CCA)[0-9A-Z]{16}(?![A-Za-z0-9])"), _word_start),
    _anchored(
        "aws_secret_key",
        r"(?i)aws.{0,24}?(?:secret|private)[_ -]?(?:access[_ -]?)?key\\?[\"']?\s*[:=]\s*\\?[\"']?"
        r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        ["aws", "AWS", "Aws"],
        after=120,
    ),
    _anchored(
        "gcp_api_key",
        r"(?<![0-9A-Za-z_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
        ["AIza"],
        after=36,
    ),
    _anchored(
        "gcp_service_account_key",
        r"private_key_id\\?\"\s*:\s*\\?\"(?P<v>[0-9a-f]{40})\\?\"",
        ["private_key_id"],
        after=64,
    ),
    _anchored("azure_storage_key", r"AccountKey=(?P<v>[A-Za-z0-9+/]{86}==)", ["AccountKey="], after=90),
    _anchored(
        "azure_sas_token",
        r"[?&]sig=(?P<v>[A-Za-z0-9%+/=]{43,128})(?![A-Za-z0-9%+/=])",
        ["sig="],
        before=1,
        after=130,
    ),
    _anchored(
        "azure_client_secret",
        r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])",
        ["Q~"],
        before=4,
        after=35,
    ),
    _anchored(
        "jwt",
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{0,1024}",
        ["eyJ"],
        after=4096,
    ),
    _anchored(
        "bearer_token",
        r"(?i)\bbearer\s+(?P<v>[A-Za-z0-9\-._~+/]{16,}=*)",
        case_variants(["bearer"]),
        before=1,
        after=4096,
    ),
    Detector(
        "github_token",
        re.compile(r"g(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])"),
        _word_start,
    ),
    _anchored("slack_token", r"(?<![A-Za-z0-9])xox[abposre]-[A-Za-z0-9-]{10,250}", ["xox"], after=252),
    _anchored(
        "slack_webhook",
        r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,200}",
        ["hooks.slack.com/"],
        before=8,
        after=220,
    ),
    _anchored(
        "email",
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])",
        ["@"],
        before=65,
        after=255,
        exact=False,  # the local part before "@" has no fixed length
    ),
    Detector("card_number", _CardCandidates(), _card_check),
)

BUILTIN_DETECTORS: Final[frozenset[str]] = frozenset(d.name for d in BUILTIN)
DETECTOR_GROUPS: Final[Mapping[str, frozenset[str]]] = {
    "secrets": BUILTIN_DETECTORS - {"email", "card_number"},
    "pii": frozenset({"email", "card_number"}),
}


@dataclass(frozen=True)
class RedactionSummary:
    """What was redacted: counts per detector, never a value."""

    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {"redacted": dict(sorted(self.counts.items())), "total": self.total}


NOTHING: Final = RedactionSummary()


class Redactor:
    """Applies redaction obligations; compiles the configured patterns once (hold one per broker)."""

    def __init__(self, patterns: Mapping[str, str] | None = None) -> None:
        self._detectors: dict[str, Detector] = {d.name: d for d in BUILTIN}
        for name, regex in (patterns or {}).items():
            if name in self._detectors:
                raise ValueError(f"the pattern name {name!r} is a built-in detector")
            self._detectors[name] = Detector(name, re.compile(regex))  # configured: a plain scan

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._detectors)

    def detectors(self, names: Iterable[str]) -> tuple[Detector, ...]:
        """The detectors for `names`, in a stable order (built-ins first); unknown names are a KeyError."""
        wanted = set(names)
        missing = wanted - set(self._detectors)
        if missing:
            raise KeyError(f"unknown detector(s): {', '.join(sorted(missing))}")
        return tuple(d for name, d in self._detectors.items() if name in wanted)

    def apply(
        self, result: Mapping[str, Any], detectors: Iterable[str], replacement: str = "[REDACTED:{type}]"
    ) -> tuple[Mapping[str, Any], RedactionSummary]:
        """`result` with every match replaced, and the summary; `result` itself when nothing matched."""
        chosen = self.detectors(detectors)
        if not chosen:
            return result, NOTHING
        counts: dict[str, int] = {}

        def redact(text: str) -> str:
            return self.redact_text(text, chosen, replacement, counts)

        def probe(text: str) -> bool:
            return self.redact_text(text, chosen, replacement, {}) is not text

        redacted = _rewrite_result(result, redact, probe)
        if not counts:
            return result, NOTHING
        return redacted, RedactionSummary(counts)

    def redact_text(
        self, text: str, detectors: Iterable[Detector], replacement: str, counts: dict[str, int]
    ) -> str:
        """`text` with matches replaced (the same str object when none); adds to `counts`."""
        spans: list[tuple[int, int, str]] = []
        for detector in detectors:
            for match in detector.finder.finditer(text):
                if detector.check is not None and not detector.check(text, match.start(), match.end()):
                    continue
                if "v" in match.re.groupindex and match.group("v") is not None:
                    spans.append((match.start("v"), match.end("v"), detector.name))
                else:
                    spans.append((match.start(), match.end(), detector.name))
        if not spans:
            return text
        spans.sort(key=lambda s: (s[0], -s[1]))
        out: list[str] = []
        last = 0
        for start, end, name in spans:
            if start < last:
                continue
            out.append(text[last:start])
            out.append(replacement.format(type=name))
            counts[name] = counts.get(name, 0) + 1
            last = end
        out.append(text[last:])
        return "".join(out)


def _rewrite_result(
    result: Mapping[str, Any], rewrite: Callable[[str], str], probe: Callable[[str], bool] | None = None
) -> Mapping[str, Any]:
    """A copy of `result` with its model-visible strings rewritten, sharing every unchanged part."""
    changes: dict[str, Any] = {}
    content = result.get("content")
    if isinstance(content, list):
        new_content = _rewrite_blocks(content, rewrite)
        if new_content is not content:
            changes["content"] = new_content
    contents = result.get("contents")
    if isinstance(contents, list):
        new_contents = _rewrite_list(contents, lambda item: _rewrite_key(item, "text", rewrite))
        if new_contents is not contents:
            changes["contents"] = new_contents
    if "structuredContent" in result:
        structured = result["structuredContent"]
        new_structured = rewrite_strings(structured, rewrite, probe=probe)
        if new_structured is not structured:
            changes["structuredContent"] = new_structured
    return {**result, **changes} if changes else result


def _rewrite_blocks(blocks: list[Any], rewrite: Callable[[str], str]) -> list[Any]:
    def block(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        if item.get("type") == "text":
            return _rewrite_key(item, "text", rewrite)
        if item.get("type") == "resource" and isinstance(item.get("resource"), dict):
            inner = _rewrite_key(item["resource"], "text", rewrite)
            return item if inner is item["resource"] else {**item, "resource": inner}
        return item

    return _rewrite_list(blocks, block)


def _rewrite_key(item: Any, key: str, rewrite: Callable[[str], str]) -> Any:
    if not isinstance(item, dict) or not isinstance(item.get(key), str):
        return item
    new = rewrite(item[key])
    return item if new is item[key] else {**item, key: new}


def _rewrite_list(items: list[Any], rewrite: Callable[[Any], Any]) -> list[Any]:
    out: list[Any] | None = None
    for index, item in enumerate(items):
        new = rewrite(item)
        if new is not item:
            if out is None:
                out = list(items)
            out[index] = new
    return items if out is None else out


def rewrite_strings(
    value: Any, rewrite: Callable[[str], str], *, probe: Callable[[str], bool] | None = None
) -> Any:
    """`value` (any JSON) with every string rewritten; the same object where nothing changed.

    With `probe`, the whole value is first serialised as one JSON text and probed: a large
    structuredContent (thousands of short strings) then costs one scan, not thousands, and is
    walked string by string only when the probe finds something. The detectors tolerate
    JSON's escaping (a quote as `\\"`, a newline as `\\n`), so a match in a string is a
    match in its JSON form too.
    """
    if probe is not None and isinstance(value, dict | list):
        try:
            serialised = orjson.dumps(value).decode("utf-8")
        except (TypeError, orjson.JSONEncodeError):
            serialised = None
        if serialised is not None and not probe(serialised):
            return value
    if isinstance(value, str):
        return rewrite(value)
    if isinstance(value, dict):
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            new = rewrite_strings(item, rewrite)
            if new is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = new
        return value if changed is None else changed
    if isinstance(value, list):
        return _rewrite_list(value, lambda item: rewrite_strings(item, rewrite))
    return value
