"""The paths a report measures, each started by a context manager and stopped by PID after.

Direct stdio and direct Streamable HTTP are the baselines; the broker runs with the repository's
policies (every call decided; the caller is an engineer, echo is read-only, so allowed) and an
fsync'd audit trail, the defaults, exactly as `bench/run.py` starts it. Peer gateways are in
`bench/peers.py`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mcp import StdioServerParameters

from bench import run as bench_run
from bench.report.cpu import gateway_cpu
from bench.report.workload import Endpoint

ECHO = bench_run.ECHO


@dataclass(frozen=True)
class Running:
    """A started path: where to connect, and how to read its gateway's CPU seconds (if it has one)."""

    endpoint: Endpoint
    cpu: Callable[[], float] | None = None


Starter = Callable[[Path], contextlib.AbstractContextManager[Running]]


@dataclass(frozen=True)
class PathSpec:
    """A path to measure; `unavailable` is the reason it cannot run here, known before starting."""

    name: str
    what: str
    start: Starter
    unavailable: str | None = None


@contextlib.contextmanager
def direct_stdio(tmp: Path) -> Iterator[Running]:
    """Each session spawns its own echo process, as stdio does (no gateway, no CPU figure)."""
    yield Running(Endpoint(StdioServerParameters(command=sys.executable, args=[str(ECHO)])))


@contextlib.contextmanager
def direct_http(tmp: Path) -> Iterator[Running]:
    with bench_run.echo_http(tmp) as url:
        yield Running(Endpoint(url))


def broker_stdio(engine: str) -> Starter:
    @contextlib.contextmanager
    def start(tmp: Path) -> Iterator[Running]:
        with bench_run.broker(tmp, "stdio", f"report-{engine}", engine) as (url, pid):
            yield Running(Endpoint(url), gateway_cpu(pid, str(ECHO)))

    return start


def own_paths() -> list[PathSpec]:
    return [
        PathSpec("direct stdio", "SDK client ─stdio─▶ echo (one echo process per session).", direct_stdio),
        PathSpec("direct http", "SDK client ─Streamable HTTP─▶ echo (the SDK's own server).", direct_http),
        PathSpec(
            "broker[cedar] → stdio",
            "client ─HTTP─▶ broker, embedded Cedar decides every call, audit record fsync'd ─stdio─▶ echo.",
            broker_stdio("cedar"),
        ),
        PathSpec(
            "broker[opa] → stdio",
            "client ─HTTP─▶ broker, OPA sidecar (unix socket) decides every call, audit fsync'd "
            "─stdio─▶ echo; OPA's CPU counts as the gateway's.",
            broker_stdio("opa"),
        ),
    ]
