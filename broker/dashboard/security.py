"""The browser-facing defences of the dashboard: response headers and CSRF checks.

Every response under the dashboard's path carries a strict Content-Security-Policy (scripts,
styles and connections from this origin only, no inline script, `frame-ancestors 'none'`,
forms post only here), `X-Content-Type-Options: nosniff`, a referrer only within this origin
(with `no-referrer` browsers send `Origin: null` on form posts, which the origin check below
must refuse) and no caching: pages show who called what, which must not linger in caches.

Every POST must prove it comes from a page the dashboard rendered (double-submit): the form's
hidden `csrf` field must equal the HttpOnly, SameSite=Strict `mcpb_csrf` cookie set with the
page, compared in constant time; and a browser's `Origin` (or `Sec-Fetch-Site`) must say the
same origin. A request failing either is refused with 403 before anything is decided.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE: Final = "mcpb_csrf"
CSRF_FIELD: Final = "csrf"

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_HEADER_NAMES: Final = frozenset(name for name, _ in SECURITY_HEADERS)


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response (errors and 404s included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _HEADER_NAMES]
                message = {**message, "headers": headers + list(SECURITY_HEADERS)}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token_for(request: Request) -> str:
    """The token the page's forms carry: the browser's cookie if it has a sound one, else a new one
    (the response sets it)."""
    existing = request.cookies.get(CSRF_COOKIE, "")
    return existing if len(existing) >= 32 else new_csrf_token()


def same_origin(request: Request) -> bool:
    """Whether the browser says the request comes from this origin (absent headers: a non-browser
    client, which the token check still covers)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"{request.url.scheme}://{host}", f"http://{host}", f"https://{host}")


def csrf_problem(request: Request, submitted: str | None) -> str | None:
    """Why this POST must be refused, or None when it carries the page's token from this origin."""
    if not same_origin(request):
        return "cross-origin form posts are refused"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not submitted:
        return "the form's CSRF token is missing: reload the page and try again"
    if not hmac.compare_digest(cookie.encode(), submitted.encode()):
        return "the form's CSRF token does not match: reload the page and try again"
    return None
