from __future__ import annotations

import pytest

from broker.upstream.sse import ServerSentEvent, SSEDecoder


def test_events_split_at_any_byte_are_reassembled() -> None:
    stream = b'event: message\r\ndata: {"a":1}\r\n\r\n: ping\n\nid: 7\ndata: x\ndata: y\n\n'
    for cut in range(len(stream)):
        decoder = SSEDecoder()
        events = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert events == [
            ServerSentEvent("message", '{"a":1}'),
            ServerSentEvent("message", "x\ny", id="7"),
        ], cut


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_line_terminator(newline: bytes) -> None:
    # A lone CR at the end of a chunk may be half of a CRLF, so a following line settles it.
    data = newline.join([b"event: endpoint", b"data: /messages?s=1", b"", b": next", b""])
    assert SSEDecoder().feed(data) == [ServerSentEvent("endpoint", "/messages?s=1")]


def test_comments_retry_and_unknown_fields() -> None:
    events = SSEDecoder().feed(b": keepalive\nretry: 100\nfoo: bar\ndata:no-space\n\n")
    assert events == [ServerSentEvent("message", "no-space", retry=100)]


def test_incomplete_event_is_held_until_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: partial\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("message", "partial")]
