"""Who may view the dashboard: the organisation policy on both real engines, and principal resolution.

The cases below are the dashboard's policy tests: each is decided by embedded Cedar and by the
real OPA (managed sidecar) on policies/, through `DashboardAccess.decide` — the request the
dashboard itself sends — and both engines must give the expected effect and reason.
(`mcp-broker policy test` cannot run them yet: its case schema does not know the
`view_dashboard` action.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from broker.app import make_engine
from broker.config import OpaConfig, PolicyConfig
from broker.dashboard.access import TOKEN_COOKIE, AccessRefused, DashboardAccess
from broker.identity.authenticator import Authenticator, api_key_digest
from broker.identity.principal import Principal
from broker.policy.decision import Effect
from broker.policy.point import PolicyPoint
from tests.support import opa as support_opa

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[3]

CASES: list[tuple[str, Principal, Effect, str]] = [
    ("an admin", Principal("User", "ada", roles=("admin",)), Effect.ALLOW, "operators-view-dashboard"),
    ("an approver", Principal("User", "olga", roles=("approver",)), Effect.ALLOW, "operators-view-dashboard"),
    ("an engineer", Principal("User", "carl", roles=("engineer",)), Effect.DENY, "no_permit"),
    ("nobody in particular", Principal("User", "nina"), Effect.DENY, "no_permit"),
    (
        "an agent with the approver role",
        Principal("Agent", "copilot", roles=("approver",)),
        Effect.DENY,
        "agents-do-not-view-dashboard",
    ),
    (
        "an agent acting for an admin",
        Principal("Agent", "helper", roles=("admin",), acting_for="ada"),
        Effect.DENY,
        "agents-do-not-view-dashboard",
    ),
    (
        "an approver of a tenant (the dashboard shows every tenant)",
        Principal("User", "avery", tenant="acme", roles=("approver",)),
        Effect.DENY,
        "tenant-isolation",
    ),
    (
        "an admin of another tenant",
        Principal("User", "gina", tenant="globex", roles=("admin",)),
        Effect.DENY,
        "tenant-isolation",
    ),
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=["cedar", "opa"])
async def policy(request: pytest.FixtureRequest) -> AsyncIterator[PolicyPoint]:
    engine_name = request.param
    opa = OpaConfig(binary=str(support_opa.opa_binary())) if engine_name == "opa" else OpaConfig()
    engine, _ = make_engine(PolicyConfig(engine=engine_name, path=REPO / "policies", watch=False, opa=opa))
    point = PolicyPoint(engine)
    await point.start()
    yield point
    await point.stop()


@pytest.mark.parametrize(("label", "principal", "effect", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_the_organisation_policy_decides_who_views_the_dashboard(
    policy: PolicyPoint, label: str, principal: Principal, effect: Effect, reason: str
) -> None:
    decision = await DashboardAccess(policy, None, None).decide(principal)
    assert decision.effect is effect, (label, decision)
    assert reason in [r.id for r in decision.reasons], (label, decision.reasons)


def request(
    host: str = "127.0.0.1", headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None
) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/admin/",
        "headers": raw,
        "client": (host, 50000),
        "query_string": b"",
    }
    return Request(scope)


async def test_without_tokens_the_local_approver_is_the_viewer_on_loopback_only(policy: PolicyPoint) -> None:
    local = Principal("User", "ops", roles=("admin",))
    access = DashboardAccess(policy, None, local)
    assert not access.uses_tokens
    viewer = await access.viewer(request("127.0.0.1"))
    assert viewer.principal == local and viewer.label == "User:ops" and not viewer.via_cookie
    with pytest.raises(AccessRefused) as remote:
        await access.viewer(request("192.0.2.7"))
    assert remote.value.status == 403 and "loopback" in remote.value.message
    with pytest.raises(AccessRefused) as nobody:
        await DashboardAccess(policy, None, None).viewer(request())
    assert nobody.value.status == 403 and "local_approver" in nobody.value.message


async def test_with_tokens_the_header_or_the_login_cookie_names_the_viewer(policy: PolicyPoint) -> None:
    keys = {
        api_key_digest("mcpb_ada-key-0123456789abcdef"): Principal("User", "ada", roles=("admin",)),
        api_key_digest("mcpb_carl-key-0123456789abcdef"): Principal("User", "carl", roles=("engineer",)),
    }
    authenticator = Authenticator(verifier=None, mappings={}, api_keys=keys)
    access = DashboardAccess(policy, authenticator, Principal("User", "ops", roles=("admin",)))
    by_header = await access.viewer(
        request(headers={"authorization": "Bearer mcpb_ada-key-0123456789abcdef"})
    )
    assert by_header.principal.id == "ada" and not by_header.via_cookie
    by_cookie = await access.viewer(
        request("192.0.2.7", cookies={TOKEN_COOKIE: "mcpb_ada-key-0123456789abcdef"})
    )
    assert by_cookie.principal.id == "ada" and by_cookie.via_cookie
    with pytest.raises(AccessRefused) as unknown:  # tokens configured: the local approver does not count
        await access.viewer(request("127.0.0.1"))
    assert unknown.value.status == 401
    with pytest.raises(AccessRefused) as bad:
        await access.viewer(request(cookies={TOKEN_COOKIE: "mcpb_not-a-key-0123456789abcdef"}))
    assert bad.value.status == 401
    with pytest.raises(AccessRefused) as engineer:
        await access.viewer(request(headers={"authorization": "Bearer mcpb_carl-key-0123456789abcdef"}))
    assert engineer.value.status == 403 and "no_permit" in engineer.value.message
