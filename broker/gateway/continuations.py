"""Stateless-era calls parked while the caller answers what the upstream asked.

A 2026-07-28 caller cannot receive server-to-client requests. When an upstream asks
for elicitation, sampling or roots while serving such a caller, the broker parks the
forwarded call (it keeps running upstream), answers the caller's HTTP request with an
`InputRequiredResult` carrying the question and a signed `requestState`, and resumes
when the caller retries the same request with `inputResponses` and that state.

The state is bound to the call: an HMAC over the continuation id, the round number and
a digest of (method, target, arguments). A forged state, a state used for different
arguments, or a state replayed after its round was answered is refused. Continuations
live in this process's memory: a retry reaching another replica, or a restart, is told
the state is unknown (the caller starts over).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from broker.errors import INTERNAL_ERROR, InvalidParams
from broker.gateway.call import Call
from broker.jsonrpc import Message
from broker.protocol import CAPABILITY_FOR_REQUEST
from broker.upstream.connection import Relay, UpstreamRpcError

log = logging.getLogger("broker.continuations")

ABANDONED_AFTER_SECONDS = 300.0
"""A parked call whose caller never comes back is cancelled upstream after this long."""

Handler = Callable[[Call], Awaitable[dict[str, Any]]]


def call_digest(call: Call) -> bytes:
    """What a requestState is bound to: the method, its target and its arguments, canonically."""
    params = call.params
    target = params.get("name") if call.method != "resources/read" else params.get("uri")
    document = {"method": call.method, "target": target, "arguments": params.get("arguments")}
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).digest()


class Continuation:
    """One parked call: the forward's task, the questions asked, the current waiter."""

    def __init__(self, cid: str, digest: bytes, call: Call) -> None:
        self.id = cid
        self.digest = digest
        self.round = 0
        self.call = call
        self.task: asyncio.Task[dict[str, Any]] | None = None
        self.waiter: Relay | None = None
        self._wake = asyncio.Event()
        self._asked: dict[str, dict[str, Any]] = {}  # questions not yet sent to the caller
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next_key = 0
        self.deadline = time.monotonic() + ABANDONED_AFTER_SECONDS

    # -- the relay of the parked forward ----------------------------------------------------

    @property
    def session(self) -> None:
        return None

    @property
    def client_capabilities(self) -> dict[str, Any]:
        return self.call.client_capabilities

    def notify(self, message: Message) -> None:
        if self.waiter is not None:
            self.waiter.notify(message)

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """The upstream asks the caller something: make it the next InputRequiredResult round."""
        capability = CAPABILITY_FOR_REQUEST.get(method)
        if capability is None or capability not in self.call.client_capabilities:
            raise UpstreamRpcError(
                {
                    "code": -32601,
                    "message": f"the caller did not declare the {capability or method} capability",
                }
            )
        self._next_key += 1
        key = f"{method.split('/')[0]}-{self._next_key}"
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[key] = answer
        request: dict[str, Any] = {"method": method}
        if params is not None:
            request["params"] = params
        self._asked[key] = request
        self._wake.set()
        try:
            return await answer
        finally:
            self._answers.pop(key, None)

    # -- the caller's side ------------------------------------------------------------------------

    async def outcome(self, waiter: Relay) -> dict[str, Any] | None:
        """Wait for the call's result (returned) or its next questions (None: see `questions`)."""
        assert self.task is not None
        self.waiter = waiter
        try:
            while True:
                if self.task.done():
                    return self.task.result()
                if self._asked:
                    return None
                self._wake.clear()
                done = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({self.task, done}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    done.cancel()
        finally:
            self.waiter = None

    def questions(self) -> dict[str, dict[str, Any]]:
        """Hand the pending questions to the caller (once) and open the next round."""
        asked, self._asked = self._asked, {}
        self.round += 1
        self.deadline = time.monotonic() + ABANDONED_AFTER_SECONDS
        return asked

    def answer(self, responses: Any) -> None:
        if not isinstance(responses, dict):
            raise InvalidParams("'inputResponses' must be an object keyed like the inputRequests it answers")
        waiting = {k: f for k, f in self._answers.items() if not f.done() and k not in self._asked}
        missing = [k for k in waiting if k not in responses]
        if missing:
            raise InvalidParams(f"'inputResponses' does not answer {', '.join(sorted(missing))}")
        for key, future in waiting.items():
            response = responses[key]
            if not isinstance(response, dict):
                raise InvalidParams(f"inputResponses[{key!r}] must be an object")
            future.set_result(response)

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for future in self._answers.values():
            if not future.done():
                future.set_exception(
                    UpstreamRpcError({"code": INTERNAL_ERROR, "message": "the call was abandoned"})
                )


class ContinuationStore:
    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)  # process-local: continuations do not survive a restart
        self._parked: dict[str, Continuation] = {}
        self._reaper: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._parked)

    async def run(self, call: Call, handler: Handler, waiter: Relay) -> dict[str, Any]:
        """Serve a stateless call that may need the caller's input.

        Returns the call's result, or an InputRequiredResult when the upstream asked something.
        """
        state = call.params.get("requestState")
        if state is None and "inputResponses" not in call.params:
            continuation = Continuation(secrets.token_urlsafe(16), call_digest(call), call)
            call.relay = continuation
            continuation.task = asyncio.ensure_future(handler(call))
        else:
            continuation = self._resume(state, call)
        try:
            result = await continuation.outcome(waiter)
        except asyncio.CancelledError:
            self._drop(continuation)  # the caller closed its stream: that is a cancel in this era
            continuation.cancel()
            raise
        except BaseException:
            self._drop(continuation)
            raise
        if result is not None:
            self._drop(continuation)
            return result
        questions = continuation.questions()
        self._parked[continuation.id] = continuation
        self._schedule_reaping()
        return {
            "resultType": "input_required",
            "inputRequests": questions,
            "requestState": self.sign(continuation),
        }

    def sign(self, continuation: Continuation) -> str:
        payload = f"{continuation.id}.{continuation.round}"
        mac = hmac.new(self._key, payload.encode() + continuation.digest, hashlib.sha256).digest()
        return f"{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def _resume(self, state: Any, call: Call) -> Continuation:
        if not isinstance(state, str) or state.count(".") != 2:
            raise InvalidParams("'requestState' is missing or was not issued by this broker")
        cid, round_text, _ = state.split(".")
        continuation = self._parked.get(cid)
        if continuation is None:
            raise InvalidParams("'requestState' is unknown or expired; send the request again without it")
        expected = self.sign(continuation)
        if not round_text.isdigit() or int(round_text) != continuation.round:
            raise InvalidParams("'requestState' was already used; answer the latest inputRequests")
        if not hmac.compare_digest(state, expected) or call_digest(call) != continuation.digest:
            raise InvalidParams("'requestState' does not match this request (different tool or arguments)")
        continuation.answer(call.params.get("inputResponses"))
        del self._parked[cid]
        continuation.call.client_capabilities = (
            call.client_capabilities or continuation.call.client_capabilities
        )
        return continuation

    def _drop(self, continuation: Continuation) -> None:
        self._parked.pop(continuation.id, None)

    def _schedule_reaping(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(30, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        now = time.monotonic()
        for cid, continuation in list(self._parked.items()):
            if continuation.deadline < now:
                log.info("a parked call was abandoned by its caller; cancelling it upstream")
                del self._parked[cid]
                continuation.cancel()
        if self._parked:
            self._schedule_reaping()

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for continuation in self._parked.values():
            continuation.cancel()
        self._parked.clear()
