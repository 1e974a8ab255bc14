"""JwtVerifier and IssuerKeys with real keys, real signatures and a real JWKS server on 127.0.0.1.

Keys are generated here (RSA, EC, Ed25519 via cryptography); JWKS fetches are counted at the
server, so the refetch rate limit and the fail-closed rules are observed, not assumed. TTLs
and refresh intervals are fractions of a second so the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from broker.identity.jwt import IssuerConfig, JwtVerifier, TokenRejected
from tests.support.tokens import (
    JwksServer,
    Minter,
    SigningKey,
    b64url,
    hmac_token,
    tamper,
    unsigned,
    with_header,
)

pytestmark = pytest.mark.anyio

ISS = "https://idp.test"
AUD = "https://broker.test/mcp"


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.rsa("rsa-1")


@pytest.fixture(scope="module")
def rsa_key2() -> SigningKey:
    return SigningKey.rsa("rsa-2")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.ec("ec-1")


@pytest.fixture(scope="module")
def ed_key() -> SigningKey:
    return SigningKey.ed25519("ed-1")


@pytest.fixture
def jwks(rsa_key: SigningKey, ec_key: SigningKey) -> Any:
    with JwksServer([rsa_key, ec_key]) as server:
        yield server


def issuer(**options: Any) -> IssuerConfig:
    settings: dict[str, Any] = {
        "issuer": ISS,
        "audiences": (AUD,),
        "algorithms": ("RS256", "PS256", "ES256", "EdDSA"),
        **options,
    }
    return IssuerConfig(**settings)


@asynccontextmanager
async def verifying(*issuers: IssuerConfig, **options: Any) -> AsyncIterator[JwtVerifier]:
    verifier = JwtVerifier(list(issuers), **options)
    try:
        yield verifier
    finally:
        await verifier.aclose()


async def rejected(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as caught:
        await verifier.verify(token)
    return str(caught.value)


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every `jwt.decode` the verifier makes *with a key* (a signature check), by token."""
    calls: list[str] = []
    original = pyjwt.decode

    def counting(token: str, key: Any = None, *args: Any, **kwargs: Any) -> Any:
        if key is not None:
            calls.append(token)
        return original(token, key, *args, **kwargs)

    monkeypatch.setattr(pyjwt, "decode", counting)  # broker.identity.jwt calls `jwt.decode` at run time
    return calls


# -- keys -------------------------------------------------------------------------------------


async def test_rsa_ec_and_eddsa_tokens_verify_against_the_jwks(
    jwks: JwksServer, rsa_key: SigningKey, ec_key: SigningKey, ed_key: SigningKey
) -> None:
    jwks.publish([rsa_key, ec_key, ed_key])
    minter = Minter(ISS, AUD, key=rsa_key)
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        rs = await verifier.verify(minter.token("alice"))
        ps = await verifier.verify(minter.token("alice", alg="PS256"))  # an RSA key verifies PS too
        es = await verifier.verify(minter.token("bob", key=ec_key))
        ed = await verifier.verify(minter.token("carol", key=ed_key))
    assert [rs.claims["sub"], ps.claims["sub"], es.claims["sub"], ed.claims["sub"]] == [
        "alice",
        "alice",
        "bob",
        "carol",
    ]
    assert rs.issuer.issuer == ISS
    assert rs.expires_at == rs.claims["exp"]
    assert jwks.requests == 1, "one fetch serves every key of the set"


async def test_a_token_signed_by_a_key_of_another_kid_does_not_verify(
    jwks: JwksServer, rsa_key: SigningKey, rsa_key2: SigningKey
) -> None:
    minter = Minter(ISS, AUD, key=rsa_key2)
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        # rsa-2 signs but claims to be rsa-1: the published rsa-1 does not verify it
        message = await rejected(verifier, minter.token(kid=rsa_key.kid))
    assert message == "the token's signature does not verify"


