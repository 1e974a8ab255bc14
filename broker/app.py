"""The composition root: builds every component from one config and wires them together.

No other module reads the config as a whole or constructs another layer's objects;
everything is passed in from here, so tests can build the same graph with real parts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from broker.approval.api import approval_routes
from broker.approval.approvals import ApprovalRefused, Approvals, ApprovalSettings
from broker.approval.model import Approval
from broker.approval.store import ApprovalStore, ApprovalStoreError, SqliteApprovalStore
from broker.approval.webhook import ApprovalWebhook
from broker.audit.file_sink import FileAuditSink
from broker.audit.redact import SecretRedactor
from broker.audit.signing import CheckpointSigner
from broker.audit.sink import AuditSink, AuditUnavailable
from broker.audit.trail import AuditTrail
from broker.catalog.catalog import Catalog
from broker.config import BrokerConfig, ConfigError, PolicyConfig, UpstreamConfig, load_config, resolve_value
from broker.dashboard.feed import DecisionFeed
from broker.front.http import LOOPBACK_NAMES, McpEndpoint, Receive, Scope, Send
from broker.gateway.gateway import Gateway
from broker.gateway.pipeline import build_pipeline
from broker.gateway.sessions import DownstreamSession, SessionRegistry
from broker.gateway.stages.traffic import Traffic
from broker.gateway.visibility import Visibility
from broker.identity.authenticator import Authenticator, InsufficientScope, Unauthenticated
from broker.identity.jwt import IssuerConfig, JwtVerifier
from broker.identity.principal import Principal
from broker.policy.cedar import CedarEngine
from broker.policy.cedar_source import policy_files
from broker.policy.engine import LoadResult, PolicyEngine, PolicyLoadError
from broker.policy.point import PolicyPoint, WatchedFiles
from broker.policy.version import policy_version
from broker.registry import Registry, build_registry
from broker.registry.confusables import ConfusablesUnavailable
from broker.registry.pins import LockFileError, PinStatus, load_pins
from broker.telemetry.endpoint import metrics_route
from broker.telemetry.metrics import APPROVAL_OUTCOMES, BrokerMetrics
from broker.telemetry.tracing import Tracing, TracingConfig, TracingError
from broker.traffic.breaker import BreakerBoard
from broker.traffic.cache import ResponseCache
from broker.traffic.concurrency import ConcurrencyGate
from broker.traffic.quota import QuotaBook
from broker.traffic.ratelimit import RateLimiter
from broker.traffic.ratestore import rate_store_for
from broker.upstream.group import Upstream, UpstreamGroup, member_configs
from broker.upstream.supervisor import UpstreamState, UpstreamSupervisor

log = logging.getLogger("broker")


def broker_version() -> str:
    try:
        return version("mcp-authz-broker")
    except PackageNotFoundError:
        return "0.0.0+local"


@dataclass(frozen=True)
class ConfigReload:
    """What a config reload did (or why it did nothing)."""

    ok: bool
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    """Sections that differ from the running config but are only read at start."""
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.ok:
            return "refused: " + "; ".join(self.problems)
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("restarted", self.changed),
            )
            if names
        ]
        return "; ".join(parts) or "no upstream changed"


class StartupError(Exception):
    """The broker must not start; each problem says why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Broker:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.version = broker_version()
        enabled = [u for u in config.upstreams if u.enabled]
        self.catalog = Catalog([u.name for u in enabled], {u.name: u.namespace for u in enabled})
        self.sessions = SessionRegistry(
            idle_timeout=config.http.session_idle_timeout,
            max_sessions=config.http.max_sessions,
            on_closed=self._session_closed,
        )
        self.gateway = Gateway(
            server_name=config.server.name,
            server_version=self.version,
            instructions=config.server.instructions,
            catalog=self.catalog,
            sessions=self.sessions,
            page_size=config.catalog.page_size,
        )
        self._config_lock = asyncio.Lock()
        self.upstreams = {u.name: self._supervisor(u) for u in enabled}
        engine, watched = make_engine(config.policy)
        self.policy = PolicyPoint(
            engine, watched=watched if config.policy.watch else None, interval=config.policy.watch_interval
        )
        self.principal = Principal.from_config(config.identity.default_principal)
        self.authenticator = make_authenticator(config)
        self.resource_url = resource_url(config)
        self.approvals = make_approvals(config, self.policy)
        self.metrics = BrokerMetrics(max_tool_labels=config.metrics.max_tool_labels)
        self._tracing_problem: str | None = None
        try:
            self.tracing = Tracing(config.tracing, version=self.version)
        except TracingError as exc:
            self.tracing = Tracing(TracingConfig())
            self._tracing_problem = f"tracing cannot start: {exc}"
        self.audit = make_audit(config, self.metrics)
        self.registry: Registry | None = None
        self._registry_problem: str | None = None
        try:
            self.registry = build_registry(config.registry, [u.name for u in enabled])
        except (LockFileError, ConfusablesUnavailable) as exc:
            self._registry_problem = f"the tool registry cannot start: {exc}"
        if self.approvals is not None:
            self.approvals.on_event = self._approval_event
        self.policy.on_reload = self._policy_reloaded
        self.traffic = make_traffic(config, self.metrics)
        self.metrics.watch_budgets(self.traffic.quotas.snapshot)
        pipeline = build_pipeline(
            self.catalog,
            self.upstreams,
            self.gateway.availability,
            principal=None if self.authenticator is not None else self.principal,
            policy=self.policy,
            approvals=self.approvals,
            progress_interval=config.approvals.progress_interval,
            registry=self.registry,
            traffic=self.traffic,
        )
        self.gateway.attach(
            pipeline,
            self.upstreams,
            Visibility(self.policy, self.catalog),
            self.audit,
            self.registry,
            metrics=self.metrics,
            tracing=self.tracing,
        )
        self.decision_feed: DecisionFeed | None = None
        if config.dashboard.enabled:
            self.decision_feed = DecisionFeed(config.dashboard.feed_size)
            self.gateway.decision_feed = self.decision_feed.record

    async def _approval_event(self, event: str, approval: Approval) -> None:
        """An approval was requested or ended: the pending gauge, then the audit record."""
        if event == "requested":
            self.metrics.approval_opened()
        elif event in APPROVAL_OUTCOMES:
            waited = (approval.decided_at or time.time()) - approval.created_at
            self.metrics.approval_closed(event, max(0.0, waited))
        if self.audit is not None:
            await self.audit.approval(event, approval)

    async def _policy_reloaded(self, result: LoadResult, previous: str, trigger: str) -> None:
        """A reload was tried: pins read again (kept with the policies), metrics, the audit record."""
        self._reload_pins()
        engine = self.policy.engine.name
        self.metrics.policy_reloaded(engine, ok=result.ok)
        if result.ok:
            self.metrics.set_build_info(
                version=self.version, policy_version=result.policy_version, engine=engine
            )
        if self.audit is not None:
            await self.audit.reload(
                ok=result.ok,
                engine=engine,
                policy_version=result.policy_version,
                previous=previous,
                trigger=trigger,
                message=result.message,
            )

    def _supervisor(self, upstream: UpstreamConfig) -> Upstream:
        """One supervised upstream; with several instances (`urls`, `instances`) a group of them."""
        if upstream.balanced:
            return UpstreamGroup(
                upstream,
                member_configs(upstream, urls=upstream.urls, instances=upstream.instances),
                self.gateway,
                self.gateway,
                client_name=self.config.server.name,
                client_version=self.version,
                balance=upstream.balance,
            )
        return UpstreamSupervisor(
            upstream,
            self.gateway,
            self.gateway,
            client_name=self.config.server.name,
            client_version=self.version,
        )

    async def reload_config(self, trigger: str) -> ConfigReload:
        """Read the config file again and apply its upstreams: added ones start, removed ones stop,
        changed ones restart; untouched upstreams and their sessions carry on. A file with any
        problem changes nothing. Other sections take effect at the next start (reported)."""
        async with self._config_lock:
            source = self.config.source
            if source is None:
                return ConfigReload(False, problems=["the broker was not started from a config file"])
            try:
                new = load_config(source)
            except ConfigError as exc:
                log.error("config reload (%s) refused, the running config stays:\n%s", trigger, exc)
                return ConfigReload(False, problems=list(exc.problems))
            old = {u.name: u for u in self.config.upstreams if u.enabled}
            wanted = {u.name: u for u in new.upstreams if u.enabled}
            removed = sorted(set(old) - set(wanted))
            added = sorted(set(wanted) - set(old))
            changed = sorted(name for name in set(old) & set(wanted) if old[name] != wanted[name])
            await asyncio.gather(*(self.upstreams[name].stop() for name in removed + changed))
            for name in removed + changed:
                del self.upstreams[name]  # the same dict Forward reads: no call goes to a stopped one
            fresh = {name: self._supervisor(wanted[name]) for name in added + changed}
            self.upstreams.update(fresh)
            order = [u.name for u in new.upstreams if u.enabled]
            ordered = {name: self.upstreams[name] for name in order}
            self.upstreams.clear()
            self.upstreams.update(ordered)
            self.gateway.replace_upstreams(self.upstreams, order)
            if self.traffic.breakers is not None:
                for name in removed + changed:
                    self.traffic.breakers.forget(name)
            self.metrics.declare(
                servers=list(fresh), engine=self.policy.engine.name, audit_sinks=(self._audit_sink_label(),)
            )
            await asyncio.gather(*(u.start() for u in fresh.values()))
            restart = [
                f.name
                for f in dataclasses.fields(new)
                if f.name not in ("upstreams", "source")
                and getattr(new, f.name) != getattr(self.config, f.name)
            ]
            self.config = dataclasses.replace(self.config, upstreams=new.upstreams)
            result = ConfigReload(True, added=added, removed=removed, changed=changed, restart_needed=restart)
            log.info("config reload (%s): %s", trigger, result.summary())
            if restart:
                log.warning("config reload: changes to %s take effect at the next start", ", ".join(restart))
            return result

    async def reload(self, trigger: str) -> None:
        """SIGHUP: the config file's upstreams, then the policies (and the registry's pins)."""
        await self.reload_config(trigger)
        await self.policy.reload(trigger)

    def _audit_sink_label(self) -> str:
        return "postgresql" if self.config.audit.sink == "postgresql" else "jsonl"

    def _reload_pins(self) -> None:
        """Policies reloaded: the lock file (kept with them) is read again; a broken one keeps the pins."""
        if self.registry is None:
            return
        lock = Path(self.config.registry.lock_file)
        try:
            pins = load_pins(lock)
        except LockFileError as exc:
            log.error("registry: %s is not usable, keeping the pins in force:\n%s", lock, exc)
            return
        self.gateway.registry_reloaded(self.registry.guard.reload_pins(pins))

    async def _session_closed(self, session: DownstreamSession) -> None:
        await self.gateway.session_closed(session)

    async def start(self) -> None:
        """Open the audit trail, load the policies, start every upstream (in parallel); refuse to run
        on any problem."""
        problems = [p for p in (self._registry_problem, self._tracing_problem) if p is not None]
        if problems:
            raise StartupError(problems)
        registry = self.registry
        if (
            registry is not None
            and not registry.guard.pins.servers
            and self.config.registry.unpinned == "allow"
        ):
            log.warning(
                "registry: no pins in %s: tools are checked but not pinned; "
                "`mcp-broker registry pin -c <config>` pins them (docs/registry.md)",
                self.config.registry.lock_file,
            )
        if self.audit is not None:
            try:
                await self.audit.start()
            except AuditUnavailable as exc:
                raise StartupError([f"the audit trail cannot be written: {exc.message}"]) from None
        try:
            await self.policy.start()
        except PolicyLoadError as exc:
            if self.audit is not None:
                await self.audit.close()
            raise StartupError([f"no valid policy set: {line}" for line in str(exc).splitlines()]) from None
        if self.audit is not None:
            await self.audit.reload(
                ok=True,
                engine=self.policy.engine.name,
                policy_version=self.policy.policy_version,
                previous=None,
                trigger="startup",
                message="",
            )
        self.metrics.declare(
            servers=list(self.upstreams),
            engine=self.policy.engine.name,
            audit_sinks=(self._audit_sink_label(),),
        )
        self.metrics.set_build_info(
            version=self.version, policy_version=self.policy.policy_version, engine=self.policy.engine.name
        )
        if self.approvals is not None:
            try:
                await self.approvals.start()
            except ApprovalStoreError as exc:
                await self.policy.stop()
                raise StartupError([str(exc)]) from None
        await asyncio.gather(*(u.start() for u in self.upstreams.values()))
        problems = self.catalog.problems
        if problems:
            await self.stop()
            raise StartupError(problems)
        ready = [n for n, u in self.upstreams.items() if u.state is UpstreamState.READY]
        log.info(
            "broker %s: %d/%d upstream(s) ready (%s); %d tools, %d resources, %d prompts",
            self.version,
            len(ready),
            len(self.upstreams),
            ", ".join(ready) or "none",
            len(self.catalog.tool_list),
            len(self.catalog.resource_list),
            len(self.catalog.prompt_list),
        )
        self.sessions.start_reaper()

    def stopping(self) -> None:
        """A stop is under way (signal received): calls waiting for approvals end, approvals stay."""
        if self.approvals is not None:
            self.approvals.prepare_shutdown()
        if self.decision_feed is not None:
            self.decision_feed.close()  # open live-decision streams end; browsers reconnect

    async def stop(self) -> None:
        self.stopping()
        await self.sessions.stop()
        await asyncio.gather(*(u.stop() for u in self.upstreams.values()), return_exceptions=True)
        await self.gateway.aclose()
        if self.approvals is not None:
            await self.approvals.close()
        await self.policy.stop()
        if self.authenticator is not None:
            await self.authenticator.aclose()
        await self.traffic.aclose()
        if self.audit is not None:
            await self.audit.close()  # last: everything that could still be recorded has been
        self.tracing.shutdown()  # exports the spans still batched

    def readiness(self) -> dict[str, Any]:
        upstreams: dict[str, dict[str, Any]] = {
            name: {"state": u.state.value, "last_error": u.last_error, "restarts": u.restarts}
            for name, u in self.upstreams.items()
        }
        for name, u in self.upstreams.items():
            if isinstance(u, UpstreamGroup):
                upstreams[name]["instances"] = u.status()
        audit = self.audit.status() if self.audit is not None else None
        return {
            "ready": self.policy.policy_version != "none" and (audit is None or audit.ready),
            "policy": self.policy.status(),
            "audit": audit.to_json() if audit is not None else {"state": "disabled"},
            "registry": self._registry_status(),
            "traffic": self.traffic.status(),
            "catalog": {
                "version": self.catalog.version,
                "tools": len(self.catalog.tool_list),
                "problems": self.catalog.problems,
            },
            "upstreams": upstreams,
            "sessions": len(self.sessions),
        }

    def _registry_status(self) -> dict[str, Any]:
        if self.registry is None:
            return {"state": "disabled"}
        verdicts = self.registry.guard.verdicts()
        return {
            "lock_file": str(self.config.registry.lock_file),
            "unpinned": self.config.registry.unpinned,
            "servers": {
                name: {
                    status.value: len(state.by_status(status))
                    for status in PinStatus
                    if state.by_status(status)
                }
                for name, state in self.registry.guard.states().items()
            },
            "quarantined": [v.to_json() for v in verdicts if v.quarantined],
            "flagged": len([v for v in verdicts if v.flags]),
        }

    def http_app(self) -> HttpApp:
        return HttpApp(self)


