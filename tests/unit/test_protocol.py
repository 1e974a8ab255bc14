from __future__ import annotations

from broker.protocol import SERVER_INFO_KEY, modern_result, negotiate_handshake, upstream_meta

INFO = {"name": "mcp-authz-broker", "version": "1"}


def test_modern_results_get_result_type_cache_hints_and_server_info() -> None:
    out = modern_result("tools/list", {"tools": []}, INFO)
    assert out == {
        "tools": [],
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {SERVER_INFO_KEY: INFO},
    }
    call = modern_result("tools/call", {"content": [], "_meta": {"x": 1}}, INFO)
    assert "ttlMs" not in call  # tools/call results are not cacheable
    assert call["_meta"] == {"x": 1, SERVER_INFO_KEY: INFO}


def test_upstream_meta_drops_the_callers_envelope_and_progress_token() -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "progressToken": 7,
        "traceparent": "00-abc-def-01",
    }
    assert upstream_meta(meta) == {"traceparent": "00-abc-def-01"}
    assert upstream_meta(meta, progress_token=3) == {"traceparent": "00-abc-def-01", "progressToken": 3}
    assert upstream_meta(None) is None


def test_handshake_negotiation() -> None:
    assert negotiate_handshake("2025-06-18") == "2025-06-18"
    assert negotiate_handshake("1999-01-01") == "2025-11-25"
