"""Stage `identity`: who is asking. Runs for every request, lists included.

Until token authentication is configured every caller is the config's default
principal; the stage is where verified credentials will become a principal.
"""

from __future__ import annotations

from typing import ClassVar

from broker.gateway.call import Call
from broker.identity.principal import Principal


class AssignPrincipal:
    name: ClassVar[str] = "identity"

    def __init__(self, default: Principal) -> None:
        self._default = default

    async def handle(self, call: Call) -> None:
        if call.principal is None:
            call.principal = self._default
