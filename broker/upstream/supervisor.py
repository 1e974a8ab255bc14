"""Keeps one configured upstream available: start, initialize, list, ping, restart.

A start failure never stops the broker: the upstream's entries stay out of the
catalog, the reason is logged once (again only when it changes), and the supervisor
retries with exponential backoff. A connection that dies (process exit, session
lost, ping unanswered) is replaced the same way, and its in-flight calls fail with
the reason.

With `isolation: per_session`, each downstream session gets its own connection to the
upstream, opened on first use and closed with the session; the supervisor's own
connection then serves listings and health only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from typing import Protocol

from broker.config import UpstreamConfig, resolve_value
from broker.errors import BrokerError, UpstreamUnavailable
from broker.upstream.auth import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, OAuthToken, StaticHeaders, UpstreamAuth
from broker.upstream.connection import InitializeInfo, UpstreamConnection, UpstreamEvents
from broker.upstream.http import LegacySseTransport, StreamableHttpTransport
from broker.upstream.listing import UpstreamListing, fetch_listing
from broker.upstream.stdio import StdioTransport
from broker.upstream.transport import Transport

log = logging.getLogger("broker.upstream")

WAIT_FOR_RESTART_SECONDS = 2.0
"""A call arriving while its upstream restarts waits this long for it, at most."""

STABLE_AFTER_SECONDS = 30.0
"""A connection that lived this long resets the backoff: the next failure retries quickly."""


class UpstreamState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class UpstreamListener(Protocol):
    """Who learns about an upstream's availability and listing (the gateway)."""

    def upstream_ready(self, upstream: UpstreamSupervisor, listing: UpstreamListing) -> None: ...

    def upstream_down(self, upstream: UpstreamSupervisor, reason: str) -> None: ...


def make_transport(config: UpstreamConfig, auth: UpstreamAuth) -> Transport:
    if config.transport == "stdio":
        assert config.command is not None
        return StdioTransport(config.name, config.command, config.args, config.child_env(), config.cwd)
    assert config.url is not None
    if config.transport == "sse":
        return LegacySseTransport(config.name, config.url, auth)
    return StreamableHttpTransport(config.name, config.url, auth)


def make_auth(
    config: UpstreamConfig,
    *,
    tenant: str | None = None,
    subject_token: str | None = None,
    owner_connection: bool = False,
) -> UpstreamAuth:
    """The credential of one connection to the upstream (never the caller's token itself)."""
    base: Callable[[], dict[str, str]] = config.resolved_headers
    if tenant is not None:

        def base() -> dict[str, str]:
            return {**config.resolved_headers(), **config.resolved_tenant_headers(tenant)}

    auth = config.auth
    if auth is None:
        return StaticHeaders(base)
    form: dict[str, str] = {"client_id": auth.client_id}
    if auth.client_secret is not None:
        form["client_secret"] = resolve_value(auth.client_secret)
    for key, value in (("scope", auth.scope), ("resource", auth.resource), ("audience", auth.audience)):
        if value:
            form[key] = value
    if auth.type == "client_credentials" or owner_connection:
        # A token-exchange upstream's own connection (listings, health) has no caller: the
        # broker uses its own client-credentials token there, exchanged tokens for calls.
        form["grant_type"] = "client_credentials"
    else:
        if not subject_token:
            raise UpstreamUnavailable(
                f"upstream {config.name} exchanges the caller's token, and this caller presented none",
                upstream=config.name,
            )
        form.update(
            grant_type=TOKEN_EXCHANGE, subject_token=subject_token, subject_token_type=ACCESS_TOKEN_TYPE
        )
    return OAuthToken(config.name, auth.token_url, lambda: form, base)


