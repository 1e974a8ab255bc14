"""After `forward`: what a tool result may carry back to the caller.

The result is scanned for hidden instructions (the same markers as tool definitions) and
redacted where a policy obligation (Cedar `@redact`, Rego `obligations`) or the config's
`registry.dlp.tools` asks for it. A clean result is the very same object (byte-identical
answer). A malformed obligation withholds the result: a duty the broker cannot perform is
not skipped.
"""

from __future__ import annotations

from typing import Any, ClassVar

from broker.errors import PolicyFailure
from broker.gateway.call import Call
from broker.registry.obligations import ObligationError
from broker.registry.results import ResultGuard


class GuardResult:
    name: ClassVar[str] = "guard-out"

    def __init__(self, results: ResultGuard) -> None:
        self._results = results

    def apply(self, call: Call, result: dict[str, Any]) -> dict[str, Any]:
        if call.method != "tools/call" or call.target is None:
            return result
        target = call.target
        obligations = call.decision.obligations if call.decision is not None else ()
        try:
            guarded = self._results.apply(
                target.upstream,
                target.name,
                result,
                obligations,
                public_name=str(target.resource.get("id", target.name)),
            )
        except ObligationError as exc:
            raise PolicyFailure(
                f"the policy asked for a result obligation the broker cannot apply ({exc}); "
                "the result is withheld"
            ) from None
        audit = guarded.audit()
        if audit:
            call.result_guard = audit
        return dict(guarded.result) if guarded.result is not result else result
