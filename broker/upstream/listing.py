"""What an upstream offers: its tools, resources, resource templates and prompts.

Fetched whole, following `nextCursor` pages, whenever the upstream (re)connects or
says its lists changed. Only the kinds the upstream declared a capability for are
asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker.errors import UpstreamError
from broker.upstream.connection import UpstreamConnection

MAX_PAGES = 1000
"""A paginator that never ends is an upstream bug; stop and report it."""


@dataclass(frozen=True)
class UpstreamListing:
    tools: tuple[dict[str, Any], ...] = ()
    resources: tuple[dict[str, Any], ...] = ()
    resource_templates: tuple[dict[str, Any], ...] = ()
    prompts: tuple[dict[str, Any], ...] = ()
    capabilities: dict[str, Any] = field(default_factory=dict)


_KINDS = (
    ("tools", "tools/list", "tools"),
    ("resources", "resources/list", "resources"),
    ("resources", "resources/templates/list", "resourceTemplates"),
    ("prompts", "prompts/list", "prompts"),
)


async def fetch_listing(conn: UpstreamConnection, timeout: float) -> UpstreamListing:
    capabilities = conn.info.capabilities if conn.info else {}
    found: dict[str, tuple[dict[str, Any], ...]] = {}
    for capability, method, key in _KINDS:
        if capability not in capabilities:
            found[key] = ()
            continue
        found[key] = await _all_pages(conn, method, key, timeout)
    return UpstreamListing(
        tools=found["tools"],
        resources=found["resources"],
        resource_templates=found["resourceTemplates"],
        prompts=found["prompts"],
        capabilities=capabilities,
    )


async def _all_pages(
    conn: UpstreamConnection, method: str, key: str, timeout: float
) -> tuple[dict[str, Any], ...]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        reply = await conn.request(
            method, {"cursor": cursor} if cursor is not None else None, timeout=timeout
        )
        if "error" in reply:
            err = reply["error"]
            if method == "resources/templates/list" and err.get("code") == -32601:
                return ()  # resources without templates: allowed
            raise UpstreamError(
                f"upstream {conn.name} failed {method}: {err.get('message')} ({err.get('code')})"
            )
        result = reply.get("result") or {}
        page = result.get(key)
        if not isinstance(page, list):
            raise UpstreamError(f"upstream {conn.name} answered {method} without a {key!r} list")
        items.extend(item for item in page if isinstance(item, dict))
        cursor = result.get("nextCursor")
        if not cursor:
            return tuple(items)
        if not isinstance(cursor, str) or cursor in seen:
            raise UpstreamError(f"upstream {conn.name} returned a repeated or invalid cursor for {method}")
        seen.add(cursor)
    raise UpstreamError(f"upstream {conn.name}: {method} did not end after {MAX_PAGES} pages")
