"""The registry at run time: every listing checked against its pins and the heuristics.

`RegistryGuard.check_listing(server, listing)` is called whenever an upstream's listing is
(re)fetched — at connect and on `list_changed` — before the catalog takes the offer. It
compares every item with its pin, re-runs the heuristics across all servers, and returns a
`ListingCheck`: the server's `RegistryState`, the verdict of every item, and which items
became quarantined or were released (for the audit log and metrics). Between checks,
`verdict(server, kind, key)` is a dict read.

An item is **quarantined** (hidden from lists, calls denied with `reason`), unless
`registry.enabled` is false (then items are only flagged), when:
- its definition drifted from its pin (a "rug pull"), always;
- it is not pinned and `registry.unpinned` is `quarantine` (the default);
- a finding charged to it has severity `quarantine`.

Policies see `resource.pinned` (pinned and unchanged) and `resource.flags` (`drifted`,
`unpinned`, `quarantined` and every finding code charged to the item), via
`ItemVerdict.resource_fields()`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.registry.canonical import KINDS
from broker.registry.findings import Finding, Severity
from broker.registry.pins import ItemState, Listing, Pins, PinStatus, RegistryState, compare
from broker.registry.scan import RegistryScanner, ServerOffer
from broker.registry.settings import RegistrySettings
from broker.registry.validate import ArgumentValidator, SchemaHandle

log = logging.getLogger("broker.registry")

Key = tuple[str, str, str]
"""(server, kind, key): kind is "tools" | "resource_templates" | "prompts"; key the upstream's own name."""


@dataclass(frozen=True, slots=True)
class ItemVerdict:
    server: str
    kind: str
    key: str
    status: PinStatus
    quarantined: bool
    reason: str
    flags: tuple[str, ...]
    findings: tuple[Finding, ...] = ()
    changes: tuple[str, ...] = ()

    @property
    def pinned(self) -> bool:
        return self.status is PinStatus.PINNED

    def resource_fields(self) -> dict[str, Any]:
        """What to merge into the item's `resource` document for the policy."""
        return {"pinned": self.pinned, "flags": list(self.flags)}

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "kind": self.kind,
            "key": self.key,
            "status": self.status.value,
            "quarantined": self.quarantined,
            "reason": self.reason,
            "flags": list(self.flags),
            "changes": list(self.changes),
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class ListingCheck:
    """The outcome of one check: this server's state, and every verdict that changed anywhere."""

    server: str
    state: RegistryState
    verdicts: Mapping[tuple[str, str], ItemVerdict]
    findings: tuple[Finding, ...]
    newly_quarantined: tuple[ItemVerdict, ...] = ()
    released: tuple[ItemVerdict, ...] = ()
    affected_servers: frozenset[str] = field(default_factory=frozenset)
    """Servers (besides this one) whose verdicts changed: a name clash can move between servers."""

    def quarantined(self) -> list[ItemVerdict]:
        return [v for v in self.verdicts.values() if v.quarantined]