def make_audit(config: BrokerConfig, metrics: BrokerMetrics | None = None) -> AuditTrail | None:
    settings = config.audit
    if not settings.enabled:
        log.warning("audit: disabled (audit.enabled: false): no request will have a record")
        return None
    signer = CheckpointSigner.from_pem_file(settings.signing_key) if settings.signing_key else None
    on_write = None
    if metrics is not None:
        observed = metrics

        kind = "postgresql" if settings.sink == "postgresql" else "jsonl"

        def on_write(records: int, seconds: float, ok: bool) -> None:
            if ok:
                observed.observe_audit_write(seconds, kind)
            else:
                observed.audit_write_failed(kind)

    sink: AuditSink
    if settings.sink == "postgresql":
        from broker.audit.pg_sink import PostgresAuditSink  # only replicas sharing a database load psycopg

        pg = settings.postgresql
        assert pg is not None, "the config checks the postgresql sink has its settings"
        sink = PostgresAuditSink(
            pg.dsn,
            timeout=pg.timeout,
            retry_interval=settings.retry_interval,
            synchronous_commit=pg.synchronous_commit,
            on_write=on_write,
        )
    else:
        sink = FileAuditSink(settings, signer=signer, on_write=on_write)
    return AuditTrail(sink, SecretRedactor(), include_request=settings.include_request)


