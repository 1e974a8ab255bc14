"""The broker's exception tree and the one table that maps it to JSON-RPC.

```
BrokerError
├── Rejection                 the broker refuses: the upstream is never contacted
│   ├── InvalidRequest        malformed JSON-RPC envelope            -32600
│   ├── MethodNotFound        method the broker does not serve       -32601
│   ├── InvalidParams         params of the wrong shape              -32602
│   │   └── InvalidArguments  arguments break the tool's inputSchema or a cap
│   ├── UnknownTool           no such tool in the catalog            -32602
│   ├── UnknownPrompt         no such prompt in the catalog          -32602
│   ├── UnknownResource       no upstream owns that URI              -32002
│   ├── ToolQuarantined       the registry holds the tool back       -32001
│   ├── InvalidToolSchema     the tool's inputSchema is unusable     -32602
│   ├── UpstreamUnavailable   the owning upstream is down            -32000
│   ├── ClientCapabilityMissing  the caller cannot receive what an upstream asked
│   ├── AuthenticationRequired  no verified credential               -32001
│   ├── PolicyDenied          a policy denies the request            -32001
│   ├── ApprovalRequired      a policy requires a human approval     -32001
│   │                         (and no approval channel is configured)
│   ├── ApprovalDenied        the approver said no                   -32001
│   ├── ApprovalExpired       nobody decided in time                 -32001
│   ├── ApprovalCancelled     the caller cancelled or went away      -32001
│   ├── ApprovalUnavailable   approvals cannot be stored: deny       -32001
│   ├── PolicyFailure         the engine could not decide: deny      -32001
│   └── TrafficRefusal        broker/traffic/errors.py, with retryAfter -32000
│                             (rate_limited, quota_exhausted, concurrency_limited,
│                             upstream_circuit_open, traffic_store_unavailable)
├── UpstreamError             the upstream failed while handling the request
│   ├── UpstreamTimeout       no answer before the deadline          -32000
│   └── UpstreamClosed        the connection died mid-request        -32000
└── AuditUnavailable          the request's record cannot be written -32000
                              (broker/audit/sink.py; may follow an upstream call)
```

An error answer that the upstream itself sends (a JSON-RPC error object) is not a
`BrokerError`: it is forwarded to the caller unchanged.

Every class has a stable `reason` code that goes into `error.data.reason`, so
callers and audit records can tell failures apart without parsing messages.
"""

from __future__ import annotations

from typing import Any, ClassVar

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
RESOURCE_NOT_FOUND = -32002
ACCESS_DENIED = -32001


class BrokerError(Exception):
    """Base of every error the broker raises on purpose."""

    code: ClassVar[int] = INTERNAL_ERROR
    reason: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC `error` member for this exception."""
        return {"code": self.code, "message": self.message, "data": {"reason": self.reason, **self.data}}


class Rejection(BrokerError):
    """The broker refused the request before it reached any upstream."""

    code = INVALID_REQUEST
    reason = "rejected"


class InvalidRequest(Rejection):
    code = INVALID_REQUEST
    reason = "invalid_request"


class MethodNotFound(Rejection):
    code = METHOD_NOT_FOUND
    reason = "method_not_found"


class InvalidParams(Rejection):
    code = INVALID_PARAMS
    reason = "invalid_params"


class UnknownTool(Rejection):
    code = INVALID_PARAMS
    reason = "unknown_tool"


class UnknownPrompt(Rejection):
    code = INVALID_PARAMS
    reason = "unknown_prompt"


class UnknownResource(Rejection):
    code = RESOURCE_NOT_FOUND
    reason = "unknown_resource"


class UpstreamUnavailable(Rejection):
    code = SERVER_ERROR
    reason = "upstream_unavailable"


class ClientCapabilityMissing(Rejection):
    code = INVALID_REQUEST
    reason = "client_capability_missing"


class AuthenticationRequired(Rejection):
    code = ACCESS_DENIED
    reason = "unauthenticated"


class PolicyDenied(Rejection):
    code = ACCESS_DENIED
    reason = "policy_denied"


class ApprovalRequired(Rejection):
    code = ACCESS_DENIED
    reason = "approval_required"


class InvalidArguments(InvalidParams):
    """The arguments break the tool's inputSchema or a payload cap; `data` names field and rule."""

    code = INVALID_PARAMS
    reason = "invalid_arguments"


class InvalidToolSchema(Rejection):
    """The upstream's inputSchema cannot be used to check arguments: refused (fail closed)."""

    code = INVALID_PARAMS
    reason = "invalid_tool_schema"


class ToolQuarantined(Rejection):
    """The tool's definition drifted from its pin, is not pinned, or was flagged: not callable."""

    code = ACCESS_DENIED
    reason = "tool_quarantined"


class ApprovalDenied(Rejection):
    code = ACCESS_DENIED
    reason = "approval_denied"


class ApprovalExpired(Rejection):
    code = ACCESS_DENIED
    reason = "approval_expired"


class ApprovalCancelled(Rejection):
    code = ACCESS_DENIED
    reason = "approval_cancelled"


class ApprovalUnavailable(Rejection):
    """The approval store failed: the call is not carried out (fail closed)."""

    code = ACCESS_DENIED
    reason = "approval_error"


class PolicyFailure(Rejection):
    """The engine failed (timeout, crash, bad answer): not a deny by a policy, but denied all the same."""

    code = ACCESS_DENIED
    reason = "policy_error"


class UpstreamError(BrokerError):
    """The upstream failed while it held the request."""

    code = SERVER_ERROR
    reason = "upstream_error"


class UpstreamTimeout(UpstreamError):
    reason = "upstream_timeout"


class UpstreamClosed(UpstreamError):
    reason = "upstream_closed"


def error_for_exception(exc: BaseException) -> dict[str, Any]:
    """Map any exception to a JSON-RPC error member; unknown ones become a generic internal error.

    The message of an unexpected exception is not sent to the caller (it may carry
    internals); the caller gets a stable reason and the log has the traceback.
    """
    if isinstance(exc, BrokerError):
        return exc.to_error()
    if isinstance(exc, ForwardedError):
        return exc.error
    return {"code": INTERNAL_ERROR, "message": "internal broker error", "data": {"reason": "internal_error"}}


class ForwardedError(Exception):
    """An error answer from the upstream, passed to the caller unchanged (not the broker's own)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "upstream error")))
        self.error = error
