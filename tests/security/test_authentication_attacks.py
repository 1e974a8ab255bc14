"""Attacks on the broker's authentication, against the real broker over HTTP.

One broker process (`mcp-broker serve`) fronts the counter fixture (stdio) and a header
recorder (Streamable HTTP, tests/security/header_recorder.py). It trusts these issuers:

- `https://idp.test`: a JWKS (RSA + EC keys) on 127.0.0.1, RS/PS/ES/EdDSA only;
- `https://mixed-idp.test`: an RSA PEM file *and* an HS256 secret, algorithms RS256 + HS256;
- `https://cold-idp.test`: a JWKS endpoint that is down from the start;
- `https://flaky-idp.test` / `https://stale-idp.test`: JWKS with a 1.5 s TTL, taken down later.

Every refused request is a raw httpx request (both protocol eras: 2025-11-25 on an open
session of alice, 2026-07-28 stateless) to call `counter__hit`; each case asserts the HTTP
status, the `WWW-Authenticate` challenge, the JSON-RPC error, and that the counter did not
move (read back with alice's valid token afterwards).

Audit: every refusal here will also be asserted in the audit log once audit records land
(see the `# audit:` comments).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config import ConfigError, parse_config
from tests.fixtures import running_server
from tests.support.broker import (
    BrokerProcess,
    broker_config,
    http_upstream,
    running_broker,
    stdio_upstream,
)
from tests.support.opa import opa_binary
from tests.support.tokens import (
    JwksServer,
    Minter,
    SigningKey,
    free_port,
    hmac_token,
    jwt_issuer,
    tamper,
    unsigned,
    with_header,
)

ISSUER = "https://idp.test"
MIXED = "https://mixed-idp.test"
COLD = "https://cold-idp.test"
FLAKY = "https://flaky-idp.test"
STALE = "https://stale-idp.test"
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ERAS = [LEGACY, MODERN]
MAX_TOKEN_BYTES = 4096
FLAKY_TTL = 1.5
MIXED_SECRET = "the mixed issuer's HS256 secret, 32+ bytes long"
UPSTREAM_CREDENTIAL = "upstream-own-credential-5f3a9c"
ACCESS_DENIED = -32001
RECORDER = Path(__file__).resolve().parent / "header_recorder.py"
BASE_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
_ids = itertools.count(1)

CEDAR_POLICY = """
@id("allow-all") @reason("test: everything else is allowed")
permit (principal, action, resource);

@id("destructive-needs-write-scope")
@reason("destructive tools need the tools.write scope")
@scope("tools.write")
forbid (principal, action == Mcp::Action::"call_tool", resource)
when { resource.name == "hit_destructive" }
unless { principal.hasTag("scope") && principal.getTag("scope") like "*tools.write*" };
"""

REGO_POLICY = """
package mcp.authz

default decision := {"effect": "allow", "reasons": [{"id": "allow-all", "message": "test: allowed"}]}