def _certificate(key: SigningKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key.private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519", "certificate"])
async def test_pem_file_keys(
    kind: str, rsa_key: SigningKey, rsa_key2: SigningKey, ec_key: SigningKey, ed_key: SigningKey
) -> None:
    key = {"rsa": rsa_key, "ec": ec_key, "ed25519": ed_key, "certificate": rsa_key}[kind]
    pem = _certificate(key) if kind == "certificate" else key.public_pem()
    minter = Minter(ISS, AUD, key=key)
    async with verifying(issuer(pem_keys=(pem,))) as verifier:
        assert (await verifier.verify(minter.token("alice"))).claims["sub"] == "alice"
        # a PEM key has no kid: it is a candidate whatever kid the token names
        assert (await verifier.verify(minter.token("alice", kid="anything"))).claims["sub"] == "alice"
        forged = Minter(ISS, AUD, key=rsa_key2 if key is not rsa_key2 else rsa_key).token("mallory")
        if kind in ("rsa", "certificate"):
            assert await rejected(verifier, forged) == "the token's signature does not verify"
        else:  # an RSA-signed token never meets an EC/OKP key
            assert "no key of the issuer can verify" in await rejected(verifier, forged)


async def test_hs256_secret() -> None:
    secret = b"a development secret of 32 bytes"
    async with verifying(issuer(hs256_secret=secret, algorithms=("HS256",))) as verifier:
        good = Minter(ISS, AUD, secret=secret).token("alice")
        assert (await verifier.verify(good)).claims["sub"] == "alice"
        bad = Minter(ISS, AUD, secret=b"another secret of thirty-two byt").token("mallory")
        assert await rejected(verifier, bad) == "the token's signature does not verify"


async def test_a_pem_key_file_can_be_loaded_from_the_config_path(tmp_path: Any, rsa_key: SigningKey) -> None:
    """make_authenticator reads `public_keys` files; the verifier gets their bytes."""
    from broker.app import make_authenticator
    from broker.config import parse_config

    (tmp_path / "idp.pem").write_bytes(rsa_key.public_pem())
    (tmp_path / "policies" / "cedar").mkdir(parents=True)
    text = f"""
identity:
  authentication:
    resource: {AUD}
    jwt:
      - issuer: {ISS}
        public_keys: [idp.pem]
policy:
  path: policies
  watch: false
upstreams:
  x: {{transport: stdio, command: python}}
"""
    config = parse_config(text, source="broker.yaml", base_dir=tmp_path)
    authenticator = make_authenticator(config)
    assert authenticator is not None
    try:
        token = Minter(ISS, AUD, key=rsa_key).token("alice")
        assert (await authenticator.authenticate(f"Bearer {token}")).principal.id == "alice"
    finally:
        await authenticator.aclose()


# -- the algorithm comes from the key --------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_unsigned_tokens_are_rejected(jwks: JwksServer, alg: str) -> None:
    claims = Minter(ISS, AUD).claims("admin")
    async with verifying(issuer(jwks_url=jwks.url, algorithms=("RS256", "none"))) as verifier:
        assert (
            await rejected(verifier, unsigned(claims, alg)) == "unsigned tokens (alg none) are not accepted"
        )
    assert jwks.requests == 0, "an unsigned token must not even cost a JWKS fetch"


async def test_key_confusion_hs256_signed_with_the_rsa_public_key(rsa_key: SigningKey) -> None:
    pem = rsa_key.public_pem()
    forged = hmac_token(Minter(ISS, AUD).claims("admin"), pem)
    # RS256-only issuer: HS256 is not in its allowlist at all
    async with verifying(issuer(pem_keys=(pem,), algorithms=("RS256",))) as verifier:
        assert await rejected(verifier, forged) == "algorithm HS256 is not accepted for this issuer"
    # HS256 allowed, but the only key is RSA: an RSA key never verifies HS*
    async with verifying(issuer(pem_keys=(pem,), algorithms=("RS256", "HS256"))) as verifier:
        assert "no key of the issuer can verify" in await rejected(verifier, forged)
    # an issuer with an RSA key *and* an HS256 secret: only the secret is tried for HS256
    secret = b"the issuer's own 32-byte secret!!"
    async with verifying(
        issuer(pem_keys=(pem,), hs256_secret=secret, algorithms=("RS256", "HS256"))
    ) as verifier:
        assert await rejected(verifier, forged) == "the token's signature does not verify"
        assert await rejected(verifier, hmac_token(Minter(ISS, AUD).claims("admin"), pem.strip()))
        assert (await verifier.verify(Minter(ISS, AUD, secret=secret).token("dev"))).claims["sub"] == "dev"
        assert (await verifier.verify(Minter(ISS, AUD, key=rsa_key).token("ops"))).claims["sub"] == "ops"


async def test_key_confusion_through_the_jwks(jwks: JwksServer, rsa_key: SigningKey) -> None:
    """HS256 with the kid of a published RSA key, its PEM or its JWK `n` as the secret."""
    claims = Minter(ISS, AUD).claims("admin")
    n = rsa_key.public_jwk()["n"].encode()
    async with verifying(issuer(jwks_url=jwks.url, algorithms=("RS256", "HS256"))) as verifier:
        for secret in (rsa_key.public_pem(), n):
            message = await rejected(verifier, hmac_token(claims, secret, kid=rsa_key.kid))
            assert "no key of the issuer can verify" in message


async def test_symmetric_keys_are_never_taken_from_a_jwks(jwks: JwksServer) -> None:
    secret = b"published in the jwks: a mistake"
    jwks.extra = [{"kty": "oct", "kid": "sym", "alg": "HS256", "k": b64url(secret)}]
    token = hmac_token(Minter(ISS, AUD).claims("admin"), secret, kid="sym")
    async with verifying(issuer(jwks_url=jwks.url, algorithms=("RS256", "HS256"))) as verifier:
        assert "no key of the issuer can verify" in await rejected(verifier, token)


async def test_keys_named_in_the_token_header_are_ignored(jwks: JwksServer, rsa_key: SigningKey) -> None:
    """`jwk`, `jku` and `x5u` in the header: the attacker's own key and JWKS are never used."""
    attacker = SigningKey.ec("attacker")
    with JwksServer([attacker]) as evil:
        minter = Minter(ISS, AUD, key=attacker)
        embedded = minter.token(
            "admin", headers={"jwk": attacker.public_jwk(), "jku": evil.url, "x5u": evil.url}
        )
        as_known_kid = minter.token("admin", kid=rsa_key.kid, headers={"jwk": attacker.public_jwk()})
        async with verifying(issuer(jwks_url=jwks.url)) as verifier:
            assert "no key of the issuer can verify" in await rejected(verifier, embedded)
            assert "no key of the issuer can verify" in await rejected(verifier, as_known_kid)
        assert evil.requests == 0


async def test_a_token_whose_header_alg_is_changed_does_not_verify(
    jwks: JwksServer, rsa_key: SigningKey
) -> None:
    token = Minter(ISS, AUD, key=rsa_key).token("alice")
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        assert (
            await rejected(verifier, with_header(token, alg="PS256"))
            == "the token's signature does not verify"
        )
        assert "no key of the issuer can verify" in await rejected(verifier, with_header(token, alg="ES256"))


# -- claims ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": -120}, "the token has expired"),
        ({"nbf": 300}, "the token is not valid yet (nbf/iat in the future)"),
        ({"iat": 300}, "the token is not valid yet (nbf/iat in the future)"),
        ({"iss": "https://evil.test"}, "the token's issuer is not trusted by this broker"),
        ({"iss": None}, "the token's issuer is not trusted by this broker"),
        ({"aud": "https://other.test/mcp"}, "the token is not meant for this broker (audience)"),
        ({"aud": ["https://a.test", "https://b.test"]}, "the token is not meant for this broker (audience)"),
        ({"aud": None}, "the token lacks the required claim 'aud'"),
        ({"exp": None}, "the token lacks the required claim 'exp'"),
        ({"sub": None}, "the token lacks the required claim 'sub'"),
        ({"exp": "tomorrow"}, "the token is invalid: Expiration Time claim (exp) must be an integer."),
    ],
)
async def test_claim_checks(
    jwks: JwksServer, rsa_key: SigningKey, claims: dict[str, Any], message: str
) -> None:
    now = int(time.time())
    relative: dict[str, Any] = {
        k: now + v if k in ("exp", "nbf", "iat") and isinstance(v, int) else v for k, v in claims.items()
    }
    sub: str | None = relative.pop("sub", "alice")
    token = Minter(ISS, AUD, key=rsa_key).token(sub, **relative)
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        assert await rejected(verifier, token) == message


