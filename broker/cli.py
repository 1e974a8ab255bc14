"""`mcp-broker`: serve over HTTP, serve over stdio, check a config file.

Every command's help ends with a runnable `example:`; user errors (a missing file, bad
arguments, an unreachable broker) end in one `error: … ` line on stderr that says what to do,
never a traceback; exit 2 means the command could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import uvicorn

from broker.approval.cli import add_approval_commands
from broker.audit.cli import add_audit_commands
from broker.config import BrokerConfig, ConfigError, load_config
from broker.identity.principal import Principal
from broker.policytools.cli import add_policy_commands
from broker.registry.cli import add_registry_commands
from broker.telemetry.logging import JsonLogFormatter

if TYPE_CHECKING:  # broker.app takes over a second to import: only the commands that run a broker do
    from broker.app import Broker

EXIT_CONFIG = 2
EXIT_CODES = "exit codes: 0 = done, 1 = the command failed while running, 2 = bad arguments or config"


class CommandLineParser(argparse.ArgumentParser):
    """argparse, with a usage error as one `error: …` line naming the help to read.

    argparse's own report is the usage block plus `prog: error: …`; the broker's commands all
    end in one `error:` line, so a script (or a person) finds the same thing on every failure.
    Subparsers inherit the class (argparse builds them with `type(parent)`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"error: {message}; see `{self.prog} --help`\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


class _VersionAction(argparse.Action):
    """`--version`, looking the version up only when asked (it lives in the slow-to-import broker.app)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: str | None = None
    ) -> None:
        from broker.app import broker_version

        sys.stdout.write(f"mcp-broker {broker_version()}\n")  # on stdout, like argparse's own
        parser.exit(0)


def epilog(*examples: str, codes: str = EXIT_CODES) -> str:
    """The help's closing block: runnable examples, then what the exit codes mean."""
    lines = "\n".join(f"  {example}" for example in examples)
    return f"example{'s' if len(examples) > 1 else ''}:\n{lines}\n\n{codes}"


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
    try:
        listener = _listen(host, port)
    except OSError as exc:
        logging.getLogger("broker").error(
            "cannot start: cannot listen on %s port %s: %s", host, port, exc.strerror
        )
        return 1
    # Listening first means the resource URL (the tokens' audience) names the real port, even for port 0.
    bound = dataclasses.replace(http, host=host, port=int(listener.getsockname()[1]))
    config = dataclasses.replace(config, http=bound)
    return int(_event_loop_runner()(_serve(config, listener, args.ready_file)))


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


async def _started(config: BrokerConfig) -> Broker | None:
    """A started broker, or None after logging why it must not run (exit code 2)."""
    from broker.app import Broker, StartupError

    broker = Broker(config)
    try:
        await broker.start()
    except StartupError as exc:
        for problem in exc.problems:
            logging.getLogger("broker").error("cannot start: %s", problem)
        return None
    return broker


async def _serve(config: BrokerConfig, listener: socket.socket, ready_file: str | None) -> int:
    broker = await _started(config)
    if broker is None:
        listener.close()
        return EXIT_CONFIG
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGHUP, lambda: asyncio.ensure_future(broker.reload("SIGHUP"))
    )
    server = _AnnouncingServer(
        uvicorn.Config(
            broker.http_app(),
            host=config.http.host,
            port=config.http.port,
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
        on_stop=broker.stopping,
    )
    try:
        await server.serve(sockets=[listener])
    finally:
        listener.close()
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
        self._on_stop()

    def __init__(
        self, config: uvicorn.Config, *, path: str, ready_file: str | None, on_stop: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self._path = path
        self._ready_file = ready_file
        self._on_stop = on_stop

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
    try:
        identify = stdio_identity(broker)
    except ValueError as exc:
        logging.getLogger("broker").error("cannot start: %s", exc)
        await broker.stop()
        return EXIT_CONFIG
    front = asyncio.ensure_future(StdioFront(broker.gateway, identify).run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, front.cancel)  # stop the upstreams before exiting: no orphans
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await front
    finally:
        await broker.stop()
    return 0


def stdio_identity(broker: Broker) -> Callable[[], Awaitable[Principal]]:
    """The stdio caller: the token in identity.stdio_token_env (verified on every request), or the default."""
    name = broker.config.identity.stdio_token_env
    if name is None:
        default = broker.principal

        async def configured() -> Principal:
            return default

        return configured
    token = os.environ.get(name)
    authenticator = broker.authenticator
    if not token:
        raise ValueError(f"identity.stdio_token_env names {name}, but that environment variable is not set")
    if authenticator is None:
        raise ValueError("identity.stdio_token_env needs identity.authentication to verify the token")
    checked = authenticator

    async def from_token() -> Principal:
        return (await checked.authenticate(f"Bearer {token}")).principal

    return from_token


def cmd_connect(args: argparse.Namespace) -> int:
    from broker.front.connect import ConnectBridge

    setup_logging(args.log_level or "warning", "text")
    token: str | None = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            print(
                f"error: cannot read the token file {args.token_file}: {exc.strerror}; "
                "fix the path, or pass the token in an environment variable (--token-env NAME)",
                file=sys.stderr,
            )
            return EXIT_CONFIG
    else:
        token = os.environ.get(args.token_env) or None
    return int(_event_loop_runner()(_connect(ConnectBridge(args.url, token))))


async def _connect(bridge: Any) -> int:
    task = asyncio.ensure_future(bridge.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    from broker.identity.authenticator import api_key_digest

    key = f"{args.prefix}_{secrets.token_urlsafe(32)}"
    roles = ", ".join(json.dumps(role) for role in args.role)
    print(f"API key (give it to the caller; it is not stored anywhere): {key}")
    print("Config entry (identity.authentication.api_keys):")
    print(f"  - sha256: {api_key_digest(key)}")
    print(f"    principal: {{type: {args.type}, id: {json.dumps(args.id)}, roles: [{roles}]}}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="mcp-broker",
        description="Policy-driven authorization broker for the Model Context Protocol.\n"
        "Example: mcp-broker serve -c examples/broker.yaml   (then connect an MCP client to "
        "http://127.0.0.1:8787/mcp)",
        epilog=epilog(
            "mcp-broker serve -c examples/broker.yaml",
            "mcp-broker check-config examples/broker.yaml",
            "mcp-broker approvals list -c examples/broker.yaml",
        ),
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="serve MCP over Streamable HTTP",
        description="Serve MCP over Streamable HTTP at http.host:http.port (http.path) until SIGTERM or "
        "SIGINT; SIGHUP reloads the policies.\nExample: mcp-broker serve -c examples/broker.yaml",
        epilog=epilog(
            "mcp-broker serve -c examples/broker.yaml",
            "mcp-broker serve -c examples/broker.yaml --port 0 --ready-file /tmp/broker.url",
            codes="exit codes: 0 = stopped cleanly, 1 = could not listen or serve, 2 = invalid config "
            "or the broker could not start (policies, audit trail)",
        ),
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
        description="Serve one caller over stdin/stdout (logs go to stderr); exits when stdin closes."
        "\nExample: mcp-broker stdio -c examples/broker.yaml",
        epilog=epilog(
            "mcp-broker stdio -c examples/broker.yaml",
            codes="exit codes: 0 = the caller closed stdin, 2 = invalid config or the broker could not start",
        ),
    )
    stdio.add_argument("-c", "--config", default="broker.yaml", help="config file (default: broker.yaml)")
    stdio.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    stdio.set_defaults(func=cmd_stdio)

    check = sub.add_parser(
        "check-config",
        help="validate a config file and exit (0 valid, 2 invalid)",
        description="Validate a config file: every problem is one FILE:LINE: PATH: problem line on stderr."
        "\nExample: mcp-broker check-config examples/broker.yaml",
        epilog=epilog(
            "mcp-broker check-config examples/broker.yaml", codes="exit codes: 0 = valid, 2 = invalid"
        ),
    )
    check.add_argument("config", help="config file")
    check.set_defaults(func=cmd_check_config)

    connect = sub.add_parser(
        "connect",
        help="a local stdio server that forwards to a remote broker over Streamable HTTP",
        description="For hosts that only launch stdio servers: speak MCP on stdin/stdout and forward "
        "every message to a remote broker, with the bearer token from an environment variable or file.",
        epilog=epilog(
            "MCP_BROKER_TOKEN=... mcp-broker connect https://broker.example.com/mcp",
            "mcp-broker connect http://127.0.0.1:8787/mcp --token-file ~/.config/mcp-broker/token",
            codes="exit codes: 0 = the caller closed stdin, 2 = the token file cannot be read",
        ),
    )
    connect.add_argument("url", help="the remote broker's MCP endpoint")
    connect.add_argument("--token-env", default="MCP_BROKER_TOKEN", help="env var with the bearer token")
    connect.add_argument("--token-file", help="file with the bearer token (instead of the env var)")
    connect.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    connect.set_defaults(func=cmd_connect)

    api_key = sub.add_parser(
        "api-key",
        help="make a new API key and print the config entry (its sha256) for it",
        description="Make a new random API key, print it once (it is stored nowhere) and the "
        "identity.authentication.api_keys entry that holds only its sha256.",
        epilog=epilog(
            "mcp-broker api-key --id nightly-ci --role ci",
            codes="exit codes: 0 = printed, 2 = bad arguments",
        ),
    )
    api_key.add_argument("--id", required=True, help="the principal id policies will see")
    api_key.add_argument(
        "--type", choices=["Agent", "User"], default="Agent", help="principal type (default: Agent)"
    )
    api_key.add_argument("--role", action="append", default=[], help="a role of the principal (repeatable)")
    api_key.add_argument("--prefix", default="mcpb", help="a readable prefix for the key (default: mcpb)")
    api_key.set_defaults(func=cmd_api_key)
    add_policy_commands(sub)
    add_approval_commands(sub)
    add_audit_commands(sub)
    add_registry_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except OSError as exc:  # a file the command needs: missing, unreadable, unwritable
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return code


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}; check the path and its permissions"


if __name__ == "__main__":
    raise SystemExit(main())
