"""Stage `guard-in`: a tool's arguments must fit its inputSchema (and the size caps) before
any policy judges them or any upstream sees them.

The schema is the one compiled when the tool was last listed (a long-lived handle: no
compilation per call). A tool with no usable schema handle is refused: arguments the
broker cannot check are arguments it does not forward.
"""

from __future__ import annotations

from typing import ClassVar

from broker.errors import InvalidToolSchema
from broker.gateway.call import Call
from broker.registry.guard import RegistryGuard
from broker.registry.validate import ArgumentValidator


class ValidateArguments:
    name: ClassVar[str] = "guard-in"

    def __init__(self, guard: RegistryGuard, validator: ArgumentValidator) -> None:
        self._guard = guard
        self._validator = validator

    async def handle(self, call: Call) -> None:
        if call.method != "tools/call":
            return
        target = call.target
        assert target is not None, "the catalog stage runs first"
        public = str(target.resource.get("id", target.name))
        handle = self._guard.schema(target.upstream, target.name)
        if handle is None:
            raise InvalidToolSchema(
                f"{public}: the broker holds no schema for this tool; refused", tool=public
            )
        self._validator.check(handle, call.params.get("arguments"), tool=public)