def make_traffic(config: BrokerConfig, metrics: BrokerMetrics) -> Traffic:
    """Rate limits, budgets, caps, breakers and cache from `traffic:` (all off when absent)."""
    settings = config.traffic
    caps = settings.concurrency
    cached = settings.cache
    cache = (
        ResponseCache(cached.ttl, cached.max_entries, cached.shared, cached.tools) if cached.enabled else None
    )
    return Traffic(
        limiter=RateLimiter(settings.rate_limits, rate_store_for(settings.storage)),
        quotas=QuotaBook(settings.quotas),
        gate=ConcurrencyGate(caps.per_upstream, caps.per_principal, caps.max_waiters, caps.max_wait),
        breakers=BreakerBoard(settings.breakers) if settings.breakers is not None else None,
        cache=cache,
        metrics=metrics,
    )


def make_approvals(config: BrokerConfig, policy: PolicyPoint) -> Approvals | None:
    settings = config.approvals
    if not settings.enabled:
        return None
    webhook = None
    if settings.webhook is not None:
        webhook = ApprovalWebhook(
            settings.webhook.url, settings.webhook.resolved_headers(), settings.webhook.timeout
        )
    store: ApprovalStore
    if settings.store == "postgresql":
        from broker.approval.pg_store import PostgresApprovalStore  # only for replicas sharing a database

        pg = settings.postgresql
        assert pg is not None, "the config checks the postgresql store has its settings"
        store = PostgresApprovalStore(
            pg.dsn,
            max_connections=pg.max_connections,
            timeout=pg.timeout,
            statement_timeout=pg.statement_timeout,
        )
    elif settings.store == "redis":
        from broker.approval.redis_store import RedisApprovalStore  # only for replicas sharing a Redis

        rs = settings.redis
        assert rs is not None, "the config checks the redis store has its settings"
        store = RedisApprovalStore(rs.url, timeout=rs.timeout, key_prefix=rs.key_prefix)
    else:
        store = SqliteApprovalStore(settings.path)
    return Approvals(
        store,
        policy,
        ApprovalSettings(timeout=settings.timeout, grant_ttl=settings.grant_ttl),
        webhook=webhook,
        approve_hint="Decide with: mcp-broker approvals approve {id} (or deny {id}).",
    )


