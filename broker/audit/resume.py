"""Continue the chain where the files end: at every start, and after a write error.

The last file decides. Ending with a `close` record (a clean shutdown), a new file follows
it, starting with an `open` record that names it. Otherwise (a crash, a write error) the
chain continues in it after a `resume` record. Bytes after the last newline are a record
whose write was cut short, never acknowledged: they are moved to `<file>.torn-<offset>`,
the file is cut back to whole lines, and the `resume` (or `open`) record says so. A file
without a single complete line (a start or rotation that died before its first record) is
removed. A last record that does not match its hash stops everything: the chain cannot be
continued from a record nobody can vouch for.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.audit.chain import START, ChainHead, seal
from broker.audit.fileops import FileOps
from broker.audit.layout import (
    LOCK_FILE,
    FileEnd,
    file_name,
    last_record,
    read_end,
    read_first_record,
    trail_files,
)
from broker.audit.sink import AuditRecord, AuditUnavailable
from broker.audit.timefmt import FORMAT_VERSION, iso_time

log = logging.getLogger("broker.audit")


@dataclass(frozen=True, slots=True)
class OpenedTrail:
    """The live file after a start or recovery, and where the chain stands."""

    fd: int
    file: str
    size: int
    opened: float
    """When the live file was started (its `open` record's time): rotation by age counts from it."""
    head: ChainHead


def lock_directory(directory: Path) -> int:
    """Hold the directory's lock (flock, released when the process dies): one writer per trail."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AuditUnavailable(
            f"another process is writing the audit trail in {directory} (it holds {LOCK_FILE})"
        ) from None
    return fd


def _writer() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": os.uname().nodename}


def open_record(
    name: str, previous: dict[str, Any] | None, reason: str, now: float, key_id: str | None, **extra: Any
) -> AuditRecord:
    """The first record of a file: its own name, and the file, seq and hash it continues."""
    return {
        "v": FORMAT_VERSION,
        "kind": "open",
        "time": iso_time(now),
        "file": name,
        "previous": previous,
        "reason": reason,
        "key_id": key_id,
        "writer": _writer(),
        **extra,
    }


def open_trail(
    directory: Path,
    ops: FileOps,
    key_id: str | None,
    now: float,
    reason: str,
    detail: dict[str, Any] | None,
) -> OpenedTrail:
    """Write the first record of this run (`open` or `resume`) durably; the live file stays open.

    `reason` is `restart` at a start (a `resume` then says `unclean_shutdown`) or `recovery`
    after a write error, with `detail` saying what failed.
    """
    files = trail_files(directory)
    torn: dict[str, Any] | None = None
    while files:
        path = files[-1]
        end = read_end(path)
        if end.torn:
            torn = _move_torn(ops, path, end)
        if end.last_line is None:
            path.unlink()
            ops.sync_dir(directory)
            files.pop()
            continue
        last = last_record(end)
        if last is None:
            raise AuditUnavailable(
                f"cannot continue the audit trail: the last record of {path} does not match its hash; "
                f"run `mcp-broker audit verify {directory}`"
            )
        head = ChainHead(last["seq"], last["hash"])
        if last.get("kind") == "close":
            previous = {"file": path.name, "seq": head.seq, "hash": head.hash}
            return _new_file(directory, ops, key_id, head, previous, reason, now, torn, detail)
        resume: AuditRecord = {
            "v": FORMAT_VERSION,
            "kind": "resume",
            "time": iso_time(now),
            "file": path.name,
            "reason": "unclean_shutdown" if reason == "restart" else reason,
            "torn": torn,
            "detail": detail,
            "key_id": key_id,
            "writer": _writer(),
        }
        line, head = seal(resume, head)
        fd = ops.open_append(path)
        try:
            ops.write(fd, line)
            ops.sync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                ops.truncate(fd, end.size)
            ops.close(fd)
            raise
        return OpenedTrail(fd, path.name, end.size + len(line), _opened_at(path, now), head)
    return _new_file(directory, ops, key_id, START, None, "new", now, torn, detail)


def _new_file(
    directory: Path,
    ops: FileOps,
    key_id: str | None,
    head: ChainHead,
    previous: dict[str, Any] | None,
    reason: str,
    now: float,
    torn: dict[str, Any] | None,
    detail: dict[str, Any] | None,
) -> OpenedTrail:
    name = file_name(head.seq + 1)
    extra: dict[str, Any] = {}
    if torn is not None:
        extra["torn"] = torn
    if detail is not None:
        extra["detail"] = detail
    line, head = seal(open_record(name, previous, reason, now, key_id, **extra), head)
    path = directory / name
    fd = ops.open_append(path)
    try:
        ops.write(fd, line)
        ops.sync(fd)
        ops.sync_dir(directory)
    except OSError:
        ops.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return OpenedTrail(fd, name, len(line), now, head)


def _move_torn(ops: FileOps, path: Path, end: FileEnd) -> dict[str, Any]:
    """Move a torn final line aside (it was never acknowledged) and cut the file back to whole lines."""
    aside = path.with_name(f"{path.name}.torn-{end.size}")
    ops.replace_file(aside, end.torn, durable=True)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        ops.truncate(fd, end.size)
        ops.sync(fd)
    finally:
        ops.close(fd)
    log.warning("audit: moved a torn final line (%d bytes) of %s to %s", len(end.torn), path, aside.name)
    return {
        "file": path.name,
        "offset": end.size,
        "bytes": len(end.torn),
        "sha256": hashlib.sha256(end.torn).hexdigest(),
        "moved_to": aside.name,
    }


def _opened_at(path: Path, fallback: float) -> float:
    first = read_first_record(path)
    when = first.get("time") if first is not None else None
    if isinstance(when, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(when).timestamp()
    return fallback
