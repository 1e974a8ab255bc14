"""Peer MCP gateways for the benchmark report, started in front of the same stdio echo server.

Each peer lives in its own virtualenv, installed by scripts/install-peers.sh under the cache
(never in the project's venv). A peer that is not installed, failed to install, or cannot start
here is a `PathSpec` with a reason, and the report prints "not run: <reason>" for it.

  mcp-proxy 0.13.0     client ─HTTP─▶ mcp-proxy ─stdio─▶ echo
                       `mcp-proxy --host 127.0.0.1 --port P -- python echo_server.py`, endpoint /mcp;
                       one stdio server shared by all sessions; no policy, no audit.
  ContextForge 1.1.0   client ─HTTP─▶ mcpgateway ─HTTP─▶ mcpgateway.translate ─stdio─▶ echo
                       its documented way to put a stdio server behind the gateway: the translate
                       bridge exposes it over Streamable HTTP, the gateway registers that URL
                       (POST /gateways, then a virtual server, POST /servers) and clients use
                       /servers/<id>/mcp with a JWT made by its own token tool.

Everything listens on 127.0.0.1 and every process started here is stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from bench import run as bench_run
from bench.report.cpu import gateway_cpu, process_table
from bench.report.paths import ECHO, PathSpec, Running
from bench.report.workload import Endpoint

MCP_PROXY_VERSION = "0.13.0"
CONTEXTFORGE_VERSION = "1.1.0"
ADMIN_EMAIL = "bench@example.com"


def peers_root() -> Path:
    """The same directory scripts/install-peers.sh installs into."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mcp-authz-broker" / "peers"


