"""The broker's configuration file: schema validation, clear errors, typed result.

The broker is configured by one YAML file. Nothing starts until the whole file
has passed two stages, so that a typo never turns into a half-running gateway:

1. **Schema** (``schemas/broker-config.schema.json``, JSON Schema 2020-12): shape,
   types, ranges, unknown keys, transport-specific keys. Every problem is
   reported, not just the first, each as ``FILE:LINE: dotted.path: what is wrong``
   with the line found by walking the composed YAML node tree.
2. **Semantics** (this module): things a schema cannot express well or at all:
   URLs and origins that parse, directories that exist, secret references that
   resolve, credentials that must not be written inline.

The result is a tree of frozen dataclasses. Secrets are never stored in it: a
:class:`SecretRef` is resolved again each time the value is needed, so rotating
a token file or an environment variable needs no reload, and a ``repr`` of the
config (in logs, tracebacks) cannot leak a credential.

Adding a top-level section (policy, identity, audit, ...) takes four steps: a
``$defs`` entry plus a property in the schema, a frozen dataclass here, a
``_build_<section>`` function called from :func:`_build_config`, and a field with
a default on :class:`BrokerConfig` (defaults keep existing callers working).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, cast
from urllib.parse import urlsplit

import yaml  # type: ignore[import-untyped, unused-ignore]
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped, unused-ignore]

from broker.audit.config import AuditConfig
from broker.dashboard.settings import DashboardSettings, DashboardSettingsError, dashboard_settings
from broker.postgres import PostgresSettings
from broker.registry.settings import RegistrySettings, registry_settings
from broker.telemetry.tracing import TracingConfig, TracingError
from broker.traffic.settings import TrafficSettings, traffic_settings

__all__ = [
    "DEFAULT_CHILD_ENV_VARS",
    "SCHEMA_PATH",
    "ApiKeyConfig",
    "AuthenticationConfig",
    "BrokerConfig",
    "CatalogConfig",
    "ClaimMappingConfig",
    "ConfigError",
    "ConfigValue",
    "HttpFrontConfig",
    "IdentityConfig",
    "JwtIssuerConfig",
    "LoggingConfig",
    "OpaConfig",
    "PolicyConfig",
    "PrincipalConfig",
    "RestartPolicy",
    "SecretRef",
    "SecretUnavailable",
    "ServerInfoConfig",
    "Timeouts",
    "UpstreamAuthConfig",
    "UpstreamConfig",
    "load_config",
    "load_schema",
    "parse_config",
    "resolve_value",
]

#: Where the schemas live: ``broker/schemas`` (a link to ``<repo>/schemas`` in the source tree,
#: package data in an installed wheel), so an installed broker finds them too.
SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMA_PATH = SCHEMA_DIR / "broker-config.schema.json"
DEFAULT_CEDAR_SCHEMA = SCHEMA_DIR / "mcp.cedarschema"

#: Variables a stdio child gets from the broker's environment when ``inherit_env``
#: is false: enough for interpreters and locale handling to work, nothing that
#: tends to carry credentials (cloud keys, tokens) into third-party servers.
DEFAULT_CHILD_ENV_VARS: frozenset[str] = frozenset(
    {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "SHELL", "SYSTEMROOT"}
)

#: Header / environment variable names whose values are credentials and so must
#: come from ``{env: ...}`` or ``{file: ...}``, never be written in the file.
CREDENTIAL_NAME = re.compile(
    r"authorization|cookie|token|secret|password|passwd|api[-_]?key|credential|private", re.IGNORECASE
)

Transport: TypeAlias = Literal["stdio", "streamable_http", "sse"]
Isolation: TypeAlias = Literal["shared", "per_session", "per_tenant"]
LogFormat: TypeAlias = Literal["text", "json"]

PathPart: TypeAlias = str | int
JsonPath: TypeAlias = tuple[PathPart, ...]

# Human explanations for the schema's regular expressions; jsonschema would only
# say "does not match '^[a-z]...'", which tells the reader nothing.
_PATTERN_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "^/": "must start with '/'",
        "^[a-z][a-z0-9-]{0,31}$": (
            "is not a valid upstream name: use 1-32 lowercase letters, digits and '-', starting with "
            "a letter ('_' is not allowed because '__' separates upstream and tool names)"
        ),
        "^[A-Za-z_][A-Za-z0-9_]*$": (
            "is not a valid environment variable name (letters, digits and '_', not starting with a digit)"
        ),
        "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$": "is not a valid HTTP header name",
        "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$": (
            "is not a valid name: 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
        ),
        "^data(\\.[A-Za-z_][A-Za-z0-9_]*)+$": "is not a data path like data.mcp.authz.decision",
        "^[0-9a-fA-F]{64}$": "is not a hex sha256 (64 hex digits; make one with mcp-broker api-key)",
        "^(memory://$|redis://|rediss://|redis\\+unix://)": "must be memory:// or a redis:// URL",
        "^[^|@]+$": "must not contain '|' or '@'",
        "^[^*]*\\*?$": "is not a name pattern: an exact name, '*', or a prefix ending in '*'",
        "^\\s*[0-9]+\\s*(/|per)\\s*([0-9]+\\s*)?(second|minute|hour|day|month|year)s?\\s*$": (
            "is not a limit like '60/minute' or '1000 per 2 hours'"
        ),
    }
)

# Which transports each transport-specific key belongs to (for error messages).
_TRANSPORT_ONLY_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "command": "stdio",
        "args": "stdio",
        "env": "stdio",
        "inherit_env": "stdio",
        "cwd": "stdio",
        "url": "streamable_http, sse",
        "urls": "streamable_http, sse",
        "headers": "streamable_http, sse",
        "instances": "stdio",
    }
)

_JSON_TYPE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "object": "mapping",
        "array": "list",
        "string": "string",
        "integer": "integer",
        "number": "number",
        "boolean": "boolean",
        "null": "null",
    }
)

_HOST_RE = re.compile(r"^(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::(\d{1,5}))?$")
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"


# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason, one line each.

    Collecting all problems (instead of failing on the first) lets an operator fix
    a file in one edit-run cycle.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class SecretUnavailable(ConfigError):
    """A secret reference could not be resolved (variable unset, file unreadable).

    Raised at use time too, since secrets are re-read on every use and can vanish
    after a successful load.
    """

    def __init__(self, message: str) -> None:
        super().__init__([message])


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True, repr=False)
class SecretRef:
    """A pointer to a secret held outside the config file.

    Exactly one of ``env`` (an environment variable of the broker) or ``file`` (an
    absolute path once loaded) is set. The value is read on every
    :meth:`resolve`, so rotation needs no reload, and never kept on the object,
    so it cannot leak through ``repr`` or pickling of the config.
    """

    env: str | None = None
    file: Path | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise ValueError("SecretRef needs exactly one of env= or file=")

    def __repr__(self) -> str:
        where = f"env={self.env!r}" if self.env is not None else f"file={str(self.file)!r}"
        return f"SecretRef({where}, prefix={self.prefix!r})" if self.prefix else f"SecretRef({where})"

    def describe(self) -> str:
        """Where the secret comes from, for messages (never the value)."""
        return f"environment variable {self.env}" if self.env is not None else f"secret file {self.file}"

    def resolve(self) -> str:
        """Read the secret now and return ``prefix + value``.

        File contents lose their trailing newlines (editors and ``echo`` add one,
        and a newline inside an HTTP header is an error). Raises
        :class:`SecretUnavailable` if the variable is unset or the file unreadable.
        """
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretUnavailable(f"environment variable {self.env} is not set")
            return self.prefix + value
        assert self.file is not None  # guaranteed by __post_init__
        try:
            raw = self.file.read_bytes()
        except OSError as exc:
            raise SecretUnavailable(
                f"secret file {self.file} cannot be read: {exc.strerror or exc}"
            ) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretUnavailable(f"secret file {self.file} is not valid UTF-8") from None
        return self.prefix + text.rstrip("\r\n")


ConfigValue: TypeAlias = str | SecretRef


def resolve_value(v: ConfigValue) -> str:
    """The string to use for a config value: literals as-is, references read now."""
    return v.resolve() if isinstance(v, SecretRef) else v


# --------------------------------------------------------------------------- config types


def _empty_tags() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


def _empty_values() -> Mapping[str, ConfigValue]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Timeouts:
    """Per-upstream time limits in seconds; ``ping_interval == 0`` disables pings."""

    call: float = 60.0
    startup: float = 15.0
    ping_interval: float = 30.0
    ping: float = 5.0
    idle: float = 300.0
    tools: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    """Per-tool deadlines (the upstream's own tool name → seconds) that replace `call`."""

    def for_call(self, kind: str, name: str) -> float:
        """The deadline of one forwarded request: the tool's own, else `call`."""
        return self.tools.get(name, self.call) if kind == "tool" else self.call


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential back-off between restarts of a failed upstream (seconds)."""

    initial_backoff: float = 0.5
    max_backoff: float = 30.0


@dataclass(frozen=True)
class UpstreamAuthConfig:
    """The broker's own OAuth credential for an upstream (client credentials or token exchange)."""

    type: Literal["client_credentials", "token_exchange"]
    token_url: str
    client_id: str
    client_secret: ConfigValue | None = None
    scope: str | None = None
    resource: str | None = None
    audience: str | None = None


@dataclass(frozen=True)
class UpstreamConfig:
    """One upstream MCP server.

    stdio fields (``command`` .. ``cwd``) and HTTP fields (``url``, ``headers``)
    are mutually exclusive; the loader guarantees ``command`` for stdio and
    ``url`` for the HTTP transports. ``env``/``headers`` are read-only mappings
    whose values may be :class:`SecretRef`; use :meth:`child_env` and
    :meth:`resolved_headers` to get strings at the moment of use.
    """

    name: str
    transport: Transport
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, ConfigValue] = field(default_factory=_empty_values, hash=False)
    inherit_env: bool = False
    cwd: Path | None = None
    url: str | None = None
    headers: Mapping[str, ConfigValue] = field(default_factory=_empty_values, hash=False)
    namespace: bool = True
    isolation: Isolation = "shared"
    relay_roots: bool = False
    enabled: bool = True
    timeouts: Timeouts = Timeouts()
    restart: RestartPolicy = RestartPolicy()
    tenants: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tool_tags: Mapping[str, tuple[str, ...]] = field(default_factory=_empty_tags, hash=False)
    auth: UpstreamAuthConfig | None = None
    tenant_headers: Mapping[str, Mapping[str, ConfigValue]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    urls: tuple[str, ...] = ()
    """Several instances of one HTTP server (load balanced); `url` is the first of them."""
    instances: int = 1
    """stdio: copies of the command that run side by side (load balanced)."""
    balance: Literal["round_robin", "least_in_flight"] = "round_robin"

    @property
    def balanced(self) -> bool:
        """Whether calls are spread over several instances (an UpstreamGroup)."""
        return len(self.urls) > 1 or self.instances > 1

    def resolved_tenant_headers(self, tenant: str) -> dict[str, str]:
        """The headers of one tenant's connection; KeyError if that tenant has no credential here."""
        return {name: resolve_value(value) for name, value in self.tenant_headers[tenant].items()}

    def tags_for(self, tool: str) -> tuple[str, ...]:
        """Operator tags of one of this upstream's tools (upstream-wide tags first)."""
        extra = self.tool_tags.get(tool, ())
        return self.tags + tuple(t for t in extra if t not in self.tags) if extra else self.tags

    def child_env(self) -> dict[str, str]:
        """The environment for a stdio child, secrets resolved now.

        Only :data:`DEFAULT_CHILD_ENV_VARS` are passed through unless
        ``inherit_env`` is set, so the broker's own credentials do not reach
        third-party servers by default. Configured ``env`` entries win.
        Raises :class:`SecretUnavailable` if a reference cannot be read.
        """
        if self.inherit_env:
            env = dict(os.environ)
        else:
            env = {name: os.environ[name] for name in sorted(DEFAULT_CHILD_ENV_VARS) if name in os.environ}
        env.update({name: resolve_value(value) for name, value in self.env.items()})
        return env

    def resolved_headers(self) -> dict[str, str]:
        """The extra request headers, secrets resolved now (call on every connect)."""
        return {name: resolve_value(value) for name, value in self.headers.items()}


@dataclass(frozen=True)
class HttpFrontConfig:
    """Where the Streamable HTTP front listens and which Origin/Host values it accepts.

    ``allowed_origins`` and ``allowed_hosts`` are stored lower-cased; loopback
    origins and hosts are always accepted by the front and need not be listed.
    """

    host: str = "127.0.0.1"
    port: int = 8787
    path: str = "/mcp"
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 4194304
    session_idle_timeout: float = 1800.0
    max_sessions: int = 10000


@dataclass(frozen=True)
class ServerInfoConfig:
    """What the broker says about itself in the initialize result."""

    name: str = "mcp-authz-broker"
    instructions: str | None = None


@dataclass(frozen=True)
class CatalogConfig:
    """Catalog presentation; ``page_size == 0`` returns every list in one page."""

    page_size: int = 0


@dataclass(frozen=True)
class LoggingConfig:
    """Log level (debug|info|warning|error) and output format."""

    level: str = "info"
    format: LogFormat = "text"


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics: the route, and how many tool label values are kept (cardinality)."""

    enabled: bool = True
    path: str = "/metrics"
    max_tool_labels: int = 500


@dataclass(frozen=True)
class OpaConfig:
    """How the broker reaches OPA: a sidecar it runs itself (managed) or an existing one (external)."""

    mode: Literal["managed", "external"] = "managed"
    url: str | None = None
    binary: str = "opa"
    rule: str = "data.mcp.authz.decision"
    timeout_ms: float = 100.0
    listen: Literal["unix", "tcp"] = "unix"
    decision_logs: bool = False


@dataclass(frozen=True)
class PolicyConfig:
    """Which engine decides, and where its policies are (``path``/cedar, ``path``/rego)."""

    engine: Literal["cedar", "opa"] = "cedar"
    path: Path = Path("policies")
    cedar_schema: Path = DEFAULT_CEDAR_SCHEMA
    watch: bool = True
    watch_interval: float = 1.0
    opa: OpaConfig = OpaConfig()


@dataclass(frozen=True)
class PrincipalConfig:
    """A principal as configured (the default one, until token authentication decides)."""

    type: Literal["Agent", "User"] = "Agent"
    id: str = "local"
    tenant: str | None = None
    roles: tuple[str, ...] = ()
    claims: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    acting_for: str | None = None


@dataclass(frozen=True)
class ClaimMappingConfig:
    """Which claims make the principal (identity.authentication.jwt[].principal)."""

    subject: str = "sub"
    type: str | None = None
    roles: str | None = "roles"
    tenant: str | None = "tenant"
    scopes: str = "scope"
    claims: tuple[str, ...] = ()


@dataclass(frozen=True)
class JwtIssuerConfig:
    """One trusted token issuer: where its keys are, what its tokens must say."""

    issuer: str
    audiences: tuple[str, ...] = ()
    jwks_url: str | None = None
    jwks_ttl: float = 300.0
    jwks_refresh_interval: float = 30.0
    public_keys: tuple[Path, ...] = ()
    hs256_secret: ConfigValue | None = None
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
    leeway: float = 30.0
    required_claims: tuple[str, ...] = ("exp", "sub")
    principal: ClaimMappingConfig = ClaimMappingConfig()


@dataclass(frozen=True)
class ApiKeyConfig:
    sha256: str
    principal: PrincipalConfig


@dataclass(frozen=True)
class AuthenticationConfig:
    """Token authentication for the HTTP front (absent: every caller is the default principal)."""

    resource: str | None = None
    authorization_servers: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    required_scopes: tuple[str, ...] = ()
    max_token_bytes: int = 8192
    jwt: tuple[JwtIssuerConfig, ...] = ()
    api_keys: tuple[ApiKeyConfig, ...] = ()


@dataclass(frozen=True)
class IdentityConfig:
    default_principal: PrincipalConfig = PrincipalConfig()
    authentication: AuthenticationConfig | None = None
    stdio_token_env: str | None = None


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "mcp-authz-broker"


@dataclass(frozen=True)
class ApprovalWebhookConfig:
    url: str
    headers: Mapping[str, ConfigValue] = field(default_factory=_empty_values, hash=False)
    timeout: float = 5.0

    def resolved_headers(self) -> dict[str, str]:
        return {name: resolve_value(v) for name, v in self.headers.items()}


@dataclass(frozen=True)
class RedisApprovalSettings:
    """Approvals in Redis, shared by replicas (docs/scale-out.md)."""

    url: str = field(repr=False)
    """redis://[user:pass@]host:port/db, rediss:// or unix://; resolved from its secret reference at start."""
    timeout: float = 5.0
    key_prefix: str = "mcp-broker:"


@dataclass(frozen=True)
class ApprovalsConfig:
    """Human approval of require-approval decisions (docs/approvals.md)."""

    enabled: bool = True
    path: Path = field(default_factory=lambda: _default_state_dir() / "approvals.db")
    timeout: float = 300.0
    grant_ttl: float = 600.0
    progress_interval: float = 10.0
    local_approver: PrincipalConfig | None = None
    webhook: ApprovalWebhookConfig | None = None
    store: Literal["sqlite", "postgresql", "redis"] = "sqlite"
    postgresql: PostgresSettings | None = None
    redis: RedisApprovalSettings | None = None


def _default_audit() -> AuditConfig:
    return AuditConfig(directory=_default_state_dir() / "audit")


@dataclass(frozen=True)
class BrokerConfig:
    """The whole validated configuration.

    Every section has a default so code and tests can build a config in one line;
    only files are required to name at least one upstream.
    """

    server: ServerInfoConfig = ServerInfoConfig()
    http: HttpFrontConfig = HttpFrontConfig()
    catalog: CatalogConfig = CatalogConfig()
    logging: LoggingConfig = LoggingConfig()
    upstreams: tuple[UpstreamConfig, ...] = ()
    policy: PolicyConfig = PolicyConfig()
    identity: IdentityConfig = IdentityConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    audit: AuditConfig = field(default_factory=_default_audit)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = field(default_factory=TracingConfig)
    traffic: TrafficSettings = field(default_factory=TrafficSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    source: Path | None = None

    def upstream(self, name: str) -> UpstreamConfig:
        """The upstream called ``name``; ``KeyError`` if there is none."""
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        raise KeyError(name)


# --------------------------------------------------------------------------- loading


def load_schema() -> dict[str, Any]:
    """Read the JSON Schema from :data:`SCHEMA_PATH`.

    Read on every call (it is small) rather than cached, so there is no
    module-level state and an edited schema is picked up by a reload.
    """
    try:
        return cast(dict[str, Any], json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{SCHEMA_PATH}: cannot load the configuration schema: {exc}"]) from None


def load_config(path: str | Path) -> BrokerConfig:
    """Read, validate and build the configuration in ``path``.

    Messages name the file as given (so they match what the operator typed);
    relative paths inside the file resolve against its directory, without
    following symlinks (mounted config maps are symlink farms).
    """
    label = os.fspath(path)
    absolute = Path(os.path.abspath(path))
    try:
        data = absolute.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read configuration file: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = f"{label}: configuration file is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        raise ConfigError([problem]) from None
    return parse_config(text, source=label, base_dir=absolute.parent, origin=absolute)


def parse_config(text: str, *, source: str, base_dir: Path, origin: Path | None = None) -> BrokerConfig:
    """Validate YAML ``text`` and build the configuration.

    ``source`` labels messages; ``base_dir`` anchors relative paths; ``origin``
    becomes :attr:`BrokerConfig.source` (``load_config`` passes the file). Raises
    :class:`ConfigError` listing every problem found.
    """
    doc = _Document.parse(text, source)
    schema_problems = list(doc.structure_problems)
    validator = Draft202012Validator(load_schema())
    for error in validator.iter_errors(doc.data):
        schema_problems.extend(_explain(error, doc))
    if schema_problems:
        doc.raise_if(schema_problems + _semantic_problems_despite(schema_problems, doc, base_dir))

    ctx = _Builder(doc, Path(os.path.abspath(base_dir)))
    config = _build_config(doc.data, ctx, origin)
    doc.raise_if(ctx.problems)
    return config


def _semantic_problems_despite(
    schema_problems: list[_Problem], doc: _Document, base_dir: Path
) -> list[_Problem]:
    """The upstream checks (paths, secrets) that can still run on a file with schema problems.

    So one run of check-config shows everything wrong, not the next layer after each fix.
    A check that trips over a value the schema already rejected is skipped, and nothing
    is reported twice for the same key.
    """
    upstreams = doc.data.get("upstreams") if isinstance(doc.data, dict) else None
    if not isinstance(upstreams, dict):
        return []
    ctx = _Builder(doc, Path(os.path.abspath(base_dir)))
    for name, raw in upstreams.items():
        if isinstance(name, str) and isinstance(raw, dict) and isinstance(raw.get("transport"), str):
            with contextlib.suppress(Exception):
                _build_upstream(name, raw, ctx)
    reported = {p.path for p in schema_problems}
    return [p for p in ctx.problems if not any(p.path[: len(r)] == r for r in reported if r)]


@dataclass(frozen=True)
class _Problem:
    """One problem before formatting; kept structured so problems can be sorted."""

    line: int
    path: JsonPath
    message: str


def _dotted(path: JsonPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


class _Document:
    """The parsed YAML: plain data for validation plus the node tree for line numbers."""

    def __init__(self, source: str, root: Any, data: Any, structure_problems: list[_Problem]) -> None:
        self.source = source
        self.root = root
        self.data = data
        self.structure_problems = structure_problems

    @classmethod
    def parse(cls, text: str, source: str) -> _Document:
        """Compose, check keys, construct; raise for anything that stops validation."""
        loader = yaml.SafeLoader(text)
        try:
            try:
                root = loader.get_single_node()
            except yaml.YAMLError as exc:
                raise ConfigError([_yaml_error(source, exc)]) from None
            if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL_TAG):
                empty = "the file is empty; expected a mapping with an 'upstreams' section"
                raise ConfigError([f"{source}:1: (top level): {empty}"])
            if not isinstance(root, yaml.MappingNode):
                kind = "list" if isinstance(root, yaml.SequenceNode) else "scalar value"
                line = root.start_mark.line + 1
                wrong = f"expected a mapping of sections, got a {kind}"
                raise ConfigError([f"{source}:{line}: (top level): {wrong}"])
            fatal: list[_Problem] = []
            duplicates: list[_Problem] = []
            _check_keys(root, (), fatal, duplicates, set())
            doc = cls(source, root, None, duplicates)
            if fatal:  # non-string keys would break the schema validator itself
                doc.raise_if(fatal + duplicates)
            try:
                doc.data = loader.construct_document(root)
            except yaml.YAMLError as exc:
                raise ConfigError([_yaml_error(source, exc)]) from None
            return doc
        finally:
            loader.dispose()

    def line_of(self, path: JsonPath) -> int:
        """Line of the key (or list item) at ``path``; the nearest existing parent's if absent.

        The key's line is used rather than its value's so that a problem about a
        whole block (e.g. a missing key) points at the block's name.
        """
        node = self.root
        line = int(node.start_mark.line) + 1
        for part in path:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                found = None
                for key, value in node.value:  # last wins, as in construction
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        found = (key, value)
                if found is None:
                    break
                line = int(found[0].start_mark.line) + 1
                node = found[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = int(node.start_mark.line) + 1
            else:
                break
        return line

    def problem(self, path: JsonPath, message: str) -> _Problem:
        return _Problem(self.line_of(path), path, message)

    def raise_if(self, problems: list[_Problem]) -> None:
        """Raise one ConfigError with every problem, sorted by line, duplicates dropped."""
        if not problems:
            return
        ordered = sorted(problems, key=lambda p: (p.line, _dotted(p.path), p.message))
        lines = [f"{self.source}:{p.line}: {_dotted(p.path)}: {p.message}" for p in ordered]
        raise ConfigError(list(dict.fromkeys(lines)))


def _yaml_error(source: str, exc: Exception) -> str:
    """One line for a YAML syntax error, with line and column of the problem."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if mark is None:
        return f"{source}: YAML error: {' '.join(str(exc).split())}"
    what = problem or str(exc)
    if context:
        context_mark = getattr(exc, "context_mark", None)
        where = f" at line {context_mark.line + 1}" if context_mark is not None else ""
        # PyYAML splits some sentences across context and problem ("expected a
        # single document", "but found another document"); keep them in order.
        what = f"{context}{where}, {what}" if what.startswith("but ") else f"{what} ({context}{where})"
    return f"{source}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {what}"


def _check_keys(
    node: Any, path: JsonPath, fatal: list[_Problem], duplicates: list[_Problem], active: set[int]
) -> None:
    """Reject what JSON Schema cannot see or would choke on: non-string keys,
    duplicate keys (YAML silently keeps the last) and recursive aliases."""
    if id(node) in active:
        fatal.append(_Problem(node.start_mark.line + 1, path, "recursive YAML alias is not supported"))
        return
    active.add(id(node))
    try:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                line = key.start_mark.line + 1
                if not isinstance(key, yaml.ScalarNode):
                    fatal.append(_Problem(line, path, "mapping keys must be strings, not lists or mappings"))
                    continue
                if key.tag == _MERGE_TAG:
                    _check_keys(value, path, fatal, duplicates, active)
                    continue
                if key.tag != _STR_TAG:
                    message = f'key {key.value!r} is not a string; quote it ("{key.value}")'
                    fatal.append(_Problem(line, path, message))
                    continue
                if key.value in seen:
                    duplicates.append(_Problem(line, path, f"duplicate key {key.value!r}"))
                seen.add(key.value)
                _check_keys(value, (*path, key.value), fatal, duplicates, active)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                _check_keys(item, (*path, index), fatal, duplicates, active)
    finally:
        active.discard(id(node))


# --------------------------------------------------------------------------- schema messages


def _describe(value: Any) -> str:
    """A short, typed rendering of a YAML value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {shown!r}"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return f"{type(value).__name__} {value} (quote it to make it a string)"


def _get(data: Any, path: Sequence[PathPart]) -> Any:
    for part in path:
        found = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and part < len(data)
        )
        if not found:
            return None
        data = data[part]
    return data


def _explain(error: Any, doc: _Document) -> list[_Problem]:
    """Turn one jsonschema error into one or more human problems."""
    path: JsonPath = tuple(error.absolute_path)
    schema_path = tuple(error.absolute_schema_path)
    validator = error.validator
    value = error.validator_value
    instance = error.instance
    in_then = "then" in schema_path

    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        problems = []
        for key in instance:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            problems.append(_Problem(doc.line_of((*path, key)), path, f"unknown key {key!r}{hint}"))
        return problems
    if validator == "required" and isinstance(instance, dict):
        why = ""
        if in_then and "transport" in instance:
            why = f" (required when transport is {instance['transport']!r})"
        missing = [key for key in value if key not in instance]
        return [doc.problem(path, f"missing required key {key!r}{why}") for key in missing]
    if validator == "not" and in_then and path and path[-1] in _TRANSPORT_ONLY_KEYS:
        transport = _get(doc.data, path[:-1]).get("transport")
        only = _TRANSPORT_ONLY_KEYS[str(path[-1])]
        return [doc.problem(path, f"not allowed when transport is {transport!r} (only for {only})")]
    if validator == "pattern" and "propertyNames" in schema_path:
        hint = _PATTERN_HINTS.get(value, f"does not match {value!r}")
        return [_Problem(doc.line_of((*path, instance)), path, f"{instance!r} {hint}")]
    return [doc.problem(path, _message(error, instance, value, validator))]


def _message(error: Any, instance: Any, value: Any, validator: Any) -> str:
    """The message for single-value keywords."""
    if validator == "type":
        names = [value] if isinstance(value, str) else list(value)
        expected = " or ".join(_JSON_TYPE_NAMES.get(n, n) for n in names)
        hint = ""
        if "string" in names and isinstance(instance, int | float) and not isinstance(instance, bool):
            hint = " (quote it to make it a string)"
        return f"expected {expected}, got {_describe(instance)}{hint}"
    if validator == "enum":
        return f"{instance!r} is not one of {', '.join(repr(v) for v in value)}"
    if validator == "pattern":
        return f"{instance!r} {_PATTERN_HINTS.get(value, f'does not match {value!r}')}"
    if validator == "minimum":
        return f"must be >= {value}, got {instance}"
    if validator == "maximum":
        return f"must be <= {value}, got {instance}"
    if validator == "exclusiveMinimum":
        return f"must be > {value}, got {instance}"
    if validator == "minLength":
        return "must not be empty"
    if validator == "minProperties" and tuple(error.absolute_path) == ("upstreams",):
        return "at least one upstream must be configured"
    if validator == "minProperties":
        return f"must have at least {value} entr{'y' if value == 1 else 'ies'}"
    if validator == "oneOf" and all(isinstance(s, dict) and set(s) == {"required"} for s in value):
        keys = [k for s in value for k in s["required"]]
        present = [k for k in keys if isinstance(instance, dict) and k in instance]
        got = "neither" if not present else "both " + " and ".join(repr(k) for k in present)
        return f"needs exactly one of {' or '.join(repr(k) for k in keys)}, got {got}"
    if validator in {"oneOf", "anyOf"} and error.context:
        best = best_match(error.context)
        return _message(best, best.instance, best.validator_value, best.validator)
    return str(error.message)


# --------------------------------------------------------------------------- building + semantic checks


class _Builder:
    """Builds the dataclasses from schema-valid data and collects semantic problems."""

    def __init__(self, doc: _Document, base_dir: Path) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.problems: list[_Problem] = []

    def report(self, path: JsonPath, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def number(self, raw: Mapping[str, Any], key: str, default: float, path: JsonPath) -> float:
        """A float setting; NaN and infinity pass JSON Schema's range checks, so reject them here."""
        value = float(raw.get(key, default))
        if not math.isfinite(value):
            self.report((*path, key), f"must be a finite number, got {value}")
        return value

    def local_path(self, value: str) -> Path:
        """An absolute path; relative ones are taken from the config file's directory."""
        return Path(os.path.abspath(self.base_dir / value))

    def value(self, raw: Any, path: JsonPath) -> ConfigValue:
        """A literal or a secret reference; references must resolve now so a
        missing secret fails at startup, not at the first request."""
        name = str(path[-1])
        if isinstance(raw, str):
            if CREDENTIAL_NAME.search(name):
                self.report(
                    path,
                    f"inline values are not allowed for credential-like name {name!r}; "
                    "use {env: NAME} or {file: PATH} so the secret stays out of the config file",
                )
            return raw
        prefix = str(raw.get("prefix", ""))
        if "env" in raw:
            ref = SecretRef(env=str(raw["env"]), prefix=prefix)
        else:
            ref = SecretRef(file=self.local_path(str(raw["file"])), prefix=prefix)
        try:
            ref.resolve()
        except SecretUnavailable as exc:
            self.report(path, str(exc))
        return ref

    def values(self, raw: Mapping[str, Any] | None, path: JsonPath) -> Mapping[str, ConfigValue]:
        return MappingProxyType({name: self.value(v, (*path, name)) for name, v in (raw or {}).items()})


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A top-level section as a mapping; absent or null means all defaults."""
    return cast(Mapping[str, Any], data.get(key) or {})


def _build_config(data: Mapping[str, Any], ctx: _Builder, origin: Path | None) -> BrokerConfig:
    upstreams = cast(Mapping[str, Any], data["upstreams"])
    policy = _build_policy(_section(data, "policy"), ctx)
    return BrokerConfig(
        server=_build_server(_section(data, "server")),
        http=_build_http(_section(data, "http"), ctx),
        catalog=CatalogConfig(page_size=int(_section(data, "catalog").get("page_size", 0))),
        logging=_build_logging(_section(data, "logging")),
        upstreams=tuple(_build_upstream(name, raw, ctx) for name, raw in upstreams.items()),
        policy=policy,
        identity=_build_identity(_section(data, "identity"), ctx),
        approvals=_build_approvals(_section(data, "approvals"), ctx),
        audit=_build_audit(_section(data, "audit"), ctx),
        registry=_build_registry(_section(data, "registry"), policy.path, ctx),
        metrics=_build_metrics(_section(data, "metrics")),
        tracing=_build_tracing(_section(data, "tracing"), ctx),
        traffic=_build_traffic(data.get("traffic"), ctx),
        dashboard=_build_dashboard(_section(data, "dashboard"), ctx),
        source=origin,
    )


def _build_policy(raw: Mapping[str, Any], ctx: _Builder) -> PolicyConfig:
    path: JsonPath = ("policy",)
    defaults = PolicyConfig()
    engine = cast(Literal["cedar", "opa"], raw.get("engine", defaults.engine))
    directory = ctx.local_path(str(raw.get("path", "policies")))
    needed = directory / ("cedar" if engine == "cedar" else "rego")
    if not directory.is_dir():
        ctx.report((*path, "path"), f"policy directory {directory} does not exist")
    elif not needed.is_dir():
        ctx.report((*path, "path"), f"{directory} has no {needed.name}/ folder for the {engine} engine")
    schema = defaults.cedar_schema
    if raw.get("cedar_schema") is not None:
        schema = ctx.local_path(str(raw["cedar_schema"]))
    if engine == "cedar" and not schema.is_file():
        ctx.report((*path, "cedar_schema"), f"Cedar schema {schema} does not exist")
    opa_raw = _section(raw, "opa")
    opa_defaults = OpaConfig()
    opa = OpaConfig(
        mode=cast(Literal["managed", "external"], opa_raw.get("mode", opa_defaults.mode)),
        url=cast(str | None, opa_raw.get("url")),
        binary=str(opa_raw.get("binary", opa_defaults.binary)),
        rule=str(opa_raw.get("rule", opa_defaults.rule)),
        timeout_ms=float(opa_raw.get("timeout_ms", opa_defaults.timeout_ms)),
        listen=cast(Literal["unix", "tcp"], opa_raw.get("listen", opa_defaults.listen)),
        decision_logs=bool(opa_raw.get("decision_logs", opa_defaults.decision_logs)),
    )
    if engine == "opa":
        if opa.mode == "external" and not opa.url:
            ctx.report(
                (*path, "opa", "url"), "external mode needs the OPA url (http://host:port or unix:///path)"
            )
        if opa.mode == "managed" and "/" in opa.binary and not Path(ctx.local_path(opa.binary)).is_file():
            ctx.report(
                (*path, "opa", "binary"), f"OPA binary {opa.binary} does not exist (scripts/install-opa.sh)"
            )
        if opa.mode == "managed" and "/" in opa.binary:
            opa = dataclasses.replace(opa, binary=str(ctx.local_path(opa.binary)))
    return PolicyConfig(
        engine=engine,
        path=directory,
        cedar_schema=schema,
        watch=bool(raw.get("watch", defaults.watch)),
        watch_interval=float(raw.get("watch_interval", defaults.watch_interval)),
        opa=opa,
    )


def _build_registry(raw: Mapping[str, Any], policy_dir: Path, ctx: _Builder) -> RegistrySettings:
    """The registry section; while no lock file exists, unpinned items are allowed unless the
    config says otherwise (pinning starts with `mcp-broker registry pin`: docs/registry.md)."""
    try:
        settings = registry_settings(raw, policy_dir, ctx.base_dir)
    except ValueError as exc:
        ctx.report(("registry",), str(exc))
        return RegistrySettings(lock_file=policy_dir / "registry.lock.yaml")
    if "unpinned" not in raw and not Path(settings.lock_file).exists():
        settings = dataclasses.replace(settings, unpinned="allow")
    return settings


def _build_traffic(raw: Any, ctx: _Builder) -> TrafficSettings:
    if isinstance(raw, Mapping) and isinstance(raw.get("storage"), Mapping):
        # redis://:password@host/… is a credential: a secret reference, resolved once at start
        try:
            storage = resolve_value(ctx.value(raw["storage"], ("traffic", "storage")))
        except SecretUnavailable:
            return TrafficSettings()  # ctx.value reported it
        raw = {**raw, "storage": storage}
    try:
        return traffic_settings(cast(Mapping[str, Any] | None, raw))
    except ValueError as exc:
        ctx.report(("traffic",), str(exc))
        return TrafficSettings()


def _build_dashboard(raw: Mapping[str, Any], ctx: _Builder) -> DashboardSettings:
    try:
        return dashboard_settings(raw)
    except DashboardSettingsError as exc:
        ctx.report(("dashboard", exc.key) if exc.key else ("dashboard",), exc.message)
        return DashboardSettings()


def _build_metrics(raw: Mapping[str, Any]) -> MetricsConfig:
    defaults = MetricsConfig()
    return MetricsConfig(
        enabled=bool(raw.get("enabled", defaults.enabled)),
        path=str(raw.get("path", defaults.path)),
        max_tool_labels=int(raw.get("max_tool_labels", defaults.max_tool_labels)),
    )


def _build_tracing(raw: Mapping[str, Any], ctx: _Builder) -> TracingConfig:
    """The tracing section; export headers (a collector's key) are resolved once, at start."""
    path: JsonPath = ("tracing",)
    defaults = TracingConfig()
    headers: dict[str, str] = {}
    raw_headers = cast(Mapping[str, Any] | None, raw.get("headers"))
    for name, value in ctx.values(raw_headers, (*path, "headers")).items():
        with contextlib.suppress(SecretUnavailable):  # already reported by ctx.values
            headers[name] = resolve_value(value)
    try:
        return TracingConfig(
            enabled=bool(raw.get("enabled", defaults.enabled)),
            endpoint=cast(str | None, raw.get("endpoint", defaults.endpoint)),
            protocol=raw.get("protocol", defaults.protocol),
            service_name=str(raw.get("service_name", defaults.service_name)),
            sample_ratio=ctx.number(raw, "sample_ratio", defaults.sample_ratio, path),
            headers=MappingProxyType(headers),
            timeout=ctx.number(raw, "timeout", defaults.timeout, path),
            accept_incoming=bool(raw.get("accept_incoming", defaults.accept_incoming)),
        )
    except TracingError as exc:
        ctx.report(path, str(exc))
        return defaults


def _build_redis_approvals(raw: Any, parent: JsonPath, ctx: _Builder) -> RedisApprovalSettings | None:
    if not raw:
        return None
    path: JsonPath = (*parent, "redis")
    try:
        url = resolve_value(ctx.value(raw["url"], (*path, "url")))
    except SecretUnavailable:
        return None  # ctx.value reported it
    defaults = RedisApprovalSettings(url="")
    return RedisApprovalSettings(
        url=url,
        timeout=ctx.number(raw, "timeout", defaults.timeout, path),
        key_prefix=str(raw.get("key_prefix", defaults.key_prefix)),
    )


def _build_postgres(raw: Any, parent: JsonPath, ctx: _Builder) -> PostgresSettings | None:
    """A `postgresql:` block; its DSN (usually holding a password) is resolved now, so a missing
    secret stops the start, not the first approval or record."""
    if not raw:
        return None
    path: JsonPath = (*parent, "postgresql")
    dsn = ctx.value(raw["dsn"], (*path, "dsn"))
    try:
        resolved = resolve_value(dsn)
    except SecretUnavailable:
        return None  # ctx.value reported it
    defaults = PostgresSettings(dsn="")
    return PostgresSettings(
        dsn=resolved,
        max_connections=int(raw.get("max_connections", defaults.max_connections)),
        timeout=ctx.number(raw, "timeout", defaults.timeout, path),
        statement_timeout=ctx.number(raw, "statement_timeout", defaults.statement_timeout, path),
        synchronous_commit=raw.get("synchronous_commit", defaults.synchronous_commit),
    )


def _build_audit(raw: Mapping[str, Any], ctx: _Builder) -> AuditConfig:
    path: JsonPath = ("audit",)
    defaults = _default_audit()
    signing_key = None
    if raw.get("signing_key"):
        signing_key = ctx.local_path(str(raw["signing_key"]))
        if not signing_key.is_file():
            message = f"signing key {signing_key} does not exist (make one: mcp-broker audit keygen)"
            ctx.report((*path, "signing_key"), message)
    values: dict[str, Any] = {
        "enabled": bool(raw.get("enabled", defaults.enabled)),
        "directory": ctx.local_path(str(raw["directory"])) if raw.get("directory") else defaults.directory,
        "signing_key": signing_key,
    }
    for key in ("durability", "failure_mode", "sink"):
        values[key] = raw.get(key, getattr(defaults, key))
    values["postgresql"] = _build_postgres(raw.get("postgresql"), path, ctx)
    for key in ("include_request",):
        values[key] = bool(raw.get(key, getattr(defaults, key)))
    for key in ("rotate_bytes", "checkpoint_records", "degraded_buffer"):
        values[key] = int(raw.get(key, getattr(defaults, key)))
    for key in ("group_commit_window", "rotate_interval", "checkpoint_interval", "retry_interval"):
        values[key] = ctx.number(raw, key, getattr(defaults, key), path)
    try:
        return AuditConfig(**values)
    except ValueError as exc:
        ctx.report(path, str(exc))
        return defaults


def _build_approvals(raw: Mapping[str, Any], ctx: _Builder) -> ApprovalsConfig:
    path: JsonPath = ("approvals",)
    defaults = ApprovalsConfig()
    webhook_raw = raw.get("webhook")
    webhook = None
    if webhook_raw:
        url = str(webhook_raw["url"])
        if not _secure_url(url):
            ctx.report((*path, "webhook", "url"), "the webhook must be https (plain http only on loopback)")
        webhook = ApprovalWebhookConfig(
            url=url,
            headers=ctx.values(webhook_raw.get("headers"), (*path, "webhook", "headers")),
            timeout=ctx.number(webhook_raw, "timeout", 5.0, (*path, "webhook")),
        )
    approver = raw.get("local_approver")
    store = cast(Literal["sqlite", "postgresql", "redis"], raw.get("store", defaults.store))
    if store == "postgresql" and not raw.get("postgresql"):
        ctx.report((*path, "postgresql"), "store: postgresql needs postgresql.dsn")
    if store == "redis" and not raw.get("redis"):
        ctx.report((*path, "redis"), "store: redis needs redis.url")
    return ApprovalsConfig(
        enabled=bool(raw.get("enabled", defaults.enabled)),
        path=ctx.local_path(str(raw["path"])) if raw.get("path") else defaults.path,
        timeout=ctx.number(raw, "timeout", defaults.timeout, path),
        grant_ttl=ctx.number(raw, "grant_ttl", defaults.grant_ttl, path),
        progress_interval=ctx.number(raw, "progress_interval", defaults.progress_interval, path),
        local_approver=_build_principal(approver) if approver else None,
        webhook=webhook,
        store=store,
        postgresql=_build_postgres(raw.get("postgresql"), path, ctx),
        redis=_build_redis_approvals(raw.get("redis"), path, ctx),
    )


def _build_identity(raw: Mapping[str, Any], ctx: _Builder) -> IdentityConfig:
    auth = raw.get("authentication")
    return IdentityConfig(
        default_principal=_build_principal(_section(raw, "default_principal")),
        authentication=_build_authentication(auth, ctx) if auth is not None else None,
        stdio_token_env=cast(str | None, raw.get("stdio_token_env")),
    )


def _build_authentication(auth: Mapping[str, Any], ctx: _Builder) -> AuthenticationConfig:
    path: JsonPath = ("identity", "authentication")
    issuers = tuple(
        _build_issuer(item, (*path, "jwt", i), ctx) for i, item in enumerate(auth.get("jwt") or ())
    )
    api_keys = tuple(
        ApiKeyConfig(str(k["sha256"]).lower(), _build_principal(k["principal"] or {}))
        for k in auth.get("api_keys") or ()
    )
    if not issuers and not api_keys:
        ctx.report(path, "authentication needs at least one jwt issuer or api key")
    return AuthenticationConfig(
        resource=cast(str | None, auth.get("resource")),
        authorization_servers=tuple(auth.get("authorization_servers") or ()),
        scopes_supported=tuple(auth.get("scopes_supported") or ()),
        required_scopes=tuple(auth.get("required_scopes") or ()),
        max_token_bytes=int(auth.get("max_token_bytes", 8192)),
        jwt=issuers,
        api_keys=api_keys,
    )


def _secure_url(url: str) -> bool:
    """https, or plain http to a loopback host (parsed: `http://localhost.evil.example` is not loopback)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme == "https" and host:
        return True
    if parts.scheme != "http" or not host or parts.username is not None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _build_issuer(item: Mapping[str, Any], where: JsonPath, ctx: _Builder) -> JwtIssuerConfig:
    keys = []
    for k, key_file in enumerate(item.get("public_keys") or ()):
        file = ctx.local_path(str(key_file))
        if not file.is_file():
            ctx.report((*where, "public_keys", k), f"public key file {file} does not exist")
        keys.append(file)
    secret = ctx.value(item["hs256_secret"], (*where, "hs256_secret")) if item.get("hs256_secret") else None
    if isinstance(secret, str):
        ctx.report((*where, "hs256_secret"), "the secret must come from {env: NAME} or {file: PATH}")
    jwks_url = cast(str | None, item.get("jwks_url"))
    if not (jwks_url or keys or secret):
        ctx.report(where, "the issuer needs jwks_url, public_keys or hs256_secret to verify its tokens")
    if jwks_url and not _secure_url(jwks_url):
        ctx.report((*where, "jwks_url"), "JWKS must be fetched over https (plain http only from loopback)")
    mapping = _section(item, "principal")
    defaults = ClaimMappingConfig()
    return JwtIssuerConfig(
        issuer=str(item["issuer"]),
        audiences=tuple(item.get("audiences") or ()),
        jwks_url=jwks_url,
        jwks_ttl=float(item.get("jwks_ttl", 300)),
        jwks_refresh_interval=float(item.get("jwks_refresh_interval", 30)),
        public_keys=tuple(keys),
        hs256_secret=secret,
        algorithms=tuple(item.get("algorithms") or JwtIssuerConfig("x").algorithms),
        leeway=float(item.get("leeway", 30)),
        required_claims=tuple(item.get("required_claims") or ("exp", "sub")),
        principal=ClaimMappingConfig(
            subject=str(mapping.get("subject", defaults.subject)),
            type=cast(str | None, mapping.get("type", defaults.type)),
            roles=cast(str | None, mapping.get("roles", defaults.roles)),
            tenant=cast(str | None, mapping.get("tenant", defaults.tenant)),
            scopes=str(mapping.get("scopes", defaults.scopes)),
            claims=tuple(mapping.get("claims") or ()),
        ),
    )


def _build_principal(raw: Mapping[str, Any]) -> PrincipalConfig:
    defaults = PrincipalConfig()
    claims = raw.get("claims") or {}
    return PrincipalConfig(
        type=cast(Literal["Agent", "User"], raw.get("type", defaults.type)),
        id=str(raw.get("id", defaults.id)),
        tenant=cast(str | None, raw.get("tenant")),
        roles=tuple(raw.get("roles") or ()),
        claims=MappingProxyType({str(k): str(v) for k, v in claims.items()}),
        acting_for=cast(str | None, raw.get("acting_for")),
    )


def _build_server(raw: Mapping[str, Any]) -> ServerInfoConfig:
    defaults = ServerInfoConfig()
    return ServerInfoConfig(
        name=str(raw.get("name", defaults.name)),
        instructions=cast(str | None, raw.get("instructions", defaults.instructions)),
    )


def _build_logging(raw: Mapping[str, Any]) -> LoggingConfig:
    defaults = LoggingConfig()
    return LoggingConfig(
        level=str(raw.get("level", defaults.level)),
        format=cast(LogFormat, raw.get("format", defaults.format)),
    )


def _build_http(raw: Mapping[str, Any], ctx: _Builder) -> HttpFrontConfig:
    defaults = HttpFrontConfig()
    path: JsonPath = ("http",)
    origins: list[str] = []
    for index, origin in enumerate(raw.get("allowed_origins") or ()):
        problem = _origin_problem(origin)
        if problem:
            ctx.report((*path, "allowed_origins", index), problem)
        origins.append(origin.lower())
    hosts: list[str] = []
    for index, host in enumerate(raw.get("allowed_hosts") or ()):
        match = _HOST_RE.match(host.lower())
        if match is None or (match.group(1) is not None and int(match.group(1)) > 65535):
            ctx.report(
                (*path, "allowed_hosts", index),
                f"{host!r} is not a host or host:port (e.g. 'broker.example.com' or 'broker.local:8443')",
            )
        hosts.append(host.lower())
    return HttpFrontConfig(
        host=str(raw.get("host", defaults.host)),
        port=int(raw.get("port", defaults.port)),
        path=str(raw.get("path", defaults.path)),
        allowed_origins=tuple(origins),
        allowed_hosts=tuple(hosts),
        max_body_bytes=int(raw.get("max_body_bytes", defaults.max_body_bytes)),
        session_idle_timeout=ctx.number(raw, "session_idle_timeout", defaults.session_idle_timeout, path),
        max_sessions=int(raw.get("max_sessions", defaults.max_sessions)),
    )


def _origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not a serialized origin (scheme://host[:port]), or None."""
    if origin.strip() == "*":
        return "'*' is not allowed (it would let any web page drive the broker); list each trusted origin"
    parts = urlsplit(origin)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        not parts.scheme
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or origin.endswith(("?", "#"))
        or not port_ok
    ):
        return f"{origin!r} is not an origin; expected scheme://host[:port] such as 'https://app.example.com'"
    return None


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an upstream endpoint, or None."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL are not allowed; put them in headers as {env: NAME} or {file: PATH}"
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return f"{url!r} has an invalid port"
    return None


def _build_upstream_auth(raw: Any, path: JsonPath, ctx: _Builder) -> UpstreamAuthConfig | None:
    if not raw:
        return None
    secret = ctx.value(raw["client_secret"], (*path, "client_secret")) if raw.get("client_secret") else None
    if isinstance(secret, str):
        ctx.report((*path, "client_secret"), "the client secret must come from {env: NAME} or {file: PATH}")
    url = str(raw["token_url"])
    if not _secure_url(url):
        ctx.report((*path, "token_url"), "the token endpoint must be https (plain http only on loopback)")
    return UpstreamAuthConfig(
        type=cast(Literal["client_credentials", "token_exchange"], raw["type"]),
        token_url=url,
        client_id=str(raw["client_id"]),
        client_secret=secret,
        scope=cast(str | None, raw.get("scope")),
        resource=cast(str | None, raw.get("resource")),
        audience=cast(str | None, raw.get("audience")),
    )


def _build_upstream(name: str, raw: Mapping[str, Any], ctx: _Builder) -> UpstreamConfig:
    path: JsonPath = ("upstreams", name)
    transport = cast(Transport, raw["transport"])

    cwd: Path | None = None
    if raw.get("cwd") is not None:
        cwd = ctx.local_path(str(raw["cwd"]))
        if not cwd.exists():
            ctx.report((*path, "cwd"), f"directory {cwd} does not exist")
        elif not cwd.is_dir():
            ctx.report((*path, "cwd"), f"{cwd} is not a directory")

    url = cast(str | None, raw.get("url"))
    if url is not None:
        problem = _url_problem(url)
        if problem:
            ctx.report((*path, "url"), problem)
    urls = tuple(str(u) for u in raw.get("urls") or ())
    for index, each in enumerate(urls):
        problem = _url_problem(each)
        if problem:
            ctx.report((*path, "urls", index), problem)
    if urls:
        url = urls[0]  # code that reads one url (listing, the registry CLI) takes the first instance

    headers = ctx.values(raw.get("headers"), (*path, "headers"))
    seen: dict[str, str] = {}
    for header in headers:
        if header.lower() in seen:
            ctx.report(
                (*path, "headers", header),
                f"header {header!r} repeats {seen[header.lower()]!r} (header names are case-insensitive)",
            )
        seen.setdefault(header.lower(), header)

    tpath: JsonPath = (*path, "timeouts")
    traw = cast(Mapping[str, Any], raw.get("timeouts") or {})
    td = Timeouts()
    timeouts = Timeouts(
        call=ctx.number(traw, "call", td.call, tpath),
        startup=ctx.number(traw, "startup", td.startup, tpath),
        ping_interval=ctx.number(traw, "ping_interval", td.ping_interval, tpath),
        ping=ctx.number(traw, "ping", td.ping, tpath),
        idle=ctx.number(traw, "idle", td.idle, tpath),
        tools=MappingProxyType(
            {
                str(tool): ctx.number(
                    cast(Mapping[str, Any], traw["tools"]), str(tool), td.call, (*tpath, "tools")
                )
                for tool in cast(Mapping[str, Any], traw.get("tools") or {})
            }
        ),
    )

    rpath: JsonPath = (*path, "restart")
    rraw = cast(Mapping[str, Any], raw.get("restart") or {})
    rd = RestartPolicy()
    restart = RestartPolicy(
        initial_backoff=ctx.number(rraw, "initial_backoff", rd.initial_backoff, rpath),
        max_backoff=ctx.number(rraw, "max_backoff", rd.max_backoff, rpath),
    )
    if restart.max_backoff < restart.initial_backoff:
        ctx.report(
            (*rpath, "max_backoff") if "max_backoff" in rraw else rpath,
            f"max_backoff ({restart.max_backoff:g}) must be >= initial_backoff ({restart.initial_backoff:g})",
        )

    isolation = raw.get("isolation", "shared")
    auth_raw = raw.get("auth") or {}
    if auth_raw.get("type") == "token_exchange" and isolation != "per_session":
        ctx.report(
            (*path, "auth", "type"),
            "token_exchange exchanges each caller's token: it needs isolation: per_session",
        )
    if raw.get("tenant_headers") and isolation != "per_tenant":
        ctx.report((*path, "tenant_headers"), "per-tenant credentials need isolation: per_tenant")
    return UpstreamConfig(
        name=name,
        transport=transport,
        command=cast(str | None, raw.get("command")),
        args=tuple(raw.get("args") or ()),
        env=ctx.values(raw.get("env"), (*path, "env")),
        inherit_env=bool(raw.get("inherit_env", False)),
        cwd=cwd,
        url=url,
        headers=headers,
        namespace=bool(raw.get("namespace", True)),
        isolation=cast(Isolation, raw.get("isolation", "shared")),
        relay_roots=bool(raw.get("relay_roots", False)),
        enabled=bool(raw.get("enabled", True)),
        timeouts=timeouts,
        restart=restart,
        tenants=tuple(raw.get("tenants") or ()),
        tags=tuple(raw.get("tags") or ()),
        tool_tags=MappingProxyType({str(k): tuple(v) for k, v in (raw.get("tool_tags") or {}).items()}),
        auth=_build_upstream_auth(raw.get("auth"), (*path, "auth"), ctx),
        tenant_headers=MappingProxyType(
            {
                str(tenant): ctx.values(headers, (*path, "tenant_headers", tenant))
                for tenant, headers in (raw.get("tenant_headers") or {}).items()
            }
        ),
        urls=urls,
        instances=int(raw.get("instances", 1)),
        balance=raw.get("balance", "round_robin"),
    )
