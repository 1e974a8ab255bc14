"""JSON-RPC 2.0 framing: parse, classify, build. Plain dicts, orjson, no models.

The broker handles messages as dicts on purpose: validating every message with
pydantic models costs more than the whole forwarding path (see docs/decisions.md).
Shapes follow the MCP schema; the official SDK client checks them end to end.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from broker.errors import INVALID_REQUEST

JSONRPC: Final = "2.0"

Message = dict[str, Any]
RequestId = int | str


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def request(request_id: RequestId, method: str, params: dict[str, Any] | None = None) -> Message:
    msg: Message = {"jsonrpc": JSONRPC, "id": request_id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: dict[str, Any] | None = None) -> Message:
    msg: Message = {"jsonrpc": JSONRPC, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def result(request_id: RequestId | None, value: dict[str, Any]) -> Message:
    return {"jsonrpc": JSONRPC, "id": request_id, "result": value}


def error(request_id: RequestId | None, err: dict[str, Any]) -> Message:
    return {"jsonrpc": JSONRPC, "id": request_id, "error": err}


def simple_error(request_id: RequestId | None, code: int, message: str, **data: Any) -> Message:
    err: dict[str, Any] = {"code": code, "message": message}
    if data:
        err["data"] = data
    return error(request_id, err)


def envelope_problem(msg: Any) -> str | None:
    """Why `msg` is not a single JSON-RPC request, notification or response, or None if it is.

    Enough checking to route the message safely; method-specific params are
    checked by the handler of the method.
    """
    if not isinstance(msg, dict):
        return "the body must be one JSON-RPC message object (batches are not supported)"
    if msg.get("jsonrpc") != JSONRPC:
        return 'the "jsonrpc" member must be "2.0"'
    if "method" in msg:
        if not isinstance(msg["method"], str) or not msg["method"]:
            return 'the "method" member must be a non-empty string'
        params = msg.get("params")
        if params is not None and not isinstance(params, dict):
            return 'the "params" member must be an object'
        if "id" in msg and not _valid_id(msg["id"]):
            return 'the "id" member must be a string or an integer'
        return None
    if "id" in msg and ("result" in msg or "error" in msg):
        if "result" in msg and "error" in msg:
            return 'a response must not carry both "result" and "error"'
        return None
    return 'the message has neither "method" nor a "result"/"error" member'


def _valid_id(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def is_request(msg: Message) -> bool:
    return "method" in msg and "id" in msg


def is_notification(msg: Message) -> bool:
    return "method" in msg and "id" not in msg


def is_response(msg: Message) -> bool:
    return "method" not in msg and ("result" in msg or "error" in msg)


def invalid_request(message: str, request_id: RequestId | None = None) -> Message:
    return simple_error(request_id, INVALID_REQUEST, message)
