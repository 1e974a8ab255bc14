"""The dashboard's browser defences: headers on every response, CSRF double-submit and origin."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from broker.dashboard.security import (
    CSRF_COOKIE,
    SecurityHeaders,
    csrf_problem,
    csrf_token_for,
    new_csrf_token,
)

pytestmark = pytest.mark.anyio


async def test_every_response_carries_the_headers_even_errors_and_overrides() -> None:
    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi", headers={"X-Frame-Options": "ALLOWALL"})

    app = SecurityHeaders(Starlette(routes=[Route("/page", page)]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        for path, status in (("/page", 200), ("/missing", 404)):
            response = await http.get(path)
            assert response.status_code == status
            policy = response.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
            assert "unsafe-inline" not in policy and "form-action 'self'" in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers.get_list("x-frame-options") == ["DENY"]
            assert response.headers["cache-control"] == "no-store"


def post(headers: dict[str, str] | None = None, cookie: str | None = None) -> Request:
    raw = [(b"host", b"127.0.0.1:8787")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if cookie is not None:
        raw.append((b"cookie", f"{CSRF_COOKIE}={cookie}".encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("127.0.0.1", 8787),
        "path": "/admin/approvals/apr_x/approve",
        "headers": raw,
        "query_string": b"",
    }
    return Request(scope)


def test_a_post_must_carry_the_pages_token_from_this_origin() -> None:
    token = new_csrf_token()
    same = {"origin": "http://127.0.0.1:8787", "sec-fetch-site": "same-origin"}
    assert csrf_problem(post(same, token), token) is None
    assert csrf_problem(post({}, token), token) is None  # a non-browser client: the token decides
    missing = csrf_problem(post(same, token), None)
    assert missing is not None and "missing" in missing
    assert csrf_problem(post(same, None), token) is not None  # no cookie
    wrong = csrf_problem(post(same, token), new_csrf_token())
    assert wrong is not None and "does not match" in wrong
    for foreign in (
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
    ):
        refused = csrf_problem(post(foreign, token), token)
        assert refused is not None and "cross-origin" in refused, foreign


def test_a_page_reuses_a_sound_cookie_and_replaces_a_weak_one() -> None:
    token = new_csrf_token()
    assert csrf_token_for(post({}, token)) == token
    fresh = csrf_token_for(post({}, "short"))
    assert fresh != "short" and len(fresh) >= 32
    assert csrf_token_for(post({})) != csrf_token_for(post({}))
