"""Bearer JWT validation: keys from JWKS, PEM files or (development only) an HS256 secret.

Security rules, each one a test in tests/security:
- the algorithm comes from the *key*, not from the token: a key of type RSA verifies only
  RS/PS algorithms, EC only ES, OKP only EdDSA, and an HMAC secret only HS — so an HS256
  token "signed" with an RSA public key never verifies (key confusion), and `none` is never
  an option; the token's `alg` must also be in the issuer's allowlist;
- `iss` picks the issuer config (unknown → rejected), `aud` must name this broker (its
  resource URL or a configured audience), `exp`/`nbf`/`iat` are checked with a small leeway,
  configured claims are required;
- JWKS are cached with a TTL; an unknown `kid` triggers at most one refetch per interval
  (a flood of random kids cannot make the broker hammer the issuer), and when the JWKS
  endpoint is down the cached keys keep working until their TTL ends — then tokens fail
  closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

log = logging.getLogger("broker.identity.jwt")

ALGORITHMS_FOR_KEY: Mapping[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
    "oct": frozenset({"HS256", "HS384", "HS512"}),
}


class TokenRejected(Exception):
    """The token is not acceptable; the message is safe to show the caller (RFC 6750 error_description)."""


@dataclass(frozen=True)
class IssuerConfig:
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    jwks_url: str | None = None
    jwks_ttl: float = 300.0
    jwks_refresh_interval: float = 30.0
    pem_keys: tuple[bytes, ...] = ()
    hs256_secret: bytes | None = None
    leeway: float = 30.0
    required_claims: tuple[str, ...] = ("exp", "sub")


@dataclass
class _Key:
    kid: str | None
    kty: str
    key: Any

    def algorithms(self, allowed: tuple[str, ...]) -> list[str]:
        return [a for a in allowed if a in ALGORITHMS_FOR_KEY.get(self.kty, frozenset())]


@dataclass
class _KeySet:
    keys: list[_Key] = field(default_factory=list)
    fetched_at: float = 0.0
    last_attempt: float = 0.0
    version: int = 0


class IssuerKeys:
    """The verification keys of one issuer, kept fresh."""

    def __init__(self, config: IssuerConfig, http: httpx2.AsyncClient | None) -> None:
        self.config = config
        self._http = http
        self._static = [_pem_key(pem) for pem in config.pem_keys]
        if config.hs256_secret is not None:
            self._static.append(_Key(None, "oct", config.hs256_secret))
        self._jwks = _KeySet()
        self._inflight: asyncio.Future[None] | None = None

    @property
    def version(self) -> int:
        return self._jwks.version

    def fresh(self) -> bool:
        """False once JWKS keys are past their TTL: cached verifications must then be redone."""
        if self.config.jwks_url is None:
            return True
        return time.monotonic() - self._jwks.fetched_at <= self.config.jwks_ttl

    async def candidates(self, kid: str | None) -> list[_Key]:
        """Keys that may have signed a token with this `kid` (refreshing the JWKS when due)."""
        if self.config.jwks_url is not None:
            now = time.monotonic()
            stale = now - self._jwks.fetched_at > self.config.jwks_ttl
            unknown = kid is not None and not any(k.kid == kid for k in self._jwks.keys)
            if stale or unknown:
                await self._refresh_once()
            if time.monotonic() - self._jwks.fetched_at > self.config.jwks_ttl:
                jwks_keys: list[_Key] = []  # expired and not refreshed: fail closed
            else:
                jwks_keys = self._jwks.keys
        else:
            jwks_keys = []
        keys = [*jwks_keys, *self._static]
        if kid is not None:
            keys = [k for k in keys if k.kid in (kid, None)]
        return keys

    async def _refresh_once(self) -> None:
        """Join the fetch in flight, or start one if the refresh interval allows it.

        Requests arriving during a fetch wait for it rather than failing on the old (or no) keys:
        no spurious 401s at a cold start or when the TTL runs out. At most one fetch per
        `jwks_refresh_interval`, however many unknown `kid`s arrive.
        """
        if self._inflight is None:
            since = time.monotonic() - self._jwks.last_attempt
            if self._jwks.last_attempt and since < self.config.jwks_refresh_interval:
                return
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._fetched)
        await asyncio.shield(self._inflight)

    def _fetched(self, _: asyncio.Future[None]) -> None:
        self._inflight = None

    async def _fetch(self) -> None:
        now = time.monotonic()
        self._jwks.last_attempt = now
        assert self.config.jwks_url is not None and self._http is not None
        try:
            response = await self._http.get(self.config.jwks_url, timeout=5.0)
            response.raise_for_status()
            keys = parse_jwks(orjson.loads(response.content))
        except Exception as exc:  # any failure keeps the old keys (or none): fail closed, never crash
            log.warning(
                "JWKS of %s could not be fetched (%s); keeping the cached keys",
                self.config.issuer,
                exc,
            )
            return
        self._jwks = _KeySet(keys, time.monotonic(), now, self._jwks.version + 1)
        log.info("JWKS of %s: %d key(s) loaded", self.config.issuer, len(keys))


def parse_jwks(document: Any) -> list[_Key]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kty = jwk.get("kty")
        key: Any
        try:
            if kty == "RSA":
                key = RSAAlgorithm.from_jwk(jwk)
            elif kty == "EC":
                key = ECAlgorithm.from_jwk(jwk)
            elif kty == "OKP":
                key = OKPAlgorithm.from_jwk(jwk)
            else:
                continue  # symmetric keys are never taken from a JWKS endpoint
        except (ValueError, TypeError, jwt.InvalidKeyError) as exc:
            log.warning("skipping an unusable JWK (kid %s): %s", jwk.get("kid"), exc)
            continue
        keys.append(_Key(str(jwk["kid"]) if "kid" in jwk else None, kty, key))
    return keys


def _pem_key(pem: bytes) -> _Key:
    """A verification key from a PEM public key (or certificate); its type decides its algorithms."""
    try:
        key: Any = serialization.load_pem_public_key(pem)
    except ValueError:
        key = x509.load_pem_x509_certificate(pem).public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return _Key(None, "RSA", key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _Key(None, "EC", key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return _Key(None, "OKP", key)
    raise ValueError("the PEM file holds no RSA, EC or Ed25519 public key")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    claims: dict[str, Any]
    issuer: IssuerConfig
    expires_at: float
    # What callers derive from the claims (the principal), kept as long as the cached token.
    derived: dict[str, Any] = field(default_factory=dict, compare=False)


class JwtVerifier:
    """Verifies bearer JWTs against the configured issuers; caches verified tokens briefly."""

    def __init__(
        self, issuers: list[IssuerConfig], *, cache_seconds: float = 60.0, cache_size: int = 10_000
    ) -> None:
        needs_http = any(i.jwks_url for i in issuers)
        self._http = httpx2.AsyncClient(follow_redirects=False) if needs_http else None
        self._issuers = {i.issuer: IssuerKeys(i, self._http) for i in issuers}
        self._cache: OrderedDict[str, tuple[VerifiedToken, float, int]] = OrderedDict()
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        for issuer in issuers:
            if issuer.hs256_secret is not None:
                log.warning(
                    "issuer %s uses a shared HS256 secret: for development only "
                    "(anyone with the secret can mint tokens)",
                    issuer.issuer,
                )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def verify(self, token: str) -> VerifiedToken:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            verified, until, version = cached
            keys = self._issuers.get(verified.issuer.issuer)
            if (
                now < until
                and now < verified.expires_at + verified.issuer.leeway
                and keys
                and keys.version == version
                and keys.fresh()
            ):
                self._cache.move_to_end(token)
                return verified
            del self._cache[token]
        verified = await self._verify(token)
        keys = self._issuers[verified.issuer.issuer]
        self._cache[token] = (verified, now + self._cache_seconds, keys.version)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return verified

    async def _verify(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRejected("the token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenRejected("unsigned tokens (alg none) are not accepted")
        issuer = unverified.get("iss")
        keys = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            raise TokenRejected("the token's issuer is not trusted by this broker")
        config = keys.config
        if alg not in config.algorithms:
            # Only a known algorithm name is echoed: the header is attacker-controlled text.
            shown = alg if any(alg in names for names in ALGORITHMS_FOR_KEY.values()) else "of the token"
            raise TokenRejected(f"algorithm {shown} is not accepted for this issuer")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        candidates = [k for k in await keys.candidates(kid) if alg in k.algorithms(config.algorithms)]
        if not candidates:
            raise TokenRejected("no key of the issuer can verify this token (unknown key id or algorithm)")
        last: Exception | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=list(config.audiences),
                    issuer=config.issuer,
                    leeway=config.leeway,
                    options={"require": list(config.required_claims), "verify_iat": True},
                )
            except jwt.InvalidSignatureError as exc:
                last = exc
                continue
            except jwt.ExpiredSignatureError:
                raise TokenRejected("the token has expired") from None
            except jwt.ImmatureSignatureError:
                raise TokenRejected("the token is not valid yet (nbf/iat in the future)") from None
            except jwt.InvalidAudienceError:
                raise TokenRejected("the token is not meant for this broker (audience)") from None
            except jwt.MissingRequiredClaimError as exc:
                raise TokenRejected(f"the token lacks the required claim {exc.claim!r}") from None
            except jwt.PyJWTError as exc:
                raise TokenRejected(f"the token is invalid: {exc}") from None
            exp = claims.get("exp")
            expires = float(exp) if isinstance(exp, (int, float)) else time.time() + 3600
            return VerifiedToken(claims, config, expires)
        raise TokenRejected("the token's signature does not verify") from last
