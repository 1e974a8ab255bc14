"""The approvals HTTP API: list, show, approve, deny — the approver's bearer token decides who.

```
GET  /approvals[?status=pending&limit=100]   the approvals the caller may see
GET  /approvals/{id}                         one of them
POST /approvals/{id}/approve  {"note": …}    decide (policy action approve / self_approve)
POST /approvals/{id}/deny     {"note": …}
```

Errors are JSON `{"error": "…"}` with 401 (no or bad credential), 403 (not allowed to
see or decide it), 404 (unknown id), 409 (already decided or expired), 400 (bad input).
The CLI (`mcp-broker approvals`) and the dashboard use exactly this.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broker.approval.approvals import ApprovalRefused, Approvals
from broker.approval.model import ApprovalStatus
from broker.approval.store import ApprovalStoreError
from broker.errors import BrokerError
from broker.identity.principal import Principal

Authenticate = Callable[[Request], Awaitable[Principal]]
"""The approver of an API request; raises ApprovalRefused(401/403) when there is none."""

MAX_NOTE_CHARS = 500


def approval_routes(approvals: Approvals, authenticate: Authenticate) -> list[Route]:
    async def listing(request: Request) -> JSONResponse:
        raw_status = request.query_params.get("status", "pending")
        try:
            status = None if raw_status == "all" else ApprovalStatus(raw_status)
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            states = ", ".join(s.value for s in ApprovalStatus)
            return _error(400, f"status must be one of {states} or all; limit must be an integer")
        try:
            principal = await authenticate(request)
            shown = await approvals.visible_to(principal, status, max(1, min(limit, 1000)))
        except ApprovalRefused as exc:
            return _error(exc.status, exc.message)
        except (ApprovalStoreError, BrokerError) as exc:
            return _error(503, str(exc))
        return JSONResponse({"approvals": [a.summary() for a in shown]})

    async def show(request: Request) -> JSONResponse:
        approval_id = request.path_params["approval_id"]
        try:
            principal = await authenticate(request)
            approval = await approvals.get(approval_id)
            visible = approval is not None and await approvals.may_see(principal, approval)
        except ApprovalRefused as exc:
            return _error(exc.status, exc.message)
        except (ApprovalStoreError, BrokerError) as exc:
            return _error(503, str(exc))
        if approval is None or not visible:
            return _error(404, f"no approval {approval_id} that you may see")
        return JSONResponse(approval.summary())

    def deciding(approve: bool) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def decide(request: Request) -> JSONResponse:
            approval_id = request.path_params["approval_id"]
            body = await request.body()
            try:
                payload = orjson.loads(body) if body.strip() else {}
            except orjson.JSONDecodeError:
                return _error(400, 'the body must be JSON, e.g. {"note": "checked with the team"}')
            note = payload.get("note", "") if isinstance(payload, dict) else None
            if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
                return _error(400, f"'note' must be a string of at most {MAX_NOTE_CHARS} characters")
            try:
                principal = await authenticate(request)
                decided = await approvals.decide(approval_id, principal, approve=approve, note=note)
            except ApprovalRefused as exc:
                return _error(exc.status, exc.message)
            except (ApprovalStoreError, BrokerError) as exc:
                return _error(503, str(exc))
            return JSONResponse(decided.summary())

        return decide

    return [
        Route("/approvals", listing, methods=["GET"]),
        Route("/approvals/{approval_id}", show, methods=["GET"]),
        Route("/approvals/{approval_id}/approve", deciding(True), methods=["POST"]),
        Route("/approvals/{approval_id}/deny", deciding(False), methods=["POST"]),
    ]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
