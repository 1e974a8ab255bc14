"""RedisApprovalStore: the approvals of several broker replicas in one Redis.

Why Redis here: a fleet that already runs Redis for its shared rate limits can share approvals
through it too, instead of adding PostgreSQL. An approval asked for through replica A may be
decided through replica B, and the caller's call on A must then see the grant and use it
exactly once, so the store keeps the compare-and-set semantics of SqliteApprovalStore and
PostgresApprovalStore.

Why Lua scripts: Redis runs a script to the end before any other command, so a script that
reads the status and writes the new one IS the compare-and-set, in one round trip, with no
retry loop (WATCH/MULTI would need a read round trip, a transaction, and retries whenever
two replicas touch the same approval). Each state change is one script; the indexes move in
the same script, so no reader ever sees an approval in one index and not in another.

Keys (`P` = key_prefix, default `mcp-broker:`; all share the hash tag `{approvals}`):

- `P{approvals}:approval:<id>`   hash: status, binding columns, times, `used_at`, JSON `body`
- `P{approvals}:created`         sorted set of every id by created_at (`listing(None, …)`)
- `P{approvals}:status:<status>` sorted set of ids by created_at (`listing(status, …)`)
- `P{approvals}:due`             sorted set of pending ids by expires_at (`expire_due`)
- `P{approvals}:binding:<sha>`   sorted set by created_at of the ids an identical call may still
  wait on or use (pending, or approved and not used up); sha256 of (requester_key, target, digest)
- `P{approvals}:schema`          the layout's version; another version is refused at open

The body is the SQLite store's JSON body and `used_at` is kept beside it, so all stores read
and write approvals through the same functions. Times are stored as Python's repr of the
float and only compared inside scripts, never recomputed, so they read back exactly.

Every Redis error (connection refused or lost, no answer within `timeout`, an error reply) is
an ApprovalStoreError: approvals fail closed. Messages name the server, never its password.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, cast
from urllib.parse import parse_qsl, urlsplit

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from broker.approval.model import Approval, ApprovalStatus
from broker.approval.store import ApprovalStoreError, _approval, _body

log = logging.getLogger("broker.approval")

SCHEMA_VERSION: Final = 1
"""The value of `P{approvals}:schema`; bumped (with a migration) when the key layout changes."""

MAX_CONNECTIONS: Final = 8
"""Connections per replica; a burst beyond waits up to `timeout` for one (never unbounded sockets)."""

EXPIRY_BATCH: Final = 256
"""Overdue approvals read per script in `expire_due`, so one script never blocks Redis for long."""

# A binding index holds the ids an identical call may still find: pending, or approved and not
# used up. Every script that changes status or used_at keeps that true.
_CANDIDATE = """
local function candidate(status, reusable, used_at)
  return status == 'pending' or (status == 'approved' and (used_at == '' or reusable == '1'))
end
"""

_INSERT = (
    _CANDIDATE
    + """
-- KEYS[1] approval hash; ARGV: base, id, status, requester_key, target, digest, created_at,
-- expires_at, usable_until, reusable, used_at, body, binding key
local base, id, status = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', status, 'requester_key', ARGV[4], 'target', ARGV[5],
  'digest', ARGV[6], 'created_at', ARGV[7], 'expires_at', ARGV[8], 'usable_until', ARGV[9],
  'reusable', ARGV[10], 'used_at', ARGV[11], 'body', ARGV[12], 'binding', ARGV[13])
redis.call('ZADD', base .. 'created', ARGV[7], id)
redis.call('ZADD', base .. 'status:' .. status, ARGV[7], id)
if status == 'pending' then redis.call('ZADD', base .. 'due', ARGV[8], id) end
if candidate(status, ARGV[10], ARGV[11]) then redis.call('ZADD', ARGV[13], ARGV[7], id) end
return 1
"""
)

_DECIDE = (
    _CANDIDATE
    + """
