from __future__ import annotations

from typing import Any

import pytest

from broker import jsonrpc
from broker.errors import InvalidParams, UnknownTool, error_for_exception


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ([], "batches are not supported"),
        ({"id": 1, "method": "x"}, '"jsonrpc" member must be "2.0"'),
        ({"jsonrpc": "2.0", "id": 1, "method": 3}, '"method" member must be a non-empty string'),
        ({"jsonrpc": "2.0", "id": 1, "method": "x", "params": [1]}, '"params" member must be an object'),
        ({"jsonrpc": "2.0", "id": True, "method": "x"}, '"id" member must be a string or an integer'),
        ({"jsonrpc": "2.0", "id": 1}, "neither"),
        ({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}, "both"),
    ],
)
def test_envelope_problems_are_explained(message: Any, problem: str) -> None:
    found = jsonrpc.envelope_problem(message)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 5, "result": {}},
    ],
)
def test_valid_messages(message: Any) -> None:
    assert jsonrpc.envelope_problem(message) is None


def test_errors_map_to_codes_and_stable_reasons() -> None:
    err = error_for_exception(UnknownTool("Unknown tool: 'x'", tool="x"))
    assert err == {
        "code": -32602,
        "message": "Unknown tool: 'x'",
        "data": {"reason": "unknown_tool", "tool": "x"},
    }
    assert error_for_exception(InvalidParams("bad"))["data"]["reason"] == "invalid_params"
    hidden = error_for_exception(RuntimeError("secret internals"))
    assert hidden["code"] == -32603
    assert "secret" not in hidden["message"]
