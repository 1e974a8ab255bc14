"""The two MCP protocol eras, and the small adaptations between them.

- Handshake era (`initialize`, 2024-11-05 … 2025-11-25): sessions, server-to-client
  requests over SSE.
- Stateless era (2026-07-28): `server/discover`, the `_meta` envelope on every request,
  `resultType` on every result, cache hints on cacheable results, no server-to-client
  requests.

The broker speaks the handshake era to its upstreams (every server the official SDKs
ship answers `initialize`) and serves both eras to its callers. The era differences
stay here and in the fronts; the gateway sees one request shape.
"""

from __future__ import annotations

from typing import Any, Final

from mcp_types.methods import CACHEABLE_METHODS
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

HANDSHAKE_VERSIONS: Final[tuple[str, ...]] = HANDSHAKE_PROTOCOL_VERSIONS
MODERN_VERSIONS: Final[tuple[str, ...]] = MODERN_PROTOCOL_VERSIONS
LATEST_HANDSHAKE: Final = HANDSHAKE_VERSIONS[-1]
LATEST_MODERN: Final = MODERN_VERSIONS[-1]
DEFAULT_HANDSHAKE_WITHOUT_HEADER: Final = "2025-03-26"
"""The version a handshake-era server assumes when a request lacks MCP-Protocol-Version."""

ENVELOPE_PREFIX: Final = "io.modelcontextprotocol/"
PROTOCOL_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_INFO_KEY: Final = "io.modelcontextprotocol/clientInfo"
CLIENT_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_ID_KEY: Final = "io.modelcontextprotocol/subscriptionId"

CACHEABLE: Final[frozenset[str]] = frozenset(CACHEABLE_METHODS)

SPEC_DEFAULT_HINTS: Final[dict[str, bool]] = {
    "readOnlyHint": False,
    "destructiveHint": True,
    "idempotentHint": False,
    "openWorldHint": True,
}
"""What the MCP spec says a tool is when its annotations do not say: the worst case."""


def tool_hints(annotations: Any) -> dict[str, bool]:
    """The four behaviour hints of a tool, the spec's defaults filled in (hints are not facts)."""
    given = annotations if isinstance(annotations, dict) else {}
    return {
        key: given[key] if isinstance(given.get(key), bool) else value
        for key, value in SPEC_DEFAULT_HINTS.items()
    }


CAPABILITY_FOR_REQUEST: Final[dict[str, str]] = {
    "elicitation/create": "elicitation",
    "sampling/createMessage": "sampling",
    "roots/list": "roots",
}
"""The client capability a server-to-client request needs; the broker relays only these."""


def is_modern(version: str) -> bool:
    return version in MODERN_VERSIONS


def negotiate_handshake(requested: Any) -> str:
    """The version the broker answers to an `initialize` asking for `requested`."""
    return requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE


def upstream_meta(meta: Any, progress_token: Any = None) -> dict[str, Any] | None:
    """The `_meta` to forward upstream: the caller's keys minus the envelope and its progress token.

    Envelope keys belong to the caller's hop (a handshake-era upstream rejects them);
    the progress token is replaced by one the broker can route back.
    """
    out: dict[str, Any] = {}
    if isinstance(meta, dict):
        for key, value in meta.items():
            if key == "progressToken" or key.startswith(ENVELOPE_PREFIX):
                continue
            out[key] = value
    if progress_token is not None:
        out["progressToken"] = progress_token
    return out or None


def modern_result(method: str, result: dict[str, Any], server_info: dict[str, Any]) -> dict[str, Any]:
    """Shape a result for a 2026-07-28 caller: `resultType`, cache hints, `serverInfo` stamp.

    The broker answers with `ttlMs: 0` and `cacheScope: "private"`: what a caller may
    see depends on who it is (policy-filtered lists), so nothing is cacheable across
    authorization contexts, and catalogs change when upstreams do.
    """
    out = dict(result)
    out.setdefault("resultType", "complete")
    if method in CACHEABLE and out["resultType"] == "complete":  # interim answers are never cacheable
        out.setdefault("ttlMs", 0)
        out.setdefault("cacheScope", "private")
    meta = out.get("_meta")
    if isinstance(meta, dict):
        if meta.get(SERVER_INFO_KEY) is None:
            out["_meta"] = {**meta, SERVER_INFO_KEY: server_info}
    elif meta is None:
        out["_meta"] = {SERVER_INFO_KEY: server_info}
    return out
