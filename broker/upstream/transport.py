"""The seam between an upstream connection and the bytes: stdio pipes or HTTP.

A transport delivers every message it receives to `on_message(message, related_id)`.
`related_id` is the id of the broker's own request whose HTTP response stream carried
the message (Streamable HTTP only), else None: over stdio and legacy SSE the wire
does not say which request a notification or server request belongs to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from broker.jsonrpc import Message, RequestId

OnMessage = Callable[[Message, RequestId | None], None]
OnClose = Callable[[str], None]


class Transport(Protocol):
    """How one upstream connection moves JSON-RPC messages."""

    kind: str

    async def open(self, on_message: OnMessage, on_close: OnClose) -> None:
        """Connect (spawn, or reach the URL). `on_close(reason)` fires once when the link dies."""

    async def send(self, message: Message) -> None:
        """Send one message. Over HTTP, a request's whole response stream is read before this returns."""

    async def close(self) -> None:
        """Disconnect and release everything (processes, sockets). Safe to call twice."""


class TransportError(Exception):
    """The transport could not deliver a message; the text says why, for the caller and the log."""
