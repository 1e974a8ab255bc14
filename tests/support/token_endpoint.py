"""A real OAuth token endpoint on 127.0.0.1, in the test process, for upstream-credential tests.

It answers the client-credentials grant and the RFC 8693 token-exchange grant with opaque
tokens that name what they were issued for, and records every request it receives.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class TokenEndpoint:
    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)
    expires_in: int = 3600
    secret: str = "s3cret"

    async def token(self, request: Request) -> JSONResponse:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.requests.append(form)
        if form.get("client_secret") != self.secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = form.get("grant_type")
        if grant == "client_credentials":
            token = f"cc-{form.get('client_id')}-{len(self.requests)}"
        elif grant == "urn:ietf:params:oauth:grant-type:token-exchange":
            subject = form.get("subject_token", "")
            token = f"exchanged-for-{form.get('audience')}-{subject[-12:]}"
        else:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in})


@contextmanager
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app: Any = Starlette(routes=[Route("/token", endpoint.token, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    endpoint.url = f"http://127.0.0.1:{port}/token"
    try:
        yield endpoint
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
