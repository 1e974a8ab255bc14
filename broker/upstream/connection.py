"""One MCP session with one upstream: the broker as a JSON-RPC client, with id rewriting.

Every request the broker forwards gets a fresh id from this connection's counter;
the caller's id stays with the caller. Replies are matched back to futures. A
forwarded request may carry a `Relay`: the downstream side of that call, which
receives the progress, log and server-to-client requests the upstream sends while
it handles the call.

Which call does a server-sent message belong to? Over Streamable HTTP, the response
stream it arrived on says so. Over stdio and legacy SSE the wire does not: a
progress notification names its token (which the broker rewrote, so it maps back),
and anything else is attributed to the only forwarded call in flight, or to nobody
when there are several. That ambiguity is why `isolation: per_session` exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker import jsonrpc
from broker.errors import BrokerError, UpstreamClosed, UpstreamError, UpstreamTimeout
from broker.jsonrpc import Message, RequestId
from broker.protocol import LATEST_HANDSHAKE
from broker.upstream.transport import Transport, TransportError

log = logging.getLogger("broker.upstream")


class Relay(Protocol):
    """The downstream side of one forwarded call."""

    @property
    def session(self) -> Any:
        """The caller's session (handshake era), or None (stateless era)."""

    @property
    def client_capabilities(self) -> dict[str, Any]:
        """What the caller declared it can receive (elicitation, sampling, roots…)."""

    def notify(self, message: Message) -> None:
        """Send a notification to the caller, on the stream of its request."""

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """Send a server-to-client request to the caller and return its result."""


@dataclass(slots=True)
class PendingCall:
    upstream_id: int
    method: str
    future: asyncio.Future[Message]
    relay: Relay | None = None
    caller_progress_token: Any = None


class UpstreamEvents(Protocol):
    """What the broker does with messages an upstream sends on its own initiative."""

    def upstream_notification(
        self, conn: UpstreamConnection, message: Message, call: PendingCall | None
    ) -> None: ...

    async def upstream_request(
        self, conn: UpstreamConnection, message: Message, call: PendingCall | None
    ) -> dict[str, Any]:
        """Answer a server-to-client request; raise BrokerError or UpstreamRpcError to answer an error."""
        ...