decision := {"effect": "deny", "reasons": [{
    "id": "destructive-needs-write-scope",
    "message": "destructive tools need the tools.write scope",
    "scope": "tools.write",
}]} if {
    input.action == "call_tool"
    input.resource.name == "hit_destructive"
    not "tools.write" in split(object.get(input.principal.claims, "scope", ""), " ")
}
"""


# -- the deployment ------------------------------------------------------------------------------


@dataclass
class Deployment:
    broker: BrokerProcess
    http: httpx.Client
    jwks: dict[str, JwksServer]
    minters: dict[str, Minter]
    keys: dict[str, SigningKey]
    record: Path
    alice_token: str = ""
    alice_session: str = ""
    seen_tokens: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return self.broker.url.removesuffix("/mcp")

    @property
    def metadata_url(self) -> str:
        return f"{self.origin}/.well-known/oauth-protected-resource/mcp"

    def token(self, issuer: str = ISSUER, sub: str = "alice", **claims: Any) -> str:
        token = self.minters[issuer].token(sub, **claims)
        self.seen_tokens.append(token)
        return token


def write_policy(directory: Path, engine: str) -> Path:
    root = directory / "policies"
    if engine == "cedar":
        (root / "cedar").mkdir(parents=True)
        (root / "cedar" / "test.cedar").write_text(CEDAR_POLICY)
    else:
        (root / "rego").mkdir(parents=True)
        (root / "rego" / "test.rego").write_text(REGO_POLICY)
    return root


def policy_section(directory: Path, engine: str) -> dict[str, Any]:
    section: dict[str, Any] = {"engine": engine, "path": str(write_policy(directory, engine)), "watch": False}
    if engine == "opa":
        section["opa"] = {"binary": str(opa_binary()), "timeout_ms": 1000}
    return section


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {"rsa": SigningKey.rsa("rsa-1"), "ec": SigningKey.ec("ec-1"), "mixed": SigningKey.rsa("mixed-rsa")}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SigningKey]) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("attacks")
    record = directory / "upstream-headers.jsonl"
    with ExitStack() as stack:
        jwks = {
            ISSUER: stack.enter_context(JwksServer([keys["rsa"], keys["ec"]])),
            COLD: stack.enter_context(JwksServer([keys["rsa"]])),
            FLAKY: stack.enter_context(JwksServer([keys["rsa"]])),
            STALE: stack.enter_context(JwksServer([keys["rsa"]])),
        }
        jwks[COLD].down = True  # down before the broker ever asks
        recorder = stack.enter_context(running_server(RECORDER, "--record", str(record)))
        (directory / "mixed.pem").write_bytes(keys["mixed"].public_pem())
        port = free_port()
        flaky = {"jwks_ttl": FLAKY_TTL, "jwks_refresh_interval": 0.3}
        config = broker_config(
            {
                "counter": stdio_upstream("counter.py"),
                "rec": http_upstream(
                    recorder.url, headers={"Authorization": {"env": "RECORDER_TOKEN", "prefix": "Bearer "}}
                ),
            },
            http={"port": port},
            policy=policy_section(directory, "cedar"),
            identity={
                "authentication": {
                    "authorization_servers": [ISSUER],
                    "scopes_supported": ["tools.read", "tools.write"],
                    "max_token_bytes": MAX_TOKEN_BYTES,
                    "jwt": [
                        jwt_issuer(ISSUER, jwks_url=jwks[ISSUER].url),
                        jwt_issuer(
                            MIXED,
                            public_keys=[str(directory / "mixed.pem")],
                            hs256_secret={"env": "MIXED_SECRET"},
                            algorithms=["RS256", "HS256"],
                        ),
                        jwt_issuer(COLD, jwks_url=jwks[COLD].url),
                        jwt_issuer(FLAKY, jwks_url=jwks[FLAKY].url, **flaky),
                        jwt_issuer(STALE, jwks_url=jwks[STALE].url, **flaky),
                    ],
                }
            },
        )
        env = {"MIXED_SECRET": MIXED_SECRET, "RECORDER_TOKEN": UPSTREAM_CREDENTIAL}
        broker = stack.enter_context(running_broker(directory, config, env=env))
        http = stack.enter_context(httpx.Client(timeout=15))
        url = broker.url
        audience = f"http://127.0.0.1:{port}/mcp"
        assert url == audience, "the broker's default resource URL is where it listens"
        minters = {
            ISSUER: Minter(ISSUER, audience, key=keys["rsa"]),
            MIXED: Minter(MIXED, audience, key=keys["mixed"]),
            COLD: Minter(COLD, audience, key=keys["rsa"]),
            FLAKY: Minter(FLAKY, audience, key=keys["rsa"]),
            STALE: Minter(STALE, audience, key=keys["rsa"]),
        }
        deployment = Deployment(broker, http, jwks, minters, keys, record)
        deployment.alice_token = deployment.token(scope="tools.read")
        deployment.alice_session = open_session(deployment, deployment.alice_token)
        yield deployment


# -- wire helpers -----------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def rpc(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response (JSON, or the last event of an SSE stream)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        message: dict[str, Any] = json.loads(data[-1])
        return message
    return dict(response.json())


def envelope() -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "attack-suite", "version": "1"},
    }


def open_session(d: Deployment, token: str) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": next(_ids),
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "attack-suite", "version": "1"},
        },
    }
    response = d.http.post(d.broker.url, json=init, headers={**BASE_HEADERS, **bearer(token)})
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    done = d.http.post(
        d.broker.url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**BASE_HEADERS, **bearer(token), "mcp-session-id": session},
    )
    assert done.status_code == 202, done.text
    return session


def call_tool(
    d: Deployment, tool: str, headers: dict[str, str], *, era: str = LEGACY, session: str | None = None
) -> httpx.Response:
    params: dict[str, Any] = {"name": tool, "arguments": {}}
    if era == LEGACY:
        extra = {"mcp-session-id": session or d.alice_session, "mcp-protocol-version": LEGACY}
    else:
        params["_meta"] = envelope()
        extra = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": tool}
    body = {"jsonrpc": "2.0", "id": next(_ids), "method": "tools/call", "params": params}
    return d.http.post(d.broker.url, json=body, headers={**BASE_HEADERS, **extra, **headers})


def hits(d: Deployment) -> int:
    """The counter's total, read with alice's valid token on her session."""
    response = call_tool(d, "counter__count", bearer(d.alice_token))
    assert response.status_code == 200, response.text
    result = rpc(response)["result"]
    assert result["isError"] is False, result
    return int(result["content"][0]["text"])


_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def challenge(response: httpx.Response) -> dict[str, str]:
    """The parameters of a `WWW-Authenticate: Bearer k="v", …` header."""
    header = response.headers.get("www-authenticate")
    assert header is not None, f"no WWW-Authenticate on {response.status_code}: {response.text}"
    assert header.startswith("Bearer "), header
    params = dict(_PARAM.findall(header))
    rebuilt = ", ".join(f'{k}="{v}"' for k, v in _PARAM.findall(header))
    assert header == f"Bearer {rebuilt}", f"unparseable challenge: {header}"
    return params


def assert_unauthorized(
    d: Deployment, response: httpx.Response, description: str, *, error: str | None = "invalid_token"
) -> None:
    assert response.status_code == 401, response.text
    params = challenge(response)
    expected = {"resource_metadata": d.metadata_url}
    if error is not None:  # RFC 6750 §3.1: no error details for a request without a bearer credential
        expected["error"] = error
        expected["error_description"] = description.replace('"', "'")
    assert params == expected
    message = rpc(response)
    assert message["id"] is None
    assert message["error"] == {
        "code": ACCESS_DENIED,
        "message": f"Unauthorized: {description}",
        "data": {"reason": "unauthenticated"},
    }


# -- the attacks ----------------------------------------------------------------------------------------

Attack = Callable[[Deployment], dict[str, str]]


def _key_confusion(issuer: str) -> Attack:
    """HS256 "signed" with the issuer's RSA public key PEM as the HMAC secret."""

    def attack(d: Deployment) -> dict[str, str]:
        key = d.keys["mixed" if issuer == MIXED else "rsa"]
        claims = d.minters[issuer].claims("admin", roles=["admin"])
        return bearer(hmac_token(claims, key.public_pem(), kid=None if issuer == MIXED else key.kid))

    return attack


