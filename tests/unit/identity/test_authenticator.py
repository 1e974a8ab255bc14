"""Authenticator and principal_from_claims: from an Authorization header to a principal.

Claim mapping is checked on plain claim sets (principal_from_claims) and end to end with real
signed tokens (an Authenticator over a JwtVerifier with PEM keys): roles, tenant, scopes,
selected claims, delegation through `act` and through `azp`/`client_id`, API keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from broker.config import ClaimMappingConfig
from broker.identity.authenticator import (
    Authenticator,
    InsufficientScope,
    Unauthenticated,
    api_key_digest,
    principal_from_claims,
)
from broker.identity.jwt import IssuerConfig, JwtVerifier
from broker.identity.principal import Principal
from tests.support.tokens import Minter, SigningKey

ISS = "https://idp.test"
ISS2 = "https://corp-idp.test"
AUD = "https://broker.test/mcp"


# -- claim mapping ------------------------------------------------------------------------------


def principal(token_claims: Mapping[str, Any], **mapping: Any) -> tuple[Principal, frozenset[str]]:
    return principal_from_claims(token_claims, ClaimMappingConfig(**mapping))


def who(p: Principal) -> tuple[str, str, str | None]:
    return p.type, p.id, p.acting_for


def test_a_plain_user() -> None:
    p, scopes = principal({"sub": "alice"})
    assert who(p) == ("User", "alice", None)
    assert (p.tenant, p.roles, dict(p.claims), scopes) == (None, (), {}, frozenset())
    assert p.document == {
        "type": "User",
        "id": "alice",
        "tenant": None,
        "roles": [],
        "claims": {},
        "acting_for": None,
    }


@pytest.mark.parametrize(
    "roles", [["engineer", "admin"], "engineer admin", " engineer   admin "], ids=["list", "spaces", "padded"]
)
def test_roles_as_a_list_or_space_separated(roles: Any) -> None:
    assert principal({"sub": "alice", "roles": roles})[0].roles == ("engineer", "admin")


def test_roles_and_tenant_from_configured_claims() -> None:
    claims = {"sub": "alice", "groups": ["ops"], "org": "acme", "roles": ["ignored"], "tenant": "ignored"}
    p, _ = principal(claims, roles="groups", tenant="org")
    assert (p.roles, p.tenant) == (("ops",), "acme")
    p, _ = principal(claims, roles=None, tenant=None)
    assert (p.roles, p.tenant) == ((), None)


@pytest.mark.parametrize("tenant", [None, "", 42, ["acme"]])
def test_a_tenant_must_be_a_non_empty_string(tenant: Any) -> None:
    assert principal({"sub": "alice", "tenant": tenant})[0].tenant is None


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"scope": "tools.read tools.write"}, {"tools.read", "tools.write"}),
        ({"scope": ["tools.read", "tools.write"]}, {"tools.read", "tools.write"}),
        ({"scp": ["tools.read", "tools.write"]}, {"tools.read", "tools.write"}),
        ({"scp": "tools.read tools.write"}, {"tools.read", "tools.write"}),
        ({"scope": "tools.read", "scp": ["admin"]}, {"tools.read"}),
        ({"scope": "", "scp": ["admin"]}, {"admin"}),
        ({}, set()),
    ],
    ids=["scope", "scope-list", "scp-list", "scp-string", "scope-wins", "empty-scope", "none"],
)
def test_scopes_from_scope_or_scp(claims: dict[str, Any], expected: set[str]) -> None:
    p, scopes = principal({"sub": "alice", **claims})
    assert scopes == expected
    if expected:
        assert p.claims["scope"] == " ".join(sorted(expected))  # policies see them as a claim
    else:
        assert "scope" not in p.claims


def test_scopes_from_a_configured_claim() -> None:
    _, scopes = principal({"sub": "alice", "permissions": ["a", "b"], "scope": "c"}, scopes="permissions")
    assert scopes == {"a", "b"}


def test_selected_claims_become_strings() -> None:
    claims = {
        "sub": "alice",
        "email": "alice@example.com",
        "mfa": True,
        "admin": False,
        "groups": ["g1", "g2"],
        "level": 3,
        "secret_claim": "not selected",
    }
    p, _ = principal(claims, claims=("email", "mfa", "admin", "groups", "level", "absent"))
    assert dict(p.claims) == {
        "email": "alice@example.com",
        "mfa": "true",
        "admin": "false",
        "groups": "g1 g2",
        "level": "3",
    }


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"sub": "alice", "act": {"sub": "review-bot"}}, ("Agent", "review-bot", "alice")),
        # RFC 8693 §4.1: the outermost `act` is the current actor, nested ones acted before it
        ({"sub": "alice", "act": {"sub": "bot-2", "act": {"sub": "bot-1"}}}, ("Agent", "bot-2", "alice")),
        ({"sub": "alice", "azp": "desktop-app"}, ("Agent", "desktop-app", "alice")),
        ({"sub": "alice", "client_id": "desktop-app"}, ("Agent", "desktop-app", "alice")),
        (
            {"sub": "alice", "act": {"sub": "review-bot"}, "azp": "desktop-app"},
            ("Agent", "review-bot", "alice"),
        ),
        # client credentials: the client is the subject and acts for itself
        ({"sub": "nightly-job", "client_id": "nightly-job"}, ("Agent", "nightly-job", None)),
        ({"sub": "nightly-job", "azp": "nightly-job"}, ("Agent", "nightly-job", None)),
        # malformed delegation claims are ignored
        ({"sub": "alice", "act": "review-bot"}, ("User", "alice", None)),
        ({"sub": "alice", "act": {"client": "x"}}, ("User", "alice", None)),
        ({"sub": "alice", "azp": ""}, ("User", "alice", None)),
        ({"sub": "alice", "azp": 7}, ("User", "alice", None)),
    ],
    ids=[
        "act",
        "nested-act",
        "azp",
        "client_id",
        "act-beats-azp",
        "client-credentials-client_id",
        "client-credentials-azp",
        "act-not-object",
        "act-without-sub",
        "empty-azp",
        "numeric-azp",
    ],
)
def test_delegation(claims: dict[str, Any], expected: tuple[str, str, str | None]) -> None:
    p, _ = principal({**claims, "tenant": "acme", "roles": ["engineer"]})
    assert who(p) == expected
    assert (p.tenant, p.roles) == ("acme", ("engineer",)), "tenant and roles come from the token either way"


def test_a_type_claim_decides_only_without_delegation() -> None:
    assert who(principal({"sub": "ci", "kind": "Agent"}, type="kind")[0]) == ("Agent", "ci", None)
    assert who(principal({"sub": "svc", "client_id": "svc", "kind": "User"}, type="kind")[0]) == (
        "User",
        "svc",
        None,
    )
    assert who(principal({"sub": "ci", "kind": "robot"}, type="kind")[0]) == ("User", "ci", None)
    # acting for someone: always an Agent, whatever the type claim says
    delegated = {"sub": "alice", "azp": "app", "kind": "User"}
    assert who(principal(delegated, type="kind")[0]) == ("Agent", "app", "alice")


def test_a_custom_subject_claim() -> None:
    assert (
        principal({"sub": "00u1", "email": "alice@example.com"}, subject="email")[0].id == "alice@example.com"
    )


@pytest.mark.parametrize("claims", [{}, {"sub": ""}, {"sub": 12}, {"sub": ["alice"]}])
def test_no_subject_is_unauthenticated(claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated) as caught:
        principal(claims)
    assert caught.value.invalid_token
    assert caught.value.description == "the token has no 'sub' claim naming its subject"


# -- the Authenticator, with real tokens -------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.rsa("k1")


@pytest.fixture(scope="module")
def corp_key() -> SigningKey:
    return SigningKey.ec("corp")


API_KEY = "mcpk_" + "x" * 40
ROBOT = Principal("Agent", "deploy-robot", "acme", ("deployer",), {"scope": "tools.read tools.write"})


@pytest.fixture
async def authenticator(key: SigningKey, corp_key: SigningKey) -> AsyncIterator[Authenticator]:
    verifier = JwtVerifier(
        [
            IssuerConfig(ISS, (AUD,), ("RS256",), pem_keys=(key.public_pem(),)),
            IssuerConfig(ISS2, (AUD,), ("ES256",), pem_keys=(corp_key.public_pem(),)),
        ]
    )
    authenticator = Authenticator(
        verifier=verifier,
        mappings={ISS2: ClaimMappingConfig(subject="email", roles="groups", tenant="org", claims=("mfa",))},
        api_keys={api_key_digest(API_KEY).upper(): ROBOT},
        max_token_bytes=2048,
    )
    yield authenticator
    await authenticator.aclose()


async def unauthenticated(authenticator: Authenticator, header: str | None) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(header)
    return caught.value


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "description", "invalid_token"),
    [
        (None, "a bearer token is required", False),
        ("", "a bearer token is required", False),
        ("Basic YWxpY2U6c2VjcmV0", "use the Bearer authentication scheme", False),
        ("Bearer", "the Bearer credential is empty", True),
        ("Bearer    ", "the Bearer credential is empty", True),
        ("Token abc.def.ghi", "use the Bearer authentication scheme", False),
        ("Bearer not-a-jwt", "the token is not a well-formed JWT", True),
        ("Bearer " + "a" * 2049, "the token is longer than 2048 bytes", True),
    ],
    ids=["absent", "empty", "basic", "bearer-only", "bearer-blank", "other-scheme", "garbage", "too-long"],
)
async def test_header_forms(
    authenticator: Authenticator, header: str | None, description: str, invalid_token: bool
) -> None:
    error = await unauthenticated(authenticator, header)
    assert (error.description, error.invalid_token) == (description, invalid_token)


@pytest.mark.anyio
async def test_a_jwt_makes_a_principal(authenticator: Authenticator, key: SigningKey) -> None:
    token = Minter(ISS, AUD, key=key).token(
        "alice", roles="engineer oncall", tenant="acme", scope="tools.read", email="a@x"
    )
    result = await authenticator.authenticate(f"bearer {token}")  # the scheme is case-insensitive
    assert result.method == "jwt"
    assert result.scopes == {"tools.read"}
    p = result.principal
    assert (p.type, p.id, p.tenant, p.roles, p.acting_for) == (
        "User",
        "alice",
        "acme",
        ("engineer", "oncall"),
        None,
    )
    assert dict(p.claims) == {"scope": "tools.read"}, "only selected claims (none here) and the scopes"


@pytest.mark.anyio
async def test_each_issuer_has_its_own_claim_mapping(
    authenticator: Authenticator, corp_key: SigningKey
) -> None:
    token = Minter(ISS2, AUD, key=corp_key).token(
        "00u1", email="bob@corp.test", groups=["admin"], org="corp", mfa=True, roles=["ignored"]
    )
    p = (await authenticator.authenticate(f"Bearer {token}")).principal
    assert (p.id, p.roles, p.tenant, dict(p.claims)) == ("bob@corp.test", ("admin",), "corp", {"mfa": "true"})


@pytest.mark.anyio
async def test_delegated_and_client_credentials_tokens(authenticator: Authenticator, key: SigningKey) -> None:
    minter = Minter(ISS, AUD, key=key)
    agent = (
        await authenticator.authenticate(f"Bearer {minter.token('alice', act={'sub': 'review-bot'})}")
    ).principal
    assert who(agent) == ("Agent", "review-bot", "alice")
    client = (await authenticator.authenticate(f"Bearer {minter.token('svc', client_id='svc')}")).principal
    assert who(client) == ("Agent", "svc", None)


@pytest.mark.anyio
async def test_api_keys(authenticator: Authenticator) -> None:
    result = await authenticator.authenticate(f"Bearer {API_KEY}")
    assert result.method == "api_key"
    assert result.principal == ROBOT
    assert result.scopes == {"tools.read", "tools.write"}
    # an unknown key falls through to JWT parsing (the broker also has issuers)
    error = await unauthenticated(authenticator, "Bearer mcpk_" + "y" * 40)
    assert error.description == "the token is not a well-formed JWT"


def test_api_key_digest_is_the_hex_sha256() -> None:
    assert api_key_digest(API_KEY) == hashlib.sha256(API_KEY.encode()).hexdigest()


@pytest.mark.anyio
async def test_an_api_key_only_broker(key: SigningKey) -> None:
    authenticator = Authenticator(verifier=None, mappings={}, api_keys={api_key_digest(API_KEY): ROBOT})
    assert (await authenticator.authenticate(f"Bearer {API_KEY}")).principal == ROBOT
    assert (
        await unauthenticated(authenticator, "Bearer wrong-key")
    ).description == "the API key is not known"
    jwt_token = Minter(ISS, AUD, key=key).token()
    error = await unauthenticated(authenticator, f"Bearer {jwt_token}")
    assert error.description == "this broker accepts API keys only"


@pytest.mark.anyio
async def test_required_scopes(key: SigningKey) -> None:
    verifier = JwtVerifier([IssuerConfig(ISS, (AUD,), ("RS256",), pem_keys=(key.public_pem(),))])
    authenticator = Authenticator(
        verifier=verifier,
        mappings={},
        api_keys={api_key_digest(API_KEY): ROBOT},
        required_scopes=("mcp", "tools.write"),
    )
    minter = Minter(ISS, AUD, key=key)
    try:
        with pytest.raises(InsufficientScope) as caught:
            await authenticator.authenticate(f"Bearer {minter.token(scope='mcp tools.read')}")
        assert caught.value.scopes == ("tools.write",)
        assert caught.value.description == "the token lacks the scope(s) tools.write"
        with pytest.raises(InsufficientScope) as caught:
            await authenticator.authenticate(f"Bearer {minter.token()}")
        assert caught.value.scopes == ("mcp", "tools.write")
        ok = await authenticator.authenticate(f"Bearer {minter.token(scp=['tools.write', 'mcp'])}")
        assert ok.scopes == {"mcp", "tools.write"}
        with pytest.raises(InsufficientScope):  # the robot's key has tools.write but not mcp
            await authenticator.authenticate(f"Bearer {API_KEY}")
        # an invalid token is a 401 before any scope question
        bad = await unauthenticated(authenticator, "Bearer x.y.z")
        assert bad.invalid_token
    finally:
        await authenticator.aclose()


@pytest.mark.anyio
async def test_a_principal_is_made_once_per_token(authenticator: Authenticator, key: SigningKey) -> None:
    header = f"Bearer {Minter(ISS, AUD, key=key).token('alice', roles=['engineer'], tenant='acme')}"
    first = await authenticator.authenticate(header)
    again = await authenticator.authenticate(header)
    assert again.principal == first.principal
    assert again.principal is first.principal
