"""`mcp-broker connect URL`: a local stdio server that forwards to a remote broker.

For hosts that only launch stdio servers (desktop apps): the host starts
`mcp-broker connect https://broker.example.com/mcp`, speaks MCP on stdin/stdout, and every
message goes to the remote broker over Streamable HTTP with the user's token. The host's
messages pass through unchanged, whatever their protocol era; the broker's HTTP client
transport does sessions, SSE, resumption and the event stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from broker import jsonrpc
from broker.front.stdio import stdio_streams
from broker.jsonrpc import Message
from broker.upstream.auth import StaticHeaders
from broker.upstream.http import StreamableHttpTransport
from broker.upstream.transport import TransportError

log = logging.getLogger("broker.connect")


class ConnectBridge:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._transport = StreamableHttpTransport("remote", url, StaticHeaders(lambda: headers))
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()

    def _write(self, message: Message) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(orjson.dumps(message) + b"\n")

    def _on_message(self, message: Message, related: Any) -> None:
        if related is not None and "method" not in message and message.get("id") is None:
            message = {**message, "id": related}  # an HTTP-level error answers the request that caused it
        self._write(message)

    def _on_close(self, reason: str) -> None:
        log.error("the remote broker ended the connection: %s", reason)
        self._closed.set()

    async def run(self) -> None:
        reader, self._writer = await stdio_streams()
        await self._transport.open(self._on_message, self._on_close)
        try:
            while not self._closed.is_set():
                line = await reader.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError:
                    self._write(jsonrpc.simple_error(None, -32700, "Parse error: the line is not valid JSON"))
                    continue
                if isinstance(message, dict) and "method" in message and "id" in message:
                    task = asyncio.ensure_future(self._forward(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif isinstance(message, dict):
                    await self._forward(message)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._transport.close()
            with contextlib.suppress(Exception):
                await self._writer.drain()

    async def _forward(self, message: Message) -> None:
        try:
            await self._transport.send(message)
        except TransportError as exc:
            if "id" in message and "method" in message:
                self._write(
                    jsonrpc.simple_error(message["id"], -32603, f"the remote broker did not answer: {exc}")
                )
            else:
                log.warning("could not forward %s: %s", message.get("method", "a response"), exc)
