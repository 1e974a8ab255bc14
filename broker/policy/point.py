"""The policy decision point in force: the engine, its reloads, and what /readyz says of it.

A reload (file change, SIGHUP, admin endpoint) validates the new policy set before it
goes live; a bad set is logged with the engine's message and shown in /readyz while the
last good set keeps deciding. Reloads never overlap, and sessions are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from broker.policy.engine import LoadResult, PolicyEngine

log = logging.getLogger("broker.policy")

WatchedFiles = Callable[[], list[Path]]


ReloadHook = Callable[[LoadResult, str, str], Awaitable[None]]
"""(result, previous policy version, trigger)."""


class PolicyPoint:
    def __init__(
        self, engine: PolicyEngine, *, watched: WatchedFiles | None = None, interval: float = 1.0
    ) -> None:
        self.engine = engine
        self.last_reload: LoadResult | None = None
        self.last_reload_at: float | None = None
        self.reload_failures = 0
        self._watched = watched
        self._interval = interval
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self.on_reload: ReloadHook | None = None
        """Told about every reload, accepted or rejected (the audit trail records it)."""

    @property
    def policy_version(self) -> str:
        return self.engine.policy_version

    async def start(self) -> None:
        await self.engine.start()
        if self._watched is not None:
            self._fingerprint = self._stat()
            self._watcher = asyncio.create_task(self._watch(), name="policy-watch")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.engine.stop()

    async def reload(self, trigger: str) -> LoadResult:
        async with self._lock:
            previous = self.engine.policy_version
            result = await self.engine.reload()
            self.last_reload, self.last_reload_at = result, time.time()
            if result.ok:
                log.info("policy reloaded (%s): %s", trigger, result.message or result.policy_version)
            else:
                self.reload_failures += 1
                log.error(
                    "policy reload (%s) rejected, still enforcing %s:\n%s",
                    trigger,
                    result.policy_version,
                    result.message,
                )
            if self.on_reload is not None:
                await self.on_reload(result, previous, trigger)
            return result

    def status(self) -> dict[str, Any]:
        last = self.last_reload
        return {
            "engine": self.engine.name,
            "policy_version": self.policy_version,
            "last_reload": None
            if last is None
            else {"ok": last.ok, "message": last.message, "at": self.last_reload_at},
            "reload_failures": self.reload_failures,
        }

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        assert self._watched is not None
        entries = []
        for path in self._watched():
            try:
                info = path.stat()
            except OSError:
                continue
            entries.append((str(path), info.st_mtime_ns, info.st_size))
        return tuple(sorted(entries))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                fingerprint = self._stat()
            except Exception:  # a listing error must not end watching
                log.exception("policy watch: cannot list the policy files")
                continue
            if fingerprint != self._fingerprint:
                self._fingerprint = fingerprint
                await self.reload("files changed")
