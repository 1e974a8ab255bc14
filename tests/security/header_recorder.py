"""Fixture: an MCP server over Streamable HTTP that records the headers of every request it gets.

Run by `tests.fixtures.running_server(path, "--record", FILE)`; each HTTP request appends one
JSON line `{"method", "path", "headers": [[name, value], ...]}` to FILE, so a test can prove
what an upstream saw (e.g. that the broker never forwards the caller's Authorization header).
Tools: `ping()` → "pong", and `hit()` counts calls (returns the total).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from _serve import _serve_http, make_parser
from mcp.server.mcpserver import MCPServer


def build_server() -> MCPServer[Any]:
    mcp = MCPServer("header-recorder", version="1.0.0", log_level="WARNING")
    hits = [0]

    @mcp.tool()
    async def ping() -> str:
        """Answer pong."""
        return "pong"

    @mcp.tool()
    async def hit() -> int:
        """Count one call; return the total."""
        hits[0] += 1
        return hits[0]

    return mcp


def main() -> None:
    parser = make_parser("Fixture: records the request headers it receives.")
    parser.add_argument("--record", type=Path, required=True, help="JSON lines file of request headers")
    args = parser.parse_args()
    app = build_server().streamable_http_app(streamable_http_path="/mcp", host=args.host)
    record: Path = args.record

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            entry = {
                "method": scope["method"],
                "path": scope["path"],
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            }
            with record.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")
        await app(scope, receive, send)

    anyio.run(_serve_http, recording, args, "/mcp")


if __name__ == "__main__":
    main()