def _oversized(d: Deployment) -> dict[str, str]:
    token = d.token(padding="x" * MAX_TOKEN_BYTES)  # validly signed, just too big
    assert len(token) > MAX_TOKEN_BYTES
    return bearer(token)


ATTACKS: dict[str, tuple[Attack, str, str | None]] = {
    "missing-token": (lambda d: {}, "a bearer token is required", None),
    "bare-bearer": (
        lambda d: {"authorization": "Bearer"},
        "the Bearer credential is empty",
        "invalid_token",
    ),
    "malformed-token": (lambda d: bearer("not.a.jwt"), "the token is not a well-formed JWT", "invalid_token"),
    "garbage-token": (lambda d: bearer("garbage"), "the token is not a well-formed JWT", "invalid_token"),
    "basic-scheme": (
        lambda d: {"authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        "use the Bearer authentication scheme",
        None,  # no bearer credential: a challenge without error details
    ),
    "alg-none": (
        lambda d: bearer(unsigned(d.minters[ISSUER].claims("admin", roles=["admin"]))),
        "unsigned tokens (alg none) are not accepted",
        "invalid_token",
    ),
    "key-confusion-rs256-only": (
        _key_confusion(ISSUER),
        "algorithm HS256 is not accepted for this issuer",
        "invalid_token",
    ),
    "key-confusion-with-hs256-secret": (
        _key_confusion(MIXED),
        "the token's signature does not verify",
        "invalid_token",
    ),
    "expired": (
        lambda d: bearer(d.token(exp=int(time.time()) - 120)),
        "the token has expired",
        "invalid_token",
    ),
    "not-yet-valid": (
        lambda d: bearer(d.token(nbf=int(time.time()) + 600)),
        "the token is not valid yet (nbf/iat in the future)",
        "invalid_token",
    ),
    "wrong-issuer": (
        lambda d: bearer(Minter("https://evil.test", d.broker.url, key=d.keys["rsa"]).token("alice")),
        "the token's issuer is not trusted by this broker",
        "invalid_token",
    ),
    "wrong-audience": (
        lambda d: bearer(d.token(aud="https://other-service.test/mcp")),
        "the token is not meant for this broker (audience)",
        "invalid_token",
    ),
    "tampered-payload": (
        lambda d: bearer(tamper(d.token(roles=["viewer"]), sub="admin", roles=["admin"])),
        "the token's signature does not verify",
        "invalid_token",
    ),
    "unknown-kid": (
        lambda d: bearer(d.minters[ISSUER].token("alice", key=SigningKey.ec("attacker"))),
        "no key of the issuer can verify this token (unknown key id or algorithm)",
        "invalid_token",
    ),
    "jwks-down-at-first-use": (
        lambda d: bearer(d.token(COLD)),
        "no key of the issuer can verify this token (unknown key id or algorithm)",
        "invalid_token",
    ),
    "oversized-token": (_oversized, f"the token is longer than {MAX_TOKEN_BYTES} bytes", "invalid_token"),
}


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_refused_and_never_reaches_the_upstream(
    deployment: Deployment, name: str, era: str
) -> None:
    attack, description, error = ATTACKS[name]
    before = hits(deployment)
    response = call_tool(deployment, "counter__hit", attack(deployment), era=era)
    assert_unauthorized(deployment, response, description, error=error)
    # audit: assert one `unauthenticated` record (no principal, reason = description) here
    assert hits(deployment) == before, f"{name}: the refused call reached the upstream"


def test_a_valid_token_does_reach_the_upstream(deployment: Deployment) -> None:
    """The control case: the same request with a good token is served (so the refusals mean something)."""
    before = hits(deployment)
    for era in ERAS:
        for token in (deployment.token(), deployment.token(key=deployment.keys["ec"])):
            response = call_tool(deployment, "counter__hit", bearer(token), era=era)
            assert response.status_code == 200, response.text
    hs256 = deployment.minters[MIXED].token("dev", secret=MIXED_SECRET.encode())
    assert call_tool(deployment, "counter__hit", bearer(hs256), era=MODERN).status_code == 200
    assert hits(deployment) == before + 5


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_every_http_method_needs_a_credential(deployment: Deployment, method: str) -> None:
    headers = {**BASE_HEADERS, "mcp-session-id": deployment.alice_session}
    response = deployment.http.request(method, deployment.broker.url, headers=headers)
    assert_unauthorized(deployment, response, "a bearer token is required", error=None)
    hits(deployment)  # alice's session survived (an unauthenticated DELETE must not end it)


def test_the_token_is_not_taken_from_the_query_string(deployment: Deployment) -> None:
    """bearer_methods_supported is ["header"]: `?access_token=` (RFC 6750 §2.3) is not a credential."""
    d = deployment
    before = hits(d)
    response = d.http.post(
        d.broker.url,
        params={"access_token": d.token()},
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "counter__hit", "arguments": {}},
        },
        headers={**BASE_HEADERS, "mcp-session-id": d.alice_session},
    )
    assert_unauthorized(d, response, "a bearer token is required", error=None)
    assert hits(d) == before