async def test_an_issuer_that_is_not_a_string_is_not_trusted(jwks: JwksServer, rsa_key: SigningKey) -> None:
    token = tamper(Minter(ISS, AUD, key=rsa_key).token(), iss=[ISS])
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        assert await rejected(verifier, token) == "the token's issuer is not trusted by this broker"


async def test_leeway_audiences_and_required_claims(jwks: JwksServer, rsa_key: SigningKey) -> None:
    now = int(time.time())
    minter = Minter(ISS, AUD, key=rsa_key)
    config = issuer(
        jwks_url=jwks.url,
        audiences=(AUD, "api://broker"),
        leeway=30,
        required_claims=("exp", "sub", "tenant"),
    )
    async with verifying(config) as verifier:
        await verifier.verify(minter.token(exp=now - 10, nbf=now + 10, tenant="acme"))  # within the leeway
        await verifier.verify(minter.token(aud=["https://x.test", "api://broker"], tenant="acme"))
        assert await rejected(verifier, minter.token()) == "the token lacks the required claim 'tenant'"


async def test_tampered_payload(jwks: JwksServer, rsa_key: SigningKey, ec_key: SigningKey) -> None:
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        for key in (rsa_key, ec_key):
            token = Minter(ISS, AUD, key=key).token("alice", roles=["viewer"])
            await verifier.verify(token)
            for change in ({"sub": "admin"}, {"roles": ["admin"]}, {"exp": int(time.time()) + 86400}):
                assert (
                    await rejected(verifier, tamper(token, **change))
                    == "the token's signature does not verify"
                )


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJSUzI1NiJ9.e30"])
async def test_malformed_tokens(jwks: JwksServer, token: str) -> None:
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        assert await rejected(verifier, token) == "the token is not a well-formed JWT"
    assert jwks.requests == 0


