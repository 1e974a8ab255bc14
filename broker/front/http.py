"""The Streamable HTTP front: one MCP endpoint serving both protocol eras.

A plain ASGI app, not the SDK's server: the frequent messages (calls, lists, pings)
are parsed with orjson and answered as `application/json`, and a response turns into
an SSE stream only when something has to travel before the result (progress, logs,
a server-to-client request) or the call runs long enough to need keepalives. The
reasons and the measurements are in docs/decisions.md.

Era routing follows the SDK: a request whose `MCP-Protocol-Version` header names a
non-handshake version is a 2026-07-28 request (checked by the SDK's own validation
ladder, `mcp.shared.inbound`); everything else is the handshake era, with sessions.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    unsupported_protocol_version_rejection,
)

from broker import jsonrpc
from broker.audit.trail import AuditTrail
from broker.config import HttpFrontConfig
from broker.errors import (
    ACCESS_DENIED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    BrokerError,
    ForwardedError,
    error_for_exception,
)
from broker.gateway.call import Call
from broker.gateway.gateway import Gateway, ListenStream
from broker.gateway.sessions import DownstreamSession, Outbox, SessionRegistry
from broker.identity.authenticator import Authenticator, InsufficientScope, Unauthenticated
from broker.identity.principal import Principal, describe, same_principal
from broker.jsonrpc import Message
from broker.protocol import (
    HANDSHAKE_VERSIONS,
    MODERN_VERSIONS,
    PROTOCOL_VERSION_KEY,
    SUBSCRIPTION_ID_KEY,
    modern_result,
)
from broker.upstream.connection import UpstreamRpcError

log = logging.getLogger("broker.front.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

KEEPALIVE_SECONDS: Final = 15.0
"""After this long without a message, a response commits to SSE and sends comment pings."""

CANCELLED: Final = -32800
LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})
SUPPORTED_VERSIONS: Final = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)
_ROUTED_METHODS: Final = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
_JSON: Final = (b"content-type", b"application/json")
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
_END: Final[Message] = {}


def sse_event(message: Message) -> bytes:
    return b"event: message\ndata: " + jsonrpc.dumps(message) + b"\n\n"


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_status(send: Send, status: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": b""})


class HttpResponseStream:
    """The reply channel of one POST: JSON if nothing comes before the result, else SSE."""

    def __init__(
        self,
        send: Send,
        session: DownstreamSession | None,
        headers: list[tuple[bytes, bytes]],
        capabilities: dict[str, Any] | None = None,
    ) -> None:
        self._send = send
        self._session = session
        self._capabilities = capabilities if capabilities is not None else {}
        self._headers = headers
        self._queue: collections.deque[Message] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(KEEPALIVE_SECONDS, self._commit)

    @property
    def session(self) -> DownstreamSession | None:
        return self._session

    @property
    def client_capabilities(self) -> dict[str, Any]:
        return self._session.client_capabilities if self._session is not None else self._capabilities

    def notify(self, message: Message) -> None:
        self._queue.append(message)
        if self._writer is None:
            self._commit()
        elif self._wake is not None:
            self._wake.set()

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        if self._session is None:
            raise UpstreamRpcError(
                {
                    "code": INTERNAL_ERROR,
                    "message": f"the caller uses the stateless protocol and cannot receive {method}",
                }
            )
        return await self._session.send_request(method, params, self.notify)

    def _commit(self) -> None:
        if self._writer is None:
            self._wake = asyncio.Event()
            self._writer = asyncio.create_task(self._write_loop())

    async def _write_loop(self) -> None:
        assert self._wake is not None
        await self._send(
            {"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *self._headers]}
        )
        while True:
            while self._queue:
                message = self._queue.popleft()
                if message is _END:
                    return
                await self._send(
                    {"type": "http.response.body", "body": sse_event(message), "more_body": True}
                )
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await self._send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})

    async def finish(
        self, reply: Message | None, status: int, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Send the final answer (None: end the stream without one, e.g. after a cancel)."""
        self._timer.cancel()
        if self._writer is None:
            if reply is None:
                await send_status(self._send, 204, self._headers)
            else:
                await send_json(self._send, status, jsonrpc.dumps(reply), [*self._headers, *(headers or [])])
            return
        if reply is not None:
            self._queue.append(reply)
        self._queue.append(_END)
        assert self._wake is not None
        self._wake.set()
        await self._writer
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


