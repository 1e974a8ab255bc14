"""Real tokens for identity tests: signing keys, a JWKS server, a token minter, a bearer client.

Usage::

    rsa, ec = SigningKey.rsa("rsa-1"), SigningKey.ec("ec-1")
    with JwksServer([rsa, ec]) as jwks:                   # http://127.0.0.1:<port>/jwks.json
        issuer = Minter("https://idp.test", audience=broker_url, key=rsa)
        token = issuer.token("alice", roles=["engineer"], tenant="acme", scope="tools.read")
        jwks.publish([ec])                                 # rotation: rsa is no longer published
        jwks.down = True                                   # every fetch answers 503 (counted)
        jwks.requests                                      # how many times the JWKS was fetched

    async with bearer_client(broker.url, token, mode="legacy") as client: ...

Attacks build tokens by hand: `unsigned(payload)` (alg none), `hmac_token(payload, secret)` (any
bytes as the HMAC key, e.g. an RSA public key's PEM, which PyJWT itself refuses to do),
`tamper(token, sub="admin")` (claims changed after signing, signature kept).

How the SDK client (mcp 2.3) sends a bearer token: `Client(url)` builds its own httpx2 client
and takes no headers, so give `Client` a *transport* instead:
`Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers={"Authorization":
"Bearer T"})), mode=...)`. `streamable_http_client` does not close an `http_client` it was given,
so the caller closes it after the `Client` (`bearer_client` below does both).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

# -- keys ------------------------------------------------------------------------------------


@dataclass
class SigningKey:
    """A private signing key made in the test; its public half goes into a JWKS or a PEM file."""

    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, kid: str | None = None, alg: str = "RS256", bits: int = 2048) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return cls(kid or f"rsa-{uuid.uuid4().hex[:8]}", alg, key)

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def ed25519(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or f"ed-{uuid.uuid4().hex[:8]}", "EdDSA", ed25519.Ed25519PrivateKey.generate())

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def public_jwk(self) -> dict[str, Any]:
        if isinstance(self.private, rsa.RSAPrivateKey):
            jwk = RSAAlgorithm.to_jwk(self.public, as_dict=True)
        elif isinstance(self.private, ec.EllipticCurvePrivateKey):
            jwk = ECAlgorithm.to_jwk(self.public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(self.public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        pem: bytes = self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem

    def private_pem(self) -> bytes:
        pem: bytes = self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pem


# -- the JWKS server ---------------------------------------------------------------------------


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 (a thread in this process), serving the keys it is told to.

    `publish(keys)` replaces the published keys (rotation), `extra` holds raw JWK dicts served
    as-is (e.g. a symmetric `oct` key), `body` replaces the whole answer (garbage), `delay`
    slows each answer down, `down = True` makes every fetch answer 503, `stop()`
    closes the port (connection refused). `requests` counts the fetches of the JWKS path.
    """

    path = "/jwks.json"

    def __init__(self, keys: Iterable[SigningKey] = ()) -> None:
        self._keys: list[SigningKey] = list(keys)
        self.extra: list[dict[str, Any]] = []
        self.body: bytes | None = None
        self.down = False
        self.delay = 0.0
        self._lock = threading.Lock()
        self._requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != server.path:
                    self.send_error(404)
                    return
                with server._lock:
                    server._requests += 1
                if server.delay:
                    time.sleep(server.delay)
                if server.down:
                    self.send_error(503, "JWKS temporarily down (test)")
                    return
                body = server.body if server.body is not None else json.dumps(server.document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{self.path}"
        self._thread: threading.Thread | None = None

    def document(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [k.public_jwk() for k in self._keys] + list(self.extra)}

    @property
    def keys(self) -> list[SigningKey]:
        with self._lock:
            return list(self._keys)

    def publish(self, keys: Iterable[SigningKey]) -> None:
        with self._lock:
            self._keys = list(keys)

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def start(self) -> JwksServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="jwks", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- minting ---------------------------------------------------------------------------------------


@dataclass
class Minter:
    """Mints tokens of one issuer for one audience; every claim can be overridden or removed (None)."""

    issuer: str
    audience: str | list[str]
    key: SigningKey | None = None
    secret: bytes | None = None
    lifetime: int = 300
    defaults: dict[str, Any] = field(default_factory=dict)

    def claims(self, sub: str | None = "alice", **claims: Any) -> dict[str, Any]:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": uuid.uuid4().hex,  # every token distinct: no verification cache hit by accident
            **self.defaults,
            **claims,
        }
        return {k: v for k, v in payload.items() if v is not None}

    def token(
        self,
        sub: str | None = "alice",
        *,
        key: SigningKey | None = None,
        secret: bytes | None = None,
        alg: str | None = None,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        payload = self.claims(sub, **claims)
        secret = secret if secret is not None else (self.secret if key is None else None)
        if secret is not None:
            return jwt.encode(payload, secret, algorithm=alg or "HS256", headers=dict(headers or {}))
        signer = key or self.key
        assert signer is not None, "a key or a secret is needed to sign"
        header = {"kid": kid or signer.kid, **(headers or {})}
        return jwt.encode(payload, signer.private, algorithm=alg or signer.alg, headers=header)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unsigned(payload: Mapping[str, Any], alg: str = "none") -> str:
    """An unsecured JWT (RFC 7519 §6): `alg: none`, empty signature."""
    return f"{b64url_json({'alg': alg, 'typ': 'JWT'})}.{b64url_json(dict(payload))}."


def hmac_token(
    payload: Mapping[str, Any], secret: bytes, *, alg: str = "HS256", kid: str | None = None
) -> str:
    """An HMAC-signed JWT with any bytes as the key (PyJWT refuses a PEM as HMAC secret; attackers do not)."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signing_input = f"{b64url_json(header)}.{b64url_json(dict(payload))}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def tamper(token: str, **changes: Any) -> str:
    """The same header and signature over a payload with `changes` applied (None removes a claim)."""
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return f"{header}.{b64url_json(claims)}.{signature}"


def with_header(token: str, **changes: Any) -> str:
    """The same payload and signature under a header with `changes` applied."""
    header, payload, signature = token.split(".")
    fields = {**json.loads(b64url_decode(header)), **changes}
    return f"{b64url_json(fields)}.{payload}.{signature}"


# -- config and clients ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (so a broker's default resource URL names its real port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jwt_issuer(issuer: str, **options: Any) -> dict[str, Any]:
    """One `identity.authentication.jwt[]` entry (docs/config.md)."""
    return {"issuer": issuer, **options}


@asynccontextmanager
async def bearer_client(url: str, token: str | None, **client_options: Any) -> AsyncIterator[Client]:
    """An SDK `Client` whose every HTTP request carries `Authorization: Bearer <token>`.

    `Client(url)` cannot take headers; a `streamable_http_client` transport over our own httpx2
    client can. The SDK leaves a given http client open, so it is closed here after the Client.
    """
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, **client_options) as client:
            yield client
