"""The broker's own credential for an upstream: never the caller's token.

The MCP authorization spec forbids token passthrough: the caller's token was issued for
the broker, not for the servers behind it. Each upstream gets what its config says:
static headers (secrets read from env/files at connect), an OAuth client-credentials
token the broker obtains and caches until shortly before it expires, or an RFC 8693
token exchange that turns the caller's token into one issued for the upstream (the
caller's token goes to the authorization server only, never to the upstream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import httpx2
import orjson

from broker.errors import UpstreamUnavailable

log = logging.getLogger("broker.upstream.auth")

REFRESH_BEFORE_SECONDS = 30.0
"""A token is renewed this long before it expires, so no call carries an expired one."""

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class UpstreamAuth(Protocol):
    """Headers for a request to one upstream (called per request; implementations cache)."""

    async def headers(self) -> dict[str, str]: ...


class StaticHeaders:
    def __init__(self, resolve: Callable[[], dict[str, str]]) -> None:
        self._resolve = resolve
        self._headers: dict[str, str] | None = None

    async def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = self._resolve()  # secrets are read once per connection (rotation: reconnect)
        return self._headers


class OAuthToken:
    """A bearer token from an authorization server's token endpoint, cached until it nearly expires."""

    def __init__(
        self,
        upstream: str,
        token_url: str,
        form: Callable[[], Mapping[str, str]],
        base_headers: Callable[[], dict[str, str]],
    ) -> None:
        self._upstream = upstream
        self._token_url = token_url
        self._form = form
        self._base = base_headers
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def headers(self) -> dict[str, str]:
        if self._token is None or time.monotonic() >= self._expires_at - REFRESH_BEFORE_SECONDS:
            async with self._lock:
                if self._token is None or time.monotonic() >= self._expires_at - REFRESH_BEFORE_SECONDS:
                    await self._fetch()
        assert self._token is not None
        return {**self._base(), "Authorization": f"Bearer {self._token}"}

    async def _fetch(self) -> None:
        try:
            async with httpx2.AsyncClient(timeout=10.0, follow_redirects=False) as http:
                response = await http.post(self._token_url, data=dict(self._form()))
        except httpx2.HTTPError as exc:
            raise UpstreamUnavailable(
                f"upstream {self._upstream}: the token endpoint {self._token_url} is unreachable ({exc!r})",
                upstream=self._upstream,
            ) from None
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = {}
        token = body.get("access_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(token, str):
            error = body.get("error") if isinstance(body, dict) else None
            raise UpstreamUnavailable(
                f"upstream {self._upstream}: the token endpoint refused ({response.status_code}"
                f"{', ' + str(error) if error else ''})",
                upstream=self._upstream,
            )
        lifetime = body.get("expires_in")
        self._token = token
        seconds = float(lifetime) if isinstance(lifetime, (int, float)) else 300.0
        self._expires_at = time.monotonic() + seconds
        log.debug("upstream %s: new access token, valid %ss", self._upstream, lifetime)


AuthFactory = Callable[[str | None], Awaitable[UpstreamAuth]]
"""Builds the credential of one upstream connection; given the caller's token for token exchange."""
