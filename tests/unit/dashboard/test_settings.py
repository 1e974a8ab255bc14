"""The `dashboard:` config section: off by default, checked by the schema and by its parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import ConfigError, load_config
from broker.dashboard.settings import DashboardSettings, DashboardSettingsError, dashboard_settings

REPO = Path(__file__).resolve().parents[3]


def config_file(tmp_path: Path, dashboard: str) -> Path:
    path = tmp_path / "broker.yaml"
    path.write_text(
        f"policy: {{path: {REPO / 'policies'}}}\n"
        "upstreams:\n  notes: {transport: stdio, command: python}\n"
        f"{dashboard}"
    )
    return path


def test_the_dashboard_is_off_unless_the_config_turns_it_on(tmp_path: Path) -> None:
    assert load_config(config_file(tmp_path, "")).dashboard == DashboardSettings()
    assert DashboardSettings().enabled is False
    on = load_config(config_file(tmp_path, "dashboard: {enabled: true, path: /ops/board, feed_size: 50}\n"))
    assert on.dashboard == DashboardSettings(enabled=True, path="/ops/board", feed_size=50)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("dashboard: {path: admin}\n", "dashboard.path"),
        ("dashboard: {path: /admin/}\n", "dashboard.path"),
        ("dashboard: {feed_size: 0}\n", "dashboard.feed_size"),
        ("dashboard: {enabeld: true}\n", "dashboard"),
    ],
)
def test_a_bad_dashboard_section_is_refused_with_its_key(tmp_path: Path, section: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(config_file(tmp_path, section))
    assert any(f"{problem}" in line for line in refused.value.problems), refused.value.problems


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"enabled": "yes"}, "enabled"),
        ({"path": "/a b"}, "path"),
        ({"feed_size": True}, "feed_size"),
        ({"stream_seconds": 1}, "stream_seconds"),
        ({"colour": "red"}, ""),
    ],
)
def test_the_parser_names_the_bad_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(DashboardSettingsError) as refused:
        dashboard_settings(raw)
    assert refused.value.key == key


def test_none_means_the_defaults() -> None:
    assert dashboard_settings(None) == DashboardSettings()
    assert dashboard_settings({"stream_seconds": 30}).stream_seconds == 30.0