# -- the JWKS: rotation, refetch rate limit, outages -------------------------------------------------


async def test_key_rotation(rsa_key: SigningKey, rsa_key2: SigningKey) -> None:
    old, new = rsa_key, rsa_key2
    minter = Minter(ISS, AUD, key=old)
    with JwksServer([old]) as jwks:
        config = issuer(jwks_url=jwks.url, jwks_ttl=0.8, jwks_refresh_interval=0.2)
        async with verifying(config) as verifier:
            await verifier.verify(minter.token())
            assert jwks.requests == 1
            jwks.publish([old, new])  # the IdP starts signing with a new key
            await asyncio.sleep(0.25)
            await verifier.verify(minter.token(key=new))  # new kid: picked up on first use
            assert jwks.requests == 2
            await verifier.verify(minter.token(key=old))  # the old one still works
            jwks.publish([new])  # the old key is withdrawn …
            await verifier.verify(minter.token(key=old))  # … but the cached set has it until the TTL
            assert jwks.requests == 2
            await asyncio.sleep(0.85)
            assert "no key of the issuer can verify" in await rejected(verifier, minter.token(key=old))
            assert jwks.requests == 3
            await verifier.verify(minter.token(key=new))
            assert jwks.requests == 3


async def test_unknown_kids_cause_at_most_one_fetch_per_interval(
    jwks: JwksServer, rsa_key: SigningKey
) -> None:
    minter = Minter(ISS, AUD, key=rsa_key)
    async with verifying(issuer(jwks_url=jwks.url, jwks_refresh_interval=0.5)) as verifier:
        await verifier.verify(minter.token())
        assert jwks.requests == 1
        for i in range(40):  # a flood of random kids right after a fetch: no fetch at all
            assert "unknown key id" in await rejected(verifier, minter.token(kid=f"random-{i}"))
        assert jwks.requests == 1
        await asyncio.sleep(0.55)
        jwks.delay = 0.05  # make the burst really concurrent with the fetch
        burst = await asyncio.gather(
            *(verifier.verify(minter.token(kid=f"burst-{i}")) for i in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, TokenRejected) for r in burst)
        assert jwks.requests == 2, "50 concurrent unknown kids: exactly one refetch"
        await verifier.verify(minter.token())  # the known key still works meanwhile


