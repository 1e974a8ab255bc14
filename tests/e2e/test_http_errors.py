"""Every way a request to the Streamable HTTP front can be wrong, against the real broker.

One broker subprocess (a counter.py upstream over stdio, `http.max_body_bytes` set small)
serves the whole module. Each test sends one bad request with httpx and checks the HTTP
status, the JSON-RPC `error.code` and that `error.message` tells a person what to change;
after every test, an autouse check proves the broker still answers good requests in both
eras (so no bad request crashed it or poisoned its connection handling).

Eras: "2025-11-25" is the handshake era (initialize, Mcp-Session-Id); "2026-07-28" is the
stateless era (`_meta` envelope, MCP-Protocol-Version + Mcp-Method/Mcp-Name headers).
Expected statuses follow the 2025-11-25 transport rules and, for the 2026 era, the SDK's
`ERROR_CODE_HTTP_STATUS` table. Known broker bugs are strict xfails with the reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.support.broker import BrokerProcess, broker_config, running_broker, stdio_upstream

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ERAS = (LEGACY, MODERN)
MAX_BODY = 2048
TIMEOUTS = {"call": 5, "startup": 15, "ping_interval": 0}

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

BASE_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
_ids = itertools.count(1000)


# --- broker ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config = broker_config(
        {"counter": stdio_upstream("counter", timeouts=TIMEOUTS)},
        http={"max_body_bytes": MAX_BODY},
    )
    with running_broker(tmp_path_factory.mktemp("http-errors"), config) as process:
        yield process


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # One client (one pooled keep-alive connection) for the whole module: an answer that
    # leaves the connection in a bad state (e.g. an unread oversize body) shows up next.
    with httpx.Client(timeout=15) as client:
        yield client


# --- wire helpers -----------------------------------------------------------------------------


def envelope(version: str = MODERN) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "e2e-http-errors", "version": "1"},
    }


def rpc(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response (JSON, or the last event of an SSE stream)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        assert data, f"empty SSE answer: {response.text!r}"
        message: dict[str, Any] = orjson.loads(data[-1])
        return message
    assert response.headers.get("content-type", "").startswith("application/json"), (
        f"status {response.status_code}, content-type {response.headers.get('content-type')!r}, "
        f"body {response.text!r}"
    )
    message = orjson.loads(response.content)
    return message


def assert_error(
    response: httpx.Response, status: int, code: int, *advice: str, request_id: Any = "any"
) -> dict[str, Any]:
    """Check the status, the JSON-RPC error code, and that the message carries `advice` phrases."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    message = rpc(response)
    assert message.get("jsonrpc") == "2.0", message
    assert "result" not in message, message
    error = message.get("error")
    assert isinstance(error, dict), message
    assert error.get("code") == code, f"expected error code {code}: {error}"
    text = error.get("message")
    assert isinstance(text, str), error
    assert len(text) > 15, f"error message too short to act on: {text!r}"
    for phrase in advice:
        assert phrase.lower() in text.lower(), f"{phrase!r} not in error message {text!r}"
    if request_id != "any":
        assert message.get("id") == request_id, message
    return error


def open_session(http: httpx.Client, url: str) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": next(_ids),
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "e2e-http-errors", "version": "1"},
        },
    }
    response = http.post(url, json=init, headers=BASE_HEADERS)
    assert response.status_code == 200, response.text
    assert rpc(response)["result"]["protocolVersion"] == LEGACY
    session_id = response.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    done = http.post(url, json=initialized, headers={**BASE_HEADERS, "mcp-session-id": session_id})
    assert done.status_code == 202, done.text
    return session_id


