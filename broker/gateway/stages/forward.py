"""The last step: send the call to its upstream and bring the answer back.

Params travel unchanged except for the name or URI (namespacing) and `_meta` (the
caller's protocol envelope and progress token belong to the caller's hop). Results
travel unchanged except for resource URIs of a namespaced upstream, which get the
upstream's prefix so the caller can read them back through the broker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from broker.catalog.names import public_uri
from broker.errors import ForwardedError, PolicyFailure, UpstreamError
from broker.gateway.call import Call, Target
from broker.gateway.stages.traffic import COUNTED_METHODS, UpstreamAdmission
from broker.policy.decision import Effect
from broker.protocol import upstream_meta
from broker.upstream.group import Upstream


class Forward:
    def __init__(self, upstreams: Mapping[str, Upstream], admission: UpstreamAdmission | None = None) -> None:
        self._upstreams = upstreams
        self._admission = admission

    async def send(self, call: Call) -> dict[str, Any]:
        target = call.target
        assert target is not None, "the catalog stage runs before forward"
        if call.decision is not None and call.decision.effect is not Effect.ALLOW:
            # Defence in depth: a stage order mistake must not send an undecided call upstream.
            raise PolicyFailure(
                f"internal error: {call.method} reached forward with a {call.decision.effect.value}"
            )
        admission = self._admission
        if admission is None or call.method not in COUNTED_METHODS:
            return await self._send(call, target)
        key, cached = admission.cached(call)
        if cached is not None:
            return cached  # decided and audited like any call; only the round trip is saved
        async with admission.admit(call):
            result = await self._send(call, target)
        if key is not None and admission.cache is not None:
            admission.cache.put(key, result)
        return result

    async def _send(self, call: Call, target: Target) -> dict[str, Any]:
        upstream = self._upstreams[target.upstream]
        principal = call.principal
        key: object | None = call.session
        if key is None and principal is not None and upstream.config.isolation == "per_session":
            key = ("principal", principal.cache_key)  # a stateless caller: isolated per principal
        conn = await upstream.connection_for(
            key, tenant=principal.tenant if principal else None, subject_token=call.credential
        )
        params = upstream_params(call.method, call.params, target)
        with call.trace.upstream_call(
            server=target.upstream, method=call.method, name=target.name, transport=upstream.config.transport
        ) as step:
            if call.trace.trace_id is not None:
                # The upstream span's context replaces the caller's: the upstream's spans are its children.
                meta = dict(params.get("_meta") or {})
                step.inject_meta(meta)
                params["_meta"] = meta
            started = time.perf_counter()
            try:
                reply = await conn.request(
                    call.method,
                    params,
                    timeout=upstream.config.timeouts.for_call(target.kind, target.name),
                    relay=call.relay,
                    caller_progress_token=call.progress_token,
                )
            finally:
                call.upstream_ms = (time.perf_counter() - started) * 1000
            step.outcome("error" if "error" in reply else "ok")
        if "error" in reply:
            error = reply["error"]
            raise ForwardedError(
                error if isinstance(error, dict) else {"code": -32603, "message": str(error)}
            )
        result = reply.get("result")
        if not isinstance(result, dict):
            raise UpstreamError(f"upstream {target.upstream} answered {call.method} without a result object")
        if target.namespaced:
            prefix_uris(call.method, result, target.upstream)
        return result


def upstream_params(method: str, params: dict[str, Any], target: Target) -> dict[str, Any]:
    out = dict(params)
    if method in ("tools/call", "prompts/get"):
        out["name"] = target.name
    elif method == "completion/complete":
        ref = dict(out["ref"])
        ref["name" if ref.get("type") == "ref/prompt" else "uri"] = target.name
        out["ref"] = ref
    else:
        out["uri"] = target.name
    meta = upstream_meta(params.get("_meta"))
    if meta is None:
        out.pop("_meta", None)
    else:
        out["_meta"] = meta
    return out


def prefix_uris(method: str, result: dict[str, Any], upstream: str) -> None:
    """Rewrite, in place, the resource URIs an upstream returned to their public form."""
    if method == "resources/read":
        for item in result.get("contents") or ():
            _prefix(item, "uri", upstream)
    elif method == "tools/call":
        _content(result.get("content"), upstream)
    elif method == "prompts/get":
        for message in result.get("messages") or ():
            if isinstance(message, dict):
                _content([message.get("content")], upstream)


def _content(items: Any, upstream: str) -> None:
    if not isinstance(items, list):
        return
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "resource_link":
            _prefix(item, "uri", upstream)
        elif kind == "resource" and isinstance(item.get("resource"), dict):
            _prefix(item["resource"], "uri", upstream)


def _prefix(item: Any, key: str, upstream: str) -> None:
    if isinstance(item, dict) and isinstance(item.get(key), str):
        item[key] = public_uri(upstream, item[key], True)
