"""Embedded Cedar (cedarpy): policies and schema parsed once, every request decided in process.

Each authorization request document becomes Cedar entities (the principal with its
roles and tenant, the resource in its server in its tenants, the call's arguments as
one tagged entity) and a request. Nothing about the catalog is kept in the engine: the
document carries what the decision needs, exactly as it does for OPA.

Three-way decisions: approval requirements are ordinary `forbid … unless
{ context.approval.granted }` policies marked `@approval`. A request is evaluated with
`granted = false`; only if that denies is it evaluated again with `granted = true`
(lazily: an allowed call costs one evaluation). Allow → allow; deny then allow →
require_approval; anything else → deny. NoDecision and every error the engine reports
→ deny with reason `policy_error`: an erroring forbid must never let a call through.

Cost (docs/decisions.md): the stable entities of a request (principal, server, resource)
are validated against the schema once and kept as a handle per (principal, resource);
a call adds only its arguments entity. Requests are built from typed parts by this
module, so the per-request schema check is left out (it doubled the evaluation time);
a value of the wrong type still fails at evaluation, and every evaluation error denies.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy
import orjson

from broker.policy.cedar_source import PolicyFiles, policy_files, read_policy_files
from broker.policy.decision import Decision, Effect, Reason
from broker.policy.engine import AuthzRequest, LoadResult, PolicyLoadError
from broker.policy.version import policy_version
from broker.registry.obligations import obligations_from_annotations

log = logging.getLogger("broker.policy.cedar")

NAMESPACE = "Mcp"
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_DECIMAL_LIMIT = 922_337_203_685_477


@dataclass(frozen=True, slots=True)
class _Loaded:
    policies: cedarpy.PolicySet
    schema: cedarpy.Schema
    files: PolicyFiles
    version: str
    reasons: dict[str, Reason]
    """Positional policy id → what a decision reports about it (@id, @reason)."""
    gates: frozenset[str]
    """Positional ids of the @approval policies: the only denials an approval can lift."""
    context_keys: frozenset[str] | None
    """The context attributes the policies read (None: they use `context` as a whole)."""
    obligations: dict[str, tuple[dict[str, Any], ...]]
    """Positional policy id → the duties a permit puts on an allowed result (@redact, @result_scan)."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    decision: str  # "Allow", "Deny", or anything else (NoDecision): treated as a failure
    reasons: tuple[str, ...]
    errors: tuple[str, ...]


