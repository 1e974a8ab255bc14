"""From the caller's credential to a principal: bearer JWTs and static API keys.

The caller's credential stops here: it is never forwarded to an upstream (each upstream
has its own credential in the config). What a policy sees is the principal this module
builds from verified claims, never the raw token.

Delegation (an agent acting for a user) is read from the token the standard ways:
RFC 8693 `act` (`{"sub": "alice", "act": {"sub": "review-bot"}}` is review-bot acting for
alice), or an OAuth client (`azp` / `client_id`) different from the subject.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from broker.config import ClaimMappingConfig
from broker.identity.jwt import JwtVerifier, TokenRejected
from broker.identity.principal import Principal

log = logging.getLogger("broker.identity")


@dataclass(frozen=True, slots=True)
class Authenticated:
    principal: Principal
    scopes: frozenset[str]
    method: Literal["jwt", "api_key"]


class Unauthenticated(Exception):
    """No acceptable credential: HTTP 401 with a WWW-Authenticate challenge."""

    def __init__(self, description: str, *, invalid_token: bool) -> None:
        super().__init__(description)
        self.description = description
        self.invalid_token = invalid_token


class InsufficientScope(Exception):
    """A valid credential without the scopes this request needs: HTTP 403, step-up."""

    def __init__(self, scopes: tuple[str, ...], description: str) -> None:
        super().__init__(description)
        self.scopes = scopes
        self.description = description


def api_key_digest(key: str) -> str:
    """How API keys are stored in the config: the hex sha256 of the key (keys are random, long)."""
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    def __init__(
        self,
        *,
        verifier: JwtVerifier | None,
        mappings: Mapping[str, ClaimMappingConfig],
        api_keys: Mapping[str, Principal],
        required_scopes: tuple[str, ...] = (),
        max_token_bytes: int = 8192,
    ) -> None:
        self._verifier = verifier
        self._mappings = dict(mappings)
        self._api_keys = {digest.lower(): principal for digest, principal in api_keys.items()}
        self._required = required_scopes
        self._max = max_token_bytes

    async def aclose(self) -> None:
        if self._verifier is not None:
            await self._verifier.aclose()

    async def authenticate(self, authorization: str | None) -> Authenticated:
        if not authorization:
            raise Unauthenticated("a bearer token is required", invalid_token=False)
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer":  # no bearer credential at all (RFC 6750 §3.1: no error code)
            raise Unauthenticated("use the Bearer authentication scheme", invalid_token=False)
        if not credential:
            raise Unauthenticated("the Bearer credential is empty", invalid_token=True)
        if len(credential) > self._max:
            raise Unauthenticated(f"the token is longer than {self._max} bytes", invalid_token=True)
        identity = self._api_key(credential) if credential.count(".") != 2 else None
        if identity is None:
            identity = await self._jwt(credential)
        missing = [s for s in self._required if s not in identity.scopes]
        if missing:
            raise InsufficientScope(tuple(missing), f"the token lacks the scope(s) {' '.join(missing)}")
        return identity

    def _api_key(self, key: str) -> Authenticated | None:
        # A lookup by the key's sha256: its timing says nothing useful about the key itself.
        principal = self._api_keys.get(api_key_digest(key))
        if principal is not None:
            return Authenticated(principal, frozenset(principal.claims.get("scope", "").split()), "api_key")
        if self._verifier is None:
            raise Unauthenticated("the API key is not known", invalid_token=True)
        return None

    async def _jwt(self, token: str) -> Authenticated:
        if self._verifier is None:
            raise Unauthenticated("this broker accepts API keys only", invalid_token=True)
        try:
            verified = await self._verifier.verify(token)
        except TokenRejected as exc:
            raise Unauthenticated(str(exc), invalid_token=True) from None
        known = verified.derived.get("authenticated")
        if isinstance(known, Authenticated):
            return known  # a principal is made once per token, not per request
        mapping = self._mappings.get(verified.issuer.issuer, ClaimMappingConfig())
        principal, scopes = principal_from_claims(verified.claims, mapping)
        authenticated = Authenticated(principal, scopes, "jwt")
        verified.derived["authenticated"] = authenticated
        return authenticated


def principal_from_claims(
    claims: Mapping[str, Any], mapping: ClaimMappingConfig
) -> tuple[Principal, frozenset[str]]:
    subject = claims.get(mapping.subject)
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated(
            f"the token has no {mapping.subject!r} claim naming its subject", invalid_token=True
        )
    kind: Literal["Agent", "User"] = "User"
    ident, acting_for = subject, None
    actor = claims.get("act")
    client = claims.get("azp") or claims.get("client_id")
    if isinstance(actor, Mapping) and isinstance(actor.get("sub"), str):
        kind, ident, acting_for = "Agent", actor["sub"], subject
    elif isinstance(client, str) and client and client != subject:
        kind, ident, acting_for = "Agent", client, subject
    elif isinstance(client, str) and client == subject:
        kind = "Agent"  # client credentials: the client acts for itself
    if mapping.type is not None and claims.get(mapping.type) in ("Agent", "User") and acting_for is None:
        kind = claims[mapping.type]
    scopes = frozenset(_words(claims.get(mapping.scopes)) or _words(claims.get("scp")))
    selected = {name: _text(claims[name]) for name in mapping.claims if name in claims}
    if scopes:
        selected["scope"] = " ".join(sorted(scopes))
    tenant = claims.get(mapping.tenant) if mapping.tenant else None
    principal = Principal(
        kind,
        ident,
        tenant=tenant if isinstance(tenant, str) and tenant else None,
        roles=tuple(_words(claims.get(mapping.roles))) if mapping.roles else (),
        claims=selected,
        acting_for=acting_for,
    )
    return principal, scopes


def _words(value: Any) -> list[str]:
    """A claim that is a list of strings or one space-separated string."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, (str, int))]
    return []


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return value if isinstance(value, str) else str(value)