@dataclass
class Caller:
    """Sends requests as a client of one era would (session headers, or envelope + routing headers)."""

    era: str
    http: httpx.Client
    url: str
    session_id: str | None = None

    def headers(self, method: str | None = None, name: str | None = None, **extra: str) -> dict[str, str]:
        headers = dict(BASE_HEADERS)
        if self.era == LEGACY:
            assert self.session_id is not None
            headers["mcp-session-id"] = self.session_id
            headers["mcp-protocol-version"] = LEGACY
        else:
            headers["mcp-protocol-version"] = MODERN
            if method is not None:
                headers["mcp-method"] = method
            if name is not None:
                headers["mcp-name"] = name
        headers.update(extra)
        return headers

    def request(
        self, method: str, params: dict[str, Any] | None = None, request_id: Any = None
    ) -> dict[str, Any]:
        params = dict(params or {})
        if self.era == MODERN:
            params["_meta"] = envelope()
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": next(_ids) if request_id is None else request_id}
        body["method"] = method
        body["params"] = params
        return body

    def post(
        self, body: Any, method: str | None = "ping", name: str | None = None, **extra: str
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.http.post(self.url, content=content, headers=self.headers(method, name, **extra))

    def call(
        self, method: str, params: dict[str, Any] | None = None, name: str | None = None
    ) -> httpx.Response:
        return self.post(self.request(method, params), method, name)


@pytest.fixture(params=ERAS, ids=["2025-11-25", "2026-07-28"])
def caller(request: pytest.FixtureRequest, http: httpx.Client, broker: BrokerProcess) -> Caller:
    era = request.param
    return Caller(era, http, broker.url, open_session(http, broker.url) if era == LEGACY else None)


@pytest.fixture
def legacy(http: httpx.Client, broker: BrokerProcess) -> Caller:
    return Caller(LEGACY, http, broker.url, open_session(http, broker.url))


@pytest.fixture
def modern(http: httpx.Client, broker: BrokerProcess) -> Caller:
    return Caller(MODERN, http, broker.url)


@pytest.fixture(autouse=True)
def _still_serves(http: httpx.Client, broker: BrokerProcess) -> Iterator[None]:
    """After each bad request: the broker is alive and answers good requests in both eras."""
    yield
    assert broker.process.poll() is None, f"the broker died:\n{broker.log()[-3000:]}"
    for era in ERAS:
        who = Caller(era, http, broker.url, open_session(http, broker.url) if era == LEGACY else None)
        response = who.call("tools/call", {"name": "counter__count", "arguments": {}}, name="counter__count")
        assert response.status_code == 200, response.text
        message = rpc(response)
        assert "result" in message, message
        assert message["result"]["isError"] is False, message


def counter_hits(caller: Caller) -> str:
    response = caller.call("tools/call", {"name": "counter__count", "arguments": {}}, name="counter__count")
    result = rpc(response)["result"]
    text: str = result["content"][0]["text"]
    return text


# --- body and envelope ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc": "2.0", "id": 1, "method": "ping"',
        b"not json at all",
        b"",
        b'{"id": 1, "method": "p\xff"}',
    ],
    ids=["truncated", "text", "empty", "bad-utf8"],
)
def test_malformed_json_is_a_parse_error(caller: Caller, body: bytes) -> None:
    assert_error(caller.post(body), 400, PARSE_ERROR, "not valid JSON", request_id=None)


def test_batch_array_is_refused(caller: Caller) -> None:
    batch = [caller.request("ping"), caller.request("ping")]
    assert_error(caller.post(batch), 400, INVALID_REQUEST, "batches are not supported", request_id=None)


@pytest.mark.parametrize(
    ("body", "advice"),
    [
        ({"id": 7, "method": "ping"}, '"jsonrpc" member must be "2.0"'),
        ({"jsonrpc": "1.0", "id": 7, "method": "ping"}, '"jsonrpc" member must be "2.0"'),
        ({"jsonrpc": "2.0", "id": 7, "method": 5}, '"method" member must be a non-empty string'),
        ({"jsonrpc": "2.0", "id": 7, "method": ""}, '"method" member must be a non-empty string'),
        (
            {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": [1, 2]},
            '"params" member must be an object',
        ),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, '"id" member must be a string or an integer'),
        ({"jsonrpc": "2.0", "id": 7}, 'neither "method" nor'),
        ({"jsonrpc": "2.0"}, 'neither "method" nor'),
        ("just a string", "one JSON-RPC message object"),
    ],
    ids=[
        "no-jsonrpc",
        "jsonrpc-1.0",
        "method-not-string",
        "method-empty",
        "params-array",
        "id-bool",
        "no-method",
        "bare",
        "not-object",
    ],
)
def test_envelope_problem_is_invalid_request(caller: Caller, body: Any, advice: str) -> None:
    assert_error(caller.post(body), 400, INVALID_REQUEST, "Invalid Request", advice)


