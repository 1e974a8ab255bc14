"""The embedded Cedar engine with real cedarpy: three-way decisions, failures, loading, reloading."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from broker.policy.cedar import CedarEngine, argument_tags
from broker.policy.cedar_source import split_statements
from broker.policy.decision import Effect
from broker.policy.engine import PolicyLoadError

REPO = Path(__file__).resolve().parents[3]
SCHEMA = REPO / "schemas" / "mcp.cedarschema"


def request(
    tool: str = "notes__read_note",
    *,
    read_only: bool = True,
    destructive: bool = False,
    roles: tuple[str, ...] = (),
    tenant: str | None = None,
    tenants: tuple[str, ...] = (),
    claims: dict[str, str] | None = None,
    arguments: dict[str, Any] | None = None,
    problems: tuple[str, ...] = (),
    granted: bool = False,
    action: str = "call_tool",
) -> dict[str, Any]:
    return {
        "principal": {
            "type": "Agent",
            "id": "bot",
            "tenant": tenant,
            "roles": list(roles),
            "claims": claims or {},
            "acting_for": "bob",
        },
        "action": action,
        "resource": {
            "type": "Tool",
            "id": tool,
            "name": tool.split("__")[-1],
            "server": "notes",
            "tenants": list(tenants),
            "annotations": {
                "readOnlyHint": read_only,
                "destructiveHint": destructive,
                "idempotentHint": False,
                "openWorldHint": False,
            },
            "tags": [],
        },
        "context": {
            "arguments": arguments or {},
            "argument_digest": "sha256:0",
            "paths": [],
            "hosts": [],
            "argument_limits": {},
            "problems": list(problems),
            "transport": "stdio",
            "protocol_version": "2025-11-25",
            "time": "2026-11-21T10:00:00Z",
            "hour": 10,
            "weekday": 5,
            "session": None,
            "trace_id": None,
            "listing": False,
            "approval": {"granted": granted},
        },
    }


def policy_dir(tmp_path: Path, **files: str) -> Path:
    root = tmp_path / "policies"
    (root / "cedar").mkdir(parents=True)
    for name, text in files.items():
        (root / "cedar" / f"{name}.cedar").write_text(text)
    return root


async def started(directory: Path) -> CedarEngine:
    engine = CedarEngine(directory, SCHEMA)
    await engine.start()
    return engine


@pytest.fixture
def repo_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO / "policies" / "cedar", target / "cedar")
    return target


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "effect", "reason"),
    [
        ({}, Effect.ALLOW, "read-only-tools"),
        ({"read_only": False}, Effect.DENY, "no_permit"),
        ({"read_only": False, "roles": ("engineer",)}, Effect.ALLOW, "engineers-change-things"),
        (
            {"read_only": False, "destructive": True, "roles": ("engineer",)},
            Effect.REQUIRE_APPROVAL,
            "destructive-needs-approval",
        ),
        (
            {"read_only": False, "destructive": True, "roles": ("engineer",), "granted": True},
            Effect.ALLOW,
            "engineers-change-things",
        ),
        ({"read_only": False, "destructive": True}, Effect.DENY, "no_permit"),
        ({"problems": ("path: NUL byte",)}, Effect.DENY, "uninterpretable-arguments"),
    ],
)
async def test_the_repository_policies_decide_three_ways(
    repo_policies: Path, kwargs: dict[str, Any], effect: Effect, reason: str
) -> None:
    engine = await started(repo_policies)
    decision = await engine.decide(request(**kwargs))
    assert decision.effect is effect
    assert reason in [r.id for r in decision.reasons]
    assert decision.engine == "cedar"
    assert decision.policy_version.startswith(("sha256:", "git:"))
    assert decision.error is None


@pytest.mark.anyio
async def test_a_hard_forbid_beats_an_approval_gate(tmp_path: Path) -> None:
    directory = policy_dir(
        tmp_path,
        p="""
        @id("all") permit(principal, action, resource);
        @id("gate") @approval("required") forbid(principal, action == Mcp::Action::"call_tool", resource)
          when { resource.destructiveHint } unless { context.approval.granted };
        @id("no-etc") @reason("nothing under /etc") forbid(principal, action, resource)
          when { context.arguments.hasTag("path") && context.arguments.getTag("path") has text
                 && context.arguments.getTag("path").text like "/etc/*" };
        """,
    )
    engine = await started(directory)
    gated = await engine.decide(request(destructive=True, arguments={"path": "/srv/x"}))
    assert gated.effect is Effect.REQUIRE_APPROVAL
    both = await engine.decide(request(destructive=True, arguments={"path": "/etc/passwd"}))
    assert both.effect is Effect.DENY
    assert {"no-etc", "gate"} <= {r.id for r in both.reasons}
    assert "nothing under /etc" in both.reason_text()


@pytest.mark.anyio
async def test_principal_roles_tenant_claims_and_server_tenants_are_entities(tmp_path: Path) -> None:
    directory = policy_dir(
        tmp_path,
        p="""
        @id("tenant-match") permit(principal in Mcp::Tenant::"acme", action, resource in Mcp::Tenant::"acme")
          when { principal.hasTag("mfa") && principal.getTag("mfa") == "true" && principal has acting_for
                 && principal.acting_for == Mcp::User::"bob" };
        """,
    )
    engine = await started(directory)
    ok = request(tenant="acme", tenants=("acme",), claims={"mfa": "true"})
    assert (await engine.decide(ok)).effect is Effect.ALLOW
    other_tenant = request(tenant="acme", tenants=("globex",), claims={"mfa": "true"})
    assert (await engine.decide(other_tenant)).effect is Effect.DENY
    no_mfa = request(tenant="acme", tenants=("acme",))
    assert (await engine.decide(no_mfa)).effect is Effect.DENY


@pytest.mark.anyio
async def test_a_runtime_error_in_a_policy_denies_even_next_to_a_permit(tmp_path: Path) -> None:
    directory = policy_dir(
        tmp_path,
        p="""
        @id("all") permit(principal, action, resource);
        @id("overflows") forbid(principal, action, resource) when { context.hour * 9223372036854775807 > 0 };
        """,
    )
    engine = await started(directory)
    decision = await engine.decide(request())
    assert decision.effect is Effect.DENY
    assert decision.error is not None
    assert "overflows" in decision.error
    assert [r.id for r in decision.reasons] == ["policy_error"]


@pytest.mark.anyio
async def test_a_malformed_request_denies_instead_of_raising(repo_policies: Path) -> None:
    engine = await started(repo_policies)
    broken = request()
    del broken["resource"]["id"]
    decision = await engine.decide(broken)
    assert decision.effect is Effect.DENY
    assert decision.error is not None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '@id("a") permit(principal, action, resource)\n@id("b") permit(principal, action, resource);',
            "p.cedar:1: syntax error",
        ),
        ("permit(principal, action, resource);", "p.cedar:1: the policy has no @id"),
        (
            '@id("a") permit(principal, action, resource);\n\n@id("a") forbid(principal, action, resource);',
            "p.cedar:3: @id('a') is already used at policies/cedar/p.cedar:1",
        ),
        (
            '@id("ok") permit(principal, action, resource);\n\n'
            '@id("typo") forbid(principal, action, resource)\n  when { resource.destructivHint };',
            "p.cedar:3: invalid policy (@id 'typo')",
        ),
        (
            '@id("x") forbid(principal, action, resource)'
            ' when { context.arguments.getTag("path").text == "/" };',
            "unable to guarantee safety of access to tag",
        ),
    ],
)
async def test_load_problems_name_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    engine = CedarEngine(policy_dir(tmp_path, p=text), SCHEMA)
    with pytest.raises(PolicyLoadError) as caught:
        await engine.start()
    assert expected in str(caught.value)


@pytest.mark.anyio
async def test_an_invalid_reload_keeps_the_last_good_set(tmp_path: Path) -> None:
    directory = policy_dir(tmp_path, p='@id("all") permit(principal, action, resource);')
    engine = await started(directory)
    version = engine.policy_version
    (directory / "cedar" / "p.cedar").write_text('@id("all") permit(principal, action, resource')
    result = await engine.reload()
    assert not result.ok
    assert "p.cedar:1: syntax error" in result.message
    assert engine.policy_version == version
    assert (await engine.decide(request())).effect is Effect.ALLOW
    (directory / "cedar" / "p.cedar").write_text('@id("none") forbid(principal, action, resource);')
    result = await engine.reload()
    assert result.ok
    assert engine.policy_version != version
    assert (await engine.decide(request())).effect is Effect.DENY


def test_arguments_become_typed_tags() -> None:
    tags = argument_tags(
        {
            "path": "/w/a",
            "n": 3,
            "price": 12.5,
            "force": True,
            "none": None,
            "files": ["b", "a"],
            "options": {"depth": 2, "mode": "x"},
            "nested_list": [{"a": 1}],
        }
    )
    assert tags["path"] == {"text": "/w/a"}
    assert tags["n"] == {"number": 3}
    assert tags["price"] == {"decimal": {"__extn": {"fn": "decimal", "arg": "12.5000"}}}
    assert tags["force"] == {"flag": True}
    assert tags["none"] == {"null": True}
    assert tags["files"] == {"items": ["a", "b"]}
    assert tags["options.depth"] == {"number": 2}
    assert tags["options.mode"] == {"text": "x"}
    assert tags["nested_list"] == {"items": []}


def test_statements_split_at_top_level_semicolons_only() -> None:
    text = (
        '// a; comment\n@id("a") @reason("x; y") permit(principal, action, resource);\n\n'
        '@id("b")\nforbid(\n principal, action, resource);\n'
    )
    assert [(line, s.split(")")[0]) for line, s in split_statements(text)] == [(2, '@id("a"'), (4, '@id("b"')]


@pytest.mark.anyio
async def test_batched_list_decisions_equal_one_by_one(repo_policies: Path) -> None:
    """decide_many batches a list (one principal, same arguments); it must decide exactly like decide."""
    engine = await started(repo_policies)
    effects = set()
    for roles in ((), ("engineer",)):
        requests = [
            request(f"notes__t{i}", read_only=i % 2 == 0, destructive=i % 3 == 0, roles=roles)
            for i in range(24)
        ]
        batched = await engine.decide_many(requests)
        single = [await engine.decide(r) for r in requests]
        assert [(d.effect, d.reasons) for d in batched] == [(d.effect, d.reasons) for d in single]
        effects |= {d.effect for d in batched}
    assert effects == {Effect.ALLOW, Effect.DENY, Effect.REQUIRE_APPROVAL}
    # different principals in one list cannot share entities: decided one by one, same answers
    mixed = [request(f"notes__m{i}", read_only=False, roles=("engineer",) if i % 2 else ()) for i in range(6)]
    assert [d.effect for d in await engine.decide_many(mixed)] == [
        (await engine.decide(r)).effect for r in mixed
    ]
    # the gated fast path (both evaluations in one batch) decides the same, again and again
    gated = request(read_only=False, destructive=True, roles=("engineer",))
    assert [(await engine.decide(gated)).effect for _ in range(3)] == [Effect.REQUIRE_APPROVAL] * 3


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("permit(principal, action, resource) when { context.hour < 18 };", {"hour", "approval"}),
        (
            'permit(principal, action, resource) when { context has session && context["trace_id"] == "x" };',
            {"session", "trace_id", "approval"},
        ),
        (
            'permit(principal, action, resource) when { context has "paths" && context . hosts.isEmpty() };',
            {"paths", "hosts", "approval"},
        ),
        ("permit(principal, action, resource) when { context == context };", None),
    ],
)
def test_only_the_context_attributes_policies_read_are_passed(text: str, keys: set[str] | None) -> None:
    from broker.policy.cedar import context_keys

    assert context_keys(text) == (frozenset(keys) if keys is not None else None)


@pytest.mark.anyio
async def test_a_trimmed_context_decides_like_the_full_one(tmp_path: Path) -> None:
    directory = policy_dir(
        tmp_path,
        p="""
        @id("office-hours") permit(principal, action, resource)
          when { context.hour >= 8 && context.hour < 18 };
        @id("no-root") forbid(principal, action, resource) when { context.paths.contains("/") };
        """,
    )
    engine = await started(directory)
    base = request()
    base["context"]["paths"] = ["/"]
    late = request()
    late["context"]["hour"] = 22
    decisions = [await engine.decide(r) for r in (request(), base, late)]
    assert [d.effect for d in decisions] == [Effect.ALLOW, Effect.DENY, Effect.DENY]
    assert [r.id for r in decisions[1].reasons] == ["no-root"]


@pytest.mark.anyio
async def test_the_direct_evaluation_path_decides_like_cedarpys_public_api(
    repo_policies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broker.policy.cedar as cedar_module

    requests = [
        request(
            f"notes__t{i}",
            read_only=i % 2 == 0,
            destructive=i % 3 == 0,
            roles=("engineer",) if i % 4 else (),
            problems=("x",) if i == 5 else (),
        )
        for i in range(12)
    ]
    lean = [await (await started(repo_policies)).decide(r) for r in requests]
    monkeypatch.setattr(cedar_module, "_LEAN", None)
    public = [await (await started(repo_policies)).decide(r) for r in requests]
    assert [(d.effect, d.reasons) for d in lean] == [(d.effect, d.reasons) for d in public]
