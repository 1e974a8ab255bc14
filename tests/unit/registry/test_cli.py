"""`mcp-broker registry` on a parser (the commands themselves run in tests/integration/registry)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from broker.registry import build_registry
from broker.registry.cli import add_registry_commands, settings_for
from broker.registry.pins import LockFileError
from broker.registry.settings import RegistrySettings, registry_settings


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mcp-broker")
    add_registry_commands(root.add_subparsers(dest="command", required=True))
    return root


def test_the_three_commands_parse() -> None:
    pin = parser().parse_args(["registry", "pin", "-c", "b.yaml", "--server", "a", "--server", "b"])
    assert (pin.registry_command, pin.config, pin.server, pin.lock) == ("pin", "b.yaml", ["a", "b"], None)
    diff = parser().parse_args(["registry", "diff", "--lock", "x.yaml", "--format", "json"])
    assert (diff.config, diff.lock, diff.format) == ("broker.yaml", "x.yaml", "json")
    scan = parser().parse_args(["registry", "scan", "-c", "b.yaml"])
    assert scan.format == "text" and callable(scan.func)


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["registry", "scan", "--help"])
    assert "exit codes: 0 = all good, 1 = something was found" in capsys.readouterr().out


def test_a_command_is_required() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["registry"])


def test_settings_default_to_the_policy_directory(tmp_path: Path) -> None:
    class Config:
        class policy:
            path = tmp_path / "policies"

    settings = settings_for(Config(), None)
    assert settings.lock_file == tmp_path / "policies" / "registry.lock.yaml"
    assert settings_for(Config(), "other.yaml").lock_file == Path("other.yaml")


def test_build_registry_loads_the_lock_file(tmp_path: Path) -> None:
    settings = registry_settings({"lock_file": str(tmp_path / "lock.yaml")}, tmp_path)
    registry = build_registry(settings, ["a", "b"])
    assert registry.guard.pins.count() == 0
    (tmp_path / "lock.yaml").write_text("version: 9\n")
    with pytest.raises(LockFileError):
        build_registry(settings, ["a"])
    assert isinstance(RegistrySettings().lock_file, Path)
