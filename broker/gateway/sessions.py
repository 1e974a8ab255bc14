"""Downstream sessions (handshake era): who is connected, what they declared, what is pending.

A session exists from `initialize` to DELETE, idle expiry or shutdown. It owns the
server-to-client requests waiting for the caller's answer, the caller's in-flight
requests (so `notifications/cancelled` can reach them), its standalone stream (the
GET stream over HTTP) and its resource subscriptions. Stateless-era (2026-07-28)
requests have no session.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from broker import jsonrpc
from broker.errors import ClientCapabilityMissing
from broker.identity.principal import Principal
from broker.jsonrpc import Message
from broker.upstream.connection import UpstreamRpcError

log = logging.getLogger("broker.sessions")

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


class Outbox:
    """Messages for the caller that wait for a stream to carry them (the GET stream, stdout).

    Bounded: a caller that never reads does not grow the broker's memory without end;
    the oldest notifications are dropped first and the drop is logged.
    """

    def __init__(self, limit: int = 1000) -> None:
        self._queue: collections.deque[Message] = collections.deque()
        self._limit = limit
        self._wake = asyncio.Event()
        self.dropped = 0

    def notify(self, message: Message) -> None:
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("a caller is not reading its stream; %d message(s) dropped", self.dropped)
        self._queue.append(message)
        self._wake.set()

    async def next(self, timeout: float) -> Message | None:
        """The next message, or None after `timeout` seconds without one."""
        if not self._queue:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None
        return self._queue.popleft() if self._queue else None


class DownstreamSession:
    def __init__(
        self,
        session_id: str,
        protocol_version: str,
        client_info: dict[str, Any],
        client_capabilities: dict[str, Any],
        transport: str,
        principal: Principal | None = None,
    ) -> None:
        self.id = session_id
        self.principal = principal
        """Who opened the session: only the same principal may use it."""
        self.protocol_version = protocol_version
        self.client_info = client_info
        self.client_capabilities = client_capabilities
        self.transport = transport
        self.initialized = False
        self.log_level: str | None = None
        self.created = time.monotonic()
        self.last_active = self.created
        self.subscriptions: set[str] = set()
        self.standalone: Outbox | None = None
        """Where messages not tied to a request go; None while no stream is open."""
        self.in_flight: dict[object, asyncio.Task[Any]] = {}
        self.cancel_requested: set[object] = set()
        self._pending: dict[object, asyncio.Future[Message]] = {}
        self._next_id = 0
        self.closed = False

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def can_receive(self, capability: str) -> bool:
        return capability in self.client_capabilities

    def wants_log(self, level: Any) -> bool:
        if self.log_level is None or level not in LOG_LEVELS:
            return self.log_level is None
        return LOG_LEVELS.index(level) >= LOG_LEVELS.index(self.log_level)

    async def send_request(
        self, method: str, params: dict[str, Any] | None, deliver: Callable[[Message], None]
    ) -> dict[str, Any]:
        """Ask the caller something (elicitation, sampling, roots) and wait for its answer."""
        if self.closed:
            raise ClientCapabilityMissing("the caller's session has ended")
        self._next_id += 1
        request_id = f"broker-{self._next_id}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            deliver(jsonrpc.request(request_id, method, params))
            reply = await future
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            raise UpstreamRpcError(reply["error"] if isinstance(reply["error"], dict) else {"code": -32603})
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    def resolve(self, reply: Message) -> bool:
        """Hand a caller's response to the request it answers; False if nothing waits for it."""
        future = self._pending.get(reply.get("id"))
        if future is None or future.done():
            return False
        future.set_result(reply)
        return True

    def close(self) -> None:
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_result(jsonrpc.simple_error(None, -32603, "the caller's session ended"))
        for task in self.in_flight.values():
            task.cancel()


class SessionRegistry:
    """All live handshake-era sessions; reaps idle ones."""

    def __init__(
        self,
        *,
        idle_timeout: float,
        max_sessions: int,
        on_closed: Callable[[DownstreamSession], Awaitable[None]] | None = None,
    ) -> None:
        self._sessions: dict[str, DownstreamSession] = {}
        self._idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._on_closed = on_closed
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Any:
        return iter(list(self._sessions.values()))

    @property
    def full(self) -> bool:
        return len(self._sessions) >= self.max_sessions

    def create(
        self,
        protocol_version: str,
        client_info: dict[str, Any],
        client_capabilities: dict[str, Any],
        transport: str,
        principal: Principal | None = None,
    ) -> DownstreamSession:
        session_id = secrets.token_hex(16)  # visible ASCII, unguessable
        session = DownstreamSession(
            session_id, protocol_version, client_info, client_capabilities, transport, principal
        )
        self._sessions[session_id] = session
        return session

    def get(self, session_id: str) -> DownstreamSession | None:
        return self._sessions.get(session_id)

    async def close(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        session.close()
        if self._on_closed is not None:
            await self._on_closed(session)
        return True

    async def close_all(self) -> None:
        for session_id in list(self._sessions):
            await self.close(session_id)

    def start_reaper(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="session-reaper")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await self.close_all()

    async def _reap(self) -> None:
        interval = max(1.0, min(60.0, self._idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - self._idle_timeout
            for session in list(self._sessions.values()):
                if session.last_active < cutoff and not session.in_flight and session.standalone is None:
                    log.info("session %s… expired after %gs idle", session.id[:8], self._idle_timeout)
                    await self.close(session.id)
