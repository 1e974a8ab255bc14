"""Several instances of one upstream, offered to the gateway as one: balancing and failover.

One server process (or one URL) is one point of failure and one queue. A group runs one
`UpstreamSupervisor` per instance — one per URL for the HTTP transports, N copies of the
command for stdio — and shows the gateway, Forward and the Broker the surface of a single
supervisor (the `Upstream` protocol below), so nothing downstream knows there are several.

- Availability: the group is its members' listener. The gateway hears `upstream_ready` when
  the first member becomes usable (and when the group's listing changes) and `upstream_down`
  only when no member is usable. What members send on their own (notifications, requests)
  still goes to the gateway directly, per connection: the group is not on that path.
- Choice: `connection_for` picks a usable member, `round_robin` or `least_in_flight` (fewest
  requests awaiting an answer on the member's connections). A session key stays on the member
  it got first while that member is usable, and moves (failover) when it is not; the member it
  left gives up that key's connection.
- Consistency: members must offer one catalog. The group's listing is the one the most usable
  members offer (a tie keeps the current one); a member offering anything else is logged and
  kept out of rotation until it agrees again. A rolling upgrade therefore moves the group when
  most instances have moved, and never mixes two catalogs behind one name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol, TypeAlias

from broker.config import UpstreamConfig
from broker.errors import UpstreamUnavailable
from broker.upstream.auth import UpstreamAuth
from broker.upstream.connection import InitializeInfo, UpstreamConnection, UpstreamEvents
from broker.upstream.listing import UpstreamListing
from broker.upstream.supervisor import UpstreamState, UpstreamSupervisor, make_transport
from broker.upstream.transport import Transport

log = logging.getLogger("broker.upstream.group")

Balance: TypeAlias = Literal["round_robin", "least_in_flight"]
BALANCES: tuple[Balance, ...] = ("round_robin", "least_in_flight")

MAX_KEYED_AFFINITY = 65536
"""Affinity entries kept for keys that cannot be weakly referenced (("principal", id) tuples).

Session objects are held weakly and vanish with the session; principal keys have no end
event, so the oldest-used are forgotten beyond this many (a forgotten key is placed again)."""

_KINDS = ("tools", "resources", "resource_templates", "prompts")


class Upstream(Protocol):
    """What the gateway, Forward and the Broker use of an upstream: a supervisor or a group."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> UpstreamConfig: ...

    @property
    def state(self) -> UpstreamState: ...

    @property
    def listing(self) -> UpstreamListing: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def restarts(self) -> int: ...

    @property
    def connection(self) -> UpstreamConnection | None: ...

    @property
    def info(self) -> InitializeInfo | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def refresh(self) -> None: ...

    async def ready_connection(self) -> UpstreamConnection: ...

    async def connection_for(
        self, session_key: object | None, *, tenant: str | None = None, subject_token: str | None = None
    ) -> UpstreamConnection: ...

    def session_connection(self, session_key: object) -> UpstreamConnection | None: ...

    async def release_session(self, session_key: object) -> None: ...


class GroupListener(Protocol):
    """Who learns about the group's availability and listing (the gateway)."""

    def upstream_ready(self, upstream: Upstream, listing: UpstreamListing) -> None: ...

    def upstream_down(self, upstream: Upstream, reason: str) -> None: ...


def member_configs(
    config: UpstreamConfig, *, urls: Sequence[str] = (), instances: int = 1
) -> list[UpstreamConfig]:
    """One config per instance: HTTP members differ only in `url`, stdio members are copies.

    Raises ValueError for a shape the config loader should have refused (it reports it with
    the file and line; this is the last line of defence).
    """
    if instances < 1:
        raise ValueError(f"upstream {config.name}: instances must be at least 1")
    if config.transport == "stdio":
        if urls:
            raise ValueError(f"upstream {config.name}: urls are for the HTTP transports, not stdio")
        return [config] * instances
    if instances != 1:
        raise ValueError(f"upstream {config.name}: instances is for stdio; list HTTP instances in urls")
    targets = list(urls) if urls else [config.url] if config.url else []
    if not targets:
        raise ValueError(f"upstream {config.name}: no url")
    if len(set(targets)) != len(targets):
        raise ValueError(f"upstream {config.name}: the same url is listed twice")
    return [dataclasses.replace(config, url=url) for url in targets]


@dataclasses.dataclass(eq=False)
class _Member:
    """One instance and what the group knows of it."""

    index: int
    supervisor: UpstreamSupervisor
    listing: UpstreamListing | None = None
    """The listing it reported while connected; None while it is not."""
    in_rotation: bool = False
    problem: str | None = None
    """Why a connected member is out of rotation."""

    @property
    def target(self) -> str:
        config = self.supervisor.config
        return config.url if config.transport != "stdio" and config.url else f"instance {self.index + 1}"


