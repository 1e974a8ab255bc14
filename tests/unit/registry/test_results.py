"""Guard-out: the injection scan's actions and redaction on real tool results of the poisoned fixture."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from broker.registry.dlp import Redactor
from broker.registry.obligations import ObligationError
from broker.registry.results import FINDINGS_META_KEY, ResultGuard
from broker.registry.scan import RegistryScanner
from tests.fixtures import load_server

pytestmark = pytest.mark.anyio


async def call(tool: str, **arguments: Any) -> dict[str, Any]:
    async with Client(load_server("poisoned")) as client:
        result = await client.call_tool(tool, arguments)
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.fixture
def guard(scanner: RegistryScanner) -> ResultGuard:
    return ResultGuard(
        scanner,
        Redactor({"build_id": r"\bBuild \d+"}),
        tool_obligations={"poisoned__leak_secrets": [{"type": "redact", "detectors": ["secrets"]}]},
    )


async def test_record_only_by_default(guard: ResultGuard) -> None:
    result = await call("echo_marker", marker="hidden_tag")
    out = guard.apply("poisoned", "echo_marker", result)
    assert out.result is result
    assert out.action == "record"
    assert {f.code for f in out.findings} == {"hidden_tag"}
    assert out.audit()["findings"][0]["where"] == "/content/0/text"


async def test_annotate_puts_a_warning_first(guard: ResultGuard) -> None:
    result = await call("echo_marker", marker="override_instruction")
    out = guard.apply("poisoned", "echo_marker", result, [{"type": "result_scan", "action": "annotate"}])
    content = out.result["content"]
    assert content[0]["text"].startswith("[broker] The result below contains text")
    assert content[1:] == result["content"]
    assert out.result["_meta"][FINDINGS_META_KEY][0]["code"] == "override_instruction"


async def test_strip_removes_the_markers(guard: ResultGuard) -> None:
    result = await call("echo_marker", marker="invisible_character")
    out = guard.apply("poisoned", "echo_marker", result, [{"type": "result_scan", "action": "strip"}])
    assert out.result["content"][0]["text"] == "Status: ok"
    assert out.result["structuredContent"]["nested"]["items"] == ["ok", "Status: ok"]
    assert result["content"][0]["text"] != "Status: ok"  # the upstream's result is untouched


async def test_block_replaces_the_result(guard: ResultGuard) -> None:
    result = await call("echo_marker", marker="conceal_from_user")
    out = guard.apply("poisoned", "echo_marker", result, [{"type": "result_scan", "action": "block"}])
    assert out.result["isError"] is True
    assert "conceal_from_user" in out.result["content"][0]["text"]
    assert "copied" not in str(out.result)


async def test_configured_redaction_applies_by_public_name(guard: ResultGuard) -> None:
    result = await call("leak_secrets")
    out = guard.apply("poisoned", "leak_secrets", result, public_name="poisoned__leak_secrets")
    counts = out.audit()["redaction"]["redacted"]
    assert "email" not in counts and "card_number" not in counts  # pii was not asked for
    assert counts["aws_access_key"] == 2  # text and structuredContent
    assert "AKIAIOSFODNN7EXAMPLE" not in str(out.result)
    assert "alice.smith@example.com" in out.result["content"][0]["text"]


async def test_policy_and_config_redactions_combine(guard: ResultGuard) -> None:
    result = await call("leak_secrets")
    obligations = [{"type": "redact", "detectors": ["pii"]}]
    out = guard.apply("poisoned", "leak_secrets", result, obligations, public_name="poisoned__leak_secrets")
    assert "alice.smith@example.com" not in str(out.result)
    assert "AKIAIOSFODNN7EXAMPLE" not in str(out.result)


async def test_clean_output_is_byte_identical(guard: ResultGuard) -> None:
    result = await call("clean_result")
    out = guard.apply(
        "poisoned", "clean_result", result, [{"type": "redact", "detectors": ["secrets", "pii"]}]
    )
    assert out.result is result
    assert out.audit() == {}


async def test_a_configured_pattern_can_be_named_by_a_policy(guard: ResultGuard) -> None:
    result = await call("clean_result")
    out = guard.apply("poisoned", "clean_result", result, [{"type": "redact", "detectors": ["build_id"]}])
    assert out.result["content"][0]["text"].startswith("[REDACTED:build_id] passed")
    assert out.redaction.to_json() == {"redacted": {"build_id": 2}, "total": 2}


async def test_a_malformed_obligation_raises(guard: ResultGuard) -> None:
    with pytest.raises(ObligationError):
        guard.apply(
            "poisoned", "clean_result", await call("clean_result"), [{"type": "redact", "detectors": ["x"]}]
        )
