"""Keep secrets out of the audit trail: the Redactor protocol and a conservative built-in.

An audit record is read by more people, and kept longer, than the call it describes, so
the argument summary, error messages and resource URIs pass through a Redactor first. The
built-in one replaces

- every value under a key that names a secret (`password`, `token`, `api_key`,
  `Authorization`, `cookie`, `private_key`, …; matched by words, so `max_tokens` is kept), and
- every part of a string that looks like a secret wherever it appears: JWTs, PEM private
  keys, AWS access keys, GitHub / Slack / Stripe / Google / OpenAI-style tokens, `Bearer`
  credentials, secret-named URL query parameters, and long high-entropy strings

by `[REDACTED:<type>]`. Hex strings (digests, commit ids, UUIDs) are never taken for secrets.
Issue #8's DLP detectors implement the same protocol and replace it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final, Protocol

REDACTED: Final = "[REDACTED:{}]"
_SCALARS: Final = frozenset({int, float, bool})


class Redactor(Protocol):
    def redact(self, value: Any) -> tuple[Any, tuple[str, ...]]:
        """A copy of JSON data with secrets replaced, and `<key path>: <type>` for each replacement."""

    def redact_text(self, text: str) -> str:
        """One string (an error message, a URI) with secret-looking parts replaced."""


_SECRET_WORDS: Final = frozenset(
    {
        "password", "passwd", "passphrase", "secret", "secrets", "token", "authorization",
        "cookie", "cookies", "credential", "credentials", "apikey", "privatekey", "bearer",
    }
)  # fmt: skip
_SECRET_PAIRS: Final = frozenset(
    {
        "apikey", "accesskey", "privatekey", "secretkey", "signingkey", "clientsecret", "setcookie",
        "sessionid", "sessiontoken", "authtoken", "refreshtoken", "accesstoken", "idtoken",
        "encryptionkey", "masterkey",
    }
)  # fmt: skip
_NOT_SECRET_AFTER: Final = frozenset(
    {
        "count", "counts", "limit", "limits", "usage", "type", "types", "length", "budget", "estimate",
        "ttl", "expiry", "expires", "expiration", "url", "uri", "endpoint", "name", "policy", "hint",
    }
)  # fmt: skip
"""`max_tokens`, `token_count`, `token_url`, `password_policy` describe a secret, they do not hold one."""
_WORD: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


@lru_cache(maxsize=4096)
def secret_key(key: str) -> bool:
    """Whether a key names a secret: one of its words, or two adjacent words joined, is a secret noun."""
    words = [w.lower() for w in _WORD.findall(key)]
    for i, word in enumerate(words):
        if word in _SECRET_WORDS or (i and words[i - 1] + word in _SECRET_PAIRS):
            return i + 1 == len(words) or words[i + 1] not in _NOT_SECRET_AFTER
    return False


# Secrets recognised by context: searched only when the text contains their trigger.
_PRIVATE_KEY: Final = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*\Z)", re.S
)
_BEARER: Final = re.compile(r"(?i:(?<=bearer )[A-Za-z0-9._~+/=-]{8,})")
_SLACK_WEBHOOK: Final = re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+")
_URL_SECRET: Final = re.compile(
    r"(?<=[?&;])(?i:[a-z0-9_.-]*(?:token|secret|password|passwd|api[_-]?key|signature|sig|auth|credential|"
    r"access[_-]?key)[a-z0-9_.-]*)=[^&#;\s]+"
)
# Secrets recognised by their shape: searched only inside runs of token characters long enough to hold one.
_TOKEN_RUN: Final = re.compile(r"[A-Za-z0-9_+/=.~-]{15,}")
_SHAPES: Final = re.compile(
    r"(?P<jwt>\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*)"
    r"|(?P<aws_access_key>\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b)"
    r"|(?P<github_token>\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}))"
    r"|(?P<slack_token>\bxox[abposre]-[A-Za-z0-9-]{10,})"
    r"|(?P<stripe_key>\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,})"
    r"|(?P<google_api_key>\bAIza[0-9A-Za-z_-]{35})"
    r"|(?P<api_key>\bsk-[A-Za-z0-9_-]{20,})"
)
_HIGH_ENTROPY_MIN: Final = 32
"""Shortest base64-ish run taken for a secret on its entropy alone."""
_HEX: Final = re.compile(r"[0-9a-fA-F-]+(?:=*)")
_MIN_ENTROPY: Final = 4.0
"""Bits per character above which a long base64-ish run is taken for a secret."""
_SHORTEST_SECRET: Final = 15
"""No detector matches a shorter string: most values skip the regular expressions entirely."""


def _entropy(text: str) -> float:
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _high_entropy(text: str) -> bool:
    if _HEX.fullmatch(text):
        return False
    classes = any(c.isupper() for c in text) + any(c.islower() for c in text) + any(c.isdigit() for c in text)
    return classes >= 3 and _entropy(text) >= _MIN_ENTROPY


class SecretRedactor:
    """The built-in Redactor: key names plus value detectors, no configuration, no state."""

    def redact(self, value: Any) -> tuple[Any, tuple[str, ...]]:
        found: list[str] = []
        out = self._value(value, "", found)
        return out, tuple(found)

    def redact_text(self, text: str) -> str:
        return self._string(text, "", [])

    def _value(self, value: Any, path: str, found: list[str]) -> Any:
        kind = type(value)
        if kind is str:
            return value if len(value) < _SHORTEST_SECRET else self._string(value, path, found)
        if kind is dict or (kind is not list and isinstance(value, Mapping)):
            out: dict[str, Any] = {}
            for k, v in value.items():
                if type(k) is str and secret_key(k) and v is not None and v != "":
                    out[k] = REDACTED.format("key")
                    found.append(f"{path}.{k}: key" if path else f"{k}: key")
                elif v is None or (type(v) is str and len(v) < _SHORTEST_SECRET) or type(v) in _SCALARS:
                    out[k] = v  # the common case: nothing to look at, no key path to build
                else:
                    out[k] = self._value(v, f"{path}.{k}" if path else str(k), found)
            return out
        if kind is list or kind is tuple:
            return [self._value(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
        return value

    def _string(self, text: str, path: str, found: list[str]) -> str:
        if len(text) < _SHORTEST_SECRET:
            return text
        kinds: list[str] = []
        if "-----BEGIN" in text:
            text = _replace(_PRIVATE_KEY, "private_key", text, kinds)
        if "hooks.slack.com" in text:
            text = _replace(_SLACK_WEBHOOK, "slack_token", text, kinds)
        if "=" in text:
            text = _URL_SECRET.sub(lambda m: _url_secret(m, kinds), text)
        if "earer " in text or "EARER " in text:
            text = _replace(_BEARER, "bearer", text, kinds)
        for chunk in text.split():  # str.split is several times faster than a regex scan of prose
            if len(chunk) >= _SHORTEST_SECRET:
                replaced = _TOKEN_RUN.sub(lambda m: _token(m.group(0), kinds), chunk)
                if replaced != chunk:
                    text = text.replace(chunk, replaced)
        if kinds:
            found.extend(f"{path or '(value)'}: {kind}" for kind in dict.fromkeys(kinds))
        return text


def _replace(pattern: re.Pattern[str], kind: str, text: str, kinds: list[str]) -> str:
    text, count = pattern.subn(REDACTED.format(kind), text)
    if count:
        kinds.append(kind)
    return text


def _url_secret(match: re.Match[str], kinds: list[str]) -> str:
    kinds.append("url_secret")
    return match.group(0).partition("=")[0] + "=" + REDACTED.format("url_secret")


def _token(run: str, kinds: list[str]) -> str:
    """One run of token characters: known shapes inside it, else long high-entropy parts of it."""

    def shape(match: re.Match[str]) -> str:
        kind = match.lastgroup or "secret"
        kinds.append(kind)
        return REDACTED.format(kind)

    replaced = _SHAPES.sub(shape, run)
    if replaced != run or len(run) < _HIGH_ENTROPY_MIN:
        return replaced
    parts = run.split("=")  # `NAME=value`: keep the name
    for i, part in enumerate(parts):
        if len(part) >= _HIGH_ENTROPY_MIN and _high_entropy(part):
            parts[i] = REDACTED.format("high_entropy")
            kinds.append("high_entropy")
    return "=".join(parts)