@pytest.mark.parametrize(
    "era",
    [
        LEGACY,
        MODERN,
    ],
)
def test_malformed_notification_is_refused(http: httpx.Client, broker: BrokerProcess, era: str) -> None:
    # Spec (transport, 2025-11-25): a notification the server cannot accept gets an HTTP
    # error status such as 400, not 202.
    who = Caller(era, http, broker.url, open_session(http, broker.url) if era == LEGACY else None)
    body = {"jsonrpc": "2.0", "method": 5, "params": {"_meta": envelope()}}
    assert_error(who.post(body, method=None), 400, INVALID_REQUEST, '"method" member must be')


# --- methods and tools ------------------------------------------------------------------------


def test_unknown_method(caller: Caller) -> None:
    response = caller.call("tools/frobnicate")
    # handshake era: the JSON-RPC error rides a 200; 2026-07-28: the SDK maps -32601 to 404
    status = 200 if caller.era == LEGACY else 404
    error = assert_error(response, status, METHOD_NOT_FOUND, "tools/frobnicate", "not served")
    assert error["data"]["reason"] == "method_not_found"


@pytest.mark.parametrize("tool", ["hit", "counter__nope", "other__hit"])
def test_unknown_tool_is_rejected_and_never_forwarded(caller: Caller, tool: str) -> None:
    # "hit" is the upstream's own (un-namespaced) name: forwarded, it would be counted.
    response = caller.call("tools/call", {"name": tool, "arguments": {}}, name=tool)
    status = 200 if caller.era == LEGACY else 400
    error = assert_error(response, status, INVALID_PARAMS, f"unknown tool: '{tool}'", "tools/list")
    assert error["data"] == {"reason": "unknown_tool", "tool": tool}
    assert counter_hits(caller) == "0", "the unknown tool call reached the upstream"


# --- size -------------------------------------------------------------------------------------


def _oversize_body(caller: Caller) -> bytes:
    body = orjson.dumps(
        caller.request("tools/call", {"name": "counter__hit", "arguments": {"pad": "x" * 5000}})
    )
    assert len(body) > MAX_BODY
    return body


def test_oversize_body_with_content_length_is_413(caller: Caller) -> None:
    response = caller.post(_oversize_body(caller), method="tools/call", name="counter__hit")
    assert_error(response, 413, INVALID_REQUEST, f"exceeds {MAX_BODY} bytes")
    assert counter_hits(caller) == "0"


def test_oversize_chunked_body_is_413(caller: Caller) -> None:
    body = _oversize_body(caller)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must apply while reading
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = caller.http.post(
        caller.url, content=chunks(), headers=caller.headers("tools/call", "counter__hit")
    )
    assert_error(response, 413, INVALID_REQUEST, f"exceeds {MAX_BODY} bytes")
    assert counter_hits(caller) == "0"


def test_body_at_the_limit_is_served(caller: Caller) -> None:
    body = orjson.dumps(caller.request("tools/call", {"name": "counter__count", "arguments": {}}))
    padded = body + b" " * (MAX_BODY - len(body))  # trailing whitespace is valid JSON
    response = caller.post(padded, method="tools/call", name="counter__count")
    assert response.status_code == 200, response.text
    assert rpc(response)["result"]["content"][0]["text"] == "0"


# --- protocol version and routing headers ---------------------------------------------------


def test_unsupported_version_2026_request(modern: Caller) -> None:
    body = {"jsonrpc": "2.0", "id": 31, "method": "ping", "params": {"_meta": envelope("2099-01-01")}}
    response = modern.post(body, method="ping", **{"mcp-protocol-version": "2099-01-01"})
    error = assert_error(
        response, 400, UNSUPPORTED_PROTOCOL_VERSION, "unsupported protocol version", request_id=31
    )
    assert error["data"]["supported"] == [MODERN]
    assert error["data"]["requested"] == "2099-01-01"


def test_unsupported_version_2026_notification(modern: Caller) -> None:
    body = {
        "jsonrpc": "2.0",
        "method": "notifications/initialized",
        "params": {"_meta": envelope("2099-01-01")},
    }
    response = modern.post(body, method=None, **{"mcp-protocol-version": "2099-01-01"})
    error = assert_error(response, 400, UNSUPPORTED_PROTOCOL_VERSION, "unsupported protocol version")
    assert MODERN in error["data"]["supported"]


def test_unsupported_version_on_a_session_request(legacy: Caller) -> None:
    response = legacy.post(legacy.request("ping"), **{"mcp-protocol-version": "2099-01-01"})
    error = assert_error(response, 400, UNSUPPORTED_PROTOCOL_VERSION, "protocol version")
    assert error["data"]["requested"] == "2099-01-01"
    assert LEGACY in error["data"]["supported"]