@pytest.mark.parametrize(
    "alg", ["RS256\nX-Injected: 1", "RS256\x00", "RS256\x7f"], ids=["newline", "nul", "del"]
)
def test_control_characters_in_the_token_header_are_a_401(deployment: Deployment, alg: str) -> None:
    """The token's `alg` is echoed in error_description: it must not turn a 401 into a 500."""
    d = deployment
    before = hits(d)
    forged = with_header(d.token(), alg=alg)
    response = call_tool(d, "counter__hit", bearer(forged))
    assert response.status_code == 401, response.text
    params = challenge(response)
    assert params["error"] == "invalid_token"
    assert "X-Injected" not in response.headers
    assert hits(d) == before
    assert "Exception in ASGI application" not in d.broker.log()


def test_initialize_needs_a_credential(deployment: Deployment) -> None:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "x", "version": "1"},
        },
    }
    response = deployment.http.post(deployment.broker.url, json=init, headers=BASE_HEADERS)
    assert_unauthorized(deployment, response, "a bearer token is required", error=None)
    assert "mcp-session-id" not in response.headers


def test_a_down_jwks_is_asked_once_per_interval_not_once_per_token(deployment: Deployment) -> None:
    d = deployment
    for _ in range(5):
        response = call_tool(d, "counter__hit", bearer(d.token(COLD)), era=MODERN)
        assert response.status_code == 401
    assert d.jwks[COLD].requests == 1


