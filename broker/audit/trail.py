"""The broker's side of the audit trail: what is recorded, when, and what a failure means.

One record per request the broker decides (lists, calls, reads, prompts, completions,
subscriptions), written after the outcome is known and before the caller gets the answer;
one per approval event, authentication failure and policy (re)load. A request whose record
cannot be written is answered with `audit_unavailable` instead of its result (fail closed),
and while the trail is known to be broken no request is forwarded at all (the `audit`
stage). Authentication failures and reloads are recorded on a best-effort basis: the
request is refused anyway, the reload happened anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from broker.approval.model import Approval
from broker.audit.records import (
    ApprovalEventName,
    ApprovalFacts,
    Outcome,
    approval_event_record,
    auth_failure_record,
    policy_reload_record,
    request_record,
)
from broker.audit.redact import Redactor
from broker.audit.sink import AuditSink, AuditUnavailable, SinkStatus
from broker.audit.timefmt import FORMAT_VERSION, iso_time
from broker.gateway.call import Call
from broker.identity.principal import Principal
from broker.registry.guard import ListingCheck

log = logging.getLogger("broker.audit")

AUDITED_METHODS = frozenset(
    {
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "tools/call",
        "prompts/get",
        "resources/read",
        "completion/complete",
        "resources/subscribe",
    }
)
"""The requests the broker decides. initialize, ping, logging/setLevel and unsubscribe decide nothing."""

APPROVAL_EVENTS: frozenset[str] = frozenset({"requested", "approved", "denied", "expired", "cancelled"})


class AuditTrail:
    def __init__(self, sink: AuditSink, redactor: Redactor, *, include_request: bool) -> None:
        self._sink = sink
        self._redactor = redactor
        self._include_request = include_request

    async def start(self) -> None:
        await self._sink.start()

    async def close(self) -> None:
        await self._sink.close()

    def status(self) -> SinkStatus:
        return self._sink.status()

    def require_ready(self) -> None:
        """Before anything is forwarded: refuse while the trail is known not to take records (after
        the retry interval the next request tries the disk again)."""
        if not self._sink.accepting():
            status = self._sink.status()
            raise AuditUnavailable(
                f"the audit trail cannot be written ({status.error or status.state}); "
                "no request is carried out without its record"
            )

    async def request(
        self,
        call: Call,
        result: Mapping[str, Any] | None,
        error: BaseException | None,
        *,
        listing: Mapping[str, int] | None = None,
        trace_id: str | None = None,
    ) -> None:
        """Record a decided request; raises AuditUnavailable when the record cannot be written."""
        approval = ApprovalFacts.of(call.approval) if call.approval is not None else None
        record = request_record(
            call,
            Outcome.of(result, error, call.upstream_ms),
            redactor=self._redactor,
            request=call.authz_request if self._include_request else None,
            approval=approval,
            listing=listing,
            trace_id=trace_id,
        )
        await self._sink.append(record)

    async def approval(self, event: str, approval: Approval) -> None:
        if event not in APPROVAL_EVENTS:
            return  # `used` shows in the request record of the call that used the grant
        name = cast(ApprovalEventName, event)
        await self._sink.append(approval_event_record(approval, name, redactor=self._redactor))

    async def registry(self, check: ListingCheck) -> None:
        """Items the tool registry quarantined or released (a definition drifted, a pin arrived)."""
        record = {
            "v": FORMAT_VERSION,
            "kind": "registry",
            "time": iso_time(time.time()),
            "server": check.server,
            "quarantined": [v.to_json() for v in check.newly_quarantined],
            "released": [v.to_json() for v in check.released],
        }
        try:
            await self._sink.append(record)
        except AuditUnavailable as exc:
            log.error("audit: a registry change could not be recorded: %s", exc.message)

    async def auth_failure(
        self,
        *,
        reason: str,
        description: str,
        transport: str,
        method: str | None = None,
        client: str | None = None,
        required_scopes: tuple[str, ...] = (),
        principal: Principal | None = None,
    ) -> None:
        record = auth_failure_record(
            reason=reason,
            description=description,
            transport=transport,
            redactor=self._redactor,
            method=method,
            client=client,
            required_scopes=required_scopes,
            principal=principal,
        )
        try:
            await self._sink.append(record)
        except AuditUnavailable as exc:
            log.error("audit: an authentication failure could not be recorded: %s", exc.message)

    async def reload(
        self, *, ok: bool, engine: str, policy_version: str, previous: str | None, trigger: str, message: str
    ) -> None:
        record = policy_reload_record(
            ok=ok,
            engine=engine,
            policy_version=policy_version,
            previous_version=previous,
            trigger=trigger,
            message=message,
        )
        try:
            await self._sink.append(record)
        except AuditUnavailable as exc:
            log.error("audit: a policy reload could not be recorded: %s", exc.message)
