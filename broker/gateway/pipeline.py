"""The request path of every routed call, in order. This file is the only place that knows it.

```
identity   who is asking (every request, lists included)
catalog    "server__tool" → upstream + upstream name; unknown → rejected, quarantined by
           the tool registry → rejected with the reason
guard-in   a tool's arguments fit its inputSchema and the size caps
decide     the policy engine's answer for this exact call: allow, require-approval, or
           rejected (deny, engine failure)
approval   require-approval waits for a human decision (the caller where policy allows
           self-approval, else an approver), then the call is decided again with the
           approval; anything but allow is rejected
traffic    rate limits and call budgets (rate_limited, quota_exhausted)
forward    upstream session (only for an allow), inside the upstream's admission: its
           circuit breaker, the concurrency caps (bounded wait), the response cache
guard-out  the tool result: hidden instructions found (recorded, annotated, stripped or
           blocked) and secrets redacted where a policy obligation or the config asks
```

The audit record of every decided request is written around all of this, in
`Gateway.handle` (nothing is answered before its record is durable); so are the request's
span and its metrics. Stages open their own steps on `call.trace` (decision, approval
wait, upstream call), shared no-ops while tracing is off.

Lists do not reach an upstream: after `identity` they are answered from the catalog,
filtered by the same policy (gateway/visibility.py).

Each stage is a small object with one `async handle(call)`: it returns to let the call
go on or raises a `Rejection` to stop it. There is no way around a stage: an error
in one fails the call, it never lets it through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from broker.approval.approvals import Approvals
from broker.catalog.catalog import Catalog
from broker.gateway.call import Call
from broker.gateway.stages.approve import Approve
from broker.gateway.stages.decide import Decide
from broker.gateway.stages.forward import Forward
from broker.gateway.stages.guard_out import GuardResult
from broker.gateway.stages.identity import AssignPrincipal
from broker.gateway.stages.resolve import Availability, ResolveTarget
from broker.gateway.stages.traffic import Traffic
from broker.gateway.stages.validate import ValidateArguments
from broker.identity.principal import Principal
from broker.policy.point import PolicyPoint
from broker.registry import Registry
from broker.upstream.group import Upstream


class Stage(Protocol):
    name: ClassVar[str]

    async def handle(self, call: Call) -> None: ...


class ResultStage(Protocol):
    name: ClassVar[str]

    def apply(self, call: Call, result: dict[str, Any]) -> dict[str, Any]: ...


class Pipeline:
    def __init__(
        self,
        identity: Stage,
        stages: Sequence[Stage],
        forward: Forward,
        after: Sequence[ResultStage] = (),
    ) -> None:
        self.identity = identity
        self.stages = tuple(stages)
        self._forward = forward
        self._after = tuple(after)

    async def identify(self, call: Call) -> None:
        """The first stage, for every request: who is asking."""
        await self.identity.handle(call)

    async def admit(self, call: Call) -> None:
        """Run every stage; raises the first rejection. Nothing is sent upstream."""
        for stage in self.stages:
            await stage.handle(call)

    async def forward(self, call: Call) -> dict[str, Any]:
        """Send an admitted call to its upstream."""
        return await self._forward.send(call)

    async def run(self, call: Call) -> dict[str, Any]:
        for stage in self.stages:
            await stage.handle(call)
        result = await self._forward.send(call)
        for after in self._after:
            result = after.apply(call, result)
        return result


def build_pipeline(
    catalog: Catalog,
    upstreams: Mapping[str, Upstream],
    availability: Availability,
    *,
    principal: Principal | None,
    policy: PolicyPoint,
    approvals: Approvals | None = None,
    progress_interval: float = 10.0,
    registry: Registry | None = None,
    traffic: Traffic | None = None,
) -> Pipeline:
    quarantine = registry.guard.quarantined_item if registry is not None else None
    return Pipeline(
        identity=AssignPrincipal(principal),
        stages=[
            ResolveTarget(catalog, availability, quarantine),
            *([ValidateArguments(registry.guard, registry.validator)] if registry is not None else []),
            Decide(policy),
            Approve(approvals, progress_interval),
            *([traffic.throttle] if traffic is not None else []),
        ],
        forward=Forward(upstreams, traffic.admission if traffic is not None else None),
        after=[GuardResult(registry.results)] if registry is not None else [],
    )