class UpstreamSupervisor:
    def __init__(
        self,
        config: UpstreamConfig,
        events: UpstreamEvents,
        listener: UpstreamListener,
        *,
        client_name: str,
        client_version: str,
        transport_factory: Callable[[UpstreamConfig, UpstreamAuth], Transport] = make_transport,
    ) -> None:
        self.config = config
        self.name = config.name
        self.state = UpstreamState.STOPPED
        self.last_error: str | None = None
        self.restarts = 0
        self.connection: UpstreamConnection | None = None
        self.listing = UpstreamListing()
        self._events = events
        self._listener = listener
        self._client = (client_name, client_version)
        self._transport_factory = transport_factory
        # The broker's own token (client credentials) serves every connection of this upstream.
        self._shared_auth: UpstreamAuth | None = None
        self._ready = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._lost = asyncio.Event()
        self._next_attempt_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._refresh_wanted = False
        self._sessions: dict[object, UpstreamConnection] = {}
        self._session_locks: dict[object, asyncio.Lock] = {}
        # Connections no downstream session will close (stateless principals, tenants): last use.
        self._idle_since: dict[tuple[str, str], float] = {}
        self._reaper: asyncio.Task[None] | None = None

    @property
    def info(self) -> InitializeInfo | None:
        return self.connection.info if self.connection else None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin supervising; returns after the first attempt has succeeded or failed."""
        self._task = asyncio.create_task(self._run(), name=f"upstream-{self.name}")
        if self.config.isolation != "shared":
            self._reaper = asyncio.create_task(self._reap_idle(), name=f"upstream-{self.name}-idle")
        await self._first_attempt.wait()

    async def stop(self) -> None:
        self.state = UpstreamState.STOPPED
        for task in (self._task, self._reaper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for key in list(self._sessions):
            await self.release_session(key)
        if self.connection is not None:
            await self.connection.close("the broker is shutting down")
            self.connection = None

    async def _run(self) -> None:
        backoff = self.config.restart.initial_backoff
        attempt = 0
        while True:
            attempt += 1
            self.state = UpstreamState.STARTING
            started = time.monotonic()
            try:
                await self._connect()
            except BrokerError as exc:
                self._failed(exc.message, attempt)
            except Exception as exc:  # never let one upstream's surprise kill supervision
                log.exception("upstream %s: unexpected error while starting", self.name)
                self._failed(f"unexpected error: {exc!r}", attempt)
            else:
                if attempt > 1 or self.restarts:
                    log.info("upstream %s: ready again after %d attempt(s)", self.name, attempt)
                else:
                    log.info("upstream %s: ready", self.name)
                attempt = 0
                self.last_error = None
                self._first_attempt.set()
                reason = await self._serve()
                self._down(reason)
                if time.monotonic() - started >= STABLE_AFTER_SECONDS:
                    backoff = self.config.restart.initial_backoff
            self._first_attempt.set()
            self.state = UpstreamState.BACKOFF
            self._next_attempt_at = time.monotonic() + backoff
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.restart.max_backoff)

    async def _connect(self) -> None:
        self._lost.clear()
        conn = await self._open(None, on_closed=self._connection_closed)
        try:
            listing = await fetch_listing(conn, self.config.timeouts.startup)
        except BaseException:
            await conn.close("listing failed")
            raise
        self.connection = conn
        self.listing = listing
        self.state = UpstreamState.READY
        self._ready.set()
        self._listener.upstream_ready(self, listing)

    async def _serve(self) -> str:
        """Wait until the connection is lost; ping it meanwhile. Returns the reason."""
        conn = self.connection
        assert conn is not None
        interval = self.config.timeouts.ping_interval
        while not conn.closed:
            if interval <= 0:
                await self._lost.wait()
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), interval)
            if conn.closed:
                break
            try:
                reply = await conn.request("ping", None, timeout=self.config.timeouts.ping)
                if "error" in reply:
                    log.debug("upstream %s: ping answered with an error: %s", self.name, reply["error"])
            except BrokerError as exc:
                await conn.close(f"did not answer ping: {exc.message}")
        return conn.close_reason or "connection lost"

    async def _open(
        self,
        owner: object | None,
        on_closed: Callable[[UpstreamConnection, str], None] | None = None,
        auth: UpstreamAuth | None = None,
    ) -> UpstreamConnection:
        """A new connection to the upstream, handshake done (raises BrokerError with the reason)."""
        if auth is None:
            if self._shared_auth is None:
                self._shared_auth = make_auth(self.config, owner_connection=True)
            auth = self._shared_auth
        conn = UpstreamConnection(
            self.name,
            self._transport_factory(self.config, auth),
            self._events,
            owner=owner,
            on_closed=on_closed,
        )
        await conn.open(self.config.timeouts.startup, *self._client, relay_roots=self.config.relay_roots)
        return conn

    def _connection_closed(self, conn: UpstreamConnection, reason: str) -> None:
        if conn is self.connection:
            self._lost.set()

    def _failed(self, reason: str, attempt: int) -> None:
        if reason != self.last_error:
            log.warning("upstream %s: not available: %s (retrying with backoff)", self.name, reason)
        else:
            log.debug("upstream %s: attempt %d failed again: %s", self.name, attempt, reason)
        self.last_error = reason

    def _down(self, reason: str) -> None:
        self._ready.clear()
        self.restarts += 1
        self.connection = None
        self.last_error = reason
        if self.state is not UpstreamState.STOPPED:
            log.warning("upstream %s: connection lost: %s; restarting", self.name, reason)
            self._listener.upstream_down(self, reason)

    # -- use -------------------------------------------------------------------------------

    async def ready_connection(self) -> UpstreamConnection:
        """The shared connection, waiting briefly if a restart is about to finish."""
        conn = self.connection
        if conn is not None and not conn.closed:
            return conn
        due = self._next_attempt_at - time.monotonic()
        if self.state is UpstreamState.STARTING or (self.state is UpstreamState.BACKOFF and due < 1.0):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), WAIT_FOR_RESTART_SECONDS + max(due, 0.0))
            conn = self.connection
            if conn is not None and not conn.closed:
                return conn
        raise UpstreamUnavailable(
            f"upstream {self.name} is not available: {self.last_error or self.state.value}",
            upstream=self.name,
        )

    async def connection_for(
        self,
        session_key: object | None,
        *,
        tenant: str | None = None,
        subject_token: str | None = None,
    ) -> UpstreamConnection:
        """The connection a call goes to, per the isolation setting.

        shared: the supervisor's own connection. per_session: one per `session_key` (a caller
        session, or for stateless callers their principal). per_tenant: one per caller
        tenant, carrying that tenant's credential.
        """
        isolation = self.config.isolation
        if isolation == "shared" or (isolation == "per_session" and session_key is None):
            return await self.ready_connection()
        if isolation == "per_tenant":
            if tenant is None:
                raise UpstreamUnavailable(
                    f"upstream {self.name} serves callers per tenant, and this caller has no tenant",
                    upstream=self.name,
                )
            if self.config.tenant_headers and tenant not in self.config.tenant_headers:
                raise UpstreamUnavailable(
                    f"upstream {self.name} has no credential for tenant {tenant!r}", upstream=self.name
                )
            session_key = ("tenant", tenant)
        conn = self._sessions.get(session_key)
        if conn is not None and not conn.closed:
            self._used(session_key)
            return conn
        await self.ready_connection()  # the upstream must be healthy before opening more
        lock = self._session_locks.setdefault(session_key, asyncio.Lock())
        async with lock:
            conn = self._sessions.get(session_key)
            if conn is not None and not conn.closed:
                self._used(session_key)
                return conn
            auth = None
            if isolation == "per_tenant" or (self.config.auth and self.config.auth.type == "token_exchange"):
                auth = make_auth(
                    self.config,
                    tenant=tenant if isolation == "per_tenant" else None,
                    subject_token=subject_token,
                )
            try:
                conn = await self._open(session_key, auth=auth)
            except BrokerError as exc:
                raise UpstreamUnavailable(
                    f"upstream {self.name}: cannot open a connection for this caller: {exc.message}",
                    upstream=self.name,
                ) from None
            self._sessions[session_key] = conn
            self._used(session_key)
            return conn

    def _used(self, session_key: object) -> None:
        if isinstance(session_key, tuple):  # ("principal" | "tenant", id): closed when idle
            self._idle_since[session_key] = time.monotonic()

    def session_connection(self, session_key: object) -> UpstreamConnection | None:
        """The open per-session connection of `session_key`, if there is one."""
        conn = self._sessions.get(session_key)
        return conn if conn is not None and not conn.closed else None

    async def release_session(self, session_key: object) -> None:
        self._session_locks.pop(session_key, None)
        if isinstance(session_key, tuple):
            self._idle_since.pop(session_key, None)
        conn = self._sessions.pop(session_key, None)
        if conn is not None:
            await conn.close("the downstream session ended")

    async def _reap_idle(self) -> None:
        """Close caller connections unused for `timeouts.idle` (no session end will close them)."""
        idle = self.config.timeouts.idle
        while True:
            await asyncio.sleep(max(0.05, min(60.0, idle / 4)))
            cutoff = time.monotonic() - idle
            for key, since in list(self._idle_since.items()):
                conn = self._sessions.get(key)
                if conn is not None and conn.in_flight:
                    self._idle_since[key] = time.monotonic()  # busy now: idle counts from the end
                elif since < cutoff:
                    log.info(
                        "upstream %s: closing the connection of %s after %gs unused", self.name, key[0], idle
                    )
                    await self.release_session(key)

    async def refresh(self) -> None:
        """Fetch the listing again (after list_changed); a burst of notifications costs one fetch."""
        self._refresh_wanted = True
        if self._refresh_lock.locked():
            return  # the running refresh loops once more
        async with self._refresh_lock:
            while self._refresh_wanted:
                self._refresh_wanted = False
                await asyncio.sleep(0.02)
                conn = self.connection
                if conn is None or conn.closed:
                    return
                try:
                    listing = await fetch_listing(conn, self.config.timeouts.startup)
                except BrokerError as exc:
                    log.warning("upstream %s: refreshing its listing failed: %s", self.name, exc.message)
                    return
                self.listing = listing
                self._listener.upstream_ready(self, listing)
