"""Incremental decoder for `text/event-stream` (the WHATWG server-sent events format).

Small enough to own: it is fed raw chunks as they arrive from an upstream and yields
complete events. Only the fields MCP uses are kept (`event`, `data`, `id`, `retry`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turn byte chunks into events; lines may be split across chunks at any byte."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        self._buffer += chunk
        events: list[ServerSentEvent] = []
        while True:
            cut, width = _line_end(self._buffer)
            if cut < 0:
                break
            line = self._buffer[:cut].decode("utf-8", errors="replace")
            self._buffer = self._buffer[cut + width :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            if not self._data and not self._event:
                return None
            event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id, self._retry)
            self._event, self._data, self._retry = "", [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None


def _line_end(buffer: bytes) -> tuple[int, int]:
    """Position and width of the first line terminator (CRLF, LF or CR), or (-1, 0)."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr < 0:
        return lf, 1 if lf >= 0 else 0
    if lf >= 0 and lf < cr:
        return lf, 1
    if cr == len(buffer) - 1:
        return -1, 0  # a CR at the end may be the first half of CRLF: wait for more
    return cr, 2 if buffer[cr + 1 : cr + 2] == b"\n" else 1
