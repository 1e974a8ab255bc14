"""End to end: each upstream gets the broker's own credential, never the caller's token.

Real broker, a real HTTP upstream that reports the headers it receives, a real OAuth token
endpoint on loopback, callers authenticated with API keys or JWTs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from broker.identity.authenticator import api_key_digest
from tests.fixtures import REPO_ROOT, fixture_script, running_server
from tests.support.broker import broker_config, broker_env, http_upstream, running_broker, write_config
from tests.support.token_endpoint import TokenEndpoint, token_endpoint

RESOURCE = "http://127.0.0.1/mcp"
SECRET = "a-development-only-secret-of-sufficient-length"


def text_of(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


def api_key(principal: dict[str, Any], key: str) -> dict[str, Any]:
    return {"sha256": api_key_digest(key), "principal": principal}


def authenticated(**extra: Any) -> dict[str, Any]:
    return {"authentication": {"resource": RESOURCE, **extra}}


def caller(url: str, token: str, mode: str = "legacy") -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    return Client(streamable_http_client(url, http_client=http), mode=mode)


async def headers_seen(client: Client, tool: str) -> dict[str, str]:
    seen: dict[str, str] = json.loads(text_of(await client.call_tool(tool, {})))
    return seen


@pytest.fixture
def whoami() -> Iterator[str]:
    with running_server(fixture_script("whoami"), transport="http") as server:
        yield server.url


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    with token_endpoint() as running:
        yield running


@pytest.mark.anyio
async def test_client_credentials_token_reaches_the_upstream_not_the_callers_key(
    tmp_path: Path, whoami: str, endpoint: TokenEndpoint
) -> None:
    upstream = http_upstream(
        whoami,
        auth={
            "type": "client_credentials",
            "token_url": endpoint.url,
            "client_id": "broker",
            "client_secret": {"env": "UPSTREAM_SECRET"},
            "scope": "tools.read",
            "resource": whoami,
        },
    )
    key = "mcpb_caller-key-0123456789"
    config = broker_config(
        {"who": upstream},
        identity=authenticated(api_keys=[api_key({"type": "Agent", "id": "ci"}, key)]),
    )
    with running_broker(tmp_path, config, env={"UPSTREAM_SECRET": endpoint.secret}) as broker:
        async with caller(broker.url, key) as client:
            first = await headers_seen(client, "who__headers")
            second = await headers_seen(client, "who__headers")
    assert first["authorization"].startswith("Bearer cc-broker-")
    assert second == first, "the cached token is reused until it nearly expires"
    assert key not in json.dumps(first)
    grants = [r for r in endpoint.requests if r.get("grant_type") == "client_credentials"]
    assert len(grants) == 1
    assert grants[0]["scope"] == "tools.read"
    assert grants[0]["resource"] == whoami


def hs256_token(sub: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://issuer.test",
        "aud": RESOURCE,
        "sub": sub,
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode(payload, SECRET, algorithm="HS256")


@pytest.mark.anyio
async def test_token_exchange_gives_the_upstream_a_token_issued_for_it(
    tmp_path: Path, whoami: str, endpoint: TokenEndpoint
) -> None:
    upstream = http_upstream(
        whoami,
        isolation="per_session",
        auth={
            "type": "token_exchange",
            "token_url": endpoint.url,
            "client_id": "broker",
            "client_secret": {"env": "UPSTREAM_SECRET"},
            "audience": "whoami",
        },
    )
    issuer = {"issuer": "https://issuer.test", "hs256_secret": {"env": "JWT_SECRET"}, "algorithms": ["HS256"]}
    config = broker_config({"who": upstream}, identity=authenticated(jwt=[issuer]))
    token = hs256_token("alice")
    env = {"UPSTREAM_SECRET": endpoint.secret, "JWT_SECRET": SECRET}
    with running_broker(tmp_path, config, env=env) as broker:
        async with caller(broker.url, token) as client:
            seen = await headers_seen(client, "who__headers")
    assert seen["authorization"] == f"Bearer exchanged-for-whoami-{token[-12:]}"
    assert token not in json.dumps(seen), "the caller's token reached the upstream"
    exchanges = [r for r in endpoint.requests if r.get("grant_type", "").endswith("token-exchange")]
    assert len(exchanges) == 1
    assert exchanges[0]["subject_token"] == token


@pytest.mark.anyio
async def test_each_tenant_reaches_the_upstream_with_its_own_credential(tmp_path: Path, whoami: str) -> None:
    upstream = http_upstream(
        whoami,
        isolation="per_tenant",
        tenant_headers={
            "acme": {"Authorization": {"env": "ACME_TOKEN", "prefix": "Bearer "}},
            "globex": {"Authorization": {"env": "GLOBEX_TOKEN", "prefix": "Bearer "}},
        },
    )
    keys = {
        "acme": "mcpb_acme-key-000000000",
        "globex": "mcpb_globex-key-00000000",
        "initech": "mcpb_initech-key-0000000",
    }
    config = broker_config(
        {"who": upstream},
        identity=authenticated(
            api_keys=[api_key({"type": "Agent", "id": f"{t}-bot", "tenant": t}, k) for t, k in keys.items()]
        ),
    )
    env = {"ACME_TOKEN": "acme-upstream-token", "GLOBEX_TOKEN": "globex-upstream-token"}
    with running_broker(tmp_path, config, env=env) as broker:
        async with (
            caller(broker.url, keys["acme"]) as acme,
            caller(broker.url, keys["globex"], "auto") as globex,
        ):
            assert (await headers_seen(acme, "who__headers"))["authorization"] == "Bearer acme-upstream-token"
            assert (await headers_seen(globex, "who__headers"))[
                "authorization"
            ] == "Bearer globex-upstream-token"
        async with caller(broker.url, keys["initech"]) as initech:
            with pytest.raises(MCPError) as caught:
                await initech.call_tool("who__headers", {})
            assert "no credential for tenant 'initech'" in caught.value.error.message


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_connect_bridges_a_stdio_host_to_a_remote_broker(tmp_path: Path, mode: str) -> None:
    key = "mcpb_desktop-key-0000000000"
    config = broker_config(
        {
            "counter": {
                "transport": "stdio",
                "command": sys.executable,
                "args": [str(fixture_script("counter"))],
            }
        },
        identity=authenticated(api_keys=[api_key({"type": "User", "id": "desk"}, key)]),
    )
    with running_broker(tmp_path, config) as broker:
        bridge = StdioServerParameters(
            command=sys.executable,
            args=["-m", "broker.cli", "connect", broker.url],
            env={**broker_env(), "MCP_BROKER_TOKEN": key},
            cwd=str(REPO_ROOT),
        )
        async with Client(bridge, mode=mode) as client:
            assert "counter__hit" in [t.name for t in (await client.list_tools()).tools]
            assert int(text_of(await client.call_tool("counter__hit", {}))) >= 1
        wrong = StdioServerParameters(
            command=sys.executable,
            args=["-m", "broker.cli", "connect", broker.url],
            env={**broker_env(), "MCP_BROKER_TOKEN": "not-a-key"},
            cwd=str(REPO_ROOT),
        )
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the SDK wraps the refusal differently per era
            async with Client(wrong, mode=mode) as client:
                await client.list_tools()
        assert "Unauthorized" in repr(caught.value) or "401" in repr(caught.value)


def test_a_token_exchange_upstream_must_be_per_session(tmp_path: Path) -> None:
    config = broker_config(
        {
            "who": http_upstream(
                "http://127.0.0.1:9/mcp",
                auth={"type": "token_exchange", "token_url": "http://127.0.0.1:9/token", "client_id": "b"},
            )
        },
    )
    path = write_config(tmp_path, config)
    done = __import__("subprocess").run(
        [sys.executable, "-m", "broker.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=broker_env(),
        check=False,
    )
    assert done.returncode == 2
    assert "token_exchange exchanges each caller's token: it needs isolation: per_session" in done.stderr
    assert os.path.exists(path)
