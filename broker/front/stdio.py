"""The stdio front: the broker as a subprocess of a host that only speaks stdio.

Newline-delimited JSON-RPC on stdin/stdout (logs go to stderr). One caller, so one
session; each request runs in its own task so a slow call does not block the next
one or the caller's answers to the broker's own requests. A request carrying the
2026-07-28 `_meta` envelope is served statelessly, as over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request

from broker import jsonrpc
from broker.errors import ACCESS_DENIED, INVALID_REQUEST, BrokerError, ForwardedError, error_for_exception
from broker.gateway.call import Call
from broker.gateway.gateway import Gateway, ListenStream
from broker.gateway.sessions import DownstreamSession
from broker.identity.authenticator import InsufficientScope, Unauthenticated
from broker.identity.principal import Principal
from broker.jsonrpc import Message
from broker.protocol import PROTOCOL_VERSION_KEY, SUBSCRIPTION_ID_KEY, modern_result
from broker.upstream.connection import UpstreamRpcError
from broker.upstream.stdio import MAX_LINE_BYTES

log = logging.getLogger("broker.front.stdio")


class StdioRelay:
    """Reply channel of one stdio request: everything goes straight to stdout."""

    def __init__(
        self, front: StdioFront, session: DownstreamSession | None, capabilities: dict[str, Any] | None = None
    ) -> None:
        self._front = front
        self._session = session
        self._capabilities = capabilities if capabilities is not None else {}

    @property
    def session(self) -> DownstreamSession | None:
        return self._session

    @property
    def client_capabilities(self) -> dict[str, Any]:
        return self._session.client_capabilities if self._session is not None else self._capabilities

    def notify(self, message: Message) -> None:
        self._front.write(message)

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        if self._session is None:
            raise UpstreamRpcError({"code": -32603, "message": f"a stateless caller cannot receive {method}"})
        return await self._session.send_request(method, params, self._front.write)


Identify = Callable[[], Awaitable[Principal]]
"""Who the stdio caller is: the token from the environment, verified (per request), or the default."""


class StdioFront:
    def __init__(self, gateway: Gateway, identify: Identify) -> None:
        self._gateway = gateway
        self._identify = identify
        self._session: DownstreamSession | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def write(self, message: Message) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(jsonrpc.dumps(message) + b"\n")

    async def run(self) -> None:
        reader, self._writer = await stdio_streams()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                if line.strip():
                    self._receive(line)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._session is not None:
                await self._gateway.sessions.close(self._session.id)
            with contextlib.suppress(Exception):
                await self._writer.drain()

    def _receive(self, line: bytes) -> None:
        try:
            message = jsonrpc.loads(line)
        except ValueError:
            self.write(jsonrpc.simple_error(None, -32700, "Parse error: the line is not valid JSON"))
            return
        problem = jsonrpc.envelope_problem(message)
        if problem is not None:
            self.write(jsonrpc.invalid_request(f"Invalid Request: {problem}", _safe_id(message)))
            return
        if "method" not in message:
            if self._session is not None:
                self._session.resolve(message)
            return
        if "id" not in message:
            self._gateway.handle_notification(self._session, message)
            return
        task = asyncio.ensure_future(self._serve(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._session is not None:
            request_id = message["id"]
            self._session.in_flight[request_id] = task
            task.add_done_callback(functools.partial(self._forget, request_id))

    def _forget(self, request_id: Any, _task: object) -> None:
        if self._session is not None:
            self._session.in_flight.pop(request_id, None)
            self._session.cancel_requested.discard(request_id)

    async def _serve(self, message: Message) -> None:
        method = message["method"]
        request_id = message["id"]
        params = message.get("params") or {}
        meta = params.get("_meta") if isinstance(params, dict) else None
        modern = isinstance(meta, dict) and PROTOCOL_VERSION_KEY in meta
        try:
            principal = await self._identify()
        except Unauthenticated as exc:
            self.write(
                jsonrpc.simple_error(
                    request_id, ACCESS_DENIED, f"Unauthorized: {exc.description}", reason="unauthenticated"
                )
            )
            return
        except InsufficientScope as exc:
            self.write(
                jsonrpc.simple_error(
                    request_id,
                    ACCESS_DENIED,
                    f"Forbidden: {exc.description}",
                    reason="insufficient_scope",
                    required_scope=" ".join(exc.scopes),
                )
            )
            return
        try:
            if method == "initialize" and not modern:
                self._initialize(request_id, params, principal)
                return
            if modern:
                await self._serve_modern(message, principal)
                return
            if self._session is None:
                self.write(jsonrpc.invalid_request("Invalid Request: send initialize first", request_id))
                return
            call = Call(
                method=method,
                params=params,
                request_id=request_id,
                protocol_version=self._session.protocol_version,
                transport="stdio",
                relay=StdioRelay(self, self._session),
                session=self._session,
                client_capabilities=self._session.client_capabilities,
                principal=principal,
            )
            self.write(jsonrpc.result(request_id, await self._gateway.handle(call)))
        except asyncio.CancelledError:
            if self._session is not None and request_id in self._session.cancel_requested:
                return  # the caller cancelled: no answer is owed
            raise
        except Exception as exc:
            if not isinstance(exc, BrokerError | ForwardedError):
                log.exception("unexpected error while handling %s", method)
            self.write(jsonrpc.error(request_id, error_for_exception(exc)))

    def _initialize(self, request_id: Any, params: dict[str, Any], principal: Principal) -> None:
        if self._session is not None:
            self.write(
                jsonrpc.invalid_request(
                    "Invalid Request: this stdio session is already initialized", request_id
                )
            )
            return
        result, self._session = self._gateway.initialize(params, "stdio", principal)
        self.write(jsonrpc.result(request_id, result))

    async def _serve_modern(self, message: Message, principal: Principal) -> None:
        request_id = message["id"]
        verdict = classify_inbound_request(message, headers=None)
        if isinstance(verdict, InboundLadderRejection):
            err: dict[str, Any] = {"code": verdict.code, "message": verdict.message}
            if verdict.data is not None:
                err["data"] = verdict.data
            self.write(jsonrpc.error(request_id, err))
            return
        method = message["method"]
        info = self._gateway.server_info
        if method == "server/discover":
            self.write(jsonrpc.result(request_id, modern_result(method, self._gateway.discover(), info)))
            return
        params = message.get("params") or {}
        caps = verdict.client_capabilities if isinstance(verdict.client_capabilities, dict) else {}
        call = Call(
            method=method,
            params=params,
            request_id=request_id,
            protocol_version=verdict.protocol_version,
            transport="stdio",
            relay=StdioRelay(self, None, caps),
            client_capabilities=caps,
            principal=principal,
        )
        if method == "subscriptions/listen":
            await self._listen(call)
            return
        result = await self._gateway.handle_stateless(call, call.relay)
        self.write(jsonrpc.result(request_id, modern_result(method, result, info)))

    async def _listen(self, call: Call) -> None:
        notifications = call.params.get("notifications")
        if not isinstance(notifications, dict):
            self.write(
                jsonrpc.simple_error(call.request_id, INVALID_REQUEST, "'notifications' must be an object")
            )
            return
        listen = ListenStream(call.request_id, {k: v for k, v in notifications.items() if v})
        await self._gateway.open_listen(listen, call)
        meta = {SUBSCRIPTION_ID_KEY: call.request_id}
        self.write(
            jsonrpc.notification(
                "notifications/subscriptions/acknowledged",
                {"notifications": listen.notifications, "_meta": meta},
            )
        )
        try:
            while True:
                event = await listen.outbox.next(3600)
                if event is not None:
                    self.write(event)
        finally:
            await self._gateway.close_listen(listen)


def _safe_id(message: Any) -> Any:
    if isinstance(message, dict) and isinstance(message.get("id"), (str, int)):
        return message["id"]
    return None


async def stdio_streams() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """This process's stdin and stdout as asyncio streams (newline-delimited JSON-RPC)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)
