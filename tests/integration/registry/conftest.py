"""Helpers for the registry's integration tests: configs of real upstreams, the CLI in process."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from broker.registry.cli import main
from tests.fixtures import example_script, fixture_script
from tests.support.broker import broker_config


def python_upstream(script: Path, *args: str, **options: Any) -> dict[str, Any]:
    return {"transport": "stdio", "command": sys.executable, "args": [str(script), *args], **options}


def write_config(directory: Path, upstreams: Mapping[str, Mapping[str, Any]]) -> Path:
    config = broker_config(upstreams)
    path = directory / "broker.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def drifting(state_file: Path) -> dict[str, Any]:
    return python_upstream(example_script("drifting_server"), "--state-file", str(state_file))


def poisoned(*args: str, **options: Any) -> dict[str, Any]:
    return python_upstream(fixture_script("poisoned"), *args, **options)


def notes() -> dict[str, Any]:
    return python_upstream(example_script("notes_server"))


def run_cli(*argv: str) -> tuple[int, str, str]:
    """`mcp-broker registry …` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["registry", *argv])
    return code, out.getvalue(), err.getvalue()