@pytest.mark.parametrize(
    ("method", "headers", "advice"),
    [
        ("tools/list", {"mcp-method": "ping"}, "mcp-method header"),
        ("tools/list", {}, "mcp-method header"),
        ("tools/call", {"mcp-method": "tools/call", "mcp-name": "counter__hit"}, "mcp-name header"),
        ("ping", {"mcp-method": "ping", "mcp-protocol-version": "2025-99-99"}, "mcp-protocol-version header"),
    ],
    ids=["method-mismatch", "method-missing", "name-mismatch", "version-vs-envelope"],
)
def test_routing_header_mismatch(
    http: httpx.Client, broker: BrokerProcess, method: str, headers: dict[str, str], advice: str
) -> None:
    params: dict[str, Any] = {"_meta": envelope()}
    if method == "tools/call":
        params.update(name="counter__count", arguments={})
    body = {"jsonrpc": "2.0", "id": 41, "method": method, "params": params}
    sent = {**BASE_HEADERS, "mcp-protocol-version": MODERN, **headers}
    response = http.post(broker.url, content=orjson.dumps(body), headers=sent)
    assert_error(response, 400, HEADER_MISMATCH, advice, request_id=41)
    if method == "tools/call":
        assert counter_hits(Caller(MODERN, http, broker.url)) == "0"


def test_duplicated_routing_header(http: httpx.Client, broker: BrokerProcess) -> None:
    body = {"jsonrpc": "2.0", "id": 42, "method": "ping", "params": {"_meta": envelope()}}
    headers = [
        *BASE_HEADERS.items(),
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "ping"),
        ("mcp-method", "ping"),
    ]
    response = http.post(broker.url, content=orjson.dumps(body), headers=headers)
    assert_error(response, 400, HEADER_MISMATCH, "mcp-method appears more than once", request_id=42)


def test_missing_envelope_on_2026_request(modern: Caller) -> None:
    response = modern.post({"jsonrpc": "2.0", "id": 43, "method": "ping"}, method="ping")
    assert_error(response, 400, INVALID_PARAMS, "params._meta", "protocolVersion", request_id=43)


# --- DNS rebinding protection ----------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost.evil.example"])
def test_bad_origin_is_403(caller: Caller, origin: str) -> None:
    response = caller.post(caller.request("ping"), origin=origin)
    assert_error(response, 403, INVALID_REQUEST, "Origin", origin, "http.allowed_origins")


def test_loopback_origin_is_allowed(caller: Caller) -> None:
    response = caller.post(caller.request("ping"), origin="http://localhost:3000")
    assert response.status_code == 200, response.text
    assert "result" in rpc(response)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8787"])
def test_bad_host_is_421(caller: Caller, host: str) -> None:
    response = caller.post(caller.request("ping"), host=host)
    assert_error(response, 421, INVALID_REQUEST, "Host", host, "http.allowed_hosts")


def test_bad_origin_on_get_and_delete_is_403(legacy: Caller) -> None:
    headers = legacy.headers(origin="http://evil.example", accept="text/event-stream")
    assert_error(legacy.http.get(legacy.url, headers=headers), 403, INVALID_REQUEST, "allowed_origins")
    assert_error(legacy.http.delete(legacy.url, headers=headers), 403, INVALID_REQUEST, "allowed_origins")
    assert legacy.call("ping").status_code == 200, "the refused DELETE must not have closed the session"


# --- sessions (handshake era) ---------------------------------------------------------------


def test_missing_session_id_is_400(http: httpx.Client, broker: BrokerProcess) -> None:
    body = {"jsonrpc": "2.0", "id": 51, "method": "tools/list"}
    response = http.post(broker.url, json=body, headers={**BASE_HEADERS, "mcp-protocol-version": LEGACY})
    assert_error(response, 400, INVALID_REQUEST, "Mcp-Session-Id", "send initialize first", request_id=51)


def test_unknown_session_id_is_404(legacy: Caller) -> None:
    response = legacy.post(legacy.request("tools/list", request_id=52), **{"mcp-session-id": "0" * 32})
    assert_error(
        response, 404, INVALID_REQUEST, "Session not found", "initialize a new session", request_id=52
    )


def test_notification_to_unknown_session_is_404(legacy: Caller) -> None:
    body = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    response = legacy.post(body, **{"mcp-session-id": "f" * 32})
    assert_error(response, 404, INVALID_REQUEST, "initialize a new session")


