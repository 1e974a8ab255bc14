"""The `traffic:` section of the broker configuration, parsed into frozen dataclasses.

Every error is a `ValueError` whose message starts with the key path ("traffic.rate_limits[0].limits[1]:
..."), so the configuration loader can report it as it is. Parsing happens once at load or reload;
nothing here runs per call. The shape is `$defs/traffic` in schemas/broker-config.schema.json,
explained in docs/traffic.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItem, parse_many

from broker.traffic.breaker import BreakerPolicy
from broker.traffic.patterns import NamePattern, parse_match
from broker.traffic.quota import PERIODS, QuotaRule
from broker.traffic.ratelimit import DIMENSIONS, RateLimitRule

STORAGE_SCHEMES = ("memory://", "redis://", "rediss://", "redis+unix://")


@dataclass(frozen=True, slots=True)
class ConcurrencySettings:
    per_upstream: int | None = None
    per_principal: int | None = None
    max_waiters: int = 64
    max_wait: float = 5.0


@dataclass(frozen=True, slots=True)
class CacheSettings:
    enabled: bool = False
    ttl: float = 10.0
    max_entries: int = 10000
    shared: bool = False
    tools: tuple[NamePattern, ...] = (NamePattern("*"),)


@dataclass(frozen=True, slots=True)
class TrafficSettings:
    rate_limits: tuple[RateLimitRule, ...] = ()
    quotas: tuple[QuotaRule, ...] = ()
    concurrency: ConcurrencySettings = field(default_factory=ConcurrencySettings)
    breakers: BreakerPolicy | None = None
    """None: no circuit breakers (the section is absent)."""
    cache: CacheSettings = field(default_factory=CacheSettings)
    storage: str = "memory://"


def traffic_settings(raw: Mapping[str, Any] | None) -> TrafficSettings:
    """Parse the `traffic:` mapping (None or absent: everything off, in-memory storage)."""
    if raw is None:
        return TrafficSettings()
    where = "traffic"
    section = _mapping(raw, where, {"rate_limits", "quotas", "concurrency", "breakers", "cache", "storage"})
    storage = section.get("storage", "memory://")
    if not isinstance(storage, str) or not storage.startswith(STORAGE_SCHEMES):
        raise ValueError(f"{where}.storage: must be memory:// or redis://host:port/db, got {storage!r}")
    rate_limits = tuple(
        _rate_limit(item, f"{where}.rate_limits[{i}]")
        for i, item in enumerate(_list(section.get("rate_limits"), f"{where}.rate_limits"))
    )
    quotas = tuple(
        _quota(item, f"{where}.quotas[{i}]")
        for i, item in enumerate(_list(section.get("quotas"), f"{where}.quotas"))
    )
    _unique([r.name for r in rate_limits], f"{where}.rate_limits")
    _unique([q.name for q in quotas], f"{where}.quotas")
    breakers = section.get("breakers")
    return TrafficSettings(
        rate_limits=rate_limits,
        quotas=quotas,
        concurrency=_concurrency(section.get("concurrency"), f"{where}.concurrency"),
        breakers=None if breakers is None else _breakers(breakers, f"{where}.breakers"),
        cache=_cache(section.get("cache"), f"{where}.cache"),
        storage=storage,
    )


def _rate_limit(raw: object, where: str) -> RateLimitRule:
    item = _mapping(raw, where, {"name", "match", "per", "limits"})
    name = _name(item, where)
    texts = item.get("limits")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise ValueError(f'{where}.limits: a non-empty list of limits like "60/minute"')
    limits: list[RateLimitItem] = []
    for i, text in enumerate(texts):
        try:
            if not isinstance(text, str):
                raise ValueError("must be a string")
            parsed = parse_many(text)
            if len(parsed) != 1:
                raise ValueError("one limit per entry")
        except ValueError as exc:
            raise ValueError(f"{where}.limits[{i}]: {text!r} is not a limit like 60/minute ({exc})") from None
        if parsed[0].amount < 1:
            raise ValueError(f"{where}.limits[{i}]: the amount must be at least 1")
        limits.extend(parsed)
    match = parse_match(item.get("match"), f"{where}.match")
    return RateLimitRule(name, match, _per(item, where), tuple(limits))


def obligation_rule(raw: Mapping[str, Any]) -> RateLimitRule:
    """A rate limit a policy attached to a call: `{type: rate_limit, name, limits, per}` (no `match`:
    it applies to the call it came with). ValueError names what is wrong."""
    item = {k: v for k, v in raw.items() if k != "type"}
    item.setdefault("name", "policy")
    item["name"] = f"policy:{item['name']}"  # never the same counters as a configured rule
    return _rate_limit(item, "rate_limit obligation")


def _quota(raw: object, where: str) -> QuotaRule:
    item = _mapping(raw, where, {"name", "match", "per", "budget", "period", "costs"})
    name = _name(item, where)
    budget = item.get("budget")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"{where}.budget: a positive integer")
    period = item.get("period", "day")
    if period not in PERIODS:
        raise ValueError(f"{where}.period: one of {', '.join(PERIODS)}, got {period!r}")
    costs_raw = item.get("costs") or {}
    if not isinstance(costs_raw, Mapping):
        raise ValueError(f"{where}.costs: a mapping of tool pattern to cost")
    costs: list[tuple[NamePattern, int]] = []
    for pattern, cost in costs_raw.items():
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
            raise ValueError(f"{where}.costs[{pattern!r}]: a non-negative integer")
        try:
            costs.append((NamePattern(str(pattern)), cost))
        except ValueError as exc:
            raise ValueError(f"{where}.costs[{pattern!r}]: {exc}") from None
    match = parse_match(item.get("match"), f"{where}.match")
    return QuotaRule(name, match, _per(item, where), budget, period, tuple(costs))


def _concurrency(raw: object, where: str) -> ConcurrencySettings:
    if raw is None:
        return ConcurrencySettings()
    item = _mapping(raw, where, {"per_upstream", "per_principal", "max_waiters", "max_wait"})
    default = ConcurrencySettings()
    return ConcurrencySettings(
        per_upstream=_optional_int(item.get("per_upstream"), f"{where}.per_upstream", minimum=1),
        per_principal=_optional_int(item.get("per_principal"), f"{where}.per_principal", minimum=1),
        max_waiters=_int(item.get("max_waiters", default.max_waiters), f"{where}.max_waiters", minimum=0),
        max_wait=_number(item.get("max_wait", default.max_wait), f"{where}.max_wait", minimum=0.0),
    )


def _breakers(raw: object, where: str) -> BreakerPolicy:
    item = _mapping(raw, where, {"failure_ratio", "window", "min_calls", "cool_down", "half_open_calls"})
    default = BreakerPolicy()
    ratio = _number(item.get("failure_ratio", default.failure_ratio), f"{where}.failure_ratio", minimum=0.0)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"{where}.failure_ratio: a number in (0, 1], got {ratio}")
    return BreakerPolicy(
        failure_ratio=ratio,
        window=_number(item.get("window", default.window), f"{where}.window", minimum=0.001),
        min_calls=_int(item.get("min_calls", default.min_calls), f"{where}.min_calls", minimum=1),
        cool_down=_number(item.get("cool_down", default.cool_down), f"{where}.cool_down", minimum=0.001),
        half_open_calls=_int(
            item.get("half_open_calls", default.half_open_calls), f"{where}.half_open_calls", minimum=1
        ),
    )


def _cache(raw: object, where: str) -> CacheSettings:
    if raw is None:
        return CacheSettings()
    item = _mapping(raw, where, {"enabled", "ttl", "max_entries", "shared", "tools"})
    default = CacheSettings()
    for key in ("enabled", "shared"):
        if not isinstance(item.get(key, False), bool):
            raise ValueError(f"{where}.{key}: true or false")
    tools_raw = item.get("tools", ["*"])
    if not isinstance(tools_raw, list) or not all(isinstance(t, str) for t in tools_raw):
        raise ValueError(f"{where}.tools: a list of tool name patterns")
    try:
        tools = tuple(NamePattern(t) for t in tools_raw)
    except ValueError as exc:
        raise ValueError(f"{where}.tools: {exc}") from None
    return CacheSettings(
        enabled=item.get("enabled", False),
        ttl=_number(item.get("ttl", default.ttl), f"{where}.ttl", minimum=0.001),
        max_entries=_int(item.get("max_entries", default.max_entries), f"{where}.max_entries", minimum=1),
        shared=item.get("shared", False),
        tools=tools,
    )


def _mapping(raw: object, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a mapping")
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    return raw


def _list(raw: object, where: str) -> Sequence[object]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: must be a list")
    return raw


def _name(item: Mapping[str, Any], where: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name or any(c in name for c in "|@"):
        raise ValueError(f"{where}.name: a non-empty string without '|' or '@'")
    return name


def _per(item: Mapping[str, Any], where: str) -> tuple[str, ...]:
    per = item.get("per", [])
    if isinstance(per, str):
        per = [per]
    if not isinstance(per, list) or not all(isinstance(p, str) for p in per):
        raise ValueError(f"{where}.per: a list of {', '.join(DIMENSIONS)}")
    for dimension in per:
        if dimension not in DIMENSIONS:
            raise ValueError(f"{where}.per: unknown dimension {dimension!r} (one of {', '.join(DIMENSIONS)})")
    if len(set(per)) != len(per):
        raise ValueError(f"{where}.per: a dimension is listed twice")
    return tuple(per)


def _unique(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{where}: the name {name!r} is used twice")
        seen.add(name)


def _int(raw: object, where: str, minimum: int) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < minimum:
        raise ValueError(f"{where}: an integer >= {minimum}, got {raw!r}")
    return raw


def _optional_int(raw: object, where: str, minimum: int) -> int | None:
    return None if raw is None else _int(raw, where, minimum)


def _number(raw: object, where: str, minimum: float) -> float:
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not math.isfinite(raw) or raw < minimum:
        raise ValueError(f"{where}: a number >= {minimum:g}, got {raw!r}")
    return float(raw)