class DisconnectWatch:
    """Notices when the client goes away.

    In the stateless era that is the cancel signal: the current task is cancelled. In the
    handshake era a disconnect is not a cancel (the spec says so), so it only sets `event`:
    a call waiting for a human approval ends on it rather than run for nobody.
    """

    def __init__(self, receive: Receive, *, cancel: bool = True) -> None:
        self.gone = False
        self.event = asyncio.Event()
        self._task = asyncio.current_task() if cancel else None
        self._watch: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(receive())
        self._watch.add_done_callback(self._fired)

    def _fired(self, fut: asyncio.Future[dict[str, Any]]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        if fut.result().get("type") == "http.disconnect":
            self.gone = True
            self.event.set()
            if self._task is not None:
                self._task.cancel()

    def stop(self) -> None:
        self._watch.remove_done_callback(self._fired)
        self._watch.cancel()


class McpEndpoint:
    """ASGI app for the MCP path."""

    def __init__(
        self,
        gateway: Gateway,
        sessions: SessionRegistry,
        config: HttpFrontConfig,
        *,
        authenticator: Authenticator | None = None,
        resource_metadata: str | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self._gateway = gateway
        self._audit = audit
        self._sessions = sessions
        self._config = config
        self._authenticator = authenticator
        self._metadata_url = resource_metadata
        self._loopback_bind = config.host in LOOPBACK_NAMES
        self._allowed_hosts = {h.lower() for h in config.allowed_hosts}
        self._allowed_origins = {o.rstrip("/").lower() for o in config.allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            headers[key.decode("latin-1")] = value.decode("latin-1")
        refusal = self._check_host_and_origin(headers)
        if refusal is not None:
            status, message = refusal
            await send_json(
                send, status, jsonrpc.dumps(jsonrpc.simple_error(None, INVALID_REQUEST, message)), []
            )
            return
        arrival = Arrival(time.time_ns())
        principal: Principal | None = None
        if self._authenticator is not None:
            try:
                principal = (await self._authenticator.authenticate(headers.get("authorization"))).principal
                arrival.authenticated = ("bearer", arrival.at_ns, time.time_ns())
            except Unauthenticated as exc:
                await self._audit_refusal(scope, headers, "unauthenticated", exc.description)
                await self._challenge(send, 401, exc.description, invalid_token=exc.invalid_token)
                return
            except InsufficientScope as exc:
                await self._audit_refusal(scope, headers, "insufficient_scope", exc.description, exc.scopes)
                await self._challenge(send, 403, exc.description, scopes=exc.scopes)
                return
        method = scope["method"]
        try:
            if method == "POST":
                await self._post(scope, receive, send, headers, principal, arrival)
            elif method == "GET":
                await self._get(receive, send, headers, principal)
            elif method == "DELETE":
                await self._delete(send, headers, principal)
            else:
                await _reject(
                    send,
                    405,
                    INVALID_REQUEST,
                    f"Method Not Allowed: {method} is not served here; use POST (GET for the event stream, "
                    "DELETE to end a session)",
                    headers=[(b"allow", b"GET, POST, DELETE")],
                )
        except _ClientGone:
            return

    # -- checks ----------------------------------------------------------------------------

    def _step_up(
        self, reply: Message | None, status: int
    ) -> tuple[Message | None, int, list[tuple[bytes, bytes]]]:
        """A policy denied for a missing scope: answer 403 insufficient_scope so the client can step up."""
        error = reply.get("error") if reply is not None else None
        data = error.get("data") if isinstance(error, dict) else None
        if (
            not isinstance(data, dict)
            or data.get("reason") != "policy_denied"
            or not data.get("required_scope")
        ):
            return reply, status, []
        parts = ['error="insufficient_scope"', f'scope="{_quoted(str(data["required_scope"]))}"']
        if self._metadata_url:
            parts.append(f'resource_metadata="{self._metadata_url}"')
        return (
            reply,
            403,
            [(b"www-authenticate", ("Bearer " + ", ".join(parts)).encode("latin-1", "replace"))],
        )

    async def _audit_refusal(
        self,
        scope: Scope,
        headers: dict[str, str],
        reason: str,
        description: str,
        scopes: tuple[str, ...] = (),
    ) -> None:
        metrics = self._gateway.metrics
        if metrics is not None:
            metrics.authentication_failed(reason)
        if self._audit is None:
            return
        client = scope.get("client")
        await self._audit.auth_failure(
            reason=reason,
            description=description,
            transport="streamable-http",
            method=headers.get("mcp-method") or scope.get("method"),
            client=f"{client[0]}:{client[1]}" if client else None,
            required_scopes=scopes,
        )

    async def _challenge(
        self,
        send: Send,
        status: int,
        description: str,
        *,
        invalid_token: bool = False,
        scopes: tuple[str, ...] = (),
    ) -> None:
        """401 or 403 with the WWW-Authenticate header that tells a client what to do (RFC 6750, 9728)."""
        parts = []
        if status == 403:
            parts.append('error="insufficient_scope"')
            parts.append(f'scope="{" ".join(scopes)}"')
        elif invalid_token:
            parts.append('error="invalid_token"')
        if invalid_token or scopes:  # RFC 6750 §3.1: no error details when no credential was sent
            parts.append(f'error_description="{_quoted(description)}"')
        if self._metadata_url:
            parts.append(f'resource_metadata="{self._metadata_url}"')
        header = ("Bearer " + ", ".join(parts)).encode("latin-1", "replace")
        reason = "insufficient_scope" if status == 403 else "unauthenticated"
        title = "Forbidden" if status == 403 else "Unauthorized"
        body = jsonrpc.simple_error(None, ACCESS_DENIED, f"{title}: {description}", reason=reason)
        await send_json(send, status, jsonrpc.dumps(body), [(b"www-authenticate", header)])

    def _check_host_and_origin(self, headers: dict[str, str]) -> tuple[int, str] | None:
        """DNS-rebinding protection: a loopback broker only answers loopback Hosts and Origins."""
        host = headers.get("host", "")
        if self._loopback_bind or self._allowed_hosts:
            name = _hostname(host)
            if host.lower() not in self._allowed_hosts and not (
                self._loopback_bind and name in LOOPBACK_NAMES
            ):
                return 421, f"Misdirected request: Host {host!r} is not allowed (see http.allowed_hosts)"
        origin = headers.get("origin")
        if origin is not None:
            normalized = origin.rstrip("/").lower()
            if normalized not in self._allowed_origins and not _loopback_origin(normalized):
                return 403, f"Forbidden: Origin {origin!r} is not allowed (see http.allowed_origins)"
        return None

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes | None:
        cap = self._config.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            body = message.get("body", b"")
            size += len(body)
            if size > cap:
                return None
            chunks.append(body)
            if not message.get("more_body"):
                return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    # -- POST ------------------------------------------------------------------------------

    async def _post(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        principal: Principal | None,
        arrival: Arrival,
    ) -> None:
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            await _reject(
                send, 415, INVALID_REQUEST, "Unsupported Media Type: the body must be application/json"
            )
            return
        accept = headers.get("accept", "")
        if not _accepts(accept, "application/json") or not _accepts(accept, "text/event-stream"):
            await _reject(
                send,
                406,
                INVALID_REQUEST,
                "Not Acceptable: the Accept header must list both application/json and text/event-stream",
            )
            return
        body = await self._read_body(receive, headers)
        if body is None:
            await _reject(
                send,
                413,
                INVALID_REQUEST,
                f"Payload Too Large: the body exceeds {self._config.max_body_bytes} bytes",
            )
            return
        try:
            message = jsonrpc.loads(body)
        except ValueError:
            await _reject(send, 400, PARSE_ERROR, "Parse error: the body is not valid JSON")
            return
        version = headers.get("mcp-protocol-version")
        if version is None or version in HANDSHAKE_VERSIONS:
            await self._post_handshake(receive, send, headers, message, principal, arrival)
        elif version in MODERN_VERSIONS or _has_envelope(message):
            # The SDK's ladder then says precisely what is wrong (mismatch, unsupported version).
            await self._post_modern(scope, receive, send, headers, message, principal, arrival)
        else:
            rejection = unsupported_protocol_version_rejection(version, SUPPORTED_VERSIONS)
            assert rejection is not None
            await _send_rejection(send, rejection, _id_of(message))

    async def _post_handshake(
        self,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        message: Any,
        principal: Principal | None,
        arrival: Arrival,
    ) -> None:
        problem = jsonrpc.envelope_problem(message)
        if problem is not None:
            await _reject(send, 400, INVALID_REQUEST, f"Invalid Request: {problem}", _id_of(message))
            return
        if message.get("method") == "initialize":
            await self._initialize(send, headers, message, principal)
            return
        session_id = headers.get("mcp-session-id")
        if session_id is None:
            await _reject(
                send,
                400,
                INVALID_REQUEST,
                "Bad Request: the Mcp-Session-Id header is required; send initialize first",
                _id_of(message),
            )
            return
        session = self._bound_session(session_id, principal)
        if session is None:
            await _reject(
                send,
                404,
                INVALID_REQUEST,
                "Session not found: it expired or was closed; initialize a new session",
                _id_of(message),
            )
            return
        session.touch()
        session_header = [(b"mcp-session-id", session_id.encode())]
        if "method" not in message:
            session.resolve(message)
            await send_status(send, 202, session_header)
            return
        if "id" not in message:
            self._gateway.handle_notification(session, message)
            await send_status(send, 202, session_header)
            return
        params = message.get("params") or {}
        stream = HttpResponseStream(send, session, session_header)
        call = Call(
            method=message["method"],
            params=params,
            request_id=message["id"],
            protocol_version=session.protocol_version,
            transport="streamable-http",
            relay=stream,
            session=session,
            client_capabilities=session.client_capabilities,
            principal=principal,
            credential=self._credential(headers),
            trace_headers=_trace_headers(headers),
            authenticated=arrival.authenticated,
            arrived_ns=arrival.at_ns,
        )
        watch = DisconnectWatch(receive, cancel=False) if call.method in _ROUTED_METHODS else None
        call.disconnected = watch.event if watch is not None else None
        task = asyncio.current_task()
        assert task is not None
        session.in_flight[call.request_id] = task
        try:
            reply: Message | None = jsonrpc.result(call.request_id, await self._gateway.handle(call))
        except asyncio.CancelledError:
            if call.request_id not in session.cancel_requested:
                raise
            task.uncancel()
            reply = jsonrpc.simple_error(call.request_id, CANCELLED, "Request cancelled by the client")
        except (Exception, ForwardedError) as exc:
            reply = _error_reply(call, exc)
        finally:
            session.in_flight.pop(call.request_id, None)
            session.cancel_requested.discard(call.request_id)
            if watch is not None:
                watch.stop()
        await stream.finish(*self._step_up(reply, 200))

    async def _initialize(
        self, send: Send, headers: dict[str, str], message: Message, principal: Principal | None
    ) -> None:
        if "id" not in message:
            await _reject(
                send, 400, INVALID_REQUEST, "Invalid Request: initialize must be a request with an id"
            )
            return
        if headers.get("mcp-session-id"):
            await _reject(
                send,
                400,
                INVALID_REQUEST,
                "Bad Request: initialize must not carry an Mcp-Session-Id (it starts a new session)",
                message["id"],
            )
            return
        if self._sessions.full:
            await _reject(
                send,
                503,
                INTERNAL_ERROR,
                f"Service Unavailable: the broker already serves {self._sessions.max_sessions} sessions",
                message["id"],
            )
            return
        result, session = self._gateway.initialize(message.get("params") or {}, "streamable-http", principal)
        body = jsonrpc.dumps(jsonrpc.result(message["id"], result))
        await send_json(send, 200, body, [(b"mcp-session-id", session.id.encode())])

    async def _post_modern(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        message: Any,
        principal: Principal | None,
        arrival: Arrival,
    ) -> None:
        problem = jsonrpc.envelope_problem(message)
        if problem is not None or "method" not in message:
            reason = problem or "a request was expected"
            await _reject(send, 400, INVALID_REQUEST, f"Invalid Request: {reason}", _id_of(message))
            return
        if "id" not in message:
            rejection = unsupported_protocol_version_rejection(headers.get("mcp-protocol-version", ""))
            if rejection is not None:
                await _send_rejection(send, rejection, None)
            else:
                await send_status(send, 202)  # notifications carry nothing this era acts on
            return
        request_id = message["id"]
        duplicated = find_duplicated_routing_header(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
        )
        if duplicated is not None:
            await _reject(
                send, 400, -32020, f"Header mismatch: {duplicated} appears more than once", request_id
            )
            return
        verdict = classify_inbound_request(message, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            await _send_rejection(send, verdict, request_id)
            return
        method = message["method"]
        params = message.get("params") or {}
        capabilities = verdict.client_capabilities if isinstance(verdict.client_capabilities, dict) else {}
        if method == "server/discover":
            result = modern_result(method, self._gateway.discover(), self._gateway.server_info)
            await send_json(send, 200, jsonrpc.dumps(jsonrpc.result(request_id, result)), [])
            return
        stream = HttpResponseStream(send, None, [], capabilities)
        call = Call(
            method=method,
            params=params,
            request_id=request_id,
            protocol_version=verdict.protocol_version,
            transport="streamable-http",
            relay=stream,
            client_capabilities=capabilities,
            principal=principal,
            credential=self._credential(headers),
            trace_headers=_trace_headers(headers),
            authenticated=arrival.authenticated,
            arrived_ns=arrival.at_ns,
        )
        if method == "subscriptions/listen":
            await self._listen(receive, send, call)
            return
        watch = DisconnectWatch(receive) if method in _ROUTED_METHODS else None
        try:
            reply = jsonrpc.result(
                request_id,
                modern_result(
                    method, await self._gateway.handle_stateless(call, stream), self._gateway.server_info
                ),
            )
            status = 200
        except asyncio.CancelledError:
            if watch is None or not watch.gone:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            log.debug("the caller closed its stream; %s %s cancelled", method, request_id)
            return
        except Exception as exc:
            reply = _error_reply(call, exc)
            status = ERROR_CODE_HTTP_STATUS.get(reply["error"].get("code"), 200)
        finally:
            if watch is not None:
                watch.stop()
        await stream.finish(*self._step_up(reply, status))

    async def _listen(self, receive: Receive, send: Send, call: Call) -> None:
        notifications = call.params.get("notifications")
        if not isinstance(notifications, dict):
            await _reject(
                send, 400, -32602, "subscriptions/listen: 'notifications' must be an object", call.request_id
            )
            return
        honored: dict[str, Any] = {
            k: True
            for k in ("toolsListChanged", "promptsListChanged", "resourcesListChanged")
            if notifications.get(k) is True
        }
        uris = notifications.get("resourceSubscriptions")
        if isinstance(uris, list) and uris:
            honored["resourceSubscriptions"] = [u for u in uris if isinstance(u, str)]
        listen = ListenStream(call.request_id, honored)
        try:
            await self._gateway.open_listen(listen, call)
        except Exception as exc:
            await send_json(send, 200, jsonrpc.dumps(_error_reply(call, exc)), [])
            return
        meta = {SUBSCRIPTION_ID_KEY: call.request_id}
        ack = jsonrpc.notification(
            "notifications/subscriptions/acknowledged", {"notifications": honored, "_meta": meta}
        )
        try:
            await self._stream(receive, send, listen.outbox, first=ack, stop=None)
        finally:
            await self._gateway.close_listen(listen)

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        outbox: Outbox,
        *,
        first: Message | None,
        stop: Callable[[], bool] | None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Serve a long-lived SSE stream from `outbox` until the client leaves or `stop()` says so."""
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            outbox.notify(_END)

        watcher = asyncio.create_task(watch())
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *(headers or [])]}
            )
            if first is not None:
                await send({"type": "http.response.body", "body": sse_event(first), "more_body": True})
            while not gone.is_set() and not (stop is not None and stop()):
                message = await outbox.next(KEEPALIVE_SECONDS)
                if message is _END:
                    break
                body = b": ping\n\n" if message is None else sse_event(message)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()

    # -- GET and DELETE (handshake era) -------------------------------------------------------

    async def _get(
        self, receive: Receive, send: Send, headers: dict[str, str], principal: Principal | None
    ) -> None:
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_VERSIONS:
            await _reject(
                send,
                405,
                INVALID_REQUEST,
                f"Method Not Allowed: protocol {version} has no GET stream; use POST subscriptions/listen",
                headers=[(b"allow", b"POST")],
            )
            return
        if not _accepts(headers.get("accept", ""), "text/event-stream"):
            await _reject(
                send, 406, INVALID_REQUEST, "Not Acceptable: a GET stream needs Accept: text/event-stream"
            )
            return
        session = await self._session_or_reject(send, headers, principal)
        if session is None:
            return
        if session.standalone is not None:
            await _reject(send, 409, INVALID_REQUEST, "Conflict: this session already has an open GET stream")
            return
        outbox = Outbox()
        session.standalone = outbox
        try:
            await self._stream(
                receive,
                send,
                outbox,
                first=None,
                stop=lambda: session.closed,
                headers=[(b"mcp-session-id", session.id.encode())],
            )
        finally:
            if session.standalone is outbox:
                session.standalone = None

    async def _delete(self, send: Send, headers: dict[str, str], principal: Principal | None) -> None:
        session = await self._session_or_reject(send, headers, principal)
        if session is None:
            return
        if session.standalone is not None:
            session.standalone.notify(_END)
        await self._sessions.close(session.id)
        await send_status(send, 200)

    def _credential(self, headers: dict[str, str]) -> str | None:
        """The caller's verified bearer JWT, kept only so an upstream can exchange it (RFC 8693)."""
        if self._authenticator is None:
            return None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token.count(".") == 2 else None

    def _bound_session(self, session_id: str, principal: Principal | None) -> DownstreamSession | None:
        """The session, if it exists and belongs to this caller: another principal's session is unknown."""
        session = self._sessions.get(session_id)
        if session is not None and not same_principal(session.principal, principal):
            log.warning(
                "session %s… presented by %s but belongs to %s: answered as unknown",
                session_id[:8],
                describe(principal),
                describe(session.principal),
            )
            return None
        return session

    async def _session_or_reject(
        self, send: Send, headers: dict[str, str], principal: Principal | None
    ) -> DownstreamSession | None:
        session_id = headers.get("mcp-session-id")
        if session_id is None:
            await _reject(send, 400, INVALID_REQUEST, "Bad Request: the Mcp-Session-Id header is required")
            return None
        session = self._bound_session(session_id, principal)
        if session is None:
            await _reject(send, 404, INVALID_REQUEST, "Session not found: it expired or was closed")
            return None
        session.touch()
        return session


class _ClientGone(Exception):
    pass


def _error_reply(call: Call, exc: BaseException) -> Message:
    if not isinstance(exc, BrokerError | ForwardedError):
        log.exception("unexpected error while handling %s", call.method)
    return jsonrpc.error(call.request_id, error_for_exception(exc))


async def _reject(
    send: Send,
    status: int,
    code: int,
    message: str,
    request_id: Any = None,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send_json(
        send, status, jsonrpc.dumps(jsonrpc.simple_error(request_id, code, message)), headers or []
    )


async def _send_rejection(send: Send, rejection: InboundLadderRejection, request_id: Any) -> None:
    err: dict[str, Any] = {"code": rejection.code, "message": rejection.message}
    if rejection.data is not None:
        err["data"] = rejection.data
    status = ERROR_CODE_HTTP_STATUS.get(rejection.code, 400)
    await send_json(send, status, jsonrpc.dumps(jsonrpc.error(request_id, err)), [])


def _quoted(text: str) -> str:
    """Text safe inside a quoted header parameter: printable ASCII only, no quotes or backslashes."""
    text = text.replace('"', "'")
    return "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)


def _has_envelope(message: Any) -> bool:
    """Whether a body claims the stateless era (a `_meta` carrying the protocol version)."""
    if not isinstance(message, dict):
        return False
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and PROTOCOL_VERSION_KEY in meta


def _id_of(message: Any) -> Any:
    if isinstance(message, dict):
        value = message.get("id")
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value
    return None


def _accepts(accept: str, media: str) -> bool:
    if not accept:
        return False
    family = media.split("/")[0] + "/*"
    for part in accept.split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in (media, family, "*/*"):
            return True
    return False


def _hostname(host: str) -> str:
    """The host name of a Host header value (`name`, `name:port`, `[v6]:port`), lower-case."""
    try:
        return urlsplit("//" + host.strip()).hostname or ""
    except ValueError:
        return ""


def _loopback_origin(origin: str) -> bool:
    """An Origin of a page served from this machine: http(s)://<loopback>[:port], nothing else."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and parts.username is None
        and parts.password is None
        and not parts.path
        and (parts.hostname or "") in LOOPBACK_NAMES
    )


@dataclass(slots=True)
class Arrival:
    """When a request arrived, and how long verifying its credential took (for its span)."""

    at_ns: int
    authenticated: tuple[str, int, int] | None = None


def _trace_headers(headers: dict[str, str]) -> dict[str, str] | None:
    """The caller's W3C trace context headers, if any (validated where they are read)."""
    parent = headers.get("traceparent")
    if parent is None:
        return None
    state = headers.get("tracestate")
    return {"traceparent": parent, "tracestate": state} if state is not None else {"traceparent": parent}
