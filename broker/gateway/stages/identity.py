"""Stage `identity`: who is asking. Runs for every request, lists included.

The fronts authenticate the caller (bearer token, API key, the stdio token) and put the
principal on the call. Without token authentication configured, every caller is the
config's default principal; with it, a call that arrives here without a principal is
refused — never given a default.
"""

from __future__ import annotations

from typing import ClassVar

from broker.errors import AuthenticationRequired
from broker.gateway.call import Call
from broker.identity.principal import Principal


class AssignPrincipal:
    name: ClassVar[str] = "identity"

    def __init__(self, default: Principal | None) -> None:
        self._default = default

    async def handle(self, call: Call) -> None:
        if call.principal is not None:
            return
        if self._default is None:
            raise AuthenticationRequired("Unauthorized: this request carries no verified credential")
        call.principal = self._default
