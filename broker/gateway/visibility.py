"""Which tools, resources and prompts a principal may see: lists are filtered by policy.

An upstream's items are listed only if the principal may list them on that server
(`list_tools` etc. on the Server); an item is then visible when the decision for using it
— its call action, without arguments, `context.listing = true` — is allow or
require_approval. The answer is cached per (principal, kind, catalog version, policy
version): a thousand-tool list is decided once per principal and change, not per request.
"""

from __future__ import annotations

import collections
from typing import Any

from broker.catalog.catalog import Catalog
from broker.identity.principal import Principal
from broker.policy.decision import Effect
from broker.policy.point import PolicyPoint
from broker.policy.request import ITEM_ACTION_FOR_KIND, LIST_ACTION_FOR_KIND, CallFacts, build_request

VISIBLE = frozenset({Effect.ALLOW, Effect.REQUIRE_APPROVAL})


class Visibility:
    def __init__(self, policy: PolicyPoint, catalog: Catalog, *, cache_size: int = 512) -> None:
        self._policy = policy
        self._catalog = catalog
        self._cache: collections.OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = (
            collections.OrderedDict()
        )
        self._cache_size = cache_size

    async def visible(self, kind: str, principal: Principal, facts: CallFacts) -> list[dict[str, Any]]:
        """The `kind` ("tools", "resources", "resource_templates", "prompts") items `principal` may see."""
        key = (kind, principal.cache_key, self._catalog.version, self._policy.policy_version)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        result = await self._decide(kind, principal, facts)
        self._cache[key] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    async def _decide(self, kind: str, principal: Principal, facts: CallFacts) -> list[dict[str, Any]]:
        candidates = self._candidates(kind)
        if not candidates:
            return []
        engine = self._policy.engine
        list_kind = "resources" if kind == "resource_templates" else kind
        servers = sorted({server for server, _, _ in candidates})
        server_requests = [
            build_request(principal, LIST_ACTION_FOR_KIND[list_kind], self._catalog.servers[s], None, facts)[
                0
            ]
            for s in servers
        ]
        server_decisions = await engine.decide_many(server_requests)
        listable = {s for s, d in zip(servers, server_decisions, strict=True) if d.effect is Effect.ALLOW}
        kept = [c for c in candidates if c[0] in listable]
        action = ITEM_ACTION_FOR_KIND[list_kind]
        item_requests = [
            build_request(principal, action, resource, None, facts, listing=True)[0]
            for _, resource, _ in kept
        ]
        decisions = await engine.decide_many(item_requests)
        return [item for (_, _, item), d in zip(kept, decisions, strict=True) if d.effect in VISIBLE]

    def _candidates(self, kind: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(server, what policies see, what callers see) for every item of `kind`."""
        catalog = self._catalog
        if kind == "tools":
            return [(e.upstream, e.resource, e.definition) for e in catalog.tool_entries()]
        if kind == "prompts":
            return [(e.upstream, e.resource, e.definition) for e in catalog.prompt_entries()]
        if kind == "resources":
            return [(route.upstream, route.resource, item) for item, route in catalog.resource_entries()]
        if kind == "resource_templates":
            found = []
            for item in catalog.template_list:
                owner = catalog.template_owner(item["uriTemplate"])
                if owner is not None:
                    found.append((owner.upstream, owner.resource, item))
            return found
        raise ValueError(f"unknown list kind {kind!r}")