def approver_of(broker: Broker) -> Callable[[Request], Awaitable[Principal]]:
    """Who is asking the approvals API: the bearer token's principal, or the local approver on loopback."""
    authenticator = broker.authenticator
    local = broker.config.approvals.local_approver
    local_principal = Principal.from_config(local) if local is not None else None

    async def approver(request: Request) -> Principal:
        if authenticator is not None:
            try:
                return (await authenticator.authenticate(request.headers.get("authorization"))).principal
            except Unauthenticated as exc:
                raise ApprovalRefused(401, f"Unauthorized: {exc.description}") from None
            except InsufficientScope as exc:
                raise ApprovalRefused(403, f"Forbidden: {exc.description}") from None
        if local_principal is None:
            raise ApprovalRefused(
                403,
                "the approvals API needs identity.authentication (approvers with tokens) or "
                "approvals.local_approver (loopback only)",
            )
        if request.client is None or request.client.host not in LOOPBACK_NAMES:
            raise ApprovalRefused(
                403, "without identity.authentication the approvals API answers loopback only"
            )
        return local_principal

    return approver


def make_engine(policy: PolicyConfig) -> tuple[PolicyEngine, WatchedFiles]:
    """The configured policy engine, and the files whose change means a reload."""
    if policy.engine == "cedar":
        cedar = CedarEngine(policy.path, policy.cedar_schema)
        return cedar, lambda: cedar.watched_files
    from broker.policy.opa import OpaEngine  # only OPA deployments load it

    rego = policy.path / "rego"

    def rego_files() -> list[Path]:
        return [p for p in policy_files(rego, "*") if p.suffix in (".rego", ".json", ".yaml")]

    opa = OpaEngine(
        mode=policy.opa.mode,
        policy_dir=rego,
        url=policy.opa.url,
        binary=policy.opa.binary,
        rule=policy.opa.rule,
        timeout=policy.opa.timeout_ms / 1000,
        policy_version=lambda: policy_version(policy.path, rego_files()),
        listen=policy.opa.listen,
        decision_logs=policy.opa.decision_logs,
    )
    return opa, rego_files


