"""Hidden-instruction markers: text aimed at the model that a person reading it would miss or dismiss.

The same markers are looked for in tool descriptions, in every string of a definition's
schemas, and in tool results (text content and structuredContent):

- `hidden_tag`: pseudo-markup that tool-poisoning payloads use to make the model treat the
  text as a priority instruction (`<IMPORTANT>`, `<system>`, `[INST]`, `<|im_start|>`…);
- `override_instruction`: "ignore previous instructions" and its variants;
- `conceal_from_user`: "do not tell the user", "without informing the user"…;
- `invisible_character`: zero-width characters, word joiners, soft hyphens and the Unicode
  tag block (U+E0000 to U+E007F, "ASCII smuggling": invisible, yet models read them);
- `bidi_control`: bidirectional embeddings, overrides and isolates (text that displays in
  another order than the model reads it);
- `encoded_blob`: a long base64 / base64url run of high entropy (a payload a reviewer cannot
  read); a hex digest or a file path does not qualify.

Patterns are compiled once. Each starts with a literal or runs only around literal anchors
(broker/registry/anchored.py); the blob pattern runs only when a byte-level gate finds a
long enough run of base64 characters; the invisible / bidi classes only on non-ASCII text.
So a scan of a 100 KB result costs a fraction of a millisecond (bench/registry.py).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from broker.registry.anchored import Anchored
from broker.registry.findings import visible

INVISIBLE_CHARACTERS: Final = (
    "\u00ad"  # soft hyphen
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers (render as blanks)
    "\u180e"  # Mongolian vowel separator
    "\u200b\u200c\u200d"  # zero-width space, non-joiner, joiner
    "\u2060\u2061\u2062\u2063\u2064"  # word joiner, invisible operators
    "\ufeff"  # zero-width no-break space (BOM) inside text
)
BIDI_CONTROLS: Final = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"

_HIDDEN_CHARACTERS = re.compile(f"[{INVISIBLE_CHARACTERS}{BIDI_CONTROLS}\U000e0000-\U000e007f]+")
_BIDI_SET = frozenset(BIDI_CONTROLS)
_BMP_HIDDEN = INVISIBLE_CHARACTERS + BIDI_CONTROLS
_TAG_PREFIXES = ("\U000e0000".encode()[:3], "\U000e0040".encode()[:3])
"""UTF-8 of the tag block U+E0000 to U+E007F starts with one of these (a cheap gate on bytes)."""
# Both start with a literal ("<", "["): re jumps between occurrences in C.
_HIDDEN_TAG = re.compile(
    r"<\s*/?\s*(?i:important|system|system[_ -]?prompt|instructions?|secret|hidden|admin|critical|"
    r"assistant|tool[_ -]?instructions?)\b[^<>\n]{0,80}>"
    r"|<<\s*/?SYS\s*>>|<\|\s*(?:im_start|im_end|system|endoftext)\s*\|>",
)
_HIDDEN_BRACKET = re.compile(r"\[/?(?:INST|SYS|SYSTEM)\]")
_OVERRIDE = (
    Anchored(
        re.compile(
            r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+)?(?:of\s+)?(?:the\s+|your\s+)?"
            r"(?:previous|prior|above|earlier|preceding|former|original|system|other)\s+"
            r"(?:instructions?|prompts?|messages?|rules|directions|guidelines|context)\b",
            re.IGNORECASE,
        ),
        ("ignore", "disregard", "forget", "override", "bypass"),
        exact=True,
        folding=True,
    ),
    Anchored(
        re.compile(r"\bnew\s+instructions\s*:", re.IGNORECASE),
        ("new instructions",),
        exact=True,
        folding=True,
    ),
    Anchored(
        re.compile(r"\byou\s+are\s+now\s+(?:in\s+)?(?:developer|admin|jailbreak|dan)\b", re.IGNORECASE),
        ("you are now",),
        exact=True,
        folding=True,
    ),
)
_CONCEAL = Anchored(
    re.compile(
        r"\b(?:do\s+not|don'?t|never|without)\s+(?:tell(?:ing)?|inform(?:ing)?|mention(?:ing)?|"
        r"reveal(?:ing)?|notify(?:ing)?|alert(?:ing)?|show(?:ing)?)\s+(?:this\s+|it\s+|anything\s+)?"
        r"(?:to\s+)?(?:the\s+)?(?:user|human|person|operator)\b"
        r"|\b(?:keep|hide)\s+(?:this|it)\s+(?:secret\s+)?from\s+(?:the\s+)?(?:user|human)\b",
        re.IGNORECASE,
    ),
    ("do not", "don't", "dont ", "never ", "without ", "keep ", "hide "),
    exact=True,
    folding=True,
)
_HEX = re.compile(r"[0-9a-fA-F]+")
_BLOB_SHAPE = bytes(
    ord("a") if (chr(b).isalnum() or chr(b) in "+/_-=") and b < 128 else ord("x") for b in range(256)
)

MIN_BLOB_ENTROPY: Final = 4.5
"""Bits per character. Random base64 is ~5.9; English words, paths and identifiers stay below ~4.3."""


@dataclass(frozen=True, slots=True)
class Mark:
    """One marker found in one string: the code, where in the string, and a visible excerpt."""

    code: str
    start: int
    end: int
    excerpt: str


class MarkerScanner:
    """Finds hidden-instruction markers in strings. Stateless after construction: share one."""

    def __init__(self, *, min_blob_length: int = 64) -> None:
        self.min_blob_length = min_blob_length
        self._blob_gate = b"a" * min_blob_length

    def scan(self, text: str) -> list[Mark]:
        """Every marker in `text`, in order of position per code."""
        return list(self._marks(text))

    def _marks(self, text: str) -> Iterator[Mark]:
        if not text:
            return
        ascii_only = text.isascii()
        raw = b"" if ascii_only else text.encode("utf-8", "surrogatepass")
        if not ascii_only and (
            any(ch in text for ch in _BMP_HIDDEN) or _TAG_PREFIXES[0] in raw or _TAG_PREFIXES[1] in raw
        ):
            for match in _HIDDEN_CHARACTERS.finditer(text):  # one pass for both kinds
                run = match.group()
                if any(ch not in _BIDI_SET for ch in run):
                    yield _mark("invisible_character", text, match)
                if any(ch in _BIDI_SET for ch in run):
                    yield _mark("bidi_control", text, match)
        for match in _HIDDEN_TAG.finditer(text):
            yield _mark("hidden_tag", text, match)
        if "[" in text:
            for match in _HIDDEN_BRACKET.finditer(text):
                yield _mark("hidden_tag", text, match)
        folded = text.lower()  # one lowercase copy: anchors are looked for once, not per case
        for finder in _OVERRIDE:
            for match in finder.finditer(text, folded):
                yield _mark("override_instruction", text, match)
        for match in _CONCEAL.finditer(text, folded):
            yield _mark("conceal_from_user", text, match)
        if len(text) >= self.min_blob_length:
            for start, end in self._runs(text, raw or text.encode("ascii")):
                if looks_encoded(text[start:end]):
                    yield Mark(
                        "encoded_blob", start, end, f"{end - start} chars: " + visible(text[start:end], 48)
                    )

    def _runs(self, text: str, raw: bytes) -> Iterator[tuple[int, int]]:
        """(start, end) of every run of at least `min_blob_length` base64 characters.

        Found on bytes: the UTF-8 text translated to `a` (base64 alphabet) / `x` (anything
        else, every byte of a multi-byte character included), then `bytes.find` — C speed, no
        regex trying every position. Runs are ASCII, so a run's length in bytes is its length
        in characters; only its start needs converting when the text is not ASCII.
        """
        shape = raw.translate(_BLOB_SHAPE)
        ascii_only = len(raw) == len(text)
        pos = shape.find(self._blob_gate)
        while pos != -1:
            start = shape.rfind(b"x", 0, pos) + 1
            end = shape.find(b"x", pos)
            end = len(shape) if end == -1 else end
            first = start if ascii_only else len(raw[:start].decode("utf-8", "surrogatepass"))
            yield first, first + (end - start)
            pos = shape.find(self._blob_gate, end)

    def strip(self, text: str, marks: list[Mark]) -> str:
        """`text` with every marked span removed (invisible / bidi characters dropped, others replaced)."""
        if not marks:
            return text
        out: list[str] = []
        last = 0
        for mark in sorted(marks, key=lambda m: (m.start, -m.end)):
            if mark.start < last:
                continue  # overlapping marks: the first one already covered it
            out.append(text[last : mark.start])
            if mark.code not in ("invisible_character", "bidi_control"):
                out.append(f"[removed: {mark.code}]")
            last = mark.end
        out.append(text[last:])
        return "".join(out)


def looks_encoded(run: str) -> bool:
    """A base64-alphabet run that is a payload, not a digest, an identifier or a path."""
    body = run.rstrip("=")
    if _HEX.fullmatch(body):
        return False  # digests, commit ids
    if not (
        any(c.isupper() for c in body) and any(c.islower() for c in body) and any(c.isdigit() for c in body)
    ):
        return False
    return entropy(body) >= MIN_BLOB_ENTROPY


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in counts.values())


def _mark(code: str, text: str, match: re.Match[str]) -> Mark:
    start, end = match.span()
    if code in ("invisible_character", "bidi_control"):
        # Show the hidden characters with a little context on both sides.
        excerpt = visible(text[max(0, start - 20) : end + 20])
    else:
        excerpt = visible(text[start : start + 160])
    return Mark(code, start, end, excerpt)
