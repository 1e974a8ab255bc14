"""Who is looking at the dashboard, and whether the policy lets them.

The principal is resolved exactly as the approvals API resolves an approver
(`broker.app.approver_of`): a bearer credential checked by the broker's `Authenticator`
when `identity.authentication` is configured, else the configured local approver, for
loopback clients only. A browser cannot send an Authorization header by itself, so the
dashboard also takes the same credential from an HttpOnly, SameSite=Strict cookie set by its
login form; it is verified again on every request (expiry and revocation apply at once).

Then the policy decides, like `approve`: action `view_dashboard`, the principal as the
subject, and as resource the broker's own `Server` entity `broker:dashboard` (upstream names
cannot contain a colon, so no upstream can be mistaken for it). It belongs to no tenant:
the dashboard shows every tenant's calls, so tenant isolation keeps tenant-scoped principals
out. Any engine failure is a deny (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from starlette.requests import Request

from broker.front.http import LOOPBACK_NAMES
from broker.identity.authenticator import Authenticator, InsufficientScope, Unauthenticated
from broker.identity.principal import Principal
from broker.policy.decision import Decision, Effect
from broker.policy.point import PolicyPoint
from broker.policy.request import CallFacts, build_request

ACTION: Final = "view_dashboard"
RESOURCE_ID: Final = "broker:dashboard"
RESOURCE: Final = {
    "type": "Server",
    "id": RESOURCE_ID,
    "name": RESOURCE_ID,
    "server": RESOURCE_ID,
    "tenants": [],
    "tags": [],
}
"""The dashboard as the policy sees it (a Server document, like the resource of list_tools)."""

TOKEN_COOKIE: Final = "mcpb_dashboard_token"


class AccessRefused(Exception):
    """401 (no usable credential: the login page) or 403 (known, but the policy says no)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    decision: Decision
    via_cookie: bool

    @property
    def label(self) -> str:
        tenant = f"@{self.principal.tenant}" if self.principal.tenant else ""
        return f"{self.principal.type}:{self.principal.id}{tenant}"


class DashboardAccess:
    def __init__(
        self, policy: PolicyPoint, authenticator: Authenticator | None, local: Principal | None
    ) -> None:
        self._policy = policy
        self._authenticator = authenticator
        self._local = local

    @property
    def uses_tokens(self) -> bool:
        """Whether viewers sign in with a credential (else: the local approver on loopback)."""
        return self._authenticator is not None

    async def principal(self, request: Request) -> tuple[Principal, bool]:
        """The requester, and whether the credential came from the dashboard's cookie."""
        if self._authenticator is not None:
            header = request.headers.get("authorization")
            cookie = request.cookies.get(TOKEN_COOKIE)
            via_cookie = not header and bool(cookie)
            credential = header or (f"Bearer {cookie}" if cookie else None)
            return await self.check_credential(credential), via_cookie
        if self._local is None:
            raise AccessRefused(
                403,
                "the dashboard needs identity.authentication (viewers with tokens) or "
                "approvals.local_approver (loopback only)",
            )
        if request.client is None or request.client.host not in LOOPBACK_NAMES:
            raise AccessRefused(403, "without identity.authentication the dashboard answers loopback only")
        return self._local, False

    async def check_credential(self, authorization: str | None) -> Principal:
        assert self._authenticator is not None
        try:
            return (await self._authenticator.authenticate(authorization)).principal
        except Unauthenticated as exc:
            raise AccessRefused(401, f"sign in: {exc.description}") from None
        except InsufficientScope as exc:
            raise AccessRefused(403, f"Forbidden: {exc.description}") from None

    async def decide(self, principal: Principal) -> Decision:
        """The policy's answer to: may `principal` view the dashboard? Never raises."""
        request, _ = build_request(principal, ACTION, RESOURCE, {}, CallFacts("dashboard", ""))
        return await self._policy.engine.decide(request)

    async def viewer(self, request: Request) -> Viewer:
        """The admitted viewer of this request; AccessRefused(401/403) otherwise."""
        principal, via_cookie = await self.principal(request)
        decision = await self.decide(principal)
        if decision.effect is not Effect.ALLOW:
            raise AccessRefused(
                403,
                f"{principal.type} {principal.id} may not view the dashboard: {decision.reason_text()}",
            )
        return Viewer(principal, decision, via_cookie)