def resource_url(config: BrokerConfig) -> str:
    """This broker's resource URL (RFC 9728): configured, or where the HTTP front listens."""
    auth = config.identity.authentication
    if auth is not None and auth.resource:
        return auth.resource
    http = config.http
    host = f"[{http.host}]" if ":" in http.host else http.host
    return f"http://{host}:{http.port}{http.path}"


def metadata_url(resource: str) -> str:
    """Where the protected-resource metadata of `resource` is (RFC 9728 §3.1: path inserted after host)."""
    parts = urlsplit(resource)
    suffix = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{suffix}"


def make_authenticator(config: BrokerConfig) -> Authenticator | None:
    auth = config.identity.authentication
    if auth is None:
        return None
    audience = resource_url(config)
    issuers = []
    for item in auth.jwt:
        secret = resolve_value(item.hs256_secret).encode() if item.hs256_secret is not None else None
        issuers.append(
            IssuerConfig(
                issuer=item.issuer,
                audiences=item.audiences or (audience,),
                algorithms=item.algorithms,
                jwks_url=item.jwks_url,
                jwks_ttl=item.jwks_ttl,
                jwks_refresh_interval=item.jwks_refresh_interval,
                pem_keys=tuple(path.read_bytes() for path in item.public_keys),
                hs256_secret=secret,
                leeway=item.leeway,
                required_claims=item.required_claims,
            )
        )
    mappings = {item.issuer: item.principal for item in auth.jwt}
    return Authenticator(
        verifier=JwtVerifier(issuers) if issuers else None,
        mappings=mappings,
        api_keys={key.sha256: Principal.from_config(key.principal) for key in auth.api_keys},
        required_scopes=auth.required_scopes,
        max_token_bytes=auth.max_token_bytes,
    )


