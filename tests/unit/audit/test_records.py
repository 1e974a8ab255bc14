"""The records the request path writes, built from the broker's real Call, Principal, Decision
and authorization request; written through a real sink and read back by `policy diff --log`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from broker.audit.records import (
    ApprovalFacts,
    Outcome,
    approval_record,
    auth_failure_record,
    policy_reload_record,
    request_record,
)
from broker.audit.redact import SecretRedactor
from broker.audit.timefmt import iso_time
from broker.audit.verify import verify
from broker.errors import ForwardedError, PolicyDenied, UpstreamTimeout
from broker.gateway.call import Call, Target
from broker.gateway.gateway import NullRelay
from broker.gateway.sessions import DownstreamSession
from broker.identity.principal import Principal
from broker.policy.decision import Decision, Effect, Reason
from broker.policy.request import CallFacts, build_request
from broker.policytools.diff import log_items
from broker.protocol import tool_hints
from tests.unit.audit.conftest import SinkFactory

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
NOW = 1_800_000_000.25

redactor = SecretRedactor()


def principal() -> Principal:
    return Principal("Agent", "review-bot", "acme", ("reviewer",), {"sub": "rb-1"}, acting_for="alice")


def make_call(arguments: dict[str, Any], decision: Decision | None) -> tuple[Call, Any, Any]:
    who = principal()
    session = DownstreamSession("sess-1", "2025-11-25", {}, {}, "streamable-http", who)
    resource = {  # as the catalog describes a tool to policies
        "type": "Tool",
        "id": "github__create_issue",
        "name": "create_issue",
        "server": "github",
        "tenants": [],
        "tags": ["write"],
        "annotations": tool_hints({"readOnlyHint": False}),
    }
    call = Call(
        method="tools/call",
        params={"name": "github__create_issue", "arguments": arguments},
        request_id=7,
        protocol_version="2025-11-25",
        transport="streamable-http",
        relay=NullRelay(),
        session=session,
        principal=who,
        target=Target("github", "tool", "create_issue", True, resource),
        decision=decision,
    )
    request, summary = build_request(
        who, "call_tool", resource, arguments, CallFacts("streamable-http", "2025-11-25", "sess-1", "t-1")
    )
    call.argument_digest = summary.digest
    return call, request, summary


ALLOW = Decision(
    Effect.ALLOW,
    (Reason("engineers-write", "engineers may write"),),
    "cedar",
    "git:abc123",
    latency_ms=0.31234,
)
DENY = Decision(Effect.DENY, (Reason("no-delete", "nobody deletes"),), "opa", "git:abc123", decision_id="d-9")

ARGUMENTS = {
    "repo": "acme/api",
    "title": "Rotate keys",
    "token": GITHUB_TOKEN,
    "body": f"the old key was {AWS_KEY}, please rotate",
    "path": "/workspace/../etc/passwd",
}


def test_a_decided_call_with_its_outcome() -> None:
    call, _, summary = make_call(ARGUMENTS, ALLOW)
    record = request_record(
        call,
        Outcome.of({"content": []}, None, 12.3456),
        redactor=redactor,
        summary=summary,
        trace_id="t-1",
        now=NOW,
    )
    assert (
        record["kind"] == "request" and record["v"] == 1 and record["time"] == "2027-01-15T08:00:00.250000Z"
    )
    assert record["principal"] == {
        "type": "Agent",
        "id": "review-bot",
        "tenant": "acme",
        "roles": ["reviewer"],
        "acting_for": "alice",
    }
    assert (record["session"], record["method"], record["server"], record["request_id"]) == (
        "sess-1",
        "tools/call",
        "github",
        7,
    )
    assert record["target"] == {"kind": "tool", "id": "github__create_issue", "name": "create_issue"}
    assert record["decision"] == {
        "effect": "allow",
        "reasons": [{"id": "engineers-write", "message": "engineers may write"}],
        "policies": ["engineers-write"],
        "engine": "cedar",
        "policy_version": "git:abc123",
        "latency_ms": 0.312,
        "decision_id": None,
        "error": None,
    }
    assert record["outcome"] == {"status": "ok", "latency_ms": 12.346, "error": None}
    assert record["trace_id"] == "t-1" and record["approval"] is None
    arguments = record["arguments"]
    assert arguments["digest"] == summary.digest == call.argument_digest
    assert arguments["summary"]["token"] == "[REDACTED:key]"
    assert arguments["summary"]["body"] == "the old key was [REDACTED:aws_access_key], please rotate"
    assert arguments["summary"]["path"] == "/etc/passwd"  # the normalised summary, not the raw string
    assert arguments["redacted"] == ["token: key", "body: aws_access_key"]
    text = orjson.dumps(record)
    assert GITHUB_TOKEN.encode() not in text and AWS_KEY.encode() not in text


def test_the_authorization_request_is_kept_with_its_arguments_redacted() -> None:
    call, request, summary = make_call(ARGUMENTS, ALLOW)
    record = request_record(call, Outcome("ok", 1.0), redactor=redactor, summary=summary, request=request)
    kept = record["request"]
    assert kept["principal"] == request["principal"] and kept["resource"] == request["resource"]
    assert kept["context"]["arguments"] == record["arguments"]["summary"]
    assert kept["context"]["argument_digest"] == summary.digest
    assert request["context"]["arguments"]["token"] == GITHUB_TOKEN  # the engine's document is left alone
    assert GITHUB_TOKEN.encode() not in orjson.dumps(record)


def test_without_a_summary_the_arguments_come_from_the_request_or_are_summarised_again() -> None:
    call, request, summary = make_call(ARGUMENTS, ALLOW)
    given = request_record(call, Outcome("ok"), redactor=redactor, summary=summary, now=NOW)
    from_request = request_record(call, Outcome("ok"), redactor=redactor, request=request, now=NOW)
    again = request_record(call, Outcome("ok"), redactor=redactor, now=NOW)
    assert given["arguments"] == from_request["arguments"] == again["arguments"]
    assert again["arguments"]["digest"] == summary.digest
    assert again["arguments"]["summary"]["token"] == "[REDACTED:key]"


def test_a_denied_call_never_forwarded() -> None:
    call, _, summary = make_call({"id": 3}, DENY)
    exc = PolicyDenied("Denied by policy: no-delete: nobody deletes", policies=["no-delete"])
    record = request_record(call, Outcome.of(None, exc), redactor=redactor, summary=summary)
    assert record["decision"]["effect"] == "deny" and record["decision"]["decision_id"] == "d-9"
    assert record["outcome"] == {
        "status": "not_forwarded",
        "latency_ms": None,
        "error": {
            "code": -32001,
            "reason": "policy_denied",
            "message": "Denied by policy: no-delete: nobody deletes",
        },
    }


@pytest.mark.parametrize(
    ("result", "exc", "status", "reason", "code"),
    [
        ({"content": [], "isError": True}, None, "is_error", None, None),
        ({"content": []}, None, "ok", None, None),
        (None, ForwardedError({"code": -32602, "message": "bad"}), "error", "upstream_error", -32602),
        (None, UpstreamTimeout("no answer in 30 s"), "error", "upstream_timeout", -32000),
        (None, RuntimeError("internal detail /etc/secret"), "error", "internal_error", None),
    ],
)
def test_outcome_classification(
    result: dict[str, Any] | None,
    exc: BaseException | None,
    status: str,
    reason: str | None,
    code: int | None,
) -> None:
    outcome = Outcome.of(result, exc, 5.0)
    assert outcome.status == status
    if reason is None:
        assert outcome.error is None
    else:
        assert (
            outcome.error is not None and outcome.error["reason"] == reason and outcome.error["code"] == code
        )
        assert (
            "/etc/secret" not in outcome.error["message"]
        )  # an unexpected exception's text stays in the log


def test_error_messages_are_redacted() -> None:
    call, _, summary = make_call({}, ALLOW)
    exc = ForwardedError({"code": -32000, "message": f"auth failed for token {GITHUB_TOKEN}"})
    record = request_record(call, Outcome.of(None, exc, 3.0), redactor=redactor, summary=summary)
    assert record["outcome"]["error"]["message"] == "auth failed for token [REDACTED:github_token]"


def test_a_list_request() -> None:
    call, _, _ = make_call({}, None)
    call.method, call.target, call.params = "tools/list", None, {}
    record = request_record(call, Outcome("ok"), redactor=redactor, listing={"visible": 4, "hidden": 9})
    assert record["method"] == "tools/list" and record["target"] is None and record["decision"] is None
    assert record["arguments"] is None and record["listing"] == {"visible": 4, "hidden": 9}


def test_authentication_failure_policy_reload_and_approval_records() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
    failure = auth_failure_record(
        reason="invalid_token",
        description=f"signature check failed for {jwt}",
        transport="streamable-http",
        redactor=redactor,
        method="tools/call",
        client="127.0.0.1",
        now=NOW,
    )
    assert failure["kind"] == "auth_failure" and failure["principal"] is None
    assert failure["description"] == "signature check failed for [REDACTED:jwt]"

    reload = policy_reload_record(
        ok=False,
        engine="cedar",
        policy_version="git:old",
        previous_version="git:old",
        trigger="sighup",
        message="policies/cedar/x.cedar:3: parse error",
    )
    assert reload["kind"] == "policy_reload" and reload["ok"] is False and reload["trigger"] == "sighup"

    call, _, _ = make_call(
        {"id": 1}, Decision(Effect.REQUIRE_APPROVAL, (Reason("needs-approval"),), "cedar", "v1")
    )
    facts = ApprovalFacts(
        "ap-1",
        "approved",
        requested_at=NOW,
        decided_at=NOW + 42.5,
        approver="carol",
        channel="api",
        note=f"ok, token {GITHUB_TOKEN} rotated",
    )
    event = approval_record(facts, redactor=redactor, call=call, now=NOW + 42.5)
    assert event["kind"] == "approval" and event["event"] == "approved"
    assert event["approval"]["wait_ms"] == 42500.0 and event["approval"]["approver"] == "carol"
    assert event["approval"]["requested_at"] == iso_time(NOW)
    assert event["approval"]["note"] == "ok, token [REDACTED:github_token] rotated"
    assert (
        event["argument_digest"] == call.argument_digest and event["decision"]["effect"] == "require_approval"
    )
    in_request = request_record(call, Outcome("ok", 2.0), redactor=redactor, approval=facts)
    assert in_request["approval"]["id"] == "ap-1"


def test_iso_time_is_fixed_width_and_orders_like_time() -> None:
    times = [0.0, 0.9999999, 1.5, 1_800_000_000.000001, 1_800_000_000.5]
    texts = [iso_time(t) for t in times]
    assert len({len(t) for t in texts}) == 1
    assert texts == sorted(texts)
    assert iso_time(0.9999999) == "1970-01-01T00:00:01.000000Z"


def test_records_go_through_the_sink_and_policy_diff_reads_them(
    make_sink: SinkFactory, tmp_path: Path
) -> None:
    call, request, summary = make_call(ARGUMENTS, ALLOW)
    denied, denied_request, denied_summary = make_call({"id": 2}, DENY)
    records = [
        request_record(call, Outcome("ok", 2.0), redactor=redactor, summary=summary, request=request),
        request_record(
            denied,
            Outcome("not_forwarded"),
            redactor=redactor,
            summary=denied_summary,
            request=denied_request,
        ),
        policy_reload_record(
            ok=True, engine="cedar", policy_version="v2", previous_version="v1", trigger="admin"
        ),
    ]

    async def write() -> None:
        sink = make_sink(durability="write")
        await sink.start()
        for record in records:
            await sink.append(record)
        await sink.close()

    asyncio.run(write())
    directory = tmp_path / "audit"
    assert verify(directory).ok
    (path,) = sorted(directory.glob("audit-*.jsonl"))
    items, skipped = log_items(path)  # `mcp-broker policy diff --log` validates each `request`
    assert [i.request["action"] for i in items] == ["call_tool", "call_tool"]
    assert skipped == 3  # open, policy_reload, close
    assert GITHUB_TOKEN not in path.read_text()


def test_approval_facts_from_the_approval_component() -> None:
    from broker.approval.model import Approval, ApprovalStatus, new_approval_id

    call, request, summary = make_call({"id": 1}, ALLOW)
    pending = Approval(
        id=new_approval_id(),
        status=ApprovalStatus.PENDING,
        requester=principal().document,
        requester_key="k",
        method="tools/call",
        server="github",
        target="github__create_issue",
        argument_digest=summary.digest,
        arguments=summary.arguments,
        reasons=[{"id": "needs-approval"}],
        policy_version="v1",
        request=request,
        created_at=NOW,
        expires_at=NOW + 300,
        session="sess-1",
    )
    requested = ApprovalFacts.of(pending)
    assert (requested.status, requested.decided_at, requested.approver) == ("requested", None, None)
    approver = Principal("User", "carol", "acme", ("approver",)).document
    decided = pending.decided(
        ApprovalStatus.APPROVED, at=NOW + 12, approver=approver, note="ok", channel="api"
    )
    event = approval_record(ApprovalFacts.of(decided), redactor=redactor, call=call, now=NOW + 12)
    assert event["event"] == "approved"
    assert event["approval"]["approver"] == {
        "type": "User",
        "id": "carol",
        "tenant": "acme",
        "acting_for": None,
    }
    assert event["approval"]["wait_ms"] == 12000.0 and event["approval"]["channel"] == "api"
    assert event["approval"]["expires_at"] == iso_time(NOW + 300)
