"""Command line and transports shared by the example MCP servers.

Each example ends with ``serve(build_server(args), args)`` where ``args`` comes
from ``make_parser(...).parse_args()``, so each one accepts::

    --transport stdio|http|sse   stdio (default); Streamable HTTP at /mcp; legacy HTTP+SSE at /sse
    --host 127.0.0.1             loopback only (127.0.0.1, localhost or ::1)
    --port N                     0 picks a free port
    --port-file PATH             written (atomically) with the endpoint URL once listening
    --json-response              Streamable HTTP: answer POSTs with JSON instead of an SSE stream
    --stateless                  Streamable HTTP: no session (no server-to-client requests)
    --log-level LEVEL            uvicorn log level (default: warning)

Once an HTTP transport is accepting connections the server prints one line
``LISTENING <url>`` to stderr. The test fixture servers serve through this same module
(``tests/fixtures/servers/_run.py`` re-exports it).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.sse import SseServerTransport
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

AnyServer = MCPServer[Any] | Server[Any]



def make_parser(description: str, *, default_port: int = 0) -> argparse.ArgumentParser:
    """Return the common argument parser; scripts may add their own options to it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--transport", choices=("stdio", "http", "sse"), default="stdio")
    parser.add_argument("--host", type=_loopback_host, default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=default_port, help="TCP port; 0 picks a free one")
    parser.add_argument("--port-file", type=Path, help="write the endpoint URL here once listening")
    parser.add_argument("--json-response", action="store_true", help="http: JSON responses, not SSE")
    parser.add_argument("--stateless", action="store_true", help="http: no sessions")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    return parser


def _loopback_host(value: str) -> str:
    """Refuse anything but a loopback address: these servers have no authentication."""
    if value != "localhost" and not ipaddress.ip_address(value).is_loopback:
        raise argparse.ArgumentTypeError(f"{value!r} is not a loopback address")
    return value


def serve(server: AnyServer, args: argparse.Namespace) -> None:
    """Serve ``server`` on the transport chosen on the command line until killed."""
    if args.transport == "stdio":
        anyio.run(_serve_stdio, server)
        return
    if args.transport == "http":
        app = server.streamable_http_app(
            streamable_http_path="/mcp",
            json_response=args.json_response,
            stateless_http=args.stateless,
            host=args.host,
        )
        path = "/mcp"
    else:
        app = server.sse_app(host=args.host) if isinstance(server, MCPServer) else _lowlevel_sse_app(server)
        path = "/sse"
    anyio.run(_serve_http, app, args, path)


async def _serve_stdio(server: AnyServer) -> None:
    if isinstance(server, MCPServer):
        await server.run_stdio_async()
        return
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _lowlevel_sse_app(server: Server[Any]) -> Starlette:
    """The legacy HTTP+SSE transport for a low-level ``Server`` (``MCPServer`` has ``sse_app``)."""
    # The same DNS-rebinding protection MCPServer.sse_app applies on a loopback host.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
    sse = SseServerTransport("/messages/", security_settings=security)

    async def handle_sse(request: Request) -> Response:
        async with sse.connect_sse(request.scope, request.receive, request._send) as (read, write):
            await server.run(read, write, server.create_initialization_options())
        return Response()

    routes = [
        Route("/sse", endpoint=handle_sse, methods=["GET"]),
        Mount("/messages/", app=sse.handle_post_message),
    ]
    return Starlette(routes=routes)


async def _serve_http(app: Starlette, args: argparse.Namespace, path: str) -> None:
    """Run ``app`` with uvicorn on a socket bound here, so ``--port 0`` can report the real port."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{port}{path}"
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=1, lifespan="on")
    await _AnnouncingServer(config, url, args.port_file).serve(sockets=[sock])


class _AnnouncingServer(uvicorn.Server):
    """Once uvicorn is accepting connections: print ``LISTENING <url>``, write the port file."""

    def __init__(self, config: uvicorn.Config, url: str, port_file: Path | None) -> None:
        super().__init__(config)
        self.url = url
        self.port_file = port_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit:  # startup failed (e.g. the app's lifespan raised)
            return
        print(f"LISTENING {self.url}", file=sys.stderr, flush=True)
        if self.port_file is not None:
            tmp = self.port_file.with_name(self.port_file.name + ".tmp")
            tmp.write_text(self.url + "\n", encoding="utf-8")
            os.replace(tmp, self.port_file)  # readers never see a half-written file