def installed(name: str, version: str, executable: str) -> tuple[Path | None, str | None]:
    """(venv bin directory, None) when usable, else (None, why not) for the report's row."""
    directory = peers_root() / f"{name}-{version}"
    failed = directory / "FAILED"
    if failed.exists():
        return None, f"install failed: {failed.read_text().strip()}"
    bin_dir = directory / "venv" / "bin"
    if not (directory / "OK").exists() or not (bin_dir / executable).exists():
        return None, f"{name} {version} not installed (run scripts/install-peers.sh)"
    return bin_dir, None


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (closed again: the peer binds it itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(line.strip() for line in text[-lines:])[:300]


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll until the URL answers at all (any status): the server is up and routing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {log_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=2.0)
            return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:g}s: {log_tail(log)}")


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process, then any of its descendants still running, each by PID."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    descendants, pending = [], list(children.get(proc.pid, []))
    while pending:
        pid = pending.pop()
        descendants.append(pid)
        pending.extend(children.get(pid, []))
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in descendants:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in descendants):
        time.sleep(0.1)
    for pid in descendants:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def started(
    argv: list[str], log: Path, ready_url: str, env: Mapping[str, str] | None = None, timeout: float = 90.0
) -> Iterator[subprocess.Popen[bytes]]:
    """A peer process logging to `log`, yielded once `ready_url` answers, stopped (tree) after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env or os.environ)
        )
    try:
        wait_http(ready_url, proc, log, timeout)
        yield proc
    finally:
        stop_tree(proc)


def mcp_proxy_path() -> PathSpec:
    bin_dir, reason = installed("mcp-proxy", MCP_PROXY_VERSION, "mcp-proxy")

    @contextlib.contextmanager
    def start(tmp: Path) -> Iterator[Running]:
        assert bin_dir is not None
        port = free_port()
        # Log level WARNING, as the broker runs here: its default INFO writes two lines per call.
        argv = [str(bin_dir / "mcp-proxy"), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--log-level", "WARNING", "--", sys.executable, str(ECHO)]
        with started(argv, tmp / "mcp-proxy.log", f"http://127.0.0.1:{port}/status") as proc:
            yield Running(Endpoint(f"http://127.0.0.1:{port}/mcp"), gateway_cpu(proc.pid, str(ECHO)))

    return PathSpec(
        f"mcp-proxy {MCP_PROXY_VERSION} → stdio",
        "client ─HTTP─▶ mcp-proxy (stdio bridge, one echo process shared by all sessions; no policy, "
        "no audit) ─stdio─▶ echo.",
        start,
        reason,
    )


def contextforge_env(bin_dir: Path, tmp: Path, port: int) -> dict[str, str]:
    """Settings the gateway needs to run here, everything else left at its defaults.

    Fresh strong secrets from its own generator (it refuses weak ones); SQLite instead of a
    database server; loopback upstreams allowed (its SSRF guard refuses them otherwise); its
    100 requests/minute rate limit off, or the workload would measure the limiter.
    """
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    generated = subprocess.run(
        [str(bin_dir / "python"), "-m", "mcpgateway.scripts.init_secrets", "--stdout"],
        capture_output=True, text=True, env=env, timeout=120, check=True, cwd=tmp,
    )  # fmt: skip
    for line in generated.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isidentifier() and not line.startswith("#"):
            env[key.strip()] = value.strip().strip("'\"")
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{tmp / f'contextforge-{port}.db'}",
            "PLATFORM_ADMIN_EMAIL": ADMIN_EMAIL,
            "SSRF_ALLOW_LOCALHOST": "true",
            "SSRF_ALLOW_PRIVATE_NETWORKS": "true",
            "RATE_LIMITING_ENABLED": "false",
            "MCPGATEWAY_UI_ENABLED": "false",
            "MCPGATEWAY_ADMIN_API_ENABLED": "true",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def contextforge_token(bin_dir: Path, env: Mapping[str, str]) -> str:
    done = subprocess.run(
        [str(bin_dir / "python"), "-m", "mcpgateway.utils.create_jwt_token", "--username", ADMIN_EMAIL,
         "--exp", "120", "--secret", env["JWT_SECRET_KEY"]],
        capture_output=True, text=True, env=dict(env), timeout=120, check=False,
    )  # fmt: skip
    token = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not token:
        raise RuntimeError(f"create_jwt_token failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return token


def contextforge_register(base: str, token: str, upstream: str) -> tuple[str, str]:
    """Register the bridged echo server and a virtual server exposing its echo tool.

    Returns (the virtual server's MCP URL, the tool's name as the gateway exposes it).
    """
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60.0) as http:
        gw = http.post("/gateways", json={"name": "echo", "url": upstream, "transport": "STREAMABLEHTTP"})
        if gw.status_code >= 300:
            raise RuntimeError(f"POST /gateways: {gw.status_code} {gw.text[:300]}")
        tools: list[dict[str, Any]] = []
        for _ in range(50):  # the gateway fetches the upstream's tools after registering it
            listed = http.get("/tools")
            body = listed.json()
            tools = body if isinstance(body, list) else body.get("items", body.get("tools", []))
            if any(str(t.get("originalName", t.get("name", ""))).endswith("echo") for t in tools):
                break
            time.sleep(0.2)
        echo = [t for t in tools if str(t.get("originalName", t.get("name", ""))) == "echo"]
        if not echo:
            raise RuntimeError(f"the echo tool did not appear in GET /tools: {json.dumps(tools)[:300]}")
        server = http.post(
            "/servers", json={"server": {"name": "bench", "associated_tools": [echo[0]["id"]]}}
        )
        if server.status_code >= 300:
            raise RuntimeError(f"POST /servers: {server.status_code} {server.text[:300]}")
        server_id = server.json()["id"]
    return f"{base}/servers/{server_id}/mcp", str(echo[0]["name"])


def contextforge_path(upstream: str) -> PathSpec:
    """ContextForge in front of the echo server: through its stdio bridge, or over HTTP directly.

    `stdio` is its documented way to serve a stdio server (mcpgateway.translate); `http` registers
    the SDK's HTTP echo server itself, so the gateway's own cost is measured without the bridge.
    """
    bin_dir, reason = installed("contextforge", CONTEXTFORGE_VERSION, "mcpgateway")

    @contextlib.contextmanager
    def upstream_url(tmp: Path, env: Mapping[str, str]) -> Iterator[str]:
        if upstream == "http":
            with bench_run.echo_http(tmp) as url:
                yield url
            return
        assert bin_dir is not None
        port = free_port()
        bridge = [str(bin_dir / "python"), "-m", "mcpgateway.translate", "--stdio",
                  f"{sys.executable} {ECHO}", "--expose-streamable-http", "--host", "127.0.0.1",
                  "--port", str(port), "--logLevel", "warning"]  # fmt: skip
        with started(bridge, tmp / "cf-translate.log", f"http://127.0.0.1:{port}/healthz", env):
            yield f"http://127.0.0.1:{port}/mcp"

    @contextlib.contextmanager
    def start(tmp: Path) -> Iterator[Running]:
        assert bin_dir is not None
        port = free_port()
        env = contextforge_env(bin_dir, tmp, port)
        gateway = [str(bin_dir / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)]
        base = f"http://127.0.0.1:{port}"
        with (
            upstream_url(tmp, env) as echo_url,
            started(gateway, tmp / f"contextforge-{upstream}.log", f"{base}/health", env, 180.0) as proc,
        ):
            token = contextforge_token(bin_dir, env)
            url, tool = contextforge_register(base, token, echo_url)
            yield Running(
                Endpoint(url, tool=tool, headers={"Authorization": f"Bearer {token}"}),
                gateway_cpu(proc.pid, str(ECHO)),
            )

    if upstream == "stdio":
        name = f"ContextForge {CONTEXTFORGE_VERSION} → translate → stdio"
        what = (
            "client ─HTTP─▶ mcpgateway (defaults, SQLite, JWT auth, rate limit off) ─HTTP─▶ "
            "mcpgateway.translate (its stdio bridge, one echo process for all sessions) ─stdio─▶ echo; "
            "the bridge's CPU is not counted as the gateway's."
        )
    else:
        name = f"ContextForge {CONTEXTFORGE_VERSION} → http"
        what = (
            "client ─HTTP─▶ mcpgateway (same settings) ─Streamable HTTP─▶ echo (the SDK's server, "
            "as in direct http): the gateway without the bridge."
        )
    return PathSpec(name, what, start, reason)


def peer_paths() -> list[PathSpec]:
    return [mcp_proxy_path(), contextforge_path("stdio"), contextforge_path("http")]