class CedarEngine:
    name = "cedar"

    def __init__(self, policy_dir: Path, schema_path: Path, *, cache_size: int = 4096) -> None:
        self._dir = policy_dir
        self._schema_path = schema_path
        self._loaded: _Loaded | None = None
        self._stable: collections.OrderedDict[bytes, cedarpy.Entities] = collections.OrderedDict()
        self._gated: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._cache_size = cache_size

    @property
    def policy_version(self) -> str:
        return self._loaded.version if self._loaded else "none"

    @property
    def watched_files(self) -> list[Path]:
        """What a change of means a reload: the policy files and the schema."""
        return [*policy_files(self._dir, "*.cedar"), self._schema_path]

    # -- loading ----------------------------------------------------------------------------

    async def start(self) -> None:
        loaded, problems = self._load()
        if loaded is None:
            raise PolicyLoadError("\n".join(problems))
        self._loaded = loaded
        log.info("cedar: %d policies loaded, version %s", len(loaded.files.sources), loaded.version)

    async def stop(self) -> None:
        return None

    async def reload(self) -> LoadResult:
        loaded, problems = self._load()
        if loaded is None:
            return LoadResult(False, self.policy_version, "\n".join(problems))
        previous, self._loaded = self.policy_version, loaded
        self._stable.clear()  # entity handles were validated against the old schema
        return LoadResult(
            True, loaded.version, f"{len(loaded.files.sources)} policies, {previous} → {loaded.version}"
        )

    def _load(self) -> tuple[_Loaded | None, list[str]]:
        """Read, parse and strictly validate; any problem keeps the set out (file:line messages)."""
        root = self._dir.parent
        try:
            schema_text = self._schema_path.read_text(encoding="utf-8")
            schema = cedarpy.Schema.from_str(schema_text)
        except (OSError, ValueError) as exc:
            return None, [f"{self._schema_path}: cannot load the Cedar schema: {exc}"]
        files, problems = read_policy_files(self._dir / "cedar", root)
        if files is None:
            return None, problems
        result = cedarpy.validate_policies(files.text, schema_text)
        if not result.validation_passed:
            for error in result.errors:
                source = files.source_of(error.policy_id)
                where = source.where(root) if source else str(self._dir / "cedar")
                named = f" (@id {source.policy_id!r})" if source and source.policy_id else ""
                message = error.error.replace(
                    f"`{error.policy_id}`", f"`{source.policy_id}`" if source else ""
                )
                problems.append(f"{where}: invalid policy{named}: {message}")
            return None, problems
        policies = cedarpy.PolicySet.from_str(files.text)
        version = policy_version(self._dir, [*files.files, self._schema_path])
        reasons = {}
        obligations: dict[str, tuple[dict[str, Any], ...]] = {}
        for i, src in enumerate(files.sources):
            try:
                duties = obligations_from_annotations(src.annotations)
            except ValueError as exc:
                problems.append(f"{src.where(root)}: {exc}")
                continue
            if duties:
                obligations[f"policy{i}"] = tuple(duties)
            reuse = _seconds(src.annotations.get("approval_reuse", "0"))
            if reuse is None:
                problems.append(
                    f"{src.where(root)}: @approval_reuse must be a number of seconds, "
                    f"not {src.annotations['approval_reuse']!r}"
                )
                continue
            reasons[f"policy{i}"] = Reason(
                src.policy_id, src.annotations.get("reason", ""), src.annotations.get("scope", ""), reuse
            )
        if problems:
            return None, problems
        gates = frozenset(
            f"policy{i}" for i, src in enumerate(files.sources) if "approval" in src.annotations
        )
        loaded = _Loaded(
            policies, schema, files, version, reasons, gates, context_keys(files.text), obligations
        )
        return loaded, []

    # -- deciding ---------------------------------------------------------------------------------

    async def decide(self, request: AuthzRequest) -> Decision:
        loaded = self._loaded
        if loaded is None:
            return Decision.failure(self.name, "none", "no Cedar policy set is loaded")
        started = time.perf_counter()
        try:
            entities = self._entities(loaded, request)
            decision = self._three_way(loaded, entities, cedar_request(request, loaded.context_keys), request)
        except Exception as exc:  # a malformed document must deny, never escape as an error
            log.exception("cedar: could not evaluate a request")
            decision = Decision.failure(self.name, loaded.version, f"cannot evaluate the request: {exc}")
        return _with_latency(decision, started)

    async def decide_many(self, requests: Sequence[AuthzRequest]) -> list[Decision]:
        """Many decisions; a list of items with the same arguments (list filtering) is one batch."""
        loaded = self._loaded
        if loaded is None or len(requests) < 2 or not _batchable(requests):
            return [await self.decide(r) for r in requests]
        started = time.perf_counter()
        try:
            entities = cedarpy.Entities.from_json_str(_merged_entities_json(requests), loaded.schema)
            cedar_requests = [cedar_request(r, loaded.context_keys) for r in requests]
            firsts = _authorize(cedar_requests, loaded, entities)
            pending = [i for i, r in enumerate(firsts) if self._needs_second(loaded, r, requests[i])]
            seconds = dict(
                zip(
                    pending,
                    _authorize([_granted(cedar_requests[i]) for i in pending], loaded, entities)
                    if pending
                    else [],
                    strict=True,
                )
            )
            decisions = [
                self._combine(
                    loaded, first, functools.partial(seconds.__getitem__, i), _granted_already(requests[i])
                )
                for i, first in enumerate(firsts)
            ]
        except _Conflict:
            return [await self.decide(r) for r in requests]
        except Exception:  # fall back to one by one: each of those never raises
            log.exception("cedar: a batch evaluation failed; deciding one by one")
            return [await self.decide(r) for r in requests]
        share = (time.perf_counter() - started) * 1000 / len(requests)
        for decision in decisions:
            object.__setattr__(decision, "latency_ms", share)
        return decisions

    def _entities(self, loaded: _Loaded, request: AuthzRequest) -> cedarpy.Entities:
        """The request's entities: the cached, schema-validated stable part plus its arguments."""
        key = orjson.dumps((request["principal"], request["resource"]))
        stable = self._stable.get(key)
        if stable is None:
            stable = cedarpy.Entities.from_json_str(stable_entities_json(request), loaded.schema)
            self._stable[key] = stable
            if len(self._stable) > self._cache_size:
                self._stable.popitem(last=False)
        else:
            self._stable.move_to_end(key)
        return stable.with_added_json_str(arguments_entity_json(request["context"].get("arguments")))

    def _three_way(
        self,
        loaded: _Loaded,
        entities: cedarpy.Entities,
        cedar_request: dict[str, Any],
        request: AuthzRequest,
    ) -> Decision:
        """Allow, require_approval or deny; the second evaluation only when approval could help.

        A resource that needed the second evaluation last time gets both in one batch
        (cheaper than two calls): destructive tools keep needing it.
        """
        granted_already = _granted_already(request)
        key = str(request["resource"].get("id"))
        if not granted_already and key in self._gated:
            first, second = _authorize([cedar_request, _granted(cedar_request)], loaded, entities)
            decision = self._combine(loaded, first, lambda: second, granted_already)
        else:
            (first,) = _authorize([cedar_request], loaded, entities)
            decision = self._combine(
                loaded,
                first,
                lambda: _authorize([_granted(cedar_request)], loaded, entities)[0],
                granted_already,
            )
        if decision.effect is Effect.REQUIRE_APPROVAL:
            self._gated[key] = None
            if len(self._gated) > self._cache_size:
                self._gated.popitem(last=False)
        else:
            self._gated.pop(key, None)
        return decision

    def _needs_second(self, loaded: _Loaded, first: _Outcome, request: AuthzRequest) -> bool:
        return (
            _failure(loaded, first) is None
            and first.decision == "Deny"
            and not _granted_already(request)
            and bool(first.reasons)
            and all(r in loaded.gates for r in first.reasons)
        )

    def _combine(
        self, loaded: _Loaded, first: _Outcome, second: Callable[[], _Outcome], granted_already: bool
    ) -> Decision:
        failure = _failure(loaded, first)
        if failure is not None:
            return failure
        if first.decision == "Allow":
            duties = tuple(d for r in first.reasons for d in loaded.obligations.get(r, ()))
            return Decision(Effect.ALLOW, _reasons(loaded, first), self.name, loaded.version, duties)
        denied_by = _reasons(loaded, first)
        only_gates = bool(first.reasons) and all(r in loaded.gates for r in first.reasons)
        if granted_already or not only_gates:
            return Decision(Effect.DENY, denied_by or (_NO_PERMIT,), self.name, loaded.version)
        result = second()
        failure = _failure(loaded, result)
        if failure is not None:
            return failure
        if result.decision == "Allow":
            return Decision(Effect.REQUIRE_APPROVAL, denied_by, self.name, loaded.version)
        # Approval would not help: nothing permits the call (or a policy denies even then).
        return Decision(Effect.DENY, _reasons(loaded, result) or (_NO_PERMIT,), self.name, loaded.version)


