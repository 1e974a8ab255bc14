"""The dashboard's pages and form posts, mounted by `broker.app.HttpApp` under `dashboard.path`.

```
GET  {path}/                          live decisions (also {path}/decisions), filters in the query
GET  {path}/decisions/stream          server-sent events: one `decision` event per routed call
GET  {path}/approvals                 the pending approvals the viewer may see, with buttons
POST {path}/approvals/{id}/approve    form post: the same Approvals.decide() as the API
POST {path}/approvals/{id}/deny
GET  {path}/upstreams                 health, breaker, in flight, latency
GET  {path}/registry                  pinned / quarantined / flagged items and the drift diff
GET  {path}/policy                    policy version and the last reload
GET  {path}/login   POST {path}/login   POST {path}/logout   (only with identity.authentication)
GET  {path}/static/{name}             the one script and the one stylesheet
```

Every request is authorised first (`DashboardAccess.viewer`: credential, then the policy's
`view_dashboard`); every POST is CSRF-checked before that. Pages are rendered on the server
(Jinja2, autoescaped); the script only streams new rows and counts down deadlines.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.templating import Jinja2Templates

from broker.approval.approvals import ApprovalRefused
from broker.approval.model import ApprovalStatus
from broker.approval.store import ApprovalStoreError
from broker.audit.redact import SecretRedactor
from broker.dashboard.access import TOKEN_COOKIE, AccessRefused, DashboardAccess, Viewer
from broker.dashboard.feed import DecisionFeed, FeedFilter
from broker.dashboard.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SecurityHeaders,
    csrf_problem,
    csrf_token_for,
)
from broker.dashboard.settings import DashboardSettings
from broker.dashboard.views import BrokerParts, approval_row, policy_view, registry_view, upstream_rows
from broker.errors import BrokerError

PAGE_ROWS: Final = 200
"""Decisions shown when a page loads (the stream adds to them)."""
APPROVALS_SHOWN: Final = 200
KEEPALIVE_SECONDS: Final = 15.0
MAX_NOTE_CHARS: Final = 500
STATIC: Final = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_DECIDED = re.compile(r"^apr_[A-Za-z0-9_-]{1,64}$")

Handler = Callable[[Request], Awaitable[Response]]


class Dashboard:
    def __init__(
        self,
        parts: BrokerParts,
        feed: DecisionFeed,
        access: DashboardAccess,
        settings: DashboardSettings,
        *,
        title: str = "mcp-authz-broker",
    ) -> None:
        self._parts = parts
        self._feed = feed
        self._access = access
        self._settings = settings
        self._prefix = settings.path
        self._title = title
        self._redactor = SecretRedactor()
        package = files("broker.dashboard")
        self._templates = Jinja2Templates(directory=Path(str(package / "templates")))
        self._static = {name: (package / "static" / name).read_bytes() for name in STATIC}

    def mount(self) -> Mount:
        """The dashboard as one Starlette mount (its own security headers on every response)."""
        routes = [
            Route("/", self._guarded(self.decisions), methods=["GET"]),
            Route("/decisions", self._guarded(self.decisions), methods=["GET"]),
            Route("/decisions/stream", self.stream, methods=["GET"]),
            Route("/approvals", self._guarded(self.approvals_page), methods=["GET"]),
            Route("/approvals/{approval_id}/approve", self._deciding(True), methods=["POST"]),
            Route("/approvals/{approval_id}/deny", self._deciding(False), methods=["POST"]),
            Route("/upstreams", self._guarded(self.upstreams), methods=["GET"]),
            Route("/registry", self._guarded(self.registry), methods=["GET"]),
            Route("/policy", self._guarded(self.policy), methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/static/{name}", self.static, methods=["GET"]),
        ]
        app = Starlette(routes=routes)
        return Mount(self._prefix, app=SecurityHeaders(app))

    # -- pages -------------------------------------------------------------------------------------

    async def decisions(self, request: Request, viewer: Viewer) -> Response:
        only = FeedFilter.from_query(request.query_params)
        rows = [e.to_json() for e in self._feed.recent(PAGE_ROWS, only)]
        query = "&".join(f"{k}={_quote(v)}" for k, v in only.query().items())
        return self._render(
            request,
            viewer,
            "decisions.html",
            {
                "rows": rows,
                "filter": only,
                "after": self._feed.last_seq,
                "stream_url": f"{self._prefix}/decisions/stream" + (f"?{query}" if query else ""),
                "effects": ("allow", "deny", "require_approval", "none"),
            },
        )

    async def approvals_page(
        self, request: Request, viewer: Viewer, *, error: str = "", status: int = 200
    ) -> Response:
        approvals = self._parts.approvals
        rows: list[dict[str, Any]] = []
        if approvals is not None:
            try:
                pending = await approvals.visible_to(
                    viewer.principal, ApprovalStatus.PENDING, APPROVALS_SHOWN
                )
            except (ApprovalStoreError, BrokerError) as exc:
                error, status = f"the approvals cannot be read: {exc}", 503
                pending = []
            now = time.time()
            rows = [approval_row(a, self._redactor, now) for a in pending]
        decided_id = request.query_params.get("decided", "")
        decided_as = request.query_params.get("as", "")
        notice = ""
        if _DECIDED.match(decided_id) and decided_as in ("approved", "denied"):
            notice = f"{decided_id} {decided_as}"
        return self._render(
            request,
            viewer,
            "approvals.html",
            {"enabled": approvals is not None, "rows": rows, "error": error, "notice": notice},
            status=status,
        )

    async def upstreams(self, request: Request, viewer: Viewer) -> Response:
        return self._render(
            request, viewer, "upstreams.html", {"rows": upstream_rows(self._parts, self._feed)}
        )

    async def registry(self, request: Request, viewer: Viewer) -> Response:
        return self._render(
            request, viewer, "registry.html", {"registry": registry_view(self._parts.registry)}
        )

    async def policy(self, request: Request, viewer: Viewer) -> Response:
        return self._render(request, viewer, "policy.html", {"policy": policy_view(self._parts.policy)})

    # -- live decisions ----------------------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        try:
            await self._access.viewer(request)
        except AccessRefused as exc:
            return PlainTextResponse(exc.message, status_code=exc.status)
        only = FeedFilter.from_query(request.query_params)
        resume = request.headers.get("last-event-id") or request.query_params.get("after", "")
        after = int(resume) if resume.isdigit() else self._feed.last_seq
        return StreamingResponse(
            self._events(min(after, self._feed.last_seq), only),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def _events(self, after: int, only: FeedFilter) -> AsyncIterator[bytes]:
        """New decisions as SSE events until the stream's time is up or the broker stops (the
        browser reconnects, and is authorised again)."""
        feed = self._feed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.stream_seconds
        yield b"retry: 2000\n\n"
        seq = after
        while not feed.closed:
            for entry in feed.entries(seq, only):
                data = orjson.dumps(entry.to_json()).decode()
                yield f"id: {entry.seq}\nevent: decision\ndata: {data}\n\n".encode()
            seq = max(seq, feed.last_seq)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if not await feed.wait_after(seq, min(KEEPALIVE_SECONDS, remaining)):
                yield b": keep-alive\n\n"

    # -- approving ---------------------------------------------------------------------------------

    def _deciding(self, approve: bool) -> Handler:
        async def decide(request: Request) -> Response:
            form = await request.form()
            problem = csrf_problem(request, _field(form.get(CSRF_FIELD)))
            if problem is not None:
                return PlainTextResponse(f"Forbidden: {problem}", status_code=403)
            try:
                viewer = await self._access.viewer(request)
            except AccessRefused as exc:
                return await self._refused(request, exc)
            approvals = self._parts.approvals
            if approvals is None:
                return PlainTextResponse("approvals are not enabled on this broker", status_code=404)
            note = (_field(form.get("note")) or "").strip()
            approval_id = request.path_params["approval_id"]
            if len(note) > MAX_NOTE_CHARS:
                message = f"the note must be at most {MAX_NOTE_CHARS} characters"
                return await self.approvals_page(request, viewer, error=message, status=400)
            try:
                decided = await approvals.decide(
                    approval_id, viewer.principal, approve=approve, note=note, channel="dashboard"
                )
            except ApprovalRefused as exc:
                return await self.approvals_page(request, viewer, error=exc.message, status=exc.status)
            except (ApprovalStoreError, BrokerError) as exc:
                message = f"the approval could not be decided: {exc}"
                return await self.approvals_page(request, viewer, error=message, status=503)
            target = f"{self._prefix}/approvals?decided={decided.id}&as={decided.status.value}"
            return RedirectResponse(target, status_code=303)

        return decide

    # -- signing in --------------------------------------------------------------------------------

    async def login_page(self, request: Request, *, error: str = "", status: int = 200) -> Response:
        if not self._access.uses_tokens:
            return RedirectResponse(f"{self._prefix}/", status_code=303)
        return self._render(request, None, "login.html", {"error": error}, status=status)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        problem = csrf_problem(request, _field(form.get(CSRF_FIELD)))
        if problem is not None:
            return PlainTextResponse(f"Forbidden: {problem}", status_code=403)
        if not self._access.uses_tokens:
            return RedirectResponse(f"{self._prefix}/", status_code=303)
        token = (_field(form.get("token")) or "").strip()
        try:
            principal = await self._access.check_credential(f"Bearer {token}" if token else None)
        except AccessRefused as exc:
            return await self.login_page(request, error=exc.message, status=exc.status)
        decision = await self._access.decide(principal)
        if not decision.allowed:
            message = f"{principal.type} {principal.id} may not view the dashboard: {decision.reason_text()}"
            return await self.login_page(request, error=message, status=403)
        response = RedirectResponse(f"{self._prefix}/", status_code=303)
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            path=self._prefix,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        problem = csrf_problem(request, _field(form.get(CSRF_FIELD)))
        if problem is not None:
            return PlainTextResponse(f"Forbidden: {problem}", status_code=403)
        response = RedirectResponse(f"{self._prefix}/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path=self._prefix, httponly=True, samesite="strict")
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self._static.get(name)
        if body is None:
            return PlainTextResponse("Not Found", status_code=404)
        return Response(body, media_type=STATIC[name])

    # -- plumbing ----------------------------------------------------------------------------------

    def _guarded(self, page: Callable[[Request, Viewer], Awaitable[Response]]) -> Handler:
        """A page for admitted viewers only: 401 goes to the login form, 403 says why."""

        async def handler(request: Request) -> Response:
            try:
                viewer = await self._access.viewer(request)
            except AccessRefused as exc:
                return await self._refused(request, exc)
            return await page(request, viewer)

        return handler

    async def _refused(self, request: Request, exc: AccessRefused) -> Response:
        if exc.status == 401 and request.method == "GET":
            return RedirectResponse(f"{self._prefix}/login", status_code=303)
        return self._render(request, None, "refused.html", {"message": exc.message}, status=exc.status)

    def _render(
        self,
        request: Request,
        viewer: Viewer | None,
        template: str,
        context: dict[str, Any],
        *,
        status: int = 200,
    ) -> Response:
        csrf = csrf_token_for(request)
        base = {
            "prefix": self._prefix,
            "title": self._title,
            "viewer": viewer.label if viewer is not None else "",
            "signed_in": viewer is not None and viewer.via_cookie,
            "csrf": csrf,
            "csrf_field": CSRF_FIELD,
            "page": template.removesuffix(".html"),
            "policy_version": self._parts.policy.policy_version,
        }
        response = self._templates.TemplateResponse(
            request, template, {**base, **context}, status_code=status
        )
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(
                CSRF_COOKIE,
                csrf,
                path=self._prefix,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response


def _field(value: Any) -> str | None:
    """A text form field (an uploaded file where text belongs is no value)."""
    return value if isinstance(value, str) else None


def _quote(value: str) -> str:
    return quote(value, safe="")
