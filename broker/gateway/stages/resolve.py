"""Stage `catalog`: which upstream serves this call, under which name. Unknown → rejected here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from broker.catalog.catalog import Catalog, ResourceRoute
from broker.catalog.names import split_name, split_uri
from broker.errors import (
    InvalidParams,
    ToolQuarantined,
    UnknownPrompt,
    UnknownResource,
    UnknownTool,
    UpstreamUnavailable,
)
from broker.gateway.call import Call, Target

if TYPE_CHECKING:
    from broker.registry.guard import ItemVerdict

Availability = Callable[[str], str | None]
"""Reason an upstream is down, or None when it is up (or unknown)."""

Quarantine = Callable[[str, str], "ItemVerdict | None"]
"""(registry kind, public name) → the registry's verdict when it holds that item back."""


class ResolveTarget:
    name: ClassVar[str] = "catalog"

    def __init__(
        self, catalog: Catalog, availability: Availability, quarantine: Quarantine | None = None
    ) -> None:
        self._catalog = catalog
        self._availability = availability
        self._quarantine = quarantine

    async def handle(self, call: Call) -> None:
        method = call.method
        params = call.params
        if method == "tools/call":
            name = _string(params, "name", method)
            args = params.get("arguments")
            if args is not None and not isinstance(args, dict):
                raise InvalidParams("tools/call: 'arguments' must be an object")
            entry = self._catalog.tool(name)
            if entry is None:
                self._held_back("tools", name)
                self._unavailable(split_name(name))
                raise UnknownTool(
                    f"Unknown tool: {name!r}. tools/list shows the tools you can call.", tool=name
                )
            namespaced = entry.name != entry.upstream_name
            call.target = Target(entry.upstream, "tool", entry.upstream_name, namespaced, entry.resource)
        elif method == "prompts/get":
            name = _string(params, "name", method)
            entry = self._catalog.prompt(name)
            if entry is None:
                self._held_back("prompts", name)
                self._unavailable(split_name(name))
                raise UnknownPrompt(f"Unknown prompt: {name!r}. prompts/list shows the prompts you can get.")
            namespaced = entry.name != entry.upstream_name
            call.target = Target(entry.upstream, "prompt", entry.upstream_name, namespaced, entry.resource)
        elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            uri = _string(params, "uri", method)
            call.target = self._resource(uri, "resource")
        elif method == "completion/complete":
            call.target = self._completion(params)
        else:
            raise InvalidParams(f"{method} is not routed to an upstream")

    def _held_back(self, kind: str, name: str) -> None:
        """A quarantined item is refused with the registry's reason, not as unknown."""
        verdict = self._quarantine(kind, name) if self._quarantine is not None else None
        if verdict is not None:
            raise ToolQuarantined(
                f"{name} is quarantined by the tool registry: {verdict.reason}",
                tool=name,
                flags=list(verdict.flags),
                changes=list(verdict.changes),
            )

    def _resource(self, uri: str, kind: str) -> Target:
        route: ResourceRoute | None = self._catalog.resource(uri)
        if route is None:
            self._unavailable(split_uri(uri))
            raise UnknownResource(f"Resource not found: {uri!r} is not served by any upstream.", uri=uri)
        return Target(route.upstream, kind, route.upstream_uri, route.namespace, route.resource)

    def _completion(self, params: dict[str, Any]) -> Target:
        ref = params.get("ref")
        if not isinstance(ref, dict):
            raise InvalidParams("completion/complete: 'ref' must be an object")
        if ref.get("type") == "ref/prompt":
            name = _string(ref, "name", "completion/complete ref")
            entry = self._catalog.prompt(name)
            if entry is None:
                raise UnknownPrompt(f"Unknown prompt: {name!r}")
            namespaced = entry.name != entry.upstream_name
            return Target(entry.upstream, "completion", entry.upstream_name, namespaced, entry.resource)
        if ref.get("type") == "ref/resource":
            uri = _string(ref, "uri", "completion/complete ref")
            owner = self._catalog.template_owner(uri)
            if owner is not None:
                return Target(
                    owner.upstream, "completion", owner.upstream_uri, owner.namespace, owner.resource
                )
            return self._resource(uri, "completion")
        raise InvalidParams("completion/complete: 'ref.type' must be 'ref/prompt' or 'ref/resource'")

    def _unavailable(self, split: tuple[str, str] | None) -> None:
        if split is None:
            return
        reason = self._availability(split[0])
        if reason is not None:
            raise UpstreamUnavailable(f"upstream {split[0]} is not available: {reason}", upstream=split[0])


def _string(params: dict[str, Any], key: str, where: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"{where}: {key!r} must be a non-empty string")
    return value
