"""FileAuditSink: the hash-chained JSON Lines trail in a directory, written by one task.

How a record travels: `append` puts it on a list and wakes the writer, then waits for
its future (except in `none` durability). The writer takes everything that is waiting as
one batch (group commit), seals each record into the chain on the event loop (orjson +
sha256, a few µs), and hands the batch's bytes to a one-thread executor that does one
write() and, in `fsync` mode, one fdatasync(). Then it resolves the batch's futures.
Records arriving during that write form the next batch, so under load a batch grows with
the load and the number of fsyncs does not.

What else the writer does between batches: a signed checkpoint every N records / T
seconds (in the chain, and as the `audit.checkpoint` file outside it); rotation by size
or age (a checkpoint and a `close` record end the old file, an `open` record naming the
old file and its last hash starts the new one); at start, resuming the chain from the
last file, with a torn final line (a write cut short by a crash, never acknowledged)
moved aside and reported in the chain.

On a write error the writer undoes the partial batch (truncates the file back), fails
the batch (fail_closed) or holds it in memory (degraded), and tries again after
`retry_interval` by reopening the trail the way a start does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from broker.audit.chain import START, ChainHead, seal
from broker.audit.config import AuditConfig
from broker.audit.fileops import FileOps
from broker.audit.layout import CHECKPOINT_FILE, file_name
from broker.audit.resume import OpenedTrail, lock_directory, open_record, open_trail
from broker.audit.signing import CheckpointSigner, KeyFileError
from broker.audit.sink import AuditRecord, AuditUnavailable, SinkState, SinkStatus
from broker.audit.timefmt import FORMAT_VERSION, iso_time

log = logging.getLogger("broker.audit")

MAX_QUEUED: Final = 10000
"""`none` durability: beyond this many unwritten records, append waits for the writer (backpressure)."""

WriteObserver = Callable[[int, float, bool], None]
"""Called after each write attempt with (records in the batch, seconds it took, succeeded)."""


@dataclass(slots=True)
class _Chunk:
    name: str
    data: bytearray
    new: bool
    """The file is created by this batch (rotation)."""
    ends: bool = False
    """The batch closes this file (rotation or shutdown)."""


@dataclass(slots=True)
class _Plan:
    """One batch, sealed: the bytes per file and the state the sink is in once they are written."""

    chunks: list[_Chunk]
    head: ChainHead
    file: str
    size: int
    opened: float
    file_records: int
    since_checkpoint: int
    checkpoint_at: float
    lines: int = 0
    sidecar: bytes | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    new_fds: list[int] = field(default_factory=list)
    """Descriptors of files this batch created (filled while writing)."""


class FileAuditSink:
    """The embedded AuditSink (see the module docstring and docs/audit.md)."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        ops: FileOps | None = None,
        signer: CheckpointSigner | None = None,
        clock: Callable[[], float] = time.time,
        on_write: WriteObserver | None = None,
    ) -> None:
        self._config = config
        self._dir = Path(config.directory)
        self._ops = ops or FileOps()
        self._signer = signer
        self._clock = clock
        self._on_write = on_write
        self._durability = config.durability
        self._degraded = config.failure_mode == "degraded"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pending: list[tuple[AuditRecord, asyncio.Future[None] | None]] = []
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._file = ""
        self._size = 0
        self._opened = 0.0
        self._head = START
        self._file_records = 0
        self._since_checkpoint = 0
        self._checkpoint_at = 0.0
        self._state: SinkState = "starting"
        self._closing = False
        self._broken = False
        self._error: str | None = None
        self._failed_since = 0.0
        self._retry_at = 0.0
        self._refused = 0
        self._held: collections.deque[AuditRecord] = collections.deque()
        self._dropped = 0
        self._dropped_first: str | None = None
        self._dropped_last: str | None = None
        self._records = 0
        self._batches = 0
        self._failures = 0

    # -- the protocol ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._state != "starting":
            raise RuntimeError("a FileAuditSink starts once")
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        try:
            opened = await self._loop.run_in_executor(self._executor, self._start_files)
        except AuditUnavailable:
            self._stop_executor()
            self._state = "failed"
            raise
        self._adopt(opened)
        self._checkpoint_at = self._clock()
        self._state = "ok"
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def append(self, record: AuditRecord) -> None:
        if self._state != "ok" or self._closing:
            raise AuditUnavailable("the audit trail is not open: the request is refused")
        if self._broken:
            if self._degraded:
                self._hold(record)
                self._wake.set()
                return
            if self._clock() < self._retry_at:
                self._refused += 1
                raise AuditUnavailable(f"the audit trail cannot be written ({self._error}): refused")
        if self._durability == "none" and len(self._pending) < MAX_QUEUED:
            self._pending.append((record, None))
            self._wake.set()
            return
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._pending.append((record, waiter))
        self._wake.set()
        await waiter

    async def close(self) -> None:
        if self._task is None or self._closing:
            return
        self._closing = True
        self._wake.set()
        try:
            await self._task
        finally:
            assert self._executor is not None and self._loop is not None
            await self._loop.run_in_executor(self._executor, self._release)
            self._stop_executor()
            self._state = "closed"
            if self._held or self._dropped:
                log.error(
                    "audit: %d held records were never written (%d more lost)", len(self._held), self._dropped
                )

    def accepting(self) -> bool:
        if self._state != "ok" or self._closing:
            return False
        return not self._broken or self._degraded or self._clock() >= self._retry_at

    def status(self) -> SinkStatus:
        state = self._state
        if state == "ok" and self._broken:
            state = "degraded" if self._degraded else "failed"
        return SinkStatus(
            state=state,
            ready=state in ("ok", "degraded"),
            error=self._error,
            file=self._file or None,
            seq=self._head.seq,
            pending=len(self._pending),
            held=len(self._held),
            dropped=self._dropped,
            records=self._records,
            batches=self._batches,
            failures=self._failures,
        )

    # -- the writer -----------------------------------------------------------------------------

    async def _run(self) -> None:
        window = self._config.group_commit_window
        while True:
            if not self._pending and not self._closing:
                deadline = self._next_deadline()
                delay = None if deadline is None else max(0.0, deadline - self._clock())
                if delay is None or delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
            self._wake.clear()
            if window and self._pending and not self._closing:
                await asyncio.sleep(window)
            batch, self._pending = self._pending, []
            final = self._closing
            try:
                await self._commit(batch, final=final)
            except Exception as exc:  # a bug here must not leave callers waiting forever
                log.exception("audit writer failed")
                self._refuse(batch, f"internal error in the audit writer: {type(exc).__name__}")
            if final and not self._pending:
                return

    def _next_deadline(self) -> float | None:
        """When the writer must wake without new records: checkpoint, rotation by age, retry."""
        if self._broken:  # nothing can be written before the next try
            return self._retry_at if self._held else None
        deadlines: list[float] = []
        config = self._config
        if self._signer is not None and config.checkpoint_interval and self._since_checkpoint:
            deadlines.append(self._checkpoint_at + config.checkpoint_interval)
        if config.rotate_interval and self._file_records:
            deadlines.append(self._opened + config.rotate_interval)
        return min(deadlines) if deadlines else None

    async def _commit(
        self, batch: list[tuple[AuditRecord, asyncio.Future[None] | None]], *, final: bool
    ) -> None:
        assert self._loop is not None and self._executor is not None
        now = self._clock()
        if self._broken and (now < self._retry_at or not await self._recover(now)):
            if self._degraded:
                for record, waiter in batch:
                    self._hold(record)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
            else:
                self._refuse(batch, self._error or "write error")
            return
        records: list[tuple[AuditRecord, asyncio.Future[None] | None]] = []
        if self._held:
            records.extend(self._take_held(now))
        records.extend(batch)
        plan = self._plan(records, now, final=final)
        if plan.lines == 0 and not plan.waiters:
            return
        started = time.perf_counter()
        try:
            if self._durability == "fsync" or plan.sidecar is not None or len(plan.chunks) > 1 or final:
                fd = await self._loop.run_in_executor(self._executor, self._write_plan, plan)
            else:  # handing bytes to the OS costs less than a thread hop
                fd = self._write_plan(plan)
        except OSError as exc:
            self._observe(plan.lines, time.perf_counter() - started, False)
            await self._fail(exc, plan, records, now)
            return
        self._observe(plan.lines, time.perf_counter() - started, True)
        self._fd = fd
        self._head = plan.head
        self._file = plan.file
        self._size = plan.size
        self._opened = plan.opened
        self._file_records = plan.file_records
        self._since_checkpoint = plan.since_checkpoint
        self._checkpoint_at = plan.checkpoint_at
        self._records += plan.lines
        self._batches += 1
        for waiter in plan.waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _plan(
        self, records: list[tuple[AuditRecord, asyncio.Future[None] | None]], now: float, *, final: bool
    ) -> _Plan:
        """Seal records (and the sink's own checkpoint / close / open records) into bytes per file."""
        config = self._config
        chunk = _Chunk(self._file, bytearray(), new=False)
        plan = _Plan(
            [chunk],
            self._head,
            self._file,
            self._size,
            self._opened,
            self._file_records,
            self._since_checkpoint,
            self._checkpoint_at,
        )
        for record, waiter in records:
            try:
                line, plan.head = seal(record, plan.head)
            except TypeError as exc:  # not JSON data: a bug in whoever built it, never written
                if waiter is not None and not waiter.done():
                    waiter.set_exception(AuditUnavailable(f"the audit record is not JSON data: {exc}"))
                continue
            chunk.data += line
            plan.lines += 1
            plan.file_records += 1
            plan.since_checkpoint += 1
            if waiter is not None:
                plan.waiters.append(waiter)
        plan.size += len(chunk.data)
        signer = self._signer
        checkpoint_due = (
            signer is not None
            and plan.since_checkpoint > 0
            and (
                (config.checkpoint_records and plan.since_checkpoint >= config.checkpoint_records)
                or (config.checkpoint_interval and now - plan.checkpoint_at >= config.checkpoint_interval)
            )
        )
        rotate = final or (
            plan.file_records > 0
            and (
                (config.rotate_bytes and plan.size >= config.rotate_bytes)
                or (config.rotate_interval and now - plan.opened >= config.rotate_interval)
            )
        )
        if rotate and signer is not None and plan.since_checkpoint > 0:
            checkpoint_due = True
        if checkpoint_due:
            self._add(plan, chunk, self._checkpoint_record(plan, now))
            plan.since_checkpoint = 0
            plan.checkpoint_at = now
        if rotate:
            next_file = None if final else file_name(plan.head.seq + 2)
            close = {
                "v": FORMAT_VERSION,
                "kind": "close",
                "time": iso_time(now),
                "file": plan.file,
                "reason": "shutdown" if final else "rotation",
                "next_file": next_file,
            }
            self._add(plan, chunk, close)
            chunk.ends = True
            if next_file is not None:
                previous = {"file": plan.file, "seq": plan.head.seq, "hash": plan.head.hash}
                chunk = _Chunk(next_file, bytearray(), new=True)
                plan.chunks.append(chunk)
                plan.file, plan.size, plan.opened, plan.file_records = next_file, 0, now, 0
                key = signer.key_id if signer is not None else None
                self._add(plan, chunk, open_record(next_file, previous, "rotation", now, key))
        if checkpoint_due or final:
            plan.sidecar = self._sidecar(plan, now)
        return plan

    def _add(self, plan: _Plan, chunk: _Chunk, record: AuditRecord) -> None:
        line, plan.head = seal(record, plan.head)
        chunk.data += line
        plan.size += len(line)
        plan.lines += 1
        if record["kind"] != "checkpoint":
            plan.since_checkpoint += 1

    def _checkpoint_record(self, plan: _Plan, now: float) -> AuditRecord:
        assert self._signer is not None
        return {
            "v": FORMAT_VERSION,
            "kind": "checkpoint",
            "time": iso_time(now),
            "file": plan.file,
            "covers": {"seq": plan.head.seq, "hash": plan.head.hash},
            "key_id": self._signer.key_id,
            "signature": self._signer.sign(plan.file, plan.head.seq, plan.head.hash),
        }

    def _sidecar(self, plan: _Plan, now: float) -> bytes | None:
        """`audit.checkpoint`: a signature over the newest record, outside the chain, so cutting
        records off the end of the live file (checkpoints included) is detectable."""
        if self._signer is None:
            return None
        head = plan.head
        document = {
            "v": FORMAT_VERSION,
            "time": iso_time(now),
            "file": plan.file,
            "seq": head.seq,
            "hash": head.hash,
            "key_id": self._signer.key_id,
            "signature": self._signer.sign(plan.file, head.seq, head.hash),
        }
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)

    # -- IO (in the writer thread, or inline for write/none without rotation) ---------------------

    def _write_plan(self, plan: _Plan) -> int:
        """Write a sealed batch; returns the descriptor of the file the chain now continues in.

        Files that a rotation ends are closed only once everything succeeded, so on an error
        `_undo` still holds every descriptor this batch touched.
        """
        ops = self._ops
        fd = self._fd
        assert fd is not None
        ended: list[int] = []
        for chunk in plan.chunks:
            if chunk.new:
                fd = ops.open_append(self._dir / chunk.name)
                plan.new_fds.append(fd)
            if chunk.data:
                ops.write(fd, bytes(chunk.data))
            if chunk.ends:
                ops.sync(fd)
                ended.append(fd)
        if plan.new_fds:
            ops.sync(fd)
            ops.sync_dir(self._dir)
        elif self._durability == "fsync" and not plan.chunks[-1].ends:
            ops.sync(fd)
        if plan.sidecar is not None:
            ops.replace_file(self._dir / CHECKPOINT_FILE, plan.sidecar, durable=self._durability != "none")
        for done in ended:
            if done != fd:
                ops.close(done)
        return fd

    async def _fail(
        self,
        exc: OSError,
        plan: _Plan,
        records: list[tuple[AuditRecord, asyncio.Future[None] | None]],
        now: float,
    ) -> None:
        assert self._loop is not None and self._executor is not None
        message = f"{exc.strerror or exc} ({self._dir / plan.chunks[0].name})"
        if not self._broken:
            log.error("audit trail write failed: %s", message)
            self._failed_since = now
        self._broken = True
        self._error = message
        self._failures += 1
        self._retry_at = now + self._config.retry_interval
        with contextlib.suppress(OSError):
            await self._loop.run_in_executor(self._executor, self._undo, plan)
        if self._degraded:
            for record, waiter in records:
                if waiter is None and record.get("kind") == "gap":  # ours: count its losses again
                    self._dropped += int(record["lost"])
                    self._dropped_first = record["first_lost"]
                    self._dropped_last = self._dropped_last or record["last_lost"]
                else:
                    self._hold(record)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        else:
            self._refuse(records, message)

    def _undo(self, plan: _Plan) -> None:
        """Take back what a failed batch may have written: cut the file back, remove new files."""
        for fd in plan.new_fds:
            with contextlib.suppress(OSError):
                self._ops.close(fd)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._ops.truncate(self._fd, self._size)
            with contextlib.suppress(OSError):
                self._ops.close(self._fd)
            self._fd = None
        for chunk in plan.chunks:
            if chunk.new:
                with contextlib.suppress(FileNotFoundError):
                    (self._dir / chunk.name).unlink()

    async def _recover(self, now: float) -> bool:
        """Reopen the trail after a write error, as a start would; False if it still fails."""
        assert self._loop is not None and self._executor is not None
        detail = {
            "error": self._error,
            "failed_since": iso_time(self._failed_since),
            "refused": self._refused,
            "expected_seq": self._head.seq,
        }
        try:
            opened = await self._loop.run_in_executor(self._executor, self._open_trail, "recovery", detail)
        except AuditUnavailable as exc:
            self._error = exc.message
            self._retry_at = now + self._config.retry_interval
            self._failures += 1
            return False
        except OSError as exc:
            self._error = f"{exc.strerror or exc} (reopening {self._dir})"
            self._retry_at = now + self._config.retry_interval
            self._failures += 1
            return False
        log.warning("audit trail writable again after: %s", self._error)
        self._adopt(opened)
        self._broken = False
        self._error = None
        self._refused = 0
        return True

    # -- degraded mode ----------------------------------------------------------------------------

    def _hold(self, record: AuditRecord) -> None:
        if len(self._held) >= self._config.degraded_buffer:
            self._dropped += 1
            when = record.get("time")
            when = when if isinstance(when, str) else iso_time(self._clock())
            self._dropped_first = self._dropped_first or when
            self._dropped_last = when
            return
        self._held.append(record)

    def _take_held(self, now: float) -> list[tuple[AuditRecord, asyncio.Future[None] | None]]:
        taken: list[tuple[AuditRecord, asyncio.Future[None] | None]] = []
        if self._dropped:
            gap = {
                "v": FORMAT_VERSION,
                "kind": "gap",
                "time": iso_time(now),
                "lost": self._dropped,
                "first_lost": self._dropped_first,
                "last_lost": self._dropped_last,
            }
            taken.append((gap, None))
            self._dropped, self._dropped_first, self._dropped_last = 0, None, None
        taken.extend((record, None) for record in self._held)
        self._held.clear()
        return taken

    def _refuse(self, batch: list[tuple[AuditRecord, asyncio.Future[None] | None]], why: str) -> None:
        for _, waiter in batch:
            self._refused += 1
            if waiter is not None and not waiter.done():
                waiter.set_exception(AuditUnavailable(f"the audit trail cannot be written ({why}): refused"))

    def _observe(self, records: int, seconds: float, ok: bool) -> None:
        if self._on_write is not None:
            self._on_write(records, seconds, ok)

    # -- opening and resuming the trail (writer thread) -------------------------------------------

    def _adopt(self, opened: OpenedTrail) -> None:
        self._fd = opened.fd
        self._file = opened.file
        self._size = opened.size
        self._opened = opened.opened
        self._head = opened.head
        self._file_records = 0
        self._records += 1

    def _start_files(self) -> OpenedTrail:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock_directory(self._dir)
            if self._signer is None and self._config.signing_key is not None:
                self._signer = CheckpointSigner.from_pem_file(self._config.signing_key)
            return self._open_trail("restart", None)
        except KeyFileError as exc:
            self._release()
            raise AuditUnavailable(str(exc)) from None
        except OSError as exc:
            self._release()
            why = exc.strerror or str(exc)
            raise AuditUnavailable(f"cannot open the audit trail in {self._dir}: {why}") from None
        except AuditUnavailable:
            self._release()
            raise

    def _release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._ops.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _stop_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _open_trail(self, reason: str, detail: dict[str, Any] | None) -> OpenedTrail:
        """Continue the chain where the files end (broker/audit/resume.py), after a start or an error."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._ops.close(self._fd)
            self._fd = None
        key = self._signer.key_id if self._signer is not None else None
        return open_trail(self._dir, self._ops, key, self._clock(), reason, detail)
