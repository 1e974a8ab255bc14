"""A short-lived response cache for tools that declare themselves read-only and idempotent.

Opt-in twice: the configuration enables it, and a tool is cached only if its annotations say
`readOnlyHint: true` and `idempotentHint: true` (the upstream's own statement that a repeat call
changes nothing and returns the same). Decisions are still made on every call: the gateway looks
up the cache after the policy allowed the call, in place of the forward.

The key is (scope, tool, digest of the canonical arguments). The scope is the caller's principal
key, so one caller's answer is never served to another; only `shared: true` in the configuration
makes the scope one for everybody (for public data). Entries live `ttl` seconds; at most
`max_entries` are kept, least recently used dropped first. Error results (`isError`) are not
cached. Values are kept serialised and decoded on each hit, so no caller can change what another
one receives.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from broker.traffic.patterns import NamePattern
from broker.traffic.subject import Clock

SHARED_SCOPE = "*shared*"

CacheKey = tuple[str, str, str]


def argument_digest(arguments: Mapping[str, Any] | None) -> str:
    """sha256 of the arguments as canonical JSON (sorted keys, no whitespace)."""
    canonical = orjson.dumps(arguments or {}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def cacheable(annotations: Mapping[str, Any] | None) -> bool:
    """Only a tool that says it is read-only AND idempotent may be answered from the cache."""
    if not annotations:
        return False
    return annotations.get("readOnlyHint") is True and annotations.get("idempotentHint") is True


@dataclass(frozen=True, slots=True)
class CacheStats:
    entries: int
    hits: int
    misses: int
    evictions: int


class ResponseCache:
    def __init__(
        self,
        ttl: float,
        max_entries: int,
        shared: bool = False,
        tools: tuple[NamePattern, ...] = (NamePattern("*"),),
        clock: Clock = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("cache ttl must be > 0 and max_entries >= 1")
        self._ttl = ttl
        self._max = max_entries
        self._shared = shared
        self._tools = tools
        self._clock = clock
        self._entries: OrderedDict[CacheKey, tuple[float, bytes]] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def applies(self, tool: str, annotations: Mapping[str, Any] | None) -> bool:
        """Whether calls of this tool may be cached at all (configuration and annotations)."""
        return cacheable(annotations) and any(p.matches(tool) for p in self._tools)

    def key(self, principal: str, tool: str, arguments: Mapping[str, Any] | None) -> CacheKey:
        scope = SHARED_SCOPE if self._shared else principal
        return (scope, tool, argument_digest(arguments))

    def get(self, key: CacheKey) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return None
        expires, payload = entry
        if expires <= self._clock():
            del self._entries[key]
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        result: dict[str, Any] = orjson.loads(payload)
        return result

    def put(self, key: CacheKey, result: Mapping[str, Any]) -> bool:
        """Keep a successful result; returns False (and keeps nothing) for an error result."""
        if result.get("isError") is True:
            return False
        self._entries[key] = (self._clock() + self._ttl, orjson.dumps(result))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self._evictions += 1
        return True

    def clear(self) -> None:
        """Drop everything (e.g. when an upstream's tool definitions changed)."""
        self._entries.clear()

    def stats(self) -> CacheStats:
        return CacheStats(len(self._entries), self._hits, self._misses, self._evictions)