# -- JWKS outage after first use ------------------------------------------------------------------------


def test_jwks_down_later_cached_keys_until_the_ttl_then_fail_closed(deployment: Deployment) -> None:
    jwks = deployment.jwks[FLAKY]
    before = hits(deployment)
    fetched = time.monotonic()
    assert call_tool(deployment, "counter__hit", bearer(deployment.token(FLAKY))).status_code == 200
    assert jwks.requests == 1
    jwks.down = True
    response = call_tool(deployment, "counter__hit", bearer(deployment.token(FLAKY)), era=MODERN)
    assert response.status_code == 200, "within the TTL the cached keys keep working"
    time.sleep(max(0.0, fetched + FLAKY_TTL + 0.4 - time.monotonic()))
    response = call_tool(deployment, "counter__hit", bearer(deployment.token(FLAKY)))
    assert_unauthorized(
        deployment, response, "no key of the issuer can verify this token (unknown key id or algorithm)"
    )
    assert jwks.requests >= 2, "the broker did try to refetch"
    assert hits(deployment) == before + 2
    assert "JWKS of https://flaky-idp.test could not be fetched" in deployment.broker.log()


def test_a_repeated_token_also_fails_closed_after_the_ttl(deployment: Deployment) -> None:
    """The verified-token cache must not keep a token working past its issuer's JWKS TTL."""
    jwks = deployment.jwks[STALE]
    token = deployment.token(STALE)
    fetched = time.monotonic()
    assert call_tool(deployment, "counter__hit", bearer(token)).status_code == 200
    jwks.down = True
    time.sleep(max(0.0, fetched + FLAKY_TTL + 0.4 - time.monotonic()))
    fresh = call_tool(deployment, "counter__hit", bearer(deployment.token(STALE)))
    assert fresh.status_code == 401  # a new token fails closed …
    before = hits(deployment)
    response = call_tool(deployment, "counter__hit", bearer(token))  # … the cached one must too
    assert response.status_code == 401, "the cached verification outlived the JWKS TTL"
    assert hits(deployment) == before


