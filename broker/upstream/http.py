"""Upstreams over HTTP: Streamable HTTP (current) and HTTP+SSE (the 2024-11-05 transport).

Built on httpx2, the HTTP client the official MCP SDK itself depends on: against SDK
servers it answers in ~3 ms where aiohttp stalls ~40 ms per request on delayed ACKs
(numbers in docs/decisions.md). One client per upstream connection is kept for its
life, so TCP connections are pooled and reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2
import orjson
from mcp.shared.inbound import encode_header_value

from broker.jsonrpc import Message, RequestId, is_request
from broker.protocol import PROTOCOL_VERSION_KEY
from broker.telemetry.propagation import headers_from_meta
from broker.upstream.auth import UpstreamAuth
from broker.upstream.sse import SSEDecoder
from broker.upstream.transport import OnClose, OnMessage, TransportError

log = logging.getLogger("broker.upstream.http")


_ACCEPT_BOTH = "application/json, text/event-stream"
MAX_RESUMES = 100
"""Reconnections of one response stream, at most (each must bring something new)."""
DRAIN_SECONDS = 5.0
"""How long the unread tail of an answered response may take before its connection is closed."""
MAX_IDLE_RESUMES = 3
"""Reconnections in a row that bring no new event before the call fails."""


@dataclass(slots=True)
class _StreamCursor:
    """Where an SSE stream stands: what to resume from, how long to wait, whether it answered."""

    last_event_id: str | None = None
    retry_ms: int = 1000
    answered: bool = False
    idle_resumes: int = 0


def quick_ack(resp: httpx2.Response) -> None:
    """Acknowledge the server's segments at once on this (reused) connection.

    Many servers write a response in several pieces without TCP_NODELAY; on a kept-alive
    connection Linux then delays our ACK of the headers and the server holds the body
    until it comes: 40 ms per call. Quick-ACK mode after the headers removes the stall
    (44 ms → 2 ms measured against SDK servers) while keeping connections reused.
    """
    option = getattr(socket, "TCP_QUICKACK", None)
    stream = resp.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if option is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)


def trace_headers(message: Message) -> dict[str, str]:
    """The W3C trace context of a request's `_meta`, as HTTP headers (what HTTP servers read)."""
    params = message.get("params")
    return headers_from_meta(params.get("_meta")) if isinstance(params, dict) else {}


def stateless_headers(message: Message) -> dict[str, str]:
    """The routing headers a 2026-07-28 request must carry, read from its own `_meta` envelope.

    The broker speaks the handshake era upstream, so this is for the `connect` bridge, which
    passes its local client's messages through whatever their era.
    """
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_KEY) if isinstance(meta, dict) else None
    if not isinstance(version, str) or not isinstance(params, dict):
        return {}
    headers = {"MCP-Protocol-Version": version}
    method = message.get("method")
    if isinstance(method, str):
        headers["Mcp-Method"] = method
        name = params.get("uri" if method == "resources/read" else "name")
        if method in ("tools/call", "prompts/get", "resources/read") and isinstance(name, str):
            headers["Mcp-Name"] = encode_header_value(name)
    return headers


def _client(timeout_connect: float) -> httpx2.AsyncClient:
    # No read timeout here: a call's deadline is the connection's business (per request).
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(connect=timeout_connect, read=None, write=30.0, pool=30.0),
        limits=httpx2.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=60),
        follow_redirects=False,
    )