def test_get_without_session_is_400(http: httpx.Client, broker: BrokerProcess) -> None:
    response = http.get(broker.url, headers={"accept": "text/event-stream"})
    assert_error(response, 400, INVALID_REQUEST, "Mcp-Session-Id header is required")


def test_get_with_unknown_session_is_404(http: httpx.Client, broker: BrokerProcess) -> None:
    response = http.get(broker.url, headers={"accept": "text/event-stream", "mcp-session-id": "0" * 32})
    assert_error(response, 404, INVALID_REQUEST, "Session not found")


def test_get_without_sse_accept_is_406(legacy: Caller) -> None:
    response = legacy.http.get(legacy.url, headers={**legacy.headers(), "accept": "application/json"})
    assert_error(response, 406, INVALID_REQUEST, "Accept: text/event-stream")


def test_get_with_2026_version_is_405(http: httpx.Client, broker: BrokerProcess) -> None:
    response = http.get(broker.url, headers={"accept": "text/event-stream", "mcp-protocol-version": MODERN})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("verb", ["PUT", "PATCH"])
def test_other_http_methods_are_405(legacy: Caller, verb: str) -> None:
    response = legacy.http.request(verb, legacy.url, content=b"{}", headers=legacy.headers())
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "POST", "DELETE"}


@pytest.mark.parametrize("case", ["PUT", "GET-2026"])
def test_405_answers_carry_a_jsonrpc_error(legacy: Caller, case: str) -> None:
    if case == "PUT":
        response = legacy.http.put(legacy.url, content=b"{}", headers=legacy.headers())
        advice = "POST"
    else:
        headers = {"accept": "text/event-stream", "mcp-protocol-version": MODERN}
        response = legacy.http.get(legacy.url, headers=headers)
        advice = "POST"
    assert_error(response, 405, INVALID_REQUEST, "not allowed", advice)


def test_delete_then_reuse_is_404(legacy: Caller) -> None:
    assert legacy.call("ping").status_code == 200
    deleted = legacy.http.delete(legacy.url, headers=legacy.headers())
    assert deleted.status_code == 200, deleted.text
    response = legacy.post(legacy.request("tools/list", request_id=61))
    assert_error(
        response, 404, INVALID_REQUEST, "Session not found", "initialize a new session", request_id=61
    )
    again = legacy.http.delete(legacy.url, headers=legacy.headers())
    assert_error(again, 404, INVALID_REQUEST, "Session not found")
    stream = legacy.http.get(legacy.url, headers={**legacy.headers(), "accept": "text/event-stream"})
    assert_error(stream, 404, INVALID_REQUEST, "Session not found")


def test_delete_without_session_is_400(http: httpx.Client, broker: BrokerProcess) -> None:
    assert_error(http.delete(broker.url), 400, INVALID_REQUEST, "Mcp-Session-Id header is required")


def test_initialize_with_session_id_is_400(legacy: Caller) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 71,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "x", "version": "1"},
        },
    }
    response = legacy.post(body)
    assert_error(response, 400, INVALID_REQUEST, "initialize must not carry an Mcp-Session-Id", request_id=71)
    assert "mcp-session-id" not in response.headers
    assert legacy.call("ping").status_code == 200, "the refused initialize must not touch the session"


def test_initialize_without_id_is_400(http: httpx.Client, broker: BrokerProcess) -> None:
    body = {
        "jsonrpc": "2.0",
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}},
    }
    response = http.post(broker.url, json=body, headers=BASE_HEADERS)
    assert_error(response, 400, INVALID_REQUEST, "initialize must be a request with an id")


# --- content negotiation ------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(caller: Caller, content_type: str | None) -> None:
    headers = caller.headers("ping")
    if content_type is None:
        del headers["content-type"]
    else:
        headers["content-type"] = content_type
    response = caller.http.post(caller.url, content=orjson.dumps(caller.request("ping")), headers=headers)
    assert_error(response, 415, INVALID_REQUEST, "must be application/json")


def test_content_type_with_charset_is_accepted(caller: Caller) -> None:
    response = caller.post(caller.request("ping"), **{"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", "text/html"])
def test_accept_without_both_media_types_is_406(caller: Caller, accept: str) -> None:
    response = caller.post(caller.request("ping"), accept=accept)
    assert_error(response, 406, INVALID_REQUEST, "Accept header must list both", "text/event-stream")