class RegistryGuard:
    def __init__(
        self,
        settings: RegistrySettings,
        pins: Pins,
        scanner: RegistryScanner,
        validator: ArgumentValidator,
        order: Sequence[str],
    ) -> None:
        self.settings = settings
        self.pins = pins
        self._scanner = scanner
        self._validator = validator
        self._order = list(order)
        self._offers: dict[str, ServerOffer] = {}
        self._states: dict[str, RegistryState] = {}
        self._verdicts: dict[Key, ItemVerdict] = {}
        self._handles: dict[tuple[str, str], SchemaHandle] = {}
        self.findings: tuple[Finding, ...] = ()

    # -- updates ---------------------------------------------------------------------------------

    def check_listing(self, server: str, listing: Listing, *, namespace: bool = True) -> ListingCheck:
        """Compare `server`'s new listing with its pins and re-run the heuristics; returns the outcome."""
        self._offers[server] = ServerOffer(server, listing, namespace)
        self._states[server] = compare(self.pins, server, listing)
        for tool in listing.tools:
            name = tool.get("name")
            if isinstance(name, str):
                self._handles[(server, name)] = self._validator.handle(tool.get("inputSchema"))
        return self._recompute(server)

    def forget(self, server: str) -> ListingCheck:
        """The upstream is gone: drop its items (and the clashes they caused)."""
        self._offers.pop(server, None)
        self._states.pop(server, None)
        self._handles = {k: v for k, v in self._handles.items() if k[0] != server}
        return self._recompute(server)

    def reload_pins(self, pins: Pins) -> list[ListingCheck]:
        """New pins (after `registry pin` and a reload): re-check every known listing."""
        self.pins = pins
        for server, offer in self._offers.items():
            self._states[server] = compare(pins, server, offer.listing)
        return [self._recompute(server) for server in list(self._offers)]

    def _recompute(self, server: str) -> ListingCheck:
        offers = [self._offers[name] for name in self._ordered()]
        findings = tuple(self._scanner.scan(offers, self._trusted))
        charged: dict[Key, list[Finding]] = {}
        for finding in findings:
            charged.setdefault((finding.server, _plural(finding.kind), finding.item), []).append(finding)
        before = self._verdicts
        verdicts: dict[Key, ItemVerdict] = {}
        for name, state in self._states.items():
            for (kind, key), item in state.items.items():
                verdicts[(name, kind, key)] = self._verdict(item, charged.get((name, kind, key), []))
        self._verdicts = verdicts
        self.findings = findings
        newly = [v for k, v in verdicts.items() if v.quarantined and not _was_quarantined(before.get(k))]
        released = [v for k, v in before.items() if v.quarantined and not _was_quarantined(verdicts.get(k))]
        affected = frozenset(
            k[0] for k in set(before) | set(verdicts) if before.get(k) != verdicts.get(k) and k[0] != server
        )
        for verdict in newly:
            log.warning("registry: quarantined: %s", verdict.reason)
        for verdict in released:
            log.info(
                "registry: released from quarantine: %s %s/%s", verdict.kind, verdict.server, verdict.key
            )
        state = self._states.get(server, RegistryState(server, {}))
        return ListingCheck(
            server,
            state,
            {(kind, key): v for (name, kind, key), v in verdicts.items() if name == server},
            tuple(f for f in findings if f.server == server),
            tuple(newly),
            tuple(released),
            affected,
        )

    def _verdict(self, item: ItemState, findings: list[Finding]) -> ItemVerdict:
        flags: list[str] = []
        reasons: list[str] = []
        if item.status is PinStatus.DRIFTED:
            flags.append("drifted")
            reasons.append(item.reason())
        elif item.status is PinStatus.UNPINNED:
            flags.append("unpinned")
            if self.settings.unpinned == "quarantine":
                reasons.append(item.reason())
        elif item.status is PinStatus.MISSING:
            flags.append("missing")
        for finding in findings:
            if finding.code not in flags:
                flags.append(finding.code)
            if finding.severity is Severity.QUARANTINE:
                reasons.append(f"{finding.code} at {finding.where or '/'}: {finding.excerpt}")
        quarantined = self.settings.enabled and bool(reasons) and item.status is not PinStatus.MISSING
        if quarantined:
            flags.append("quarantined")
        reason = "; ".join(reasons) if quarantined else ""
        return ItemVerdict(
            item.server,
            item.kind,
            item.key,
            item.status,
            quarantined,
            reason,
            tuple(flags),
            tuple(findings),
            item.changes,
        )

    def _trusted(self, server: str, kind: str, key: str) -> bool:
        state = self._states.get(server)
        item = state.items.get((kind, key)) if state else None
        return item is not None and item.status is PinStatus.PINNED

    def _ordered(self) -> list[str]:
        known = [name for name in self._order if name in self._offers]
        return known + sorted(name for name in self._offers if name not in self._order)

    # -- lookups (hot path: dict reads) ----------------------------------------------------------

    def verdict(self, server: str, kind: str, key: str) -> ItemVerdict | None:
        """The verdict of one item, or None when the guard has not seen it."""
        return self._verdicts.get((server, kind, key))

    def allowed(self, server: str, kind: str, key: str) -> bool:
        """May the item be listed and used? Unknown items are not (fail closed)."""
        verdict = self._verdicts.get((server, kind, key))
        return verdict is not None and not verdict.quarantined

    def quarantined_item(self, kind: str, public: str) -> ItemVerdict | None:
        """The quarantined item a caller named by its public name (`server__tool`, or a bare name of a
        server without namespacing), so a call can be denied with the reason instead of "unknown tool"."""
        server, sep, key = public.partition("__")
        if sep:
            found = self._verdicts.get((server, kind, key))
            if found is not None and found.quarantined and self._namespaced(server):
                return found
        for name, offer in self._offers.items():
            if not offer.namespace:
                found = self._verdicts.get((name, kind, public))
                if found is not None and found.quarantined:
                    return found
        return None

    def _namespaced(self, server: str) -> bool:
        offer = self._offers.get(server)
        return offer is not None and offer.namespace

    def schema(self, server: str, tool: str) -> SchemaHandle | None:
        """The compiled inputSchema of a tool as last listed (for `ArgumentValidator.check`)."""
        return self._handles.get((server, tool))

    def visible_listing(self, server: str, listing: Listing) -> dict[str, tuple[Mapping[str, Any], ...]]:
        """The listing's tools / resource_templates / prompts without quarantined items (for the catalog)."""
        from broker.registry.canonical import item_key

        return {
            kind: tuple(
                item
                for item in getattr(listing, kind)
                if (key := item_key(kind, item)) is not None and self.allowed(server, kind, key)
            )
            for kind in KINDS
        }

    def verdicts(self) -> list[ItemVerdict]:
        return list(self._verdicts.values())

    def states(self) -> dict[str, RegistryState]:
        return dict(self._states)


def _plural(kind: str) -> str:
    return {"tool": "tools", "resource_template": "resource_templates", "prompt": "prompts"}[kind]


def _was_quarantined(verdict: ItemVerdict | None) -> bool:
    return verdict is not None and verdict.quarantined
