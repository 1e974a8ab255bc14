"""Tell people that an approval waits: one POST per new pending approval.

The body is JSON with a Slack-compatible `text` (so an incoming-webhook URL works as is)
and the approval itself for other receivers. A webhook that fails is logged, never
retried in a loop and never blocks the call: the approval still waits in the API and CLI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import httpx2

from broker.approval.model import Approval

log = logging.getLogger("broker.approvals")


def webhook_text(approval: Approval, approve_hint: str) -> str:
    who = approval.requester.get("id", "?")
    acting = approval.requester.get("acting_for")
    if acting:
        who = f"{who} (acting for {acting})"
    reasons = "; ".join(r.get("message") or r.get("id", "") for r in approval.reasons)
    return (
        f"Approval needed: {who} wants to call {approval.target} "
        f"({reasons}). Id {approval.id}. {approve_hint}"
    )


class ApprovalWebhook:
    def __init__(self, url: str, headers: Mapping[str, str], timeout: float) -> None:
        self._url = url
        self._headers = dict(headers)
        self._timeout = timeout
        self._http = httpx2.AsyncClient(follow_redirects=False)
        self._tasks: set[asyncio.Task[None]] = set()

    def announce(self, approval: Approval, approve_hint: str) -> None:
        body: dict[str, Any] = {"text": webhook_text(approval, approve_hint), "approval": approval.summary()}
        task = asyncio.create_task(self._post(approval.id, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, approval_id: str, body: dict[str, Any]) -> None:
        try:
            response = await self._http.post(
                self._url, json=body, headers=self._headers, timeout=self._timeout
            )
            response.raise_for_status()
        except Exception as exc:  # a notification channel failing never fails the approval
            log.warning("approval %s: the webhook could not be notified: %s", approval_id, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()
