"""The aggregated catalog: every upstream's tools, resources, templates and prompts under one roof.

Rebuilt whole (it is small) whenever an upstream connects, drops or changes its
lists, so lookups on the hot path are single dict reads and list answers are ready
to send. Each rebuild bumps `version`, which list caches and policy decisions key on.

Two upstreams exposing the same public name is never resolved silently: the entry of
the upstream listed first in the config stays, the other is withheld, and the clash
is reported in `problems` (at startup the broker refuses to start).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from broker.catalog.names import public_name, public_uri, split_uri
from broker.protocol import tool_hints

log = logging.getLogger("broker.catalog")


@dataclass(frozen=True, slots=True)
class Entry:
    """One tool or prompt as callers see it, and where it really lives."""

    name: str
    upstream: str
    upstream_name: str
    definition: dict[str, Any]
    resource: dict[str, Any]
    """What policies see of it (the `resource` of an authorization request), built once."""


@dataclass(frozen=True, slots=True)
class UpstreamOffer:
    """What one upstream currently offers, plus how it is exposed."""

    name: str
    namespace: bool
    tools: Sequence[dict[str, Any]] = ()
    resources: Sequence[dict[str, Any]] = ()
    resource_templates: Sequence[dict[str, Any]] = ()
    prompts: Sequence[dict[str, Any]] = ()
    tenants: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tool_tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hidden: frozenset[tuple[str, str]] = frozenset()
    """(kind, upstream name) of items the tool registry quarantines: never listed or callable,
    still counted for name clashes (two upstreams claiming a name is a problem either way)."""
    fields: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    """(kind, upstream name) → extra fields of the item's resource document (`pinned`, `flags`)."""

    def tags_for(self, name: str) -> list[str]:
        extra = [t for t in self.tool_tags.get(name, ()) if t not in self.tags]
        return [*self.tags, *extra]


@dataclass(frozen=True, slots=True)
class ResourceRoute:
    upstream: str
    upstream_uri: str
    namespace: bool
    resource: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class _Index:
    tools: dict[str, Entry] = field(default_factory=dict)
    prompts: dict[str, Entry] = field(default_factory=dict)
    resources: dict[str, ResourceRoute] = field(default_factory=dict)
    resource_list: list[dict[str, Any]] = field(default_factory=list)
    template_list: list[dict[str, Any]] = field(default_factory=list)
    templates: list[tuple[UriTemplate, str]] = field(default_factory=list)  # un-namespaced only
    template_routes: dict[str, ResourceRoute] = field(default_factory=dict)  # public template → owner
    problems: list[str] = field(default_factory=list)
    claimed: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, public name) → upstream