class UpstreamGroup:
    """N instances of one upstream behind one name; see the module docstring."""

    def __init__(
        self,
        config: UpstreamConfig,
        members: Sequence[UpstreamConfig],
        events: UpstreamEvents,
        listener: GroupListener,
        *,
        client_name: str,
        client_version: str,
        balance: Balance = "round_robin",
        transport_factory: Callable[[UpstreamConfig, UpstreamAuth], Transport] = make_transport,
    ) -> None:
        if not members:
            raise ValueError(f"upstream group {config.name} has no members")
        if any(m.name != config.name for m in members):
            raise ValueError(f"upstream group {config.name}: every member carries the group's name")
        if balance not in BALANCES:
            raise ValueError(f"upstream group {config.name}: unknown balance {balance!r}")
        self.config = config
        self.name = config.name
        self.balance: Balance = balance
        self.listing = UpstreamListing()
        self._listener = listener
        self._members = [
            _Member(
                index,
                UpstreamSupervisor(
                    member,
                    events,
                    self,
                    client_name=client_name,
                    client_version=client_version,
                    transport_factory=transport_factory,
                ),
            )
            for index, member in enumerate(members)
        ]
        self._announced = False  # the gateway was told "ready" and not "down" since
        self._starting = False  # first attempts under way: listings are collected, judged after
        self._turn = 0  # index of the member round robin tries next
        self._session_affinity: weakref.WeakKeyDictionary[Any, _Member] = weakref.WeakKeyDictionary()
        self._keyed_affinity: dict[object, _Member] = {}

    # -- what the gateway and the Broker read ------------------------------------------------

    @property
    def members(self) -> tuple[UpstreamSupervisor, ...]:
        return tuple(m.supervisor for m in self._members)

    @property
    def state(self) -> UpstreamState:
        if any(self._usable(m) for m in self._members):
            return UpstreamState.READY
        states = {m.supervisor.state for m in self._members}
        if states == {UpstreamState.STOPPED}:
            return UpstreamState.STOPPED
        if UpstreamState.STARTING in states:
            return UpstreamState.STARTING
        return UpstreamState.BACKOFF

    @property
    def last_error(self) -> str | None:
        """None while every instance serves; else how many do and what is wrong with the others."""
        problems = [f"{m.target}: {self._member_problem(m)}" for m in self._members if not self._usable(m)]
        if not problems:
            return None
        usable = len(self._members) - len(problems)
        return f"{usable}/{len(self._members)} instances ready; " + "; ".join(problems)

    @property
    def restarts(self) -> int:
        return sum(m.supervisor.restarts for m in self._members)

    @property
    def connection(self) -> UpstreamConnection | None:
        """The first usable member's own connection (the one the gateway refreshes listings on)."""
        for member in self._members:
            if self._usable(member):
                return member.supervisor.connection
        return None

    @property
    def info(self) -> InitializeInfo | None:
        conn = self.connection
        return conn.info if conn is not None else None

    def status(self) -> list[dict[str, Any]]:
        """Per instance, for /readyz: where it is, its state, whether calls go to it, its load."""
        return [
            {
                "target": m.target,
                "state": m.supervisor.state.value,
                "in_rotation": self._usable(m),
                "in_flight": self._load(m),
                "restarts": m.supervisor.restarts,
                "last_error": None if self._usable(m) else self._member_problem(m),
            }
            for m in self._members
        ]

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every instance; returns once each has made its first attempt.

        The listings are judged once all have answered (or failed), so the majority is chosen
        from every instance and the gateway never sees the catalog of the fastest odd one out.
        """
        self._starting = True
        try:
            await asyncio.gather(*(m.supervisor.start() for m in self._members))
        finally:
            self._starting = False
        self._settle(None)
        usable = sum(self._usable(m) for m in self._members)
        log.info(
            "upstream %s: %d/%d instances ready (%s)", self.name, usable, len(self._members), self.balance
        )

    async def stop(self) -> None:
        await asyncio.gather(*(m.supervisor.stop() for m in self._members), return_exceptions=True)
        for member in self._members:
            member.listing = None
            member.in_rotation = False
        self._announced = False
        self._session_affinity.clear()
        self._keyed_affinity.clear()

    async def refresh(self) -> None:
        """Fetch every connected member's listing again; each answer comes back as upstream_ready."""
        await asyncio.gather(
            *(m.supervisor.refresh() for m in self._members if m.listing is not None),
            return_exceptions=True,
        )

    # -- members' availability (UpstreamListener of each member) -----------------------------

    def upstream_ready(self, upstream: UpstreamSupervisor, listing: UpstreamListing) -> None:
        member = self._member_of(upstream)
        member.listing = listing
        self._settle(None)

    def upstream_down(self, upstream: UpstreamSupervisor, reason: str) -> None:
        member = self._member_of(upstream)
        member.listing = None
        member.in_rotation = False
        member.problem = None
        log.warning("upstream %s: %s is down: %s", self.name, member.target, reason)
        self._settle(reason)

    def _member_of(self, upstream: UpstreamSupervisor) -> _Member:
        for member in self._members:
            if member.supervisor is upstream:
                return member
        raise LookupError(f"upstream group {self.name}: not one of its members")

    def _settle(self, reason: str | None) -> None:
        """Choose the group's listing, put members in or out of rotation, tell the gateway."""
        if self._starting:
            return
        connected = [m for m in self._members if m.listing is not None]
        if not connected:
            if self._announced:
                self._announced = False
                self._listener.upstream_down(self, reason or "no instance is ready")
            return
        reference = self._majority([m.listing for m in connected if m.listing is not None])
        for member in connected:
            assert member.listing is not None
            agrees = same_catalog(member.listing, reference)
            if agrees and not member.in_rotation and member.problem is not None:
                log.info(
                    "upstream %s: %s offers the group's listing again; back in rotation",
                    self.name,
                    member.target,
                )
            elif not agrees:
                problem = "offers a different listing: " + listing_difference(reference, member.listing)
                if problem != member.problem:
                    log.error(
                        "upstream %s: %s %s; kept out of rotation until it agrees",
                        self.name,
                        member.target,
                        problem,
                    )
                member.problem = problem
            member.in_rotation = agrees
            if agrees:
                member.problem = None
        changed = not same_catalog(reference, self.listing) or not self._announced
        self.listing = reference
        if changed:
            self._announced = True
            self._listener.upstream_ready(self, reference)

    def _majority(self, listings: list[UpstreamListing]) -> UpstreamListing:
        """The listing most connected members offer; a tie keeps the current one, else the first."""
        tally: list[tuple[UpstreamListing, int]] = []
        for listing in listings:
            for i, (seen, count) in enumerate(tally):
                if same_catalog(seen, listing):
                    tally[i] = (seen, count + 1)
                    break
            else:
                tally.append((listing, 1))
        most = max(count for _, count in tally)
        leaders = [listing for listing, count in tally if count == most]
        for listing in leaders:
            if same_catalog(listing, self.listing):
                return listing  # the current catalog, with this member's capabilities
        return leaders[0]

    # -- use -------------------------------------------------------------------------------

    async def connection_for(
        self,
        session_key: object | None,
        *,
        tenant: str | None = None,
        subject_token: str | None = None,
    ) -> UpstreamConnection:
        """A usable member's connection for this call, per the balance and the key's affinity."""

        async def get(member: _Member) -> UpstreamConnection:
            return await member.supervisor.connection_for(
                session_key, tenant=tenant, subject_token=subject_token
            )

        return await self._through_member(session_key, get)

    async def ready_connection(self) -> UpstreamConnection:
        """A usable member's own connection (what a supervisor's ready_connection gives)."""

        async def get(member: _Member) -> UpstreamConnection:
            return await member.supervisor.ready_connection()

        return await self._through_member(None, get)

    async def _through_member(
        self,
        session_key: object | None,
        get: Callable[[_Member], Awaitable[UpstreamConnection]],
    ) -> UpstreamConnection:
        """Pick a member and get a connection from it, failing over while members fail.

        A member that cannot give one because it died a moment ago is skipped for the next; a
        member that is still up and refuses (no tenant, no token to exchange) refuses for all.
        None usable: wait as briefly as a supervisor would for one that is restarting, once.
        """
        tried: set[int] = set()
        waited = False
        while len(tried) < len(self._members):
            member = self._pick(session_key, tried)
            if member is None:
                if waited or not await self._await_restart(tried):
                    break
                waited = True
                continue
            if session_key is not None:
                moved_from = self._place(session_key, member)
                if moved_from is not None:
                    await moved_from.supervisor.release_session(session_key)
            try:
                return await get(member)
            except UpstreamUnavailable:
                if self._usable(member):
                    raise
                log.info(
                    "upstream %s: %s failed when chosen; trying another instance", self.name, member.target
                )
                tried.add(member.index)
        raise self._unavailable()

    def session_connection(self, session_key: object) -> UpstreamConnection | None:
        """The open per-session connection of `session_key`, on whichever member holds it."""
        placed = self._affinity(session_key)
        if placed is not None:
            conn = placed.supervisor.session_connection(session_key)
            if conn is not None:
                return conn
        for member in self._members:
            conn = member.supervisor.session_connection(session_key)
            if conn is not None:
                return conn
        return None

    async def release_session(self, session_key: object) -> None:
        with contextlib.suppress(TypeError):
            self._session_affinity.pop(session_key, None)
        self._keyed_affinity.pop(session_key, None)
        await asyncio.gather(*(m.supervisor.release_session(session_key) for m in self._members))

    # -- choosing --------------------------------------------------------------------------

    def _usable(self, member: _Member) -> bool:
        conn = member.supervisor.connection
        return member.in_rotation and member.listing is not None and conn is not None and not conn.closed

    def _pick(self, session_key: object | None, tried: set[int]) -> _Member | None:
        if session_key is not None:
            placed = self._affinity(session_key)
            if placed is not None and placed.index not in tried and self._usable(placed):
                return placed
        members = self._members
        count = len(members)
        chosen: _Member | None = None
        least = 0
        # One pass in round-robin order from the member after the last one chosen; for
        # least_in_flight a strictly smaller load wins, so ties fall to that order and idle
        # members share the calls.
        for step in range(count):
            member = members[(self._turn + step) % count]
            if member.index in tried or not self._usable(member):
                continue
            if self.balance == "round_robin":
                chosen = member
                break
            load = self._load(member)
            if chosen is None or load < least:
                chosen, least = member, load
                if load == 0:
                    break
        if chosen is None:
            return None
        self._turn = (chosen.index + 1) % count
        return chosen

    def _load(self, member: _Member) -> int:
        """Requests awaiting an answer on the member's own connection and on the session
        connections the group placed there (per_session keys; per_tenant connections are keyed
        by tenant inside the supervisor and are not seen here)."""
        conn = member.supervisor.connection
        load = conn.in_flight if conn is not None and not conn.closed else 0
        if self.config.isolation == "per_session":
            for table in (self._session_affinity, self._keyed_affinity):
                for key, placed in list(table.items()):
                    if placed is member:
                        session = member.supervisor.session_connection(key)
                        load += session.in_flight if session is not None else 0
        return load

    def _affinity(self, session_key: object) -> _Member | None:
        try:
            return self._session_affinity.get(session_key)
        except TypeError:  # not weakly referable: ("principal", id) and the like
            member = self._keyed_affinity.pop(session_key, None)
            if member is not None:
                self._keyed_affinity[session_key] = member  # most recently used goes last
            return member

    def _place(self, session_key: object, member: _Member) -> _Member | None:
        """Record where a key goes; returns the member it leaves, if it moves."""
        previous = self._affinity(session_key)
        if previous is member:
            return None
        try:
            self._session_affinity[session_key] = member
        except TypeError:
            self._keyed_affinity[session_key] = member
            while len(self._keyed_affinity) > MAX_KEYED_AFFINITY:
                del self._keyed_affinity[next(iter(self._keyed_affinity))]
        if previous is not None:
            log.info("upstream %s: a session moves from %s to %s", self.name, previous.target, member.target)
        return previous

    async def _await_restart(self, tried: set[int]) -> bool:
        """Wait (as briefly as each supervisor would) for a restarting member; True if one came back."""
        waiting = [
            m
            for m in self._members
            if m.index not in tried and m.listing is None and m.supervisor.state is not UpstreamState.STOPPED
        ]
        if not waiting:
            return False
        tasks = [asyncio.ensure_future(m.supervisor.ready_connection()) for m in waiting]
        try:
            pending: set[asyncio.Future[UpstreamConnection]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(not t.cancelled() and t.exception() is None for t in done) and any(
                    self._usable(m) for m in self._members
                ):
                    return True
            return False
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _member_problem(self, member: _Member) -> str:
        if member.problem is not None:
            return member.problem
        supervisor = member.supervisor
        return supervisor.last_error or supervisor.state.value

    def _unavailable(self) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            f"upstream {self.name} is not available: {self.last_error or self.state.value}",
            upstream=self.name,
        )


def same_catalog(a: UpstreamListing, b: UpstreamListing) -> bool:
    """Whether two listings offer the same items in the same order (capabilities aside: what
    callers see is the items, and instances of one server may differ in what they declare)."""
    return all(getattr(a, kind) == getattr(b, kind) for kind in _KINDS)


def listing_difference(reference: UpstreamListing, other: UpstreamListing) -> str:
    """A short account of how `other` differs from `reference`: what is missing, extra, changed."""
    parts: list[str] = []
    for kind in _KINDS:
        ours = {_item_name(item): item for item in getattr(reference, kind)}
        theirs = {_item_name(item): item for item in getattr(other, kind)}
        missing = sorted(set(ours) - set(theirs))
        extra = sorted(set(theirs) - set(ours))
        changed = sorted(name for name in set(ours) & set(theirs) if ours[name] != theirs[name])
        for what, names in (("missing", missing), ("extra", extra), ("changed", changed)):
            if names:
                shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
                parts.append(f"{what} {kind}: {shown}")
    return "; ".join(parts) or "the same items in another order"


def _item_name(item: dict[str, Any]) -> str:
    return str(item.get("name") or item.get("uri") or item.get("uriTemplate") or "?")
