"""What the broker means by each MCP method, whichever front and era a request came from.

Lists are answered from the catalog; calls to tools, resources, prompts and
completions go down the pipeline to their upstream; what upstreams send on their own
(list changes, resource updates, logs, elicitation and sampling requests) is relayed
to the callers it concerns and to nobody else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mcp_types.methods import INPUT_REQUIRED_METHODS

from broker import jsonrpc
from broker.audit.trail import AUDITED_METHODS, AuditTrail
from broker.catalog.catalog import Catalog, UpstreamOffer, page
from broker.catalog.names import public_uri
from broker.errors import INTERNAL_ERROR, METHOD_NOT_FOUND, InvalidParams, MethodNotFound
from broker.gateway.call import Call
from broker.gateway.continuations import ContinuationStore
from broker.gateway.pipeline import Pipeline
from broker.gateway.sessions import LOG_LEVELS, DownstreamSession, Outbox, SessionRegistry
from broker.gateway.visibility import Visibility
from broker.identity.principal import Principal
from broker.jsonrpc import Message
from broker.policy.request import CallFacts
from broker.protocol import CAPABILITY_FOR_REQUEST, LATEST_MODERN, SUBSCRIPTION_ID_KEY, negotiate_handshake
from broker.registry import Registry
from broker.registry.canonical import KIND_SINGULAR, KINDS, item_key
from broker.registry.guard import ListingCheck
from broker.telemetry.metrics import BrokerMetrics
from broker.telemetry.outcome import call_outcome
from broker.telemetry.tracing import Tracing, TracingConfig
from broker.upstream.connection import PendingCall, Relay, UpstreamConnection, UpstreamRpcError
from broker.upstream.group import Upstream
from broker.upstream.listing import UpstreamListing
from broker.upstream.supervisor import UpstreamState

OBSERVED_METHODS = frozenset(
    {"tools/call", "prompts/get", "resources/read", "completion/complete", "resources/subscribe"}
)
"""The routed requests `mcp_broker_calls_total` counts (lists are answered from the catalog)."""

log = logging.getLogger("broker.gateway")

REMOVE_AFTER_DOWN_SECONDS = 10.0
"""A restarting upstream keeps its catalog entries this long; calls meanwhile wait for it."""

_LIST_CHANGED = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
}

CAPABILITIES: dict[str, Any] = {
    "tools": {"listChanged": True},
    "resources": {"subscribe": True, "listChanged": True},
    "prompts": {"listChanged": True},
    "completions": {},
    "logging": {},
}


@dataclass(eq=False)
class ListenStream:
    """A 2026-07-28 `subscriptions/listen` stream: the events it asked for go to its outbox."""

    request_id: Any
    notifications: dict[str, Any]
    outbox: Outbox = field(default_factory=Outbox)

    def wants(self, method: str, uri: str | None = None) -> bool:
        if method == "notifications/resources/updated":
            return uri in (self.notifications.get("resourceSubscriptions") or ())
        key = _LIST_CHANGED.get(method)
        return bool(key and self.notifications.get(key))

    def deliver(self, message: Message) -> None:
        params = dict(message.get("params") or {})
        params["_meta"] = {**(params.get("_meta") or {}), SUBSCRIPTION_ID_KEY: self.request_id}
        self.outbox.notify(jsonrpc.notification(message["method"], params))


class Gateway:
    def __init__(
        self,
        *,
        server_name: str,
        server_version: str,
        instructions: str | None,
        catalog: Catalog,
        sessions: SessionRegistry,
        page_size: int,
    ) -> None:
        self.server_info = {"name": server_name, "version": server_version}
        self._instructions = instructions
        self.catalog = catalog
        self.sessions = sessions
        self._page_size = page_size
        self.pipeline: Pipeline | None = None
        self.visibility: Visibility | None = None
        self.audit: AuditTrail | None = None
        self.registry: Registry | None = None
        self.metrics: BrokerMetrics | None = None
        self.tracing = Tracing(TracingConfig())  # off until attach() gives the configured one
        self.decision_feed: Callable[[Call, str], None] | None = None
        """Told how each routed call ended (the dashboard's live decisions); O(1), no I/O."""
        self.upstreams: dict[str, Upstream] = {}
        self.listens: set[ListenStream] = set()
        self.continuations = ContinuationStore()
        self._subscribed: dict[str, int] = {}  # public URI → subscribers, for upstream subscribe/unsubscribe
        self._removals: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, Callable[[Call], Any]] = {
            "ping": self._ping,
            "tools/list": self._list_tools,
            "prompts/list": self._list_prompts,
            "resources/list": self._list_resources,
            "resources/templates/list": self._list_templates,
            "logging/setLevel": self._set_level,
            "tools/call": self._routed,
            "prompts/get": self._routed,
            "resources/read": self._routed,
            "completion/complete": self._routed,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
        }

    def attach(
        self,
        pipeline: Pipeline,
        upstreams: Mapping[str, Upstream],
        visibility: Visibility,
        audit: AuditTrail | None = None,
        registry: Registry | None = None,
        metrics: BrokerMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.upstreams = dict(upstreams)
        self.visibility = visibility
        self.audit = audit
        self.registry = registry
        self.metrics = metrics
        if tracing is not None:
            self.tracing = tracing

    # -- handshake and discovery ------------------------------------------------------------

    def initialize(
        self, params: dict[str, Any], transport: str, principal: Principal | None = None
    ) -> tuple[dict[str, Any], DownstreamSession]:
        version = negotiate_handshake(params.get("protocolVersion"))
        capabilities = params.get("capabilities")
        info = params.get("clientInfo")
        session = self.sessions.create(
            version,
            info if isinstance(info, dict) else {},
            capabilities if isinstance(capabilities, dict) else {},
            transport,
            principal,
        )
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": self.server_info,
        }
        if self._instructions:
            result["instructions"] = self._instructions
        return result, session

    def discover(self) -> dict[str, Any]:
        capabilities = {k: v for k, v in CAPABILITIES.items() if k != "logging"}  # deprecated in 2026-07-28
        result: dict[str, Any] = {"supportedVersions": [LATEST_MODERN], "capabilities": capabilities}
        if self._instructions:
            result["instructions"] = self._instructions
        return result

    # -- requests --------------------------------------------------------------------------

    async def handle(self, call: Call) -> dict[str, Any]:
        handler = self._handlers.get(call.method)
        if handler is None:
            raise MethodNotFound(f"Method not found: {call.method!r} is not served by this broker")
        trace = self.tracing.request(
            method=call.method,
            request_id=call.request_id,
            transport=call.transport,
            protocol_version=call.protocol_version,
            session_id=call.session.id if call.session is not None else None,
            meta=call.params.get("_meta"),
            headers=call.trace_headers,
            start_time_ns=call.arrived_ns,
        )
        call.trace = trace
        with trace:
            if call.authenticated is not None:
                trace.record_authentication(*call.authenticated)
            result: dict[str, Any] | None = None
            try:
                result = await self._handle(call, handler)
                return result
            except BaseException as exc:
                self._observe(call, None, exc)
                raise
            finally:
                if result is not None:
                    self._observe(call, result, None)

    async def _handle(self, call: Call, handler: Callable[[Call], Any]) -> dict[str, Any]:
        assert self.pipeline is not None
        if self.audit is None or call.method not in AUDITED_METHODS:
            await self.pipeline.identify(call)
            result: dict[str, Any] = await handler(call)
            return result
        # No answer without its record: the record is written (and durable) before the caller
        # hears anything; if it cannot be, the caller gets audit_unavailable instead.
        try:
            await self.pipeline.identify(call)
            self.audit.require_ready()
            result = await handler(call)
        except BaseException as exc:
            await asyncio.shield(self._record(call, None, exc))
            raise
        await asyncio.shield(self._record(call, result, None))
        return result

    def _observe(self, call: Call, result: dict[str, Any] | None, error: BaseException | None) -> None:
        """How the request ended, for its span and the metrics (the audit record has its own)."""
        outcome = call_outcome(result, error)
        trace = call.trace
        principal = call.principal
        if principal is not None:
            trace.set_principal(principal.id, principal.tenant)
        target = call.target
        public = None
        if target is not None:
            if target.kind in ("tool", "prompt"):
                public = str(target.resource.get("id", target.name))
            trace.set_target(target.upstream, public)
        trace.outcome(outcome.outcome, fault=outcome.fault)
        if self.decision_feed is not None and call.method in OBSERVED_METHODS:
            self.decision_feed(call, outcome.outcome)
        metrics = self.metrics
        if metrics is None or call.method not in OBSERVED_METHODS:
            return
        decision = call.decision
        server = target.upstream if target is not None else None
        metrics.observe_call(
            server=server,
            tool=public,
            effect=decision.effect.value if decision is not None else "none",
            outcome=outcome.outcome,
            method=call.method,
        )
        if decision is not None:
            metrics.observe_decision(decision.engine, decision.latency_ms / 1000)
        if server is not None and call.upstream_ms is not None:
            metrics.observe_upstream(server, call.upstream_ms / 1000)

    async def _record(self, call: Call, result: dict[str, Any] | None, error: BaseException | None) -> None:
        assert self.audit is not None
        if isinstance(error, asyncio.CancelledError) and call.decision is None:
            return  # cancelled before anything was decided: nothing happened to record
        listing = {"visible": call.listed} if call.listed is not None else None
        await self.audit.request(call, result, error, listing=listing, trace_id=call.trace.trace_id)

    async def handle_stateless(self, call: Call, waiter: Relay) -> dict[str, Any]:
        """A stateless-era request: what an upstream asks the caller becomes an InputRequiredResult round."""
        if call.method in INPUT_REQUIRED_METHODS:
            return await self.continuations.run(call, self.handle, waiter)
        return await self.handle(call)

    async def _routed(self, call: Call) -> dict[str, Any]:
        assert self.pipeline is not None
        return await self.pipeline.run(call)

    async def _ping(self, call: Call) -> dict[str, Any]:
        return {}

    def _page(self, call: Call, items: list[dict[str, Any]], key: str) -> dict[str, Any]:
        try:
            chunk, cursor = page(items, call.params.get("cursor"), self._page_size, self.catalog.version)
        except ValueError as exc:
            raise InvalidParams(f"{call.method}: {exc}") from None
        result: dict[str, Any] = {key: chunk}
        if cursor is not None:
            result["nextCursor"] = cursor
        return result

    async def _visible(self, call: Call, kind: str) -> list[dict[str, Any]]:
        assert self.visibility is not None and call.principal is not None
        facts = CallFacts(call.transport, call.protocol_version, call.session.id if call.session else None)
        items = await self.visibility.visible(kind, call.principal, facts)
        call.listed = len(items)
        return items

    async def _list_tools(self, call: Call) -> dict[str, Any]:
        return self._page(call, await self._visible(call, "tools"), "tools")

    async def _list_prompts(self, call: Call) -> dict[str, Any]:
        return self._page(call, await self._visible(call, "prompts"), "prompts")

    async def _list_resources(self, call: Call) -> dict[str, Any]:
        return self._page(call, await self._visible(call, "resources"), "resources")

    async def _list_templates(self, call: Call) -> dict[str, Any]:
        return self._page(call, await self._visible(call, "resource_templates"), "resourceTemplates")

    async def _set_level(self, call: Call) -> dict[str, Any]:
        level = call.params.get("level")
        if level not in LOG_LEVELS:
            raise InvalidParams(f"logging/setLevel: 'level' must be one of {', '.join(LOG_LEVELS)}")
        if call.session is not None:
            call.session.log_level = level
        return {}

    async def _subscribe(self, call: Call) -> dict[str, Any]:
        assert self.pipeline is not None
        uri = call.params.get("uri")
        await self.pipeline.admit(call)  # every subscriber is checked, even when the upstream already sends
        if call.session is None or not isinstance(uri, str) or uri in call.session.subscriptions:
            return {}
        await self._acquire_subscription(call)
        call.session.subscriptions.add(uri)
        return {}

    async def _unsubscribe(self, call: Call) -> dict[str, Any]:
        uri = call.params.get("uri")
        session = call.session
        if session is None or not isinstance(uri, str) or uri not in session.subscriptions:
            return {}
        session.subscriptions.discard(uri)
        await self._release_subscription(uri)
        return {}

    async def _acquire_subscription(self, call: Call) -> None:
        """Subscribe upstream when the first caller subscribes to a URI."""
        assert self.pipeline is not None
        uri = call.params["uri"]
        count = self._subscribed.get(uri, 0)
        if count == 0:
            if call.target is None:
                await self.pipeline.admit(call)
            await self.pipeline.forward(call)
        self._subscribed[uri] = count + 1

    async def _release_subscription(self, uri: str) -> None:
        """Unsubscribe upstream when the last caller leaves a URI."""
        assert self.pipeline is not None
        left = self._subscribed.get(uri, 0) - 1
        if left > 0:
            self._subscribed[uri] = left
            return
        self._subscribed.pop(uri, None)
        call = internal_call("resources/unsubscribe", {"uri": uri})
        try:
            await self.pipeline.run(call)
        except Exception as exc:  # the caller is gone; the upstream may send a few more updates
            log.debug("unsubscribing %s upstream failed: %s", uri, exc)

    async def open_listen(self, listen: ListenStream, template: Call) -> None:
        """Register a 2026-07-28 listen stream; subscribe upstream to the URIs it asks for."""
        uris = listen.notifications.get("resourceSubscriptions") or []
        acquired: list[str] = []
        try:
            for uri in uris:
                call = internal_call("resources/subscribe", {"uri": uri}, like=template)
                await self._acquire_subscription(call)
                acquired.append(uri)
        except BaseException:
            for uri in acquired:
                await self._release_subscription(uri)
            raise
        self.listens.add(listen)

    async def close_listen(self, listen: ListenStream) -> None:
        self.listens.discard(listen)
        for uri in listen.notifications.get("resourceSubscriptions") or []:
            await self._release_subscription(uri)

    # -- caller notifications --------------------------------------------------------------

    def handle_notification(self, session: DownstreamSession | None, message: Message) -> None:
        method = message.get("method")
        params = message.get("params") or {}
        if session is None:
            return
        if method == "notifications/initialized":
            session.initialized = True
        elif method == "notifications/cancelled":
            request_id = params.get("requestId")
            task = session.in_flight.get(request_id)
            if task is not None:
                session.cancel_requested.add(request_id)
                task.cancel()
        elif method == "notifications/roots/list_changed":
            for upstream in self.upstreams.values():
                conn = upstream.session_connection(session) if upstream.config.relay_roots else None
                if conn is not None:
                    self._spawn(conn.notify("notifications/roots/list_changed"))

    async def session_closed(self, session: DownstreamSession) -> None:
        for uri in list(session.subscriptions):
            await self._release_subscription(uri)
        for upstream in self.upstreams.values():
            if upstream.config.isolation == "per_session":
                await upstream.release_session(session)

    # -- what upstreams send on their own (UpstreamEvents) -----------------------------------

    def upstream_notification(
        self, conn: UpstreamConnection, message: Message, call: PendingCall | None
    ) -> None:
        method = message.get("method", "")
        params = message.get("params") or {}
        upstream = self.upstreams.get(conn.name)
        if method in _LIST_CHANGED:
            if upstream is not None and conn.owner is None:  # the supervisor's (or an instance's) own
                self._spawn(upstream.refresh())
        elif method == "notifications/resources/updated":
            uri = params.get("uri")
            if isinstance(uri, str) and upstream is not None:
                public = public_uri(conn.name, uri, upstream.config.namespace)
                self._resource_updated(public, {**params, "uri": public})
        elif method == "notifications/message":
            self._relay_log(conn, message, call)
        elif method == "notifications/elicitation/complete":
            session = conn.owner if isinstance(conn.owner, DownstreamSession) else None
            if call is not None and call.relay is not None:
                call.relay.notify(message)
            elif session is not None and session.standalone is not None:
                session.standalone.notify(message)
        else:
            log.debug("upstream %s: notification %s not relayed", conn.name, method)

    def _relay_log(self, conn: UpstreamConnection, message: Message, call: PendingCall | None) -> None:
        level = (message.get("params") or {}).get("level")
        relay = call.relay if call is not None else None
        session = relay.session if relay is not None else None
        if session is None and isinstance(conn.owner, DownstreamSession):
            session = conn.owner
        if not isinstance(session, DownstreamSession) or not session.wants_log(level):
            log.debug("upstream %s: log message not relayed (no caller to attribute it to)", conn.name)
            return
        if relay is not None:
            relay.notify(message)
        elif session.standalone is not None:
            session.standalone.notify(message)

    async def upstream_request(
        self, conn: UpstreamConnection, message: Message, call: PendingCall | None
    ) -> dict[str, Any]:
        method = message.get("method", "")
        capability = CAPABILITY_FOR_REQUEST.get(method)
        if capability is None:
            raise UpstreamRpcError(
                {"code": METHOD_NOT_FOUND, "message": f"the broker does not relay {method}"}
            )
        relay = call.relay if call is not None else None
        session = relay.session if relay is not None else None
        if session is None and isinstance(conn.owner, DownstreamSession):
            session = conn.owner
        params = message.get("params")
        if relay is not None and session is None:
            # A stateless caller: its relay makes this an InputRequiredResult round, or says why not.
            return await relay.request(method, params)
        if not isinstance(session, DownstreamSession):
            raise UpstreamRpcError(
                {
                    "code": INTERNAL_ERROR,
                    "message": f"the broker cannot tell which caller {method} is for: the caller uses the "
                    "stateless protocol, or several calls share this upstream (set isolation: per_session)",
                }
            )
        if not session.can_receive(capability):
            raise UpstreamRpcError(
                {
                    "code": METHOD_NOT_FOUND,
                    "message": f"the caller did not declare the {capability} capability",
                }
            )
        if relay is not None:
            return await relay.request(method, params)
        if session.standalone is None:
            raise UpstreamRpcError(
                {"code": INTERNAL_ERROR, "message": "the caller has no open stream to receive the request"}
            )
        return await session.send_request(method, params, session.standalone.notify)

    # -- fan-out -----------------------------------------------------------------------------

    def _resource_updated(self, uri: str, params: dict[str, Any]) -> None:
        message = jsonrpc.notification("notifications/resources/updated", params)
        for session in self.sessions:
            if uri in session.subscriptions and session.standalone is not None:
                session.standalone.notify(message)
        for listen in self.listens:
            if listen.wants("notifications/resources/updated", uri):
                listen.deliver(message)

    def broadcast_list_changed(self, method: str) -> None:
        message = jsonrpc.notification(method)
        for session in self.sessions:
            if session.standalone is not None:
                session.standalone.notify(message)
        for listen in self.listens:
            if listen.wants(method):
                listen.deliver(message)

    # -- upstream availability (UpstreamListener) ----------------------------------------------

    def upstream_ready(self, upstream: Upstream, listing: UpstreamListing) -> None:
        if self.upstreams.get(upstream.name) is not upstream:
            return  # a supervisor a config reload replaced
        removal = self._removals.pop(upstream.name, None)
        if removal is not None:
            removal.cancel()
        before = (
            self.catalog.tool_list,
            self.catalog.prompt_list,
            self.catalog.resource_list,
            self.catalog.template_list,
        )
        if self.registry is not None:
            check = self.registry.guard.check_listing(
                upstream.name, listing, namespace=upstream.config.namespace
            )
            self._registry_changed(check)
            for other in sorted(check.affected_servers - {upstream.name}):
                self._reoffer(other)
        problems = self.catalog.set_offer(self._offer(upstream, listing))
        for problem in problems:
            log.error("catalog: %s", problem)
        self._announce_changes(before)

    def _offer(self, upstream: Upstream, listing: UpstreamListing) -> UpstreamOffer:
        """What the catalog gets of an upstream: with the tool registry, without the items it
        holds back, and with each item's `pinned` and `flags` for policies."""
        hidden: set[tuple[str, str]] = set()
        fields: dict[tuple[str, str], dict[str, Any]] = {}
        if self.registry is not None:
            guard = self.registry.guard
            for kind in KINDS:
                singular = KIND_SINGULAR[kind]
                for item in getattr(listing, kind):
                    key = item_key(kind, item)
                    if key is None:
                        continue
                    verdict = guard.verdict(upstream.name, kind, key)
                    if verdict is None or verdict.quarantined:
                        hidden.add((singular, key))
                    else:
                        fields[(singular, key)] = verdict.resource_fields()
        return UpstreamOffer(
            upstream.name,
            upstream.config.namespace,
            listing.tools,
            listing.resources,
            listing.resource_templates,
            listing.prompts,
            tenants=upstream.config.tenants,
            tags=upstream.config.tags,
            tool_tags=upstream.config.tool_tags,
            hidden=frozenset(hidden),
            fields=fields,
        )

    def _reoffer(self, name: str) -> None:
        upstream = self.upstreams.get(name)
        if upstream is not None and upstream.state is UpstreamState.READY:
            self.catalog.set_offer(self._offer(upstream, upstream.listing))

    def registry_reloaded(self, checks: list[ListingCheck]) -> None:
        """New pins: every upstream's items are judged again, lists change accordingly."""
        before = (
            self.catalog.tool_list,
            self.catalog.prompt_list,
            self.catalog.resource_list,
            self.catalog.template_list,
        )
        for check in checks:
            self._registry_changed(check)
        for name in self.upstreams:
            self._reoffer(name)
        self._announce_changes(before)

    def _registry_changed(self, check: ListingCheck) -> None:
        if self.metrics is not None and self.registry is not None:
            self.metrics.registry_changed(
                check.server,
                newly_quarantined=len(check.newly_quarantined),
                quarantined_now=sum(1 for v in self.registry.guard.verdicts() if v.quarantined),
            )
        for verdict in check.newly_quarantined:
            log.warning(
                "registry: %s %s of upstream %s quarantined: %s",
                verdict.kind,
                verdict.key,
                verdict.server,
                verdict.reason,
            )
        for verdict in check.released:
            log.info("registry: %s %s of upstream %s released", verdict.kind, verdict.key, verdict.server)
        if self.audit is not None and (check.newly_quarantined or check.released):
            self._spawn(self.audit.registry(check))

    def replace_upstreams(self, upstreams: Mapping[str, Upstream], order: list[str]) -> None:
        """After a config reload: the upstreams now configured; the catalog keeps only their offers."""
        before = (
            self.catalog.tool_list,
            self.catalog.prompt_list,
            self.catalog.resource_list,
            self.catalog.template_list,
        )
        gone = [
            name
            for name in self.upstreams
            if name not in upstreams or upstreams[name] is not self.upstreams[name]
        ]
        for name in gone:
            timer = self._removals.pop(name, None)
            if timer is not None:
                timer.cancel()
            if self.registry is not None:
                self._registry_changed(self.registry.guard.forget(name))
        self.upstreams = dict(upstreams)
        self.catalog.set_upstreams(order, {name: u.config.namespace for name, u in upstreams.items()})
        self._announce_changes(before)

    def upstream_down(self, upstream: Upstream, reason: str) -> None:
        if upstream.name in self._removals:
            return
        loop = asyncio.get_running_loop()
        self._removals[upstream.name] = loop.call_later(REMOVE_AFTER_DOWN_SECONDS, self._remove, upstream)

    def _remove(self, upstream: Upstream) -> None:
        self._removals.pop(upstream.name, None)
        if upstream.state is UpstreamState.READY or self.upstreams.get(upstream.name) is not upstream:
            return  # back up, or replaced by a config reload
        before = (
            self.catalog.tool_list,
            self.catalog.prompt_list,
            self.catalog.resource_list,
            self.catalog.template_list,
        )
        self.catalog.remove(upstream.name)
        log.warning("upstream %s: still down; its tools, resources and prompts are withdrawn", upstream.name)
        self._announce_changes(before)

    def _announce_changes(self, before: tuple[list[Any], ...]) -> None:
        after = (
            self.catalog.tool_list,
            self.catalog.prompt_list,
            self.catalog.resource_list,
            self.catalog.template_list,
        )
        if before[0] != after[0]:
            self.broadcast_list_changed("notifications/tools/list_changed")
        if before[1] != after[1]:
            self.broadcast_list_changed("notifications/prompts/list_changed")
        if before[2] != after[2] or before[3] != after[3]:
            self.broadcast_list_changed("notifications/resources/list_changed")

    def availability(self, upstream: str) -> str | None:
        sup = self.upstreams.get(upstream)
        if sup is None or sup.state is UpstreamState.READY:
            return None
        return sup.last_error or sup.state.value

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        self.continuations.close()
        for handle in self._removals.values():
            handle.cancel()
        for task in list(self._tasks):
            task.cancel()


class NullRelay:
    """The relay of a call the broker makes on its own: nobody to notify or ask."""

    session = None
    client_capabilities: dict[str, Any] = {}

    def notify(self, message: Message) -> None:
        pass

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        raise UpstreamRpcError({"code": INTERNAL_ERROR, "message": "no caller to relay this request to"})


def internal_call(method: str, params: dict[str, Any], like: Call | None = None) -> Call:
    """A call the broker makes on its own behalf (or on behalf of `like`'s caller)."""
    return Call(
        method=method,
        params=params,
        request_id=f"broker:{method}",
        protocol_version=like.protocol_version if like else "",
        transport=like.transport if like else "internal",
        relay=NullRelay(),
        session=like.session if like else None,
        client_capabilities=like.client_capabilities if like else {},
    )