def dashboard_mount(broker: Broker) -> Mount:
    """The dashboard's pages (last among the routes: /admin/*/reload keep their own handlers)."""
    from broker.dashboard.access import DashboardAccess  # only a broker with the dashboard loads Jinja2
    from broker.dashboard.routes import Dashboard

    assert broker.decision_feed is not None
    local = broker.config.approvals.local_approver
    access = DashboardAccess(
        broker.policy, broker.authenticator, Principal.from_config(local) if local is not None else None
    )
    dashboard = Dashboard(
        broker, broker.decision_feed, access, broker.config.dashboard, title=broker.config.server.name
    )
    return dashboard.mount()


class HttpApp:
    """Top-level ASGI app: the MCP path goes straight to the endpoint; the rest is Starlette."""

    def __init__(self, broker: Broker) -> None:
        self._path = broker.config.http.path
        auth = broker.config.identity.authentication
        metadata = metadata_url(broker.resource_url)
        self._endpoint = McpEndpoint(
            broker.gateway,
            broker.sessions,
            broker.config.http,
            authenticator=broker.authenticator,
            resource_metadata=metadata if auth is not None else None,
            audit=broker.audit,
        )
        protected_resource = {
            "resource": broker.resource_url,
            "authorization_servers": list(auth.authorization_servers) if auth else [],
            "scopes_supported": list(auth.scopes_supported) if auth else [],
            "bearer_methods_supported": ["header"],
            "resource_name": broker.config.server.name,
        }

        async def resource_metadata(request: Request) -> JSONResponse:
            if auth is None:
                return JSONResponse(
                    {"error": "this broker does not use token authentication"}, status_code=404
                )
            return JSONResponse(protected_resource)

        async def healthz(request: Request) -> JSONResponse:
            return JSONResponse({"status": "ok"})

        async def readyz(request: Request) -> JSONResponse:
            state = broker.readiness()
            return JSONResponse(state, status_code=200 if state["ready"] else 503)

        async def reload_config(request: Request) -> JSONResponse:
            if request.client is None or request.client.host not in LOOPBACK_NAMES:
                return JSONResponse(
                    {"error": "config reloads are accepted from loopback only"}, status_code=403
                )
            result = await broker.reload_config("admin endpoint")
            return JSONResponse(dataclasses.asdict(result), status_code=200 if result.ok else 422)

        async def reload_policy(request: Request) -> JSONResponse:
            # Until identity is configured there is no admin principal: only this machine may ask.
            if request.client is None or request.client.host not in LOOPBACK_NAMES:
                return JSONResponse(
                    {"error": "policy reloads are accepted from loopback only"}, status_code=403
                )
            result = await broker.policy.reload("admin endpoint")
            body = {"ok": result.ok, "policy_version": result.policy_version, "message": result.message}
            return JSONResponse(body, status_code=200 if result.ok else 422)

        # The bare well-known path, the one for our MCP path, and the one the challenges name
        # (from `resource`, whose path differs behind a path-prefixing proxy).
        metadata_paths = dict.fromkeys(
            [
                "/.well-known/oauth-protected-resource",
                f"/.well-known/oauth-protected-resource{self._path.rstrip('/')}",
                urlsplit(metadata).path,
            ]
        )
        self._other = Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/readyz", readyz),
                Route("/admin/policy/reload", reload_policy, methods=["POST"]),
                Route("/admin/config/reload", reload_config, methods=["POST"]),
                *(
                    [metrics_route(broker.metrics, broker.config.metrics.path)]
                    if broker.config.metrics.enabled
                    else []
                ),
                *(approval_routes(broker.approvals, approver_of(broker)) if broker.approvals else ()),
                *(Route(path, resource_metadata) for path in metadata_paths),
                *([dashboard_mount(broker)] if broker.decision_feed is not None else []),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in (self._path, self._path + "/"):
            await self._endpoint(scope, receive, send)
        else:
            await self._other(scope, receive, send)  # type: ignore[arg-type]
