"""The dashboard mounted in the broker's real HTTP app (in process): the loopback-only mode without
tokens, form posts, the mount's place among the other routes. Browser flows: tests/e2e/test_dashboard.py."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from broker.app import Broker
from broker.audit.config import AuditConfig
from broker.config import ApprovalsConfig, BrokerConfig, PolicyConfig, PrincipalConfig
from broker.dashboard.settings import DashboardSettings

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[3]
PAGES = (
    "/admin/",
    "/admin/decisions",
    "/admin/approvals",
    "/admin/upstreams",
    "/admin/registry",
    "/admin/policy",
)


def config(tmp_path: Path, **dashboard: object) -> BrokerConfig:
    return BrokerConfig(
        policy=PolicyConfig(path=REPO / "tests" / "support" / "policies" / "allow-all", watch=False),
        approvals=ApprovalsConfig(
            path=tmp_path / "approvals.db",
            local_approver=PrincipalConfig(type="User", id="ops", roles=("admin",)),
        ),
        audit=AuditConfig(enabled=False),
        dashboard=dataclasses.replace(DashboardSettings(enabled=True), **dashboard),  # type: ignore[arg-type]
    )


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    running = Broker(config(tmp_path))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def client(broker: Broker, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=broker.http_app(), client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8787")


async def test_without_tokens_the_local_approver_sees_every_page_from_loopback_only(broker: Broker) -> None:
    async with client(broker) as http:
        for path in PAGES:
            page = await http.get(path)
            assert page.status_code == 200, path
            assert "User:ops" in page.text and 'src="/admin/static/dashboard.js"' in page.text
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert (await http.get("/admin/login")).headers["location"] == "/admin/"  # nothing to sign in to
        script = await http.get("/admin/static/dashboard.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/admin/static/other.js")).status_code == 404
    async with client(broker, "192.0.2.10") as remote:
        for path in PAGES:
            page = await remote.get(path)
            assert page.status_code == 403 and "loopback only" in page.text, path


async def test_form_posts_need_the_token_then_go_through_the_approvals(broker: Broker) -> None:
    async with client(broker) as http:
        page = await http.get("/admin/approvals")
        assert "No pending approval" in page.text
        token = page.cookies["mcpb_csrf"]
        refused = await http.post("/admin/approvals/apr_nothing/approve", data={})
        assert refused.status_code == 403 and "CSRF" in refused.text
        unknown = await http.post("/admin/approvals/apr_nothing/deny", data={"csrf": token, "note": "x"})
        assert unknown.status_code == 404 and "no approval apr_nothing" in unknown.text
        too_long = await http.post(
            "/admin/approvals/apr_nothing/deny", data={"csrf": token, "note": "x" * 501}
        )
        assert too_long.status_code == 400
        out = await http.post("/admin/logout", data={"csrf": token})
        assert out.status_code == 303


async def test_the_mount_leaves_the_other_admin_routes_alone(broker: Broker) -> None:
    async with client(broker) as http:
        reload = await http.post("/admin/policy/reload")
        assert reload.status_code == 200 and reload.json()["ok"] is True
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/admin")).status_code in (307, 308)  # to /admin/
        assert (await http.get("/admin/nowhere")).status_code == 404


async def test_the_dashboard_is_absent_unless_enabled(tmp_path: Path) -> None:
    off = Broker(dataclasses.replace(config(tmp_path), dashboard=DashboardSettings()))
    assert off.decision_feed is None and off.gateway.decision_feed is None
    async with client(off) as http:
        assert (await http.get("/admin/")).status_code == 404
        assert (await http.get("/admin/static/dashboard.js")).status_code == 404


async def test_the_dashboard_moves_with_its_path(tmp_path: Path) -> None:
    moved = Broker(config(tmp_path, path="/ops/board"))
    await moved.start()
    try:
        async with client(moved) as http:
            page = await http.get("/ops/board/policy")
            assert page.status_code == 200 and 'href="/ops/board/decisions"' in page.text
            assert (await http.get("/admin/policy")).status_code == 404
    finally:
        await moved.stop()