# -- sessions are bound to their principal ----------------------------------------------------------------


def test_session_hijack_with_another_principals_token(deployment: Deployment) -> None:
    d = deployment
    bob = bearer(d.token(sub="bob"))
    robot_for_alice = bearer(d.token(sub="alice", act={"sub": "review-bot"}))
    before = hits(d)
    for credential in (bob, robot_for_alice):
        response = call_tool(d, "counter__hit", credential, session=d.alice_session)
        assert response.status_code == 404, response.text
        assert "www-authenticate" not in response.headers
        error = rpc(response)["error"]
        assert error["message"] == "Session not found: it expired or was closed; initialize a new session"
    # nor may bob listen on or end alice's session
    stream = d.http.get(
        d.broker.url,
        headers={**BASE_HEADERS, **bob, "accept": "text/event-stream", "mcp-session-id": d.alice_session},
    )
    assert stream.status_code == 404, stream.text
    ended = d.http.delete(d.broker.url, headers={**BASE_HEADERS, **bob, "mcp-session-id": d.alice_session})
    assert ended.status_code == 404, ended.text
    # audit: assert a `session_mismatch` record naming bob and the session's owner here
    assert hits(d) == before, "alice's session is intact and nothing reached the upstream"
    log = d.broker.log()
    prefix = d.alice_session[:8]
    assert (
        f"WARNING broker.front.http: session {prefix}… presented by User bob but belongs to User alice" in log
    )
    assert (
        f"session {prefix}… presented by Agent review-bot acting for alice but belongs to User alice" in log
    )
    assert d.alice_session not in log, "the full session id must not be logged"


def test_a_new_token_of_the_same_principal_keeps_the_session(deployment: Deployment) -> None:
    """Sessions are bound to the principal, not to one token: a refreshed token keeps working."""
    d = deployment
    refreshed = d.token(scope="tools.read tools.write", roles=["engineer"])
    response = call_tool(d, "counter__count", bearer(refreshed), session=d.alice_session)
    assert response.status_code == 200, response.text


# -- step-up: 403 insufficient_scope ---------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
def test_a_policy_denial_for_a_missing_scope_asks_for_it(deployment: Deployment, era: str) -> None:
    d = deployment
    before = hits(d)
    response = call_tool(d, "counter__hit_destructive", bearer(d.token(scope="tools.read")), era=era)
    assert response.status_code == 403, response.text
    assert challenge(response) == {
        "error": "insufficient_scope",
        "scope": "tools.write",
        "resource_metadata": d.metadata_url,
    }
    error = rpc(response)["error"]
    assert error["code"] == ACCESS_DENIED
    assert error["message"] == (
        "Denied by policy: destructive-needs-write-scope: destructive tools need the tools.write scope"
    )
    assert error["data"]["reason"] == "policy_denied"
    assert error["data"]["required_scope"] == "tools.write"
    assert error["data"]["policies"] == ["destructive-needs-write-scope"]
    # audit: assert a `policy_denied` record with required_scope here
    assert hits(d) == before
    stepped_up = call_tool(
        d, "counter__hit_destructive", bearer(d.token(scope="tools.read tools.write")), era=era
    )
    assert stepped_up.status_code == 200, stepped_up.text
    assert hits(d) == before + 1


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SigningKey]) -> Iterator[Deployment]:
    """A second broker: `required_scopes: [mcp]`, and the OPA engine with the same step-up rule in Rego."""
    directory = tmp_path_factory.mktemp("scoped")
    with JwksServer([keys["rsa"]]) as jwks:
        port = free_port()
        config = broker_config(
            {"counter": stdio_upstream("counter.py")},
            http={"port": port},
            policy=policy_section(directory, "opa"),
            identity={
                "authentication": {
                    "required_scopes": ["mcp"],
                    "jwt": [jwt_issuer(ISSUER, jwks_url=jwks.url)],
                }
            },
        )
        with running_broker(directory, config) as broker, httpx.Client(timeout=15) as http:
            minter = Minter(ISSUER, broker.url, key=keys["rsa"])
            d = Deployment(broker, http, {ISSUER: jwks}, {ISSUER: minter}, keys, directory / "unused")
            d.alice_token = d.token(scope="mcp")
            d.alice_session = open_session(d, d.alice_token)
            yield d