-- KEYS[1] approval hash; ARGV: base, id, expected status, new status, usable_until, reusable, body
local base, id, status, reusable = ARGV[1], ARGV[2], ARGV[4], ARGV[6]
local f = redis.call('HMGET', KEYS[1], 'status', 'created_at', 'expires_at', 'used_at', 'binding')
if f[1] ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'status', status, 'usable_until', ARGV[5], 'reusable', reusable, 'body', ARGV[7])
if f[1] ~= status then
  redis.call('ZREM', base .. 'status:' .. f[1], id)
  redis.call('ZADD', base .. 'status:' .. status, f[2], id)
end
if status == 'pending' then
  redis.call('ZADD', base .. 'due', f[3], id)
else
  redis.call('ZREM', base .. 'due', id)
end
if candidate(status, reusable, f[4]) then
  redis.call('ZADD', f[5], f[2], id)
else
  redis.call('ZREM', f[5], id)
end
return 1
"""
)

_CONSUME = """
-- KEYS[1] approval hash; ARGV: id, now
local f = redis.call('HMGET', KEYS[1], 'status', 'usable_until', 'reusable', 'used_at', 'binding')
if f[1] ~= 'approved' then return 0 end
local usable = tonumber(f[2])
if usable == nil or usable <= tonumber(ARGV[2]) then return 0 end
if f[4] ~= '' and f[3] ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'used_at', ARGV[2])
if f[3] ~= '1' then redis.call('ZREM', f[5], ARGV[1]) end
return 1
"""

_FOR_RETRY = """
-- KEYS[1] binding index; ARGV: base, now. Returns {body, used_at} of the newest usable id, or nil.
local now = tonumber(ARGV[2])
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. 'approval:' .. id,
    'status', 'expires_at', 'usable_until', 'reusable', 'used_at', 'body')
  if f[1] == 'pending' and tonumber(f[2]) > now then return {f[6], f[5]} end
  if f[1] == 'approved' and f[3] ~= '' and tonumber(f[3]) > now and (f[5] == '' or f[4] == '1') then
    return {f[6], f[5]}
  end