class StreamableHttpTransport:
    """One MCP session with a Streamable HTTP server: a POST per message, an optional GET stream."""

    kind = "streamable_http"

    def __init__(self, name: str, url: str, auth: UpstreamAuth, *, connect_timeout: float = 10.0) -> None:
        self.name = name
        self.url = url
        self._auth = auth
        self._connect_timeout = connect_timeout
        self._http: httpx2.AsyncClient | None = None
        self._headers: dict[str, str] = {}
        self._session_id: str | None = None
        self._protocol_version: str | None = None
        self._on_message: OnMessage | None = None
        self._on_close: OnClose | None = None
        self._get_task: asyncio.Task[None] | None = None
        self._draining: set[asyncio.Task[None]] = set()
        self._closed = False

    async def open(self, on_message: OnMessage, on_close: OnClose) -> None:
        self._on_message, self._on_close = on_message, on_close
        self._headers = {"Content-Type": "application/json", "Accept": _ACCEPT_BOTH}
        self._http = _client(self._connect_timeout)

    async def _request_headers(self) -> dict[str, str]:
        headers = {**await self._auth.headers(), **self._headers}
        if self._session_id is not None:
            headers["Mcp-Session-Id"] = self._session_id
        if self._protocol_version is not None:
            headers["MCP-Protocol-Version"] = self._protocol_version
        return headers

    async def send(self, message: Message) -> None:
        if self._http is None or self._closed:
            raise TransportError("the upstream connection is closed")
        related: RequestId | None = message["id"] if is_request(message) else None
        headers = await self._request_headers()
        headers.update(stateless_headers(message))
        headers.update(trace_headers(message))
        request = self._http.build_request("POST", self.url, content=orjson.dumps(message), headers=headers)
        resp: httpx2.Response | None = None
        chunks: AsyncIterator[bytes] | None = None
        try:
            resp = await self._http.send(request, stream=True)
            quick_ack(resp)
            chunks = resp.aiter_bytes()  # one iterator: what the answer leaves unread is drained later
            await self._read_response(resp, chunks, message, related)
        except httpx2.ConnectError as exc:
            # Nobody listens there any more: the connection is dead now, not at the next ping,
            # so the supervisor reconnects (and a group stops routing to this instance).
            self._fire_close(f"cannot connect to {self.url}: {exc!r}")
            raise TransportError(f"HTTP request to {self.url} failed: {exc!r}") from exc
        except httpx2.HTTPError as exc:
            raise TransportError(f"HTTP request to {self.url} failed: {exc!r}") from exc
        finally:
            if resp is not None:
                self._release(resp, chunks)
        if message.get("method") == "notifications/initialized" and self._get_task is None:
            self._get_task = asyncio.create_task(self._listen(), name=f"{self.name}-get")

    async def _read_response(
        self, resp: httpx2.Response, chunks: AsyncIterator[bytes], sent: Message, related: RequestId | None
    ) -> None:
        status = resp.status_code
        if sent.get("method") == "initialize" and status == 200:
            self._session_id = resp.headers.get("Mcp-Session-Id") or None
        if status == 202 and related is None:
            return
        if status == 404 and self._session_id is not None:
            self._fire_close("the upstream ended the session (HTTP 404)")
            raise TransportError("the upstream session expired (HTTP 404)")
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "text/event-stream" and status == 200:
            cursor = _StreamCursor()
            await self._pump_events(chunks, related, cursor, sent)
            if related is not None and not cursor.answered:
                await self._resume(related, cursor, sent)
            return
        body = b"".join([chunk async for chunk in chunks])
        if ctype == "application/json" and body:
            try:
                msg = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise TransportError(f"the upstream answered HTTP {status} with invalid JSON") from exc
            if isinstance(msg, dict):
                self._deliver(msg, related)
                self._remember_version(sent, msg)
                return
        if status >= 400 or related is not None:
            raise TransportError(f"the upstream answered HTTP {status}: {body[:200]!r}")

    async def _pump_events(
        self,
        chunks: AsyncIterator[bytes],
        related: RequestId | None,
        cursor: _StreamCursor,
        sent: Message | None = None,
    ) -> None:
        """Deliver the stream's messages until it ends or carries the answer to `related`."""
        decoder = SSEDecoder()
        async for chunk in chunks:
            for event in decoder.feed(chunk):
                if event.id is not None:
                    cursor.last_event_id = event.id
                if event.retry is not None:
                    cursor.retry_ms = event.retry
                if event.event != "message" or not event.data:
                    continue
                try:
                    msg = orjson.loads(event.data)
                except orjson.JSONDecodeError:
                    log.warning("upstream %s: ignoring an SSE event that is not JSON", self.name)
                    continue
                if isinstance(msg, dict):
                    self._deliver(msg, related)
                    if related is not None and msg.get("id") == related and "method" not in msg:
                        cursor.answered = True
                        if sent is not None:
                            self._remember_version(sent, msg)
                        return

    async def _resume(self, related: RequestId, cursor: _StreamCursor, sent: Message) -> None:
        """The stream ended before the answer: reconnect with Last-Event-ID, as the server asked.

        Servers with an event store may close a response stream mid-call (SSE polling) and
        expect the client to come back for the rest; without an event id there is nothing to
        resume and the call fails now rather than at its deadline.
        """
        assert self._http is not None
        for _ in range(MAX_RESUMES):
            if cursor.last_event_id is None:
                break
            await asyncio.sleep(min(cursor.retry_ms, 5000) / 1000)
            headers = await self._request_headers()
            headers["Accept"] = "text/event-stream"
            headers["Last-Event-ID"] = cursor.last_event_id
            before = cursor.last_event_id
            async with self._http.stream("GET", self.url, headers=headers) as resp:
                if resp.status_code != 200:
                    raise TransportError(
                        f"the upstream closed the stream of {sent.get('method')} before answering, "
                        f"and resuming it failed (HTTP {resp.status_code})"
                    )
                await self._pump_events(resp.aiter_bytes(), related, cursor, sent)
            if cursor.answered:
                return
            if cursor.last_event_id == before:
                cursor.idle_resumes += 1
                if cursor.idle_resumes >= MAX_IDLE_RESUMES:
                    break
        raise TransportError(f"the upstream closed the stream of {sent.get('method')} without answering")

    def _release(self, resp: httpx2.Response, chunks: AsyncIterator[bytes] | None) -> None:
        """Give the connection back to the pool without making the caller wait.

        Servers often end an SSE response some time after its last event; reading that
        tail in the background lets the TCP (and TLS) connection be reused instead of
        closed, which is most of an HTTP upstream's cost per call.
        """
        if resp.is_closed:
            return
        task = asyncio.ensure_future(self._drain(resp, chunks))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    @staticmethod
    async def _drain(resp: httpx2.Response, chunks: AsyncIterator[bytes] | None) -> None:
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                async for _ in chunks if chunks is not None else resp.aiter_raw():
                    pass
        except (TimeoutError, httpx2.HTTPError, httpx2.StreamError, asyncio.CancelledError):
            pass
        finally:
            await resp.aclose()

    def _remember_version(self, sent: Message, msg: Message) -> None:
        if sent.get("method") == "initialize" and isinstance(msg.get("result"), dict):
            version = msg["result"].get("protocolVersion")
            if isinstance(version, str):
                self._protocol_version = version

    def _deliver(self, msg: Message, related: RequestId | None) -> None:
        if self._on_message is not None:
            self._on_message(msg, related)

    async def _listen(self) -> None:
        """The standalone GET stream: server-initiated messages not tied to a request.

        Kept open for the connection's life: when it ends it is reopened (with
        Last-Event-ID when the server gave ids), backing off on errors. A server that
        does not offer one (405) is not asked again.
        """
        assert self._http is not None
        cursor = _StreamCursor()
        backoff = 0.5
        while not self._closed:
            headers = await self._request_headers()
            headers["Accept"] = "text/event-stream"
            if cursor.last_event_id is not None:
                headers["Last-Event-ID"] = cursor.last_event_id
            try:
                async with self._http.stream("GET", self.url, headers=headers) as resp:
                    if resp.status_code in (404, 405):
                        log.debug("upstream %s: no GET stream (HTTP %s)", self.name, resp.status_code)
                        return
                    if resp.status_code == 200:
                        backoff = 0.5
                        await self._pump_events(resp.aiter_bytes(), None, cursor)
                        await asyncio.sleep(min(cursor.retry_ms, 5000) / 1000)
                        continue
                    log.debug("upstream %s: GET stream refused (HTTP %s)", self.name, resp.status_code)
            except httpx2.HTTPError as exc:
                log.debug("upstream %s: GET stream ended: %r", self.name, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    def _fire_close(self, reason: str) -> None:
        if self._on_close is not None:
            callback, self._on_close = self._on_close, None
            callback(reason)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._draining):
            task.cancel()
        if self._get_task is not None:
            self._get_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._get_task
        if self._http is not None:
            if self._session_id is not None:
                with contextlib.suppress(Exception):
                    await self._http.delete(self.url, headers=await self._request_headers(), timeout=2.0)
            await self._http.aclose()
        self._fire_close("closed by the broker")