async def test_concurrent_first_use_fetches_once_and_all_succeed(
    jwks: JwksServer, rsa_key: SigningKey
) -> None:
    """Requests arriving while the first fetch is in flight wait for it (they used to fail closed)."""
    jwks.delay = 0.1
    minter = Minter(ISS, AUD, key=rsa_key)
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        results = await asyncio.gather(
            *(verifier.verify(minter.token(f"u{i}")) for i in range(20)), return_exceptions=True
        )
    assert jwks.requests == 1
    assert [getattr(r, "claims", {}).get("sub") for r in results] == [f"u{i}" for i in range(20)], results


async def test_requests_during_a_ttl_refresh_are_not_rejected(jwks: JwksServer, rsa_key: SigningKey) -> None:
    minter = Minter(ISS, AUD, key=rsa_key)
    async with verifying(issuer(jwks_url=jwks.url, jwks_ttl=0.3, jwks_refresh_interval=0.1)) as verifier:
        await verifier.verify(minter.token())
        await asyncio.sleep(0.35)  # the keys are due for a refresh; the IdP is slow to answer it
        jwks.delay = 0.2
        results = await asyncio.gather(
            *(verifier.verify(minter.token()) for _ in range(5)), return_exceptions=True
        )
    assert jwks.requests == 2
    assert not [r for r in results if isinstance(r, Exception)], results


@pytest.mark.parametrize("outage", ["503", "connection refused"])
async def test_jwks_down_at_first_use_fails_closed(rsa_key: SigningKey, outage: str) -> None:
    jwks = JwksServer([rsa_key]).start()
    try:
        if outage == "503":
            jwks.down = True
        else:
            jwks.stop()
        minter = Minter(ISS, AUD, key=rsa_key)
        async with verifying(issuer(jwks_url=jwks.url, jwks_refresh_interval=0.2)) as verifier:
            assert "no key of the issuer can verify" in await rejected(verifier, minter.token())
            assert "no key of the issuer can verify" in await rejected(verifier, minter.token())
            if outage == "503":
                assert jwks.requests == 1, "a down endpoint is retried once per interval, not per token"
                jwks.down = False
                await asyncio.sleep(0.25)
                await verifier.verify(minter.token())  # recovered
                assert jwks.requests == 2
    finally:
        jwks.stop()