end
return false
"""

_LISTING = """
-- KEYS[1] index (created, or status:<status>); ARGV: base, limit. Returns body, used_at, body, …
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local f = redis.call('HMGET', ARGV[1] .. 'approval:' .. id, 'body', 'used_at')
  if f[1] then
    out[#out + 1] = f[1]
    out[#out + 1] = f[2]
  end
end
return out
"""

_DUE = """
-- KEYS[1] due index; ARGV: base, now, count. Returns id, body, used_at, … of pending overdue ids.
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))) do
  local f = redis.call('HMGET', ARGV[1] .. 'approval:' .. id, 'status', 'body', 'used_at')
  if f[1] == 'pending' then
    out[#out + 1] = id
    out[#out + 1] = f[2]
    out[#out + 1] = f[3]
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

_EXPIRE = """
-- ARGV: base, then id, body pairs. Expires each id still pending; returns the ids this call expired.
local base, won = ARGV[1], {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local key = base .. 'approval:' .. id
  local f = redis.call('HMGET', key, 'status', 'created_at', 'binding')
  redis.call('ZREM', base .. 'due', id)
  if f[1] == 'pending' then
    redis.call('HSET', key, 'status', 'expired', 'body', ARGV[i + 1])
    redis.call('ZREM', base .. 'status:pending', id)
    redis.call('ZADD', base .. 'status:expired', f[2], id)
    redis.call('ZREM', f[3], id)
    won[#won + 1] = id
  end
end
return won
"""


class RedisApprovalStore:
    """The ApprovalStore protocol (broker/approval/store.py) in one Redis, shared by replicas."""

    def __init__(self, url: str, *, timeout: float = 5.0, key_prefix: str = "mcp-broker:") -> None:
        """`url`: `redis://[user:password@]host:port/db`, `rediss://…` (TLS) or `unix://…` (resolved
        from a secret reference by the caller).

        `timeout`: seconds to connect, to get an answer, or to wait for a free connection; a Redis
        that is down or stuck fails calls after this long, never hangs them. `key_prefix`: the
        start of every key, so several brokers (or other users) can share one Redis database.
        """
        self._url = url
        self._timeout = timeout
        self._base = f"{key_prefix}{{approvals}}:"
        self._where = _where(url)
        self._secrets = _secrets(url)
        self._redis: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @contextmanager
    def _failing_closed(self, doing: str = "failed") -> Iterator[None]:
        """Redis's errors as ApprovalStoreError, with the server named and any password removed."""
        try:
            yield
        except (RedisError, OSError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            for secret in self._secrets:
                why = why.replace(secret, "***")
            raise ApprovalStoreError(f"the approval store (Redis {self._where}) {doing}: {why}") from None

    async def open(self) -> None:
        """Connect and answer PING (so a wrong password or host is reported at once), check the
        layout version, and warn when Redis would lose approvals on a restart."""
        with self._failing_closed("cannot be opened"):
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=MAX_CONNECTIONS,
                timeout=self._timeout,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                # One immediate retry on a broken connection (a Redis restart), never on a timeout:
                # a command that timed out may have run, and running a compare-and-set twice would
                # report the first run as lost.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            self._redis = Redis(connection_pool=pool)
            try:
                await cast(Awaitable[bool], self._redis.ping())  # redis-py types it sync-or-async
                await self._check_schema(self._redis)
                await self._warn_about_configuration(self._redis)
            except BaseException:
                await self._redis.aclose(close_connection_pool=True)
                self._redis = None
                raise
        self._scripts = {
            name: self._redis.register_script(text)
            for name, text in {
                "insert": _INSERT,
                "decide": _DECIDE,
                "consume": _CONSUME,
                "for_retry": _FOR_RETRY,
                "listing": _LISTING,
                "due": _DUE,
                "expire": _EXPIRE,
            }.items()
        }

    async def _check_schema(self, redis: Redis) -> None:
        key = self._base + "schema"
        await redis.set(key, SCHEMA_VERSION, nx=True)
        stored = await redis.get(key)
        if stored != str(SCHEMA_VERSION).encode():
            raise ApprovalStoreError(
                f"the approvals in Redis {self._where} are at layout version {stored!r}, this broker "
                f"knows {SCHEMA_VERSION}: upgrade the broker (or migrate the keys under {self._base})"
            )

    async def _warn_about_configuration(self, redis: Redis) -> None:
        """Operators' mistakes worth a warning, not a refusal (docs/scale-out-redis.md): without
        appendonly a Redis restart loses approvals; an allkeys-* eviction policy may delete them."""
        try:
            info: dict[str, Any] = await redis.info("persistence")
            info |= await redis.info("memory")
        except ResponseError:  # INFO denied by an ACL: nothing to check with
            return
        if not info.get("aof_enabled"):
            log.warning(
                "approvals in Redis %s: appendonly is off, so a Redis restart loses approvals "
                "(set appendonly yes, appendfsync always or everysec)",
                self._where,
            )
        policy = str(info.get("maxmemory_policy", ""))
        if policy.startswith("allkeys"):
            log.warning(
                "approvals in Redis %s: maxmemory-policy %s may evict approvals under memory pressure "
                "(use noeviction, or a volatile-* policy: approval keys have no TTL)",
                self._where,
                policy,
            )

    def _script(self, name: str) -> AsyncScript:
        if self._redis is None:
            raise ApprovalStoreError("the approval store is not open")
        return self._scripts[name]

    def _key(self, approval_id: str) -> str:
        return f"{self._base}approval:{approval_id}"

    def _binding(self, requester_key: str, target: str, digest: str) -> str:
        sha = hashlib.sha256(orjson.dumps([requester_key, target, digest])).hexdigest()
        return f"{self._base}binding:{sha}"

    async def insert(self, approval: Approval) -> None:
        script = self._script("insert")
        args = [
            self._base,
            approval.id,
            approval.status.value,
            approval.requester_key,
            approval.target,
            approval.argument_digest,
            _time(approval.created_at),
            _time(approval.expires_at),
            _time(approval.usable_until),
            "1" if approval.reusable else "0",
            _time(approval.used_at),
            _body(approval),
            self._binding(approval.requester_key, approval.target, approval.argument_digest),
        ]
        with self._failing_closed():
            inserted = await script(keys=[self._key(approval.id)], args=args)
        if not inserted:
            raise ApprovalStoreError(f"the approval store (Redis {self._where}) already has {approval.id}")

    async def get(self, approval_id: str) -> Approval | None:
        if self._redis is None:
            raise ApprovalStoreError("the approval store is not open")
        with self._failing_closed():
            fields = self._redis.hmget(self._key(approval_id), ["body", "used_at"])
            body, used_at = await cast(Awaitable[list[bytes | None]], fields)
        return None if body is None else _approval(body, _float(used_at))

    async def for_retry(self, requester_key: str, target: str, digest: str, now: float) -> Approval | None:
        script = self._script("for_retry")
        with self._failing_closed():
            found = await script(
                keys=[self._binding(requester_key, target, digest)], args=[self._base, _time(now)]
            )
        return _approval(found[0], _float(found[1])) if found else None

    async def decide(self, approval: Approval, expected: ApprovalStatus) -> bool:
        script = self._script("decide")
        args = [
            self._base,
            approval.id,
            expected.value,
            approval.status.value,
            _time(approval.usable_until),
            "1" if approval.reusable else "0",
            _body(approval),
        ]
        with self._failing_closed():
            return bool(await script(keys=[self._key(approval.id)], args=args))

    async def consume(self, approval_id: str, now: float) -> bool:
        script = self._script("consume")
        with self._failing_closed():
            return bool(await script(keys=[self._key(approval_id)], args=[approval_id, _time(now)]))

    async def listing(self, status: ApprovalStatus | None, limit: int) -> list[Approval]:
        script = self._script("listing")
        if limit <= 0:
            return []
        index = self._base + ("created" if status is None else f"status:{status.value}")
        with self._failing_closed():
            flat: list[bytes] = await script(keys=[index], args=[self._base, limit])
        return [_approval(flat[i], _float(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def expire_due(self, now: float) -> list[Approval]:
        """Read a batch of overdue pending approvals, expire them in Python (the body is the model's
        JSON), then compare-and-set each in one script: an approval another replica (or a decision)
        got to first is not returned, so each expiry is reported by exactly one replica."""
        due, expire = self._script("due"), self._script("expire")
        expired: list[Approval] = []
        while True:
            with self._failing_closed():
                flat: list[bytes] = await due(
                    keys=[self._base + "due"], args=[self._base, _time(now), EXPIRY_BATCH]
                )
            candidates = {
                flat[i].decode(): _approval(flat[i + 1], _float(flat[i + 2])).decided(
                    ApprovalStatus.EXPIRED, at=now, note="no decision in time"
                )
                for i in range(0, len(flat), 3)
            }
            if not candidates:
                return expired
            args: list[str | bytes] = [self._base]
            for approval in candidates.values():
                args += [approval.id, _body(approval)]
            with self._failing_closed():
                won: list[bytes] = await expire(keys=[self._base + "due"], args=args)
            expired += [candidates[approval_id.decode()] for approval_id in won]
            if len(candidates) < EXPIRY_BATCH:
                return expired

    async def close(self) -> None:
        if self._redis is not None:
            redis, self._redis = self._redis, None
            with self._failing_closed("did not close cleanly"):
                await redis.aclose(close_connection_pool=True)


def _time(value: float | None) -> str:
    """A time as stored: the float's repr (reads back exactly), '' for none."""
    return "" if value is None else repr(value)


def _float(stored: bytes | None) -> float | None:
    return float(stored) if stored else None


def _where(url: str) -> str:
    """The server a URL names, for messages: scheme, host, port and database, no credentials."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"
    except ValueError:
        return "(unparseable URL)"


def _secrets(url: str) -> Sequence[str]:
    """Whatever in the URL may be a password, to be kept out of every message."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""] + [v for k, v in parse_qsl(parts.query) if k == "password"]
    except ValueError:
        return []
    return [secret for secret in found if secret]