@pytest.mark.parametrize("era", ERAS)
def test_required_scopes_missing_is_403_insufficient_scope(scoped: Deployment, era: str) -> None:
    before = hits(scoped)
    response = call_tool(
        scoped, "counter__hit", bearer(scoped.token(scope="tools.read tools.write")), era=era
    )
    assert response.status_code == 403, response.text
    assert challenge(response) == {
        "error": "insufficient_scope",
        "scope": "mcp",
        "error_description": "the token lacks the scope(s) mcp",
        "resource_metadata": scoped.metadata_url,
    }
    assert rpc(response)["error"] == {
        "code": ACCESS_DENIED,
        "message": "Forbidden: the token lacks the scope(s) mcp",
        "data": {"reason": "insufficient_scope"},
    }
    # audit: assert an `insufficient_scope` record here
    assert hits(scoped) == before
    # an invalid token is still a 401, not a 403
    assert_unauthorized(
        scoped,
        call_tool(scoped, "counter__hit", bearer("x.y.z"), era=era),
        "the token is not a well-formed JWT",
    )


def test_a_rego_denial_for_a_missing_scope_asks_for_it(scoped: Deployment) -> None:
    before = hits(scoped)
    response = call_tool(scoped, "counter__hit_destructive", bearer(scoped.token(scope="mcp")))
    assert response.status_code == 403, response.text
    assert challenge(response) == {
        "error": "insufficient_scope",
        "scope": "tools.write",
        "resource_metadata": scoped.metadata_url,
    }
    error = rpc(response)["error"]
    assert (error["data"]["engine"], error["data"]["required_scope"]) == ("opa", "tools.write")
    assert hits(scoped) == before
    ok = call_tool(scoped, "counter__hit_destructive", bearer(scoped.token(scope="mcp tools.write")))
    assert ok.status_code == 200, ok.text


# -- protected resource metadata (RFC 9728) --------------------------------------------------------------


def test_protected_resource_metadata(deployment: Deployment) -> None:
    d = deployment
    expected = {
        "resource": d.broker.url,
        "authorization_servers": [ISSUER],
        "scopes_supported": ["tools.read", "tools.write"],
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-authz-broker",
    }
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        response = d.http.get(d.origin + path)  # no credential needed
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected
    # the 401 points at it, and following the pointer gives the same document
    unauthenticated = call_tool(d, "counter__hit", {})
    pointer = challenge(unauthenticated)["resource_metadata"]
    assert pointer == d.metadata_url
    assert d.http.get(pointer).json() == expected


@pytest.fixture(scope="module")
def port_zero_broker(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SigningKey]
) -> Iterator[BrokerProcess]:
    directory = tmp_path_factory.mktemp("port-zero")
    config = broker_config(
        {"off": {**stdio_upstream("counter.py"), "enabled": False}},
        identity={"authentication": {"jwt": [jwt_issuer(ISSUER, public_keys=[str(_pem(directory, keys))])]}},
    )
    with running_broker(directory, config) as broker:  # http.port: 0, the test default
        yield broker