class LegacySseTransport:
    """The 2024-11-05 HTTP+SSE transport: one GET event stream, POSTs to the endpoint it names."""

    kind = "sse"

    def __init__(self, name: str, url: str, auth: UpstreamAuth, *, connect_timeout: float = 10.0) -> None:
        self.name = name
        self.url = url
        self._auth = auth
        self._connect_timeout = connect_timeout
        self._http: httpx2.AsyncClient | None = None
        self._headers: dict[str, str] = {}
        self._endpoint: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._on_close: OnClose | None = None
        self._closed = False

    async def open(self, on_message: OnMessage, on_close: OnClose) -> None:
        self._on_close = on_close
        self._headers = await self._auth.headers()
        self._http = _client(self._connect_timeout)
        endpoint: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(on_message, endpoint), name=f"{self.name}-sse")
        try:
            self._endpoint = await asyncio.wait_for(asyncio.shield(endpoint), self._connect_timeout)
        except TimeoutError as exc:
            raise TransportError(
                f"{self.url} sent no endpoint event within {self._connect_timeout:g}s"
            ) from exc

    async def _read(self, on_message: OnMessage, endpoint: asyncio.Future[str]) -> None:
        assert self._http is not None
        reason = "the SSE stream ended"
        try:
            headers = {**self._headers, "Accept": "text/event-stream"}
            async with self._http.stream("GET", self.url, headers=headers) as resp:
                if resp.status_code != 200:
                    raise TransportError(f"GET {self.url} answered HTTP {resp.status_code}")
                decoder = SSEDecoder()
                async for chunk in resp.aiter_bytes():
                    for event in decoder.feed(chunk):
                        if event.event == "endpoint" and not endpoint.done():
                            endpoint.set_result(self._checked_endpoint(event.data))
                        elif event.event == "message" and event.data:
                            try:
                                msg: Any = orjson.loads(event.data)
                            except orjson.JSONDecodeError:
                                continue
                            if isinstance(msg, dict):
                                on_message(msg, None)
        except (httpx2.HTTPError, TransportError) as exc:
            reason = str(exc) or repr(exc)
            if not endpoint.done():
                endpoint.set_exception(TransportError(f"cannot open {self.url}: {exc}"))
        except asyncio.CancelledError:
            reason = "closed by the broker"
        if not endpoint.done():
            endpoint.set_exception(TransportError(f"{self.url}: {reason} before the endpoint event"))
        if self._on_close is not None:
            callback, self._on_close = self._on_close, None
            callback(reason)

    def _checked_endpoint(self, data: str) -> str:
        joined = urljoin(self.url, data.strip())
        if urlsplit(joined)[:2] != urlsplit(self.url)[:2]:
            raise TransportError(f"the endpoint {joined!r} is not on the same origin as {self.url}")
        return joined

    async def send(self, message: Message) -> None:
        if self._http is None or self._endpoint is None or self._closed:
            raise TransportError("the upstream connection is closed")
        try:
            resp = await self._http.post(
                self._endpoint,
                content=orjson.dumps(message),
                headers={
                    **await self._auth.headers(),
                    "Content-Type": "application/json",
                    **trace_headers(message),
                },
            )
            if resp.status_code >= 400:
                raise TransportError(
                    f"POST {self._endpoint} answered HTTP {resp.status_code}: {resp.content[:200]!r}"
                )
        except httpx2.HTTPError as exc:
            raise TransportError(f"POST to {self._endpoint} failed: {exc}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._http is not None:
            await self._http.aclose()