_NO_PERMIT = Reason("no_permit", "no policy permits this request")
_APPROVAL_KEYS = frozenset({"granted", "approver", "id", "requester", "requester_tenant", "gates"})


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value < float("inf") else None


def _granted_already(request: AuthzRequest) -> bool:
    return bool((request.get("context", {}).get("approval") or {}).get("granted"))


def _granted(cedar_request: dict[str, Any]) -> dict[str, Any]:
    """The same Cedar request as if a human had approved it."""
    context = dict(cedar_request["context"])
    context["approval"] = {**context["approval"], "granted": True}
    return {**cedar_request, "context": context}


def _batchable(requests: Sequence[AuthzRequest]) -> bool:
    """One entity set can serve them all: same principal, same arguments (a list being filtered)."""
    principal = requests[0]["principal"]
    arguments = requests[0]["context"].get("arguments")
    return all(r["principal"] == principal and r["context"].get("arguments") == arguments for r in requests)


class _Conflict(Exception):
    """Two requests describe the same entity differently: they cannot share one entity set."""


def _merged_entities_json(requests: Sequence[AuthzRequest]) -> str:
    """The entities of many requests sharing one arguments entity, each entity once."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for request in requests:
        for entity in orjson.loads(stable_entities_json(request)):
            key = (entity["uid"]["type"], entity["uid"]["id"])
            if merged.setdefault(key, entity) != entity:
                raise _Conflict(f"{key[0]}::{key[1]} differs between requests")
    arguments = orjson.loads(arguments_entity_json(requests[0]["context"].get("arguments")))
    return orjson.dumps([*merged.values(), *arguments]).decode()


def _failure(loaded: _Loaded, outcome: _Outcome) -> Decision | None:
    """NoDecision or any evaluation error: a deny with reason policy_error (fail closed)."""
    errors = list(outcome.errors)
    if outcome.decision not in ("Allow", "Deny"):
        errors = errors or [f"the engine returned {outcome.decision!r} (the request does not fit the schema)"]
    if not errors:
        return None
    return Decision.failure("cedar", loaded.version, "; ".join(_named_error(loaded, e) for e in errors))


def _reasons(loaded: _Loaded, outcome: _Outcome) -> tuple[Reason, ...]:
    """The determining policies, sorted by id: Cedar does not order them, audit records must."""
    found = [loaded.reasons[r] for r in outcome.reasons if r in loaded.reasons]
    return tuple(sorted(found, key=lambda r: r.id))


_LEAN = getattr(getattr(cedarpy, "_internal", None), "is_authorized_batch", None)
"""cedarpy's extension entry point. Its public wrapper re-encodes the context and decodes every
result with the stdlib json module (~45 us per evaluation, measured); called directly with an
orjson-encoded context it decides the same. Absent in another cedarpy build: the public API is used."""


def _authorize(requests: list[dict[str, Any]], loaded: _Loaded, entities: cedarpy.Entities) -> list[_Outcome]:
    if _LEAN is not None:
        encoded = [{**r, "context": orjson.dumps(r["context"]).decode()} for r in requests]
        outcomes = []
        for text in _LEAN(encoded, loaded.policies, entities._inner, None, False):
            result = orjson.loads(text)
            diagnostics = result.get("diagnostics") or {}
            errors = tuple(
                str(e.get("error", e)) if isinstance(e, dict) else str(e)
                for e in diagnostics.get("errors") or ()
            )
            outcomes.append(
                _Outcome(str(result.get("decision")), tuple(diagnostics.get("reason") or ()), errors)
            )
        return outcomes
    return [_public_outcome(r) for r in cedarpy.is_authorized_batch(requests, loaded.policies, entities)]


def _public_outcome(result: Any) -> _Outcome:
    decision = {cedarpy.Decision.Allow: "Allow", cedarpy.Decision.Deny: "Deny"}.get(
        result.decision, "NoDecision"
    )
    return _Outcome(
        decision, tuple(result.diagnostics.reasons), tuple(str(e) for e in result.diagnostics.errors)
    )


_CONTEXT_USE = re.compile(
    r"""\bcontext\b\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*"((?:[^"\\]|\\.)*)"\s*\]|has\s+(?:([A-Za-z_]\w*)|"((?:[^"\\]|\\.)*)"))"""
)
_CONTEXT_WORD = re.compile(r"\bcontext\b")


def context_keys(policy_text: str) -> frozenset[str] | None:
    """The context attributes the policies can read, or None if some policy uses `context` whole.

    Attributes no policy names cannot affect a decision, and each costs the engine ~25 us
    to convert per evaluation, so only the named ones (and `approval`, which the three-way
    decision sets) are passed. Over-inclusion (a name in a comment or a string) is harmless;
    any use of `context` this scan does not understand keeps the whole context.
    """
    names = {"approval"}
    used = 0
    for match in _CONTEXT_USE.finditer(policy_text):
        used += 1
        names.add(next(g for g in match.groups() if g is not None))
    if used != len(_CONTEXT_WORD.findall(policy_text)):
        return None
    return frozenset(names)


def _named_error(loaded: _Loaded, error: str) -> str:
    for index, source in enumerate(loaded.files.sources):
        marker = f"policy{index}"
        if marker in error:
            return error.replace(marker, source.policy_id or marker)
    return error


def _with_latency(decision: Decision, started: float) -> Decision:
    object.__setattr__(decision, "latency_ms", (time.perf_counter() - started) * 1000)
    return decision


# -- the authorization request document as Cedar -----------------------------------------------------


def _uid(kind: str, ident: str) -> dict[str, str]:
    return {"type": f"{NAMESPACE}::{kind}", "id": ident}


def stable_entities_json(request: AuthzRequest) -> str:
    """The entities that do not change from call to call: principal, server, resource."""
    principal = request["principal"]
    resource = request["resource"]
    parents = [_uid("Role", role) for role in principal.get("roles") or ()]
    attrs: dict[str, Any] = {}
    if principal.get("tenant"):
        parents.append(_uid("Tenant", principal["tenant"]))
        attrs["tenant"] = principal["tenant"]
    if principal.get("acting_for") and principal["type"] == "Agent":
        attrs["acting_for"] = {"__entity": _uid("User", principal["acting_for"])}
    entities: list[dict[str, Any]] = [
        {
            "uid": _uid(principal["type"], principal["id"]),
            "attrs": attrs,
            "parents": parents,
            "tags": {str(k): str(v) for k, v in (principal.get("claims") or {}).items()},
        }
    ]
    server = resource.get("server") or resource["id"]
    server_uid = _uid("Server", server)
    entities.append(
        {
            "uid": server_uid,
            "attrs": {"name": server},
            "parents": [_uid("Tenant", t) for t in resource.get("tenants") or ()],
        }
    )
    if resource["type"] != "Server":
        entities.append(
            {
                "uid": _uid(resource["type"], resource["id"]),
                "attrs": _resource_attrs(resource),
                "parents": [server_uid],
            }
        )
    return orjson.dumps(entities).decode()


_ARGUMENTS_UID = {"type": f"{NAMESPACE}::Arguments", "id": "call"}


def arguments_entity_json(arguments: Any) -> str:
    """The per-call entity: one tag per argument."""
    return orjson.dumps(
        [{"uid": _ARGUMENTS_UID, "attrs": {}, "parents": [], "tags": argument_tags(arguments)}]
    ).decode()


def cedar_request(request: AuthzRequest, keys: frozenset[str] | None = None) -> dict[str, Any]:
    """The Cedar request (principal, action, resource, context) for an authorization request document.

    `keys`: the context attributes to include (those the loaded policies read); None: all.
    """
    principal = request["principal"]
    resource = request["resource"]
    context = request["context"]
    approval = context.get("approval") or {"granted": False}
    cedar_context: dict[str, Any] = {
        "arguments": {"__entity": _ARGUMENTS_UID},
        "argument_digest": context.get("argument_digest", ""),
        "paths": list(context.get("paths") or ()),
        "hosts": list(context.get("hosts") or ()),
        "truncated": bool(context.get("argument_limits")),
        "problems": list(context.get("problems") or ()),
        "transport": context.get("transport", ""),
        "protocol_version": context.get("protocol_version", ""),
        "time": context.get("time", ""),
        "hour": int(context.get("hour", 0)),
        "weekday": int(context.get("weekday", 0)),
        "listing": bool(context.get("listing", False)),
        "approval": {k: v for k, v in approval.items() if k in _APPROVAL_KEYS and v is not None},
    }
    for optional in ("session", "trace_id"):
        if context.get(optional):
            cedar_context[optional] = context[optional]
    if keys is not None:
        cedar_context = {k: v for k, v in cedar_context.items() if k in keys}
    kind = resource["type"]
    target = resource["id"] if kind != "Server" else (resource.get("server") or resource["id"])
    return {
        "principal": _uid(principal["type"], principal["id"]),
        "action": {"type": f"{NAMESPACE}::Action", "id": request["action"]},
        "resource": _uid(kind, target),
        "context": cedar_context,
    }


def _resource_attrs(resource: Mapping[str, Any]) -> dict[str, Any]:
    kind = resource["type"]
    tags = list(resource.get("tags") or ())
    attrs: dict[str, Any]
    if kind == "Tool":
        hints = resource.get("annotations") or {}
        attrs = {
            "name": resource.get("name", resource["id"]),
            "server": resource.get("server", ""),
            "readOnlyHint": bool(hints.get("readOnlyHint", False)),
            "destructiveHint": bool(hints.get("destructiveHint", True)),
            "idempotentHint": bool(hints.get("idempotentHint", False)),
            "openWorldHint": bool(hints.get("openWorldHint", True)),
            "tags": tags,
        }
    elif kind == "Resource":
        attrs = {
            "uri": resource.get("uri", resource["id"]),
            "server": resource.get("server", ""),
            "tags": tags,
        }
    else:
        attrs = {
            "name": resource.get("name", resource["id"]),
            "server": resource.get("server", ""),
            "tags": tags,
        }
    if "pinned" in resource:  # the tool registry's verdict (optional attributes)
        attrs["pinned"] = bool(resource["pinned"])
        attrs["flags"] = [str(f) for f in resource.get("flags") or ()]
    return attrs


def argument_tags(arguments: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """One tag per argument (nested keys dotted), each `{text|number|decimal|flag|items|null: value}`."""
    tags: dict[str, dict[str, Any]] = {}
    if not isinstance(arguments, Mapping):
        return tags
    for key, value in arguments.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            tags.update(argument_tags(value, f"{name}."))
            continue
        tag = _argument_value(value)
        if tag is not None:
            tags[name] = tag
    return tags


def _argument_value(value: Any) -> dict[str, Any] | None:
    if value is None:
        return {"null": True}
    if isinstance(value, bool):
        return {"flag": value}
    if isinstance(value, int):
        return {"number": value} if _LONG_MIN <= value <= _LONG_MAX else {"text": str(value)}
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) < _DECIMAL_LIMIT:
            return {"decimal": {"__extn": {"fn": "decimal", "arg": f"{value:.4f}"}}}
        return {"text": repr(value)}
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, list):
        return {"items": sorted({_item_text(v) for v in value if not isinstance(v, (Mapping, list))})}
    return None


def _item_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else orjson.dumps(value).decode()
