"""The `dashboard:` section of the broker config, as one frozen value.

Parsed here (not in broker/config.py) so the dashboard can be built and tested on its own;
the config loader calls `dashboard_settings(raw)` and reports each ValueError under the
`dashboard` key. Off by default: an operator turns it on, and then policy decides who sees it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

_PATH = re.compile(r"^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")
KNOWN_KEYS: Final = frozenset({"enabled", "path", "feed_size", "stream_seconds"})


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    enabled: bool = False
    """Serve the operator dashboard. Off by default: it shows every caller's decisions."""
    path: str = "/admin"
    """Where the pages live (the approvals API and /admin/*/reload keep their own paths)."""
    feed_size: int = 500
    """How many ended calls the live decisions page keeps in memory (oldest dropped first)."""
    stream_seconds: float = 600.0
    """How long one live-decisions stream stays open; the browser reconnects and is
    authorised again, so an expired token or a changed policy ends a viewer's access."""


class DashboardSettingsError(ValueError):
    """One bad value; `key` is its name in the section (empty for the section as a whole)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"dashboard.{key}: {message}" if key else f"dashboard: {message}")
        self.key = key
        self.message = message


def dashboard_settings(raw: Mapping[str, Any] | None) -> DashboardSettings:
    """The settings from the config section (None or {}: all defaults); the error names the key."""
    raw = raw or {}
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise DashboardSettingsError("", f"unknown key(s) {', '.join(unknown)}")
    defaults = DashboardSettings()
    enabled = raw.get("enabled", defaults.enabled)
    if not isinstance(enabled, bool):
        raise DashboardSettingsError("enabled", "must be true or false")
    path = raw.get("path", defaults.path)
    if not isinstance(path, str) or not _PATH.match(path):
        raise DashboardSettingsError("path", "must be an absolute path such as /admin (no trailing slash)")
    feed_size = raw.get("feed_size", defaults.feed_size)
    if isinstance(feed_size, bool) or not isinstance(feed_size, int) or not 1 <= feed_size <= 100_000:
        raise DashboardSettingsError("feed_size", "must be an integer from 1 to 100000")
    stream_seconds = raw.get("stream_seconds", defaults.stream_seconds)
    if (
        isinstance(stream_seconds, bool)
        or not isinstance(stream_seconds, int | float)
        or not 5 <= stream_seconds <= 86_400
    ):
        raise DashboardSettingsError("stream_seconds", "must be a number of seconds from 5 to 86400")
    return DashboardSettings(
        enabled=enabled, path=path, feed_size=feed_size, stream_seconds=float(stream_seconds)
    )
