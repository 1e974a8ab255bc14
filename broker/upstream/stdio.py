"""Upstream over a child process's stdin/stdout: newline-delimited JSON-RPC.

The child runs in its own process group so that shutdown reaches every process it
started (`npx` wrappers spawn node children): stdin is closed first (the polite MCP
shutdown), then the group gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson

from broker.jsonrpc import Message
from broker.upstream.transport import OnClose, OnMessage, TransportError

log = logging.getLogger("broker.upstream.stdio")

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Largest single message accepted from a child; a longer line closes the connection."""

_STDERR_TAIL = 20


class StdioTransport:
    kind = "stdio"

    def __init__(
        self,
        name: str,
        command: str,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: Path | None,
        *,
        grace_seconds: float = 2.0,
    ) -> None:
        self.name = name
        self._command = command
        self._args = list(args)
        self._env = dict(env)
        self._cwd = cwd
        self._grace = grace_seconds
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._on_close: OnClose | None = None
        self._closed = False
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def open(self, on_message: OnMessage, on_close: OnClose) -> None:
        self._on_close = on_close
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._command,
                *self._args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
                limit=MAX_LINE_BYTES,
            )
        except OSError as exc:
            raise TransportError(f"cannot start {self._command!r}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise TransportError(f"cannot start {self._command!r}: {exc}") from exc
        log.info("upstream %s: started %s (pid %s)", self.name, self._command, self._proc.pid)
        self._tasks = [
            asyncio.create_task(self._read_stdout(on_message), name=f"{self.name}-stdout"),
            asyncio.create_task(self._read_stderr(), name=f"{self.name}-stderr"),
        ]

    async def _read_stdout(self, on_message: OnMessage) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        reason = "closed its stdout"
        try:
            while True:
                try:
                    line = await stdout.readline()
                except ValueError:
                    reason = f"sent a message longer than {MAX_LINE_BYTES} bytes"
                    break
                if not line:
                    break
                if line.isspace():
                    continue
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.warning(
                        "upstream %s: ignoring a stdout line that is not JSON: %.200r", self.name, line
                    )
                    continue
                if not isinstance(message, dict):
                    log.warning("upstream %s: ignoring a JSON value that is not a message object", self.name)
                    continue
                on_message(message, None)
        except Exception:  # the reader must always end in on_close
            log.exception("upstream %s: stdout reader failed", self.name)
            reason = "stdout reader failed"
        rc = await self._exit_code()
        if rc is not None:
            reason = f"exited with code {rc}"
        tail = " | ".join(self.stderr_tail)
        self._fire_close(f"{reason}; last stderr: {tail}" if tail and rc not in (None, 0) else reason)

    async def _exit_code(self) -> int | None:
        assert self._proc is not None
        try:
            return await asyncio.wait_for(self._proc.wait(), 0.5)
        except TimeoutError:
            return None

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        stderr = self._proc.stderr
        with contextlib.suppress(Exception):
            while True:
                line = await stderr.readline()
                if not line:
                    return
                text = line.decode("utf-8", errors="replace").rstrip()
                if text:
                    self.stderr_tail.append(text[:500])
                    log.debug("upstream %s stderr: %s", self.name, text)

    def _fire_close(self, reason: str) -> None:
        if self._on_close is not None:
            callback, self._on_close = self._on_close, None
            callback(reason)

    async def send(self, message: Message) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or self._closed:
            raise TransportError("the upstream process is not running")
        stdin = proc.stdin
        if stdin.is_closing():
            raise TransportError("the upstream process closed its stdin")
        stdin.write(orjson.dumps(message) + b"\n")
        transport = stdin.transport
        if transport.get_write_buffer_size() > 256 * 1024:  # only wait when the child is slow to read
            try:
                await stdin.drain()
            except (ConnectionError, BrokenPipeError) as exc:
                raise TransportError(f"writing to the upstream failed: {exc}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            if not await self._wait(proc, self._grace):
                self._signal_group(proc.pid, signal.SIGTERM)
                if not await self._wait(proc, self._grace):
                    self._signal_group(proc.pid, signal.SIGKILL)
                    await self._wait(proc, self._grace)
            # The group may outlive its leader (a wrapper that exited first): reap it too.
            self._signal_group(proc.pid, signal.SIGKILL)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fire_close("closed by the broker")

    @staticmethod
    async def _wait(proc: asyncio.subprocess.Process, seconds: float) -> bool:
        try:
            await asyncio.wait_for(proc.wait(), seconds)
            return True
        except TimeoutError:
            return False

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
