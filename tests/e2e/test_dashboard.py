"""End to end: the operator dashboard in a real headless Chromium, driving a real broker.

A real broker subprocess (the organisation policy in policies/, with `view_dashboard`;
the counter fixture as upstream, which proves whether a call was forwarded), agents calling
through the official SDK client with API keys, and Debian's chromium driven by Debian's
chromedriver over the W3C WebDriver HTTP protocol (httpx; both installed by
scripts/install-browser.sh, same version by construction). Screenshots go to the test's tmp
directory; their paths are printed (pytest -s shows them, and a failure's output too).

People: olga is an approver (no tenant: the dashboard is the platform's view), carl an
engineer whose destructive calls need an approval, and copilot an agent with the approver
role, which the policy keeps out of the dashboard (agents-do-not-view-dashboard).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from broker.identity.authenticator import api_key_digest
from tests.fixtures import REPO_ROOT
from tests.support.broker import (
    BrokerProcess,
    alive,
    broker_config,
    descendants,
    running_broker,
    stdio_upstream,
)
from tests.support.tokens import bearer_client

PEOPLE: dict[str, dict[str, Any]] = {
    "olga": {"type": "User", "id": "olga", "roles": ["approver"]},
    "carl": {"type": "User", "id": "carl", "roles": ["engineer"]},
    "copilot": {"type": "Agent", "id": "copilot", "roles": ["approver"]},
}
KEYS = {name: f"mcpb_{name}-dashboard-key-0123456789" for name in PEOPLE}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)
PAGES = ("/admin/", "/admin/approvals", "/admin/upstreams", "/admin/registry", "/admin/policy")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
"""The W3C WebDriver key of an element reference."""


# -- the browser: chromedriver over the W3C WebDriver protocol --------------------------------------


def browser_tools() -> tuple[str, str]:
    """chromium and chromedriver, installed by scripts/install-browser.sh (never a skip)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        done = subprocess.run(
            [str(REPO_ROOT / "scripts" / "install-browser.sh")],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, f"scripts/install-browser.sh failed:\n{done.stderr[-3000:]}"
        paths = dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)
        chromium, driver = paths.get("CHROMIUM"), paths.get("CHROMEDRIVER")
    assert chromium and driver, "no chromium/chromedriver after scripts/install-browser.sh"
    return chromium, driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Browser:
    """One WebDriver session: a few W3C commands, each a plain HTTP request to chromedriver."""

    def __init__(self, driver_url: str, session: str, shots: Path) -> None:
        self._http = httpx.Client(base_url=f"{driver_url}/session/{session}", timeout=60)
        self.shots = shots
        self.taken: list[Path] = []

    def _command(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body if method == "POST" else None)
        payload = response.json()
        if response.status_code != 200:
            raise AssertionError(f"WebDriver {method} {path}: {payload.get('value')}")
        return payload.get("value")

    def open(self, url: str) -> None:
        self._command("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self._command("GET", "/url"))

    def source(self) -> str:
        return str(self._command("GET", "/source"))

    def find_all(self, css: str) -> list[str]:
        found = self._command("POST", "/elements", {"using": "css selector", "value": css})
        return [item[ELEMENT] for item in found]

    def wait_for(self, css: str, seconds: float = 15.0, text: str | None = None) -> str:
        """The first element matching `css` (and containing `text`), polled for a bounded time."""
        deadline = time.monotonic() + seconds
        while True:
            for element in self.find_all(css):
                if text is None or text in self.text(element):
                    return element
            if time.monotonic() > deadline:
                self.screenshot("timeout")
                raise AssertionError(f"no {css!r}{f' with {text!r}' if text else ''} within {seconds} s")
            time.sleep(0.1)

    def inside(self, element: str, css: str) -> str:
        found = self._command("POST", f"/element/{element}/element", {"using": "css selector", "value": css})
        return str(found[ELEMENT])

    def text(self, element: str) -> str:
        try:
            return str(self._command("GET", f"/element/{element}/text"))
        except AssertionError:  # went stale: the page changed under us
            return ""

    def type(self, element: str, text: str) -> None:
        self._command("POST", f"/element/{element}/value", {"text": text})

    def click(self, element: str) -> None:
        self._command("POST", f"/element/{element}/click", {})

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{len(self.taken) + 1:02d}-{name}.png"
        path.write_bytes(base64.b64decode(self._command("GET", "/screenshot")))
        self.taken.append(path)
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        self._http.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium, driver = browser_tools()
    directory = tmp_path_factory.mktemp("browser")
    port = free_port()
    log = (directory / "chromedriver.log").open("wb")
    process = subprocess.Popen(
        [driver, f"--port={port}", f"--log-path={directory / 'chromedriver-verbose.log'}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    driver_url = f"http://127.0.0.1:{port}"
    session = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{driver_url}/status", timeout=2).json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, f"chromedriver exited with {process.returncode}"
            assert time.monotonic() < deadline, "chromedriver did not get ready within 30 s"
            time.sleep(0.1)
        profile = directory / "profile"
        options = {"binary": chromium, "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        created = httpx.post(f"{driver_url}/session", json={"capabilities": capabilities}, timeout=90)
        assert created.status_code == 200, created.text
        session = created.json()["value"]["sessionId"]
        shots = directory / "screenshots"
        shots.mkdir()
        print(f"screenshots: {shots}")
        browser = Browser(driver_url, session, shots)
        yield browser
        browser.close()
    finally:
        children = descendants(process.pid)
        if session is not None:
            httpx.delete(f"{driver_url}/session/{session}", timeout=30)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        leftovers = [pid for pid in children if alive(pid)]
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"chromium processes were left behind: {leftovers}"


# -- the broker ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    directory = tmp_path_factory.mktemp("dashboard")
    keys = [{"sha256": api_key_digest(KEYS[name]), "principal": p} for name, p in PEOPLE.items()]
    config = broker_config(
        {"counter": stdio_upstream("counter")},
        policy={"path": str(REPO_ROOT / "policies"), "watch": False},
        identity={"authentication": {"resource": "http://127.0.0.1/mcp", "api_keys": keys}},
        approvals={"path": str(directory / "approvals.db"), "timeout": 120},
        dashboard={"enabled": True},
    )
    with running_broker(directory, config) as process:
        yield process


@asynccontextmanager
async def agent(broker: BrokerProcess, who: str = "carl") -> AsyncIterator[Client]:
    async with bearer_client(broker.url, KEYS[who]) as client:
        yield client


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def hits(client: Client) -> int:
    return int(text(await client.call_tool("counter__count", {"tool": "hit_destructive"})))


async def pending_approval(broker: BrokerProcess, target: str, seconds: float = 20) -> dict[str, Any]:
    """The pending approval for `target`, read through the approvals API as olga (bounded poll)."""
    headers = {"authorization": f"Bearer {KEYS['olga']}"}
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=broker.base_url, headers=headers, timeout=15) as http:
        while time.monotonic() < deadline:
            listed = (await http.get("/approvals", params={"status": "pending"})).json()["approvals"]
            found = [a for a in listed if a["target"] == target]
            if found:
                return dict(found[0])
            await asyncio.sleep(0.1)
    raise AssertionError(f"no pending approval for {target} within {seconds} s")


def sign_in(browser: Browser, broker: BrokerProcess, who: str) -> None:
    browser.open(f"{broker.base_url}/admin/login")
    browser.type(browser.wait_for("input[name=token]"), KEYS[who])
    browser.click(browser.wait_for("#sign-in"))


def dashboard_client(broker: BrokerProcess, who: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=broker.base_url, headers={"authorization": f"Bearer {KEYS[who]}"}, timeout=15
    )


# -- the tests ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_agents_call_waits_until_approve_is_clicked_in_the_page(
    broker: BrokerProcess, browser: Browser
) -> None:
    await asyncio.to_thread(sign_in, browser, broker, "olga")
    await asyncio.to_thread(browser.wait_for, "#decisions")
    async with agent(broker) as carl:
        before = await hits(carl)
        call = asyncio.create_task(carl.call_tool("counter__hit_destructive", {}))
        approval = await pending_approval(broker, "counter__hit_destructive")
        await asyncio.to_thread(browser.open, f"{broker.base_url}/admin/approvals")
        row = await asyncio.to_thread(browser.wait_for, f"tr[data-approval='{approval['id']}']")
        shown = await asyncio.to_thread(browser.text, row)
        assert "counter__hit_destructive" in shown and "User:carl" in shown
        assert "destructive-needs-approval" in shown and " s" in shown  # the reason, the time left
        await asyncio.to_thread(browser.screenshot, "approvals-queue")
        assert not call.done() and await hits(carl) == before, "the call ran before the approval"

        approve = await asyncio.to_thread(browser.inside, row, "button.approve")
        await asyncio.to_thread(browser.click, approve)
        notice = await asyncio.to_thread(browser.wait_for, "#notice", 15, approval["id"])
        assert "approved" in await asyncio.to_thread(browser.text, notice)
        await asyncio.to_thread(browser.screenshot, "approved")

        result = await asyncio.wait_for(call, 20)
        assert not result.is_error and int(text(result)) >= 1  # the upstream's own answer
        assert await hits(carl) == before + 1
    async with dashboard_client(broker, "olga") as http:
        decided = (await http.get(f"/approvals/{approval['id']}")).json()
    assert decided["status"] == "approved" and decided["approver"]["id"] == "olga"
    assert decided["channel"] == "dashboard"
    page = await asyncio.to_thread(browser.source)
    assert KEYS["olga"] not in page and KEYS["carl"] not in page, "a credential was rendered into the page"


@pytest.mark.anyio
async def test_the_live_decisions_page_shows_a_decision_made_after_it_loaded(
    broker: BrokerProcess, browser: Browser
) -> None:
    await asyncio.to_thread(sign_in, browser, broker, "olga")
    await asyncio.to_thread(browser.open, f"{broker.base_url}/admin/decisions?target=counter__reset")
    await asyncio.to_thread(browser.wait_for, "#live-status", 15, "live")
    rows_before = await asyncio.to_thread(browser.find_all, "#decisions tbody tr")
    async with agent(broker) as carl:
        await carl.call_tool("counter__reset", {})  # a write tool: allowed for engineers, no approval
        await carl.call_tool("counter__count", {})  # filtered out by the page's filter
    row = await asyncio.to_thread(browser.wait_for, "#decisions tbody tr", 15, "counter__reset")
    shown = await asyncio.to_thread(browser.text, row)
    assert "User:carl" in shown and "allow" in shown and "engineers-change-things" in shown
    assert "ok" in shown and " ms" in shown
    rows = await asyncio.to_thread(browser.find_all, "#decisions tbody tr")
    assert len(rows) == len(rows_before) + 1, "the stream showed a row the filter excludes"
    await asyncio.to_thread(browser.screenshot, "live-decisions")


@pytest.mark.anyio
async def test_a_post_without_the_csrf_token_is_refused_and_decides_nothing(broker: BrokerProcess) -> None:
    async with agent(broker) as carl, dashboard_client(broker, "olga") as http:
        before = await hits(carl)
        call = asyncio.create_task(carl.call_tool("counter__hit_destructive", {}))
        approval = await pending_approval(broker, "counter__hit_destructive")
        page = await http.get("/admin/approvals")
        assert page.status_code == 200 and approval["id"] in page.text
        cookie = page.cookies["mcpb_csrf"]
        path = f"/admin/approvals/{approval['id']}/approve"

        missing = await http.post(path, data={"note": "no token"}, cookies={"mcpb_csrf": cookie})
        assert missing.status_code == 403 and "CSRF token is missing" in missing.text
        wrong = await http.post(path, data={"csrf": "x" * 43}, cookies={"mcpb_csrf": cookie})
        assert wrong.status_code == 403 and "does not match" in wrong.text
        elsewhere = await http.post(
            path,
            data={"csrf": cookie},
            cookies={"mcpb_csrf": cookie},
            headers={"origin": "https://evil.example"},
        )
        assert elsewhere.status_code == 403 and "cross-origin" in elsewhere.text
        still = (await http.get(f"/approvals/{approval['id']}")).json()
        assert still["status"] == "pending" and not call.done()

        denied = await http.post(
            f"/admin/approvals/{approval['id']}/deny",
            data={"csrf": cookie, "note": "not today"},
            cookies={"mcpb_csrf": cookie},
        )
        assert denied.status_code == 303, denied.text
        with pytest.raises(MCPError) as caught:
            await asyncio.wait_for(call, 20)
        assert caught.value.error.data["reason"] == "approval_denied"
        assert caught.value.error.data["approver"] == "olga" and "not today" in caught.value.error.message
        assert await hits(carl) == before


@pytest.mark.anyio
async def test_a_principal_the_policy_does_not_admit_gets_403(
    broker: BrokerProcess, browser: Browser
) -> None:
    await asyncio.to_thread(sign_in, browser, broker, "carl")
    error = await asyncio.to_thread(browser.wait_for, "#error", 15, "may not view the dashboard")
    assert "no_permit" in await asyncio.to_thread(browser.text, error)
    await asyncio.to_thread(browser.screenshot, "refused")
    for who, reason in (("carl", "no_permit"), ("copilot", "agents-do-not-view-dashboard")):
        async with dashboard_client(broker, who) as http:
            for path in (
                "/admin/",
                "/admin/approvals",
                "/admin/upstreams",
                "/admin/registry",
                "/admin/policy",
            ):
                page = await http.get(path)
                assert page.status_code == 403, (who, path)
                assert reason in page.text
            stream = await http.get("/admin/decisions/stream")
            assert stream.status_code == 403
    async with httpx.AsyncClient(base_url=broker.base_url, timeout=15) as anonymous:
        page = await anonymous.get("/admin/approvals")
        assert page.status_code == 303 and page.headers["location"].endswith("/admin/login")


@pytest.mark.anyio
async def test_the_status_pages_render_in_the_browser(broker: BrokerProcess, browser: Browser) -> None:
    await asyncio.to_thread(sign_in, browser, broker, "olga")
    for page, check, expected in (
        ("upstreams", "tr[data-upstream='counter']", "ready"),
        ("registry", "#registry-items", "counter/tool"),
        ("policy", "#policy-engine", "cedar"),
    ):
        await asyncio.to_thread(browser.open, f"{broker.base_url}/admin/{page}")
        await asyncio.to_thread(browser.wait_for, check, 15, expected)
        await asyncio.to_thread(browser.screenshot, page)


@pytest.mark.anyio
async def test_pages_carry_the_security_headers_and_show_the_broker_state(broker: BrokerProcess) -> None:
    async with dashboard_client(broker, "olga") as http:
        ready = (await http.get("/readyz")).json()
        for path, expected in (
            ("/admin/upstreams", "counter"),
            ("/admin/registry", "counter"),
            ("/admin/policy", ready["policy"]["policy_version"]),
        ):
            page = await http.get(path)
            assert page.status_code == 200, path
            assert expected in page.text
            policy = page.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
            assert "'unsafe-inline'" not in policy
            assert page.headers["x-content-type-options"] == "nosniff"
            assert "<script>" not in page.text, "inline script"
            assert KEYS["olga"] not in page.text
        upstreams = (await http.get("/admin/upstreams")).text
        assert "ready" in upstreams