class UpstreamRpcError(Exception):
    """An error object to send back as the answer to an upstream's request."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", "error"))
        self.error = error


@dataclass
class InitializeInfo:
    protocol_version: str
    capabilities: dict[str, Any]
    server_info: dict[str, Any]
    instructions: str | None


def broker_client_capabilities(relay_roots: bool) -> dict[str, Any]:
    """What the broker declares to an upstream: it relays these to the caller that asked for them.

    Roots only when the operator opted in: a server may treat the caller's roots as its
    new sandbox (server-filesystem does).
    """
    capabilities: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}, "url": {}}}
    if relay_roots:
        capabilities["roots"] = {"listChanged": True}
    return capabilities


@dataclass
class _Counters:
    next_id: int = 0
    forwarded: int = 0
    background: set[asyncio.Task[None]] = field(default_factory=set)


class UpstreamConnection:
    def __init__(
        self,
        name: str,
        transport: Transport,
        events: UpstreamEvents,
        *,
        owner: object | None = None,
        on_closed: Callable[[UpstreamConnection, str], None] | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.owner = owner
        self.info: InitializeInfo | None = None
        self.closed = False
        self.close_reason: str | None = None
        self._events = events
        self._on_closed = on_closed
        self._pending: dict[object, PendingCall] = {}  # keyed by upstream id; lookups take any wire value
        self._relayed: dict[int, PendingCall] = {}  # forwarded calls with a relay, for attribution
        self._served: dict[object, asyncio.Task[None]] = {}  # upstream → broker requests being answered
        self._c = _Counters()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(
        self, timeout: float, client_name: str, client_version: str, *, relay_roots: bool = False
    ) -> InitializeInfo:
        """Connect and run the handshake; raises UpstreamError with the reason on failure."""
        try:
            async with asyncio.timeout(timeout):
                await self.transport.open(self._on_message, self._on_transport_closed)
                reply = await self.request(
                    "initialize",
                    {
                        "protocolVersion": LATEST_HANDSHAKE,
                        "capabilities": broker_client_capabilities(relay_roots),
                        "clientInfo": {"name": client_name, "version": client_version},
                    },
                    timeout=None,
                )
        except TimeoutError:
            await self.close(f"did not finish initialize within {timeout:g}s")
            raise UpstreamTimeout(
                f"upstream {self.name} did not finish initialize within {timeout:g}s"
            ) from None
        except TransportError as exc:
            await self.close(str(exc))
            raise UpstreamError(f"upstream {self.name}: {exc}") from None
        except BrokerError:
            await self.close("initialize failed")
            raise
        if "error" in reply:
            await self.close("initialize was refused")
            err = reply["error"]
            raise UpstreamError(
                f"upstream {self.name} refused initialize: {err.get('message')} ({err.get('code')})"
            )
        result = reply.get("result") or {}
        self.info = InitializeInfo(
            protocol_version=str(result.get("protocolVersion", LATEST_HANDSHAKE)),
            capabilities=result.get("capabilities") or {},
            server_info=result.get("serverInfo") or {},
            instructions=result.get("instructions"),
        )
        await self._send(jsonrpc.notification("notifications/initialized"))
        return self.info

    def _on_transport_closed(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        error = UpstreamClosed(f"upstream {self.name} {reason}" if not reason.startswith("the") else reason)
        for call in list(self._pending.values()):
            if not call.future.done():
                call.future.set_exception(error)
        for task in list(self._served.values()):
            task.cancel()
        if self._on_closed is not None:
            self._on_closed(self, reason)

    async def close(self, reason: str = "closed by the broker") -> None:
        if not self.closed:
            self._on_transport_closed(reason)
        await self.transport.close()
        for task in list(self._c.background):
            task.cancel()

    # -- broker → upstream -----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None,
        *,
        timeout: float | None,
        relay: Relay | None = None,
        caller_progress_token: Any = None,
    ) -> Message:
        """Send a request and return the upstream's answer (a message with `result` or `error`).

        If the awaiting task is cancelled or the deadline passes, the upstream is told
        with `notifications/cancelled`, as the protocol asks.
        """
        if self.closed:
            raise UpstreamClosed(f"upstream {self.name} is not connected ({self.close_reason})")
        self._c.next_id += 1
        uid = self._c.next_id
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        call = PendingCall(uid, method, future, relay, caller_progress_token)
        if caller_progress_token is not None:
            # The upstream id doubles as the progress token: unique on this connection.
            params = dict(params or {})
            params["_meta"] = {**(params.get("_meta") or {}), "progressToken": uid}
        self._pending[uid] = call
        if relay is not None:
            self._relayed[uid] = call
        try:
            if timeout is None:
                await self.transport.send(jsonrpc.request(uid, method, params))
                return await future
            async with asyncio.timeout(timeout):
                await self.transport.send(jsonrpc.request(uid, method, params))
                return await future
        except TimeoutError:
            self._cancel_upstream(uid, f"the broker's deadline of {timeout:g}s passed")
            raise UpstreamTimeout(
                f"upstream {self.name} did not answer {method} within {timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            self._cancel_upstream(uid, "the caller cancelled the request")
            raise
        except TransportError as exc:
            raise UpstreamClosed(f"upstream {self.name}: {exc}") from None
        finally:
            del self._pending[uid]
            self._relayed.pop(uid, None)
            if future.done() and not future.cancelled():
                future.exception()  # failed by a close while the send itself failed: already reported
            else:
                future.cancel()

    def _cancel_upstream(self, uid: int, reason: str) -> None:
        if not self.closed:
            msg = jsonrpc.notification("notifications/cancelled", {"requestId": uid, "reason": reason})
            self._spawn(self._send(msg))

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        await self._send(jsonrpc.notification(method, params))

    async def _send(self, message: Message) -> None:
        if self.closed:
            return
        try:
            await self.transport.send(message)
        except TransportError as exc:
            log.debug("upstream %s: could not send %s: %s", self.name, message.get("method", "reply"), exc)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._c.background.add(task)
        task.add_done_callback(self._c.background.discard)

    # -- upstream → broker -----------------------------------------------------------------

    def _on_message(self, message: Message, related: RequestId | None) -> None:
        if "method" not in message:
            call = self._pending.get(message.get("id"))
            if call is not None and not call.future.done():
                call.future.set_result(message)
            return
        if "id" in message:
            self._serve(message, self._attribute(related))
            return
        method = message["method"]
        if method == "notifications/progress":
            self._relay_progress(message)
        elif method == "notifications/cancelled":
            params = message.get("params") or {}
            task = self._served.get(params.get("requestId"))
            if task is not None:
                task.cancel()
        else:
            self._events.upstream_notification(self, message, self._attribute(related))

    def _attribute(self, related: RequestId | None) -> PendingCall | None:
        if related is not None:
            return self._pending.get(related)
        if len(self._relayed) == 1:
            return next(iter(self._relayed.values()))
        return None

    def _relay_progress(self, message: Message) -> None:
        params = message.get("params") or {}
        call = self._pending.get(params.get("progressToken"))
        if call is None or call.relay is None or call.caller_progress_token is None:
            return
        call.relay.notify(
            jsonrpc.notification(
                "notifications/progress", {**params, "progressToken": call.caller_progress_token}
            )
        )

    def _serve(self, message: Message, call: PendingCall | None) -> None:
        request_id = message["id"]
        if message["method"] == "ping":
            self._spawn(self._send(jsonrpc.result(request_id, {})))
            return
        task = asyncio.ensure_future(self._answer(message, call))
        self._served[request_id] = task
        task.add_done_callback(lambda _t: self._served.pop(request_id, None))

    async def _answer(self, message: Message, call: PendingCall | None) -> None:
        request_id = message["id"]
        try:
            result = await self._events.upstream_request(self, message, call)
            reply = jsonrpc.result(request_id, result)
        except UpstreamRpcError as exc:
            reply = jsonrpc.error(request_id, exc.error)
        except BrokerError as exc:
            reply = jsonrpc.error(request_id, {"code": exc.code, "message": exc.message})
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("upstream %s: answering %s failed", self.name, message.get("method"))
            reply = jsonrpc.error(
                request_id, {"code": -32603, "message": "the broker could not relay the request"}
            )
        with contextlib.suppress(Exception):
            await self._send(reply)