async def test_jwks_down_later_cached_keys_until_the_ttl_then_fail_closed(
    jwks: JwksServer, rsa_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    minter = Minter(ISS, AUD, key=rsa_key)
    config = issuer(jwks_url=jwks.url, jwks_ttl=0.6, jwks_refresh_interval=0.1)
    async with verifying(config) as verifier:
        await verifier.verify(minter.token())
        jwks.down = True
        await asyncio.sleep(0.15)
        with caplog.at_level(logging.WARNING, logger="broker.identity.jwt"):
            await rejected(verifier, minter.token(kid="new-kid"))  # a refetch is tried and fails …
        assert "could not be fetched" in caplog.text
        assert jwks.requests == 2
        await verifier.verify(minter.token())  # … the cached keys keep working
        await asyncio.sleep(0.5)  # past the TTL
        assert "no key of the issuer can verify" in await rejected(verifier, minter.token())
        jwks.down = False
        await asyncio.sleep(0.15)
        await verifier.verify(minter.token())


async def test_a_cached_verification_does_not_outlive_the_jwks_ttl(
    jwks: JwksServer, rsa_key: SigningKey
) -> None:
    """The token cache must not keep a token alive once its issuer's keys have expired unrefreshed."""
    minter = Minter(ISS, AUD, key=rsa_key)
    async with verifying(issuer(jwks_url=jwks.url, jwks_ttl=0.4, jwks_refresh_interval=0.1)) as verifier:
        token = minter.token()
        await verifier.verify(token)
        jwks.down = True
        await asyncio.sleep(0.5)
        assert "no key of the issuer can verify" in await rejected(verifier, minter.token())  # fails closed
        await rejected(verifier, token)  # the same token must fail closed too


async def test_unusable_jwks_entries_are_skipped(
    jwks: JwksServer, rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    broken = {**ec_key.public_jwk(), "kid": "broken", "x": "not-base64!"}
    encryption = {**SigningKey.ec("enc").public_jwk(), "use": "enc"}
    jwks.publish([rsa_key])
    jwks.extra = [broken, encryption, {"kty": "RSA", "kid": "no-modulus"}]
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        await verifier.verify(Minter(ISS, AUD, key=rsa_key).token())
        enc_token = Minter(ISS, AUD, key=ec_key).token(kid="enc")
        assert "no key of the issuer can verify" in await rejected(verifier, enc_token)


@pytest.mark.parametrize("document", [b"<html>oops</html>", b'{"keys": "nope"}', b"[]", b""])
async def test_a_garbled_jwks_keeps_the_cached_keys(
    jwks: JwksServer, rsa_key: SigningKey, document: bytes
) -> None:
    minter = Minter(ISS, AUD, key=rsa_key)
    async with verifying(issuer(jwks_url=jwks.url, jwks_refresh_interval=0.05)) as verifier:
        await verifier.verify(minter.token())
        jwks.body = document
        await asyncio.sleep(0.1)
        await rejected(verifier, minter.token(kid="rotated"))  # refetch: garbage, ignored
        assert jwks.requests == 2
        await verifier.verify(minter.token())


# -- the verified-token cache ----------------------------------------------------------------------


async def test_a_repeated_token_is_not_verified_again(
    jwks: JwksServer, rsa_key: SigningKey, ec_key: SigningKey, signature_checks: list[str]
) -> None:
    async with verifying(issuer(jwks_url=jwks.url)) as verifier:
        for key in (rsa_key, ec_key):
            token = Minter(ISS, AUD, key=key).token("alice")
            first = await verifier.verify(token)
            for _ in range(20):
                assert await verifier.verify(token) is first
            assert signature_checks.count(token) == 1, "the cache must spare the signature check"
        # a different token (even with the same claims) is checked on its own
        other = Minter(ISS, AUD, key=rsa_key).token("alice")
        await verifier.verify(other)
        assert signature_checks.count(other) == 1
        # a tampered copy of a cached token is not a cache hit
        assert await rejected(verifier, tamper(token, sub="admin")) == "the token's signature does not verify"


async def test_the_cache_is_invalidated_when_the_key_set_changes(
    jwks: JwksServer, rsa_key: SigningKey, rsa_key2: SigningKey, signature_checks: list[str]
) -> None:
    minter = Minter(ISS, AUD, key=rsa_key)
    async with verifying(issuer(jwks_url=jwks.url, jwks_refresh_interval=0.1)) as verifier:
        token = minter.token()
        await verifier.verify(token)
        await verifier.verify(token)
        assert signature_checks.count(token) == 1
        await asyncio.sleep(0.15)
        await rejected(verifier, minter.token(kid="unknown"))  # a refetch: a new key-set version
        assert jwks.requests == 2
        await verifier.verify(token)  # same keys, but a new version: checked again
        assert signature_checks.count(token) == 2
        jwks.publish([rsa_key2])  # the issuer withdraws the key that signed `token`
        await asyncio.sleep(0.15)
        await rejected(verifier, minter.token(kid="unknown-2"))
        assert jwks.requests == 3
        assert "no key of the issuer can verify" in await rejected(verifier, token)


async def test_a_cached_token_still_expires(jwks: JwksServer, rsa_key: SigningKey) -> None:
    # `exp` is whole seconds: +1 can be a few milliseconds away, so leave room for the first checks.
    exp = int(time.time()) + 3
    token = Minter(ISS, AUD, key=rsa_key).token(exp=exp)
    async with verifying(issuer(jwks_url=jwks.url, leeway=0)) as verifier:
        await verifier.verify(token)
        await verifier.verify(token)
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
        assert await rejected(verifier, token) == "the token has expired"


async def test_the_cache_is_bounded_and_entries_time_out(
    jwks: JwksServer, rsa_key: SigningKey, signature_checks: list[str]
) -> None:
    minter = Minter(ISS, AUD, key=rsa_key)
    tokens = [minter.token(f"u{i}") for i in range(4)]
    async with verifying(issuer(jwks_url=jwks.url), cache_size=3, cache_seconds=0.2) as verifier:
        for token in tokens:
            await verifier.verify(token)
        await verifier.verify(tokens[3])
        assert signature_checks.count(tokens[3]) == 1
        await verifier.verify(tokens[0])  # evicted (least recently used)
        assert signature_checks.count(tokens[0]) == 2
        await asyncio.sleep(0.25)
        await verifier.verify(tokens[3])  # timed out
        assert signature_checks.count(tokens[3]) == 2