class Catalog:
    def __init__(self, upstream_order: Sequence[str], namespaced: dict[str, bool]) -> None:
        self._order = list(upstream_order)
        self._namespaced = dict(namespaced)
        self._offers: dict[str, UpstreamOffer] = {}
        self.servers: dict[str, dict[str, Any]] = {}
        """What policies see of each upstream (the resource of list_* decisions)."""
        self.version = 0
        self._index = _Index()
        self.tool_list: list[dict[str, Any]] = []
        self.prompt_list: list[dict[str, Any]] = []

    # -- updates ---------------------------------------------------------------------------

    def set_offer(self, offer: UpstreamOffer) -> list[str]:
        """Replace one upstream's offer; returns the clash problems of the new catalog."""
        self._offers[offer.name] = offer
        self._rebuild()
        return self.problems

    def remove(self, upstream: str) -> None:
        if self._offers.pop(upstream, None) is not None:
            self._rebuild()

    def set_upstreams(self, upstream_order: Sequence[str], namespaced: dict[str, bool]) -> None:
        """A new set of upstreams (config reload): offers of upstreams no longer named are dropped."""
        self._order = list(upstream_order)
        self._namespaced = dict(namespaced)
        for name in [n for n in self._offers if n not in self._namespaced]:
            del self._offers[name]
        self._rebuild()

    @property
    def problems(self) -> list[str]:
        return list(self._index.problems)

    def _rebuild(self) -> None:
        index = _Index()
        for name in self._order:
            offer = self._offers.get(name)
            if offer is not None:
                self._add(index, offer)
        self._index = index
        self.servers = {
            name: server_descriptor(name, self._offers[name].tenants)
            for name in self._order
            if name in self._offers
        }
        self.tool_list = [e.definition for e in index.tools.values()]
        self.prompt_list = [e.definition for e in index.prompts.values()]
        self.version += 1

    def _add(self, index: _Index, offer: UpstreamOffer) -> None:
        ns = offer.namespace
        for kind, items, table in (
            ("tool", offer.tools, index.tools),
            ("prompt", offer.prompts, index.prompts),
        ):
            for item in items:
                original = item.get("name")
                if not isinstance(original, str) or not original:
                    index.problems.append(f"upstream {offer.name} lists a {kind} without a name; ignored")
                    continue
                public = public_name(offer.name, original, ns)
                owner = index.claimed.get((kind, public))
                if owner is not None:
                    index.problems.append(
                        f"{kind} name {public!r} is exposed by both upstream {owner!r} "
                        f"and upstream {offer.name!r}; keeping {owner!r}'s. "
                        f"Turn namespacing on for one of them."
                    )
                    continue
                index.claimed[(kind, public)] = offer.name
                if (kind, original) in offer.hidden:
                    continue
                definition = dict(item, name=public) if ns else item
                described = _describe(kind, public, original, offer, item)
                described.update(offer.fields.get((kind, original), {}))
                table[public] = Entry(public, offer.name, original, definition, described)
        for resource in offer.resources:
            uri = resource.get("uri")
            if not isinstance(uri, str):
                continue
            public = public_uri(offer.name, uri, ns)
            other = index.resources.get(public)
            if other is not None:
                index.problems.append(
                    f"resource {public!r} is exposed by both upstream {other.upstream!r} and upstream "
                    f"{offer.name!r}; keeping {other.upstream!r}'s"
                )
                continue
            described = resource_descriptor(public, offer.name, offer.tenants, offer.tags)
            index.resources[public] = ResourceRoute(offer.name, uri, ns, described)
            index.resource_list.append(dict(resource, uri=public) if ns else resource)
        for template in offer.resource_templates:
            pattern = template.get("uriTemplate")
            if not isinstance(pattern, str) or ("resource_template", pattern) in offer.hidden:
                continue
            public_pattern = public_uri(offer.name, pattern, ns)
            index.template_list.append(dict(template, uriTemplate=public_pattern) if ns else template)
            described = resource_descriptor(public_pattern, offer.name, offer.tenants, offer.tags)
            described.update(offer.fields.get(("resource_template", pattern), {}))
            index.template_routes.setdefault(
                public_pattern, ResourceRoute(offer.name, pattern, ns, described)
            )
            if not ns:
                try:
                    index.templates.append((UriTemplate.parse(pattern), offer.name))
                except InvalidUriTemplate as exc:
                    log.warning(
                        "upstream %s: resource template %r is not valid: %s", offer.name, pattern, exc
                    )

    # -- lookups ---------------------------------------------------------------------------

    def tool(self, name: str) -> Entry | None:
        return self._index.tools.get(name)

    def prompt(self, name: str) -> Entry | None:
        return self._index.prompts.get(name)

    @property
    def resource_list(self) -> list[dict[str, Any]]:
        return self._index.resource_list

    @property
    def template_list(self) -> list[dict[str, Any]]:
        return self._index.template_list

    def resource(self, uri: str) -> ResourceRoute | None:
        """Which upstream serves `uri`: listed URIs first, then namespace prefixes, then templates."""
        route = self._index.resources.get(uri)
        if route is not None:
            return route
        split = split_uri(uri)
        if split is not None and self._namespaced.get(split[0]) and split[0] in self._offers:
            return self._route(split[0], split[1], True, uri)
        for template, upstream in self._index.templates:
            if template.match(uri) is not None:
                return self._route(upstream, uri, False, uri)
        plain = [n for n in self._order if n in self._offers and not self._namespaced.get(n)]
        serving = [n for n in plain if self._offers[n].resources or self._offers[n].resource_templates]
        if len(serving) == 1:
            return self._route(serving[0], uri, False, uri)
        return None

    def _route(self, upstream: str, upstream_uri: str, namespace: bool, public: str) -> ResourceRoute:
        offer = self._offers[upstream]
        return ResourceRoute(
            upstream,
            upstream_uri,
            namespace,
            resource_descriptor(public, upstream, offer.tenants, offer.tags),
        )

    def resource_entries(self) -> list[tuple[dict[str, Any], ResourceRoute]]:
        """Each listed resource with its route (for list filtering)."""
        return [(item, self._index.resources[item["uri"]]) for item in self._index.resource_list]

    def tool_entries(self) -> list[Entry]:
        return list(self._index.tools.values())

    def prompt_entries(self) -> list[Entry]:
        return list(self._index.prompts.values())

    def template_owner(self, pattern: str) -> ResourceRoute | None:
        """The upstream that listed the resource template `pattern` (for completions)."""
        return self._index.template_routes.get(pattern)

    def upstreams(self) -> Iterable[str]:
        return self._offers.keys()


def server_descriptor(name: str, tenants: Sequence[str]) -> dict[str, Any]:
    return {"type": "Server", "id": name, "name": name, "server": name, "tenants": list(tenants)}


def resource_descriptor(
    uri: str, upstream: str, tenants: Sequence[str], tags: Sequence[str]
) -> dict[str, Any]:
    return {
        "type": "Resource",
        "id": uri,
        "uri": uri,
        "server": upstream,
        "tenants": list(tenants),
        "tags": list(tags),
    }


def _describe(
    kind: str, public: str, original: str, offer: UpstreamOffer, item: dict[str, Any]
) -> dict[str, Any]:
    described: dict[str, Any] = {
        "type": "Tool" if kind == "tool" else "Prompt",
        "id": public,
        "name": original,
        "server": offer.name,
        "tenants": list(offer.tenants),
        "tags": offer.tags_for(original),
    }
    if kind == "tool":
        described["annotations"] = tool_hints(item.get("annotations"))
    return described


def page(
    items: list[dict[str, Any]], cursor: Any, page_size: int, version: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a list answer and the cursor of the next one.

    Cursors are opaque to callers; here they are `<catalog version>:<offset>`. A cursor
    from an older catalog still works (by offset): lists are snapshots, not transactions.
    """
    start = 0
    if cursor is not None:
        if not isinstance(cursor, str):
            raise ValueError("the cursor must be a string returned by a previous page")
        _, _, offset = cursor.partition(":")
        if not offset.isdigit():
            raise ValueError(f"the cursor {cursor!r} was not issued by this broker")
        start = int(offset)
    if page_size <= 0:
        return (items[start:] if start else items), None
    end = start + page_size
    return items[start:end], (f"{version}:{end}" if end < len(items) else None)