def _pem(directory: Path, keys: dict[str, SigningKey]) -> Path:
    path = directory / "idp.pem"
    path.write_bytes(keys["rsa"].public_pem())
    return path


def test_the_default_resource_url_names_the_port_the_broker_listens_on(
    port_zero_broker: BrokerProcess, keys: dict[str, SigningKey]
) -> None:
    url = port_zero_broker.url
    origin = url.removesuffix("/mcp")
    with httpx.Client(timeout=15) as http:
        response = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=BASE_HEADERS)
        assert (
            challenge(response)["resource_metadata"] == f"{origin}/.well-known/oauth-protected-resource/mcp"
        )
        assert http.get(f"{origin}/.well-known/oauth-protected-resource").json()["resource"] == url
        token = Minter(ISSUER, url, key=keys["rsa"]).token("alice")
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "x", "version": "1"},
            },
        }
        assert http.post(url, json=init, headers={**BASE_HEADERS, **bearer(token)}).status_code == 200


# -- the caller's credential never reaches an upstream ------------------------------------------------------


def test_the_callers_token_is_never_forwarded_upstream(deployment: Deployment) -> None:
    d = deployment
    token = d.token(scope="tools.read")
    for era in ERAS:
        response = call_tool(d, "rec__hit", bearer(token), era=era)
        assert response.status_code == 200, response.text
        assert rpc(response)["result"]["isError"] is False
    session = open_session(d, token)
    assert call_tool(d, "rec__ping", bearer(token), session=session).status_code == 200
    entries = [json.loads(line) for line in d.record.read_text().splitlines()]
    posts = [e for e in entries if e["method"] == "POST"]
    assert len(posts) >= 4, entries  # initialize, initialized, … and the three calls
    secrets = [*d.seen_tokens, d.alice_token]
    for entry in entries:
        headers = entry["headers"]
        authorization = [v for k, v in headers if k.lower() == "authorization"]
        assert authorization == [f"Bearer {UPSTREAM_CREDENTIAL}"], entry
        for name, value in headers:
            for secret in secrets:
                signature = secret.rsplit(".", 1)[-1]
                assert secret not in value and signature not in value, f"caller token leaked in {name}"


# -- config: where keys may come from ------------------------------------------------------------------------


def _issuer_config(tmp_path: Path, jwks_url: str) -> str:
    (tmp_path / "policies" / "cedar").mkdir(parents=True, exist_ok=True)
    return f"""
upstreams:
  x: {{transport: stdio, command: python}}
policy: {{path: policies, watch: false}}
identity:
  authentication:
    jwt:
      - issuer: {ISSUER}
        jwks_url: "{jwks_url}"
"""


@pytest.mark.parametrize(
    "url",
    ["https://idp.test/jwks", "http://127.0.0.1:9000/jwks", "http://localhost/jwks", "http://[::1]:9/jwks"],
)
def test_jwks_urls_that_are_accepted(tmp_path: Path, url: str) -> None:
    config = parse_config(_issuer_config(tmp_path, url), source="broker.yaml", base_dir=tmp_path)
    assert config.identity.authentication is not None
    assert config.identity.authentication.jwt[0].jwks_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.test/jwks",
        "http://localhost.attacker.example/jwks",
        "http://127.0.0.1.attacker.example/jwks",
        "http://localhost@attacker.example/jwks",
    ],
    ids=["remote", "localhost-prefix", "127-prefix", "userinfo"],
)
def test_plain_http_jwks_only_from_loopback(tmp_path: Path, url: str) -> None:
    """Keys fetched over plain HTTP from another machine can be swapped in transit: forged tokens."""
    with pytest.raises(ConfigError) as caught:
        parse_config(_issuer_config(tmp_path, url), source="broker.yaml", base_dir=tmp_path)
    assert "JWKS must be fetched over https (plain http only from loopback)" in str(caught.value)
