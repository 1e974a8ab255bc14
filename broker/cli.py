"""`mcp-broker`: serve over HTTP, serve over stdio, check a config file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn

from broker.app import Broker, StartupError, broker_version
from broker.config import BrokerConfig, ConfigError, load_config

EXIT_CONFIG = 2


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "mcp", "httpx", "httpx2", "httpcore2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _load(path: str) -> BrokerConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    names = ", ".join(f"{u.name} ({u.transport})" for u in config.upstreams)
    print(f"{args.config}: OK — {len(config.upstreams)} upstream(s): {names}")
    return 0


def _event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every platform
        return asyncio.run
    return uvloop.run


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    setup_logging(args.log_level or config.logging.level, config.logging.format)
    http = config.http
    host = args.host or http.host
    port = http.port if args.port is None else args.port
    return int(_event_loop_runner()(_serve(config, host, port, args.ready_file)))


async def _started(config: BrokerConfig) -> Broker | None:
    """A started broker, or None after logging why it must not run (exit code 2)."""
    broker = Broker(config)
    try:
        await broker.start()
    except StartupError as exc:
        for problem in exc.problems:
            logging.getLogger("broker").error("cannot start: %s", problem)
        return None
    return broker


async def _serve(config: BrokerConfig, host: str, port: int, ready_file: str | None) -> int:
    broker = await _started(config)
    if broker is None:
        return EXIT_CONFIG
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGHUP, lambda: asyncio.ensure_future(broker.policy.reload("SIGHUP"))
    )
    server = _AnnouncingServer(
        uvicorn.Config(
            broker.http_app(),
            host=host,
            port=port,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=5,
            server_header=False,
        ),
        path=config.http.path,
        ready_file=ready_file,
    )
    try:
        await server.serve()
    finally:
        await broker.stop()
    return 0 if server.started else 1


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does (log line and `--ready-file`).

    Signals are the broker's: uvicorn's own handling re-raises SIGTERM after serving,
    which would kill the process before the upstreams are shut down (orphans).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        yield

    def _on_signal(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    def __init__(self, config: uvicorn.Config, *, path: str, ready_file: str | None) -> None:
        super().__init__(config)
        self._path = path
        self._ready_file = ready_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.servers or not self.servers[0].sockets:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}{self._path}"
        logging.getLogger("broker").info("serving MCP on %s", url)
        if self._ready_file:
            tmp = Path(self._ready_file + ".tmp")
            tmp.write_text(url + "\n")  # noqa: ASYNC240 - a few bytes, once
            tmp.replace(self._ready_file)  # noqa: ASYNC240


def cmd_stdio(args: argparse.Namespace) -> int:
    config = _load(args.config)
    setup_logging(args.log_level or config.logging.level, config.logging.format)
    return int(_event_loop_runner()(_stdio(config)))


async def _stdio(config: BrokerConfig) -> int:
    from broker.front.stdio import StdioFront

    broker = await _started(config)
    if broker is None:
        return EXIT_CONFIG
    front = asyncio.ensure_future(StdioFront(broker.gateway).run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, front.cancel)  # stop the upstreams before exiting: no orphans
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await front
    finally:
        await broker.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-broker",
        description="Policy-driven authorization broker for the Model Context Protocol.",
        epilog="Example: mcp-broker serve -c examples/broker.yaml   (then connect an MCP client to "
        "http://127.0.0.1:8787/mcp)",
    )
    parser.add_argument("--version", action="version", version=f"mcp-broker {broker_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve MCP over Streamable HTTP",
        description="Serve MCP over Streamable HTTP. Example: mcp-broker serve -c examples/broker.yaml",
    )
    serve.add_argument("-c", "--config", default="broker.yaml", help="config file (default: broker.yaml)")
    serve.add_argument("--host", help="override http.host")
    serve.add_argument("--port", type=int, help="override http.port (0 picks a free port)")
    serve.add_argument("--ready-file", help="write the MCP URL to this file once serving")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    stdio = sub.add_parser(
        "stdio",
        help="serve MCP over stdin/stdout",
        description="Serve one caller over stdin/stdout. Example: mcp-broker stdio -c examples/broker.yaml",
    )
    stdio.add_argument("-c", "--config", default="broker.yaml", help="config file (default: broker.yaml)")
    stdio.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    stdio.set_defaults(func=cmd_stdio)

    check = sub.add_parser(
        "check-config",
        help="validate a config file and exit (0 valid, 2 invalid)",
        description="Validate a config file. Example: mcp-broker check-config examples/broker.yaml",
    )
    check.add_argument("config", help="config file")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
