"""The request path of every routed call, in order. This file is the only place that knows it.

```
catalog    "server__tool" → upstream + upstream name; unknown → rejected
(identity, guard-in, decide, approval, traffic: added by the issues that build them)
forward    upstream session; the answer comes back unchanged
```

Each stage is a small object with one `async handle(call)`: it returns to let the call
go on or raises a `Rejection` to stop it. There is no way around a stage: an error
in one fails the call, it never lets it through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from broker.catalog.catalog import Catalog
from broker.gateway.call import Call
from broker.gateway.stages.forward import Forward
from broker.gateway.stages.resolve import Availability, ResolveTarget
from broker.upstream.supervisor import UpstreamSupervisor


class Stage(Protocol):
    name: ClassVar[str]

    async def handle(self, call: Call) -> None: ...


class Pipeline:
    def __init__(self, stages: Sequence[Stage], forward: Forward) -> None:
        self.stages = tuple(stages)
        self._forward = forward

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
        return await self._forward.send(call)


def build_pipeline(
    catalog: Catalog, upstreams: Mapping[str, UpstreamSupervisor], availability: Availability
) -> Pipeline:
    return Pipeline(
        stages=[
            ResolveTarget(catalog, availability),
        ],
        forward=Forward(upstreams),
    )
