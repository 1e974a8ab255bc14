"""An audit directory on disk: which files belong to the trail, in which order, and their ends.

```
audit/
  audit-000000000001.jsonl          closed: ends with a `close` record
  audit-000000052311.jsonl          the live file (named after its first seq)
  audit-000000052311.jsonl.torn-81920   bytes of a torn last line moved aside after a crash
  audit.checkpoint                  the latest signed checkpoint (outside the chain)
  .lock                             held by the writing broker (flock)
```

File names carry the seq of their first record, zero-padded, so name order is chain order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from broker.audit.chain import check_line

FILE_PATTERN: Final = re.compile(r"^audit-(\d{12,})\.jsonl$")
CHECKPOINT_FILE: Final = "audit.checkpoint"
LOCK_FILE: Final = ".lock"
TAIL_CHUNK: Final = 64 * 1024


def file_name(first_seq: int) -> str:
    return f"audit-{first_seq:012d}.jsonl"


def trail_files(directory: Path) -> list[Path]:
    """The trail's files in chain order (by the first seq in the name)."""
    found: list[tuple[int, Path]] = []
    for entry in os.scandir(directory):
        match = FILE_PATTERN.match(entry.name)
        if match is not None and entry.is_file():
            found.append((int(match.group(1)), Path(entry.path)))
    return [path for _, path in sorted(found)]


def torn_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("audit-*.jsonl.torn-*") if p.is_file())


@dataclass(frozen=True, slots=True)
class FileEnd:
    """What a file's last bytes say: its last complete record, and any torn bytes after it."""

    size: int
    """Bytes up to and including the last newline (where appending continues)."""
    last_line: bytes | None
    """The last complete line, without its newline (None for a file without one)."""
    torn: bytes
    """Bytes after the last newline: a record whose write was cut short."""


def read_end(path: Path) -> FileEnd:
    """The last complete line and the torn tail, reading backwards from the end in chunks."""
    with path.open("rb") as handle:
        total = handle.seek(0, os.SEEK_END)
        tail = b""
        position = total
        while position > 0:
            step = min(TAIL_CHUNK, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
            last_newline = tail.rfind(b"\n")
            if last_newline < 0:
                continue
            previous_newline = tail.rfind(b"\n", 0, last_newline)
            if previous_newline >= 0 or position == 0:
                torn = tail[last_newline + 1 :]
                line = tail[previous_newline + 1 : last_newline]
                return FileEnd(total - len(torn), line, torn)
        return FileEnd(0, None, tail)


def read_first_record(path: Path) -> dict[str, Any] | None:
    """The first line of a file, parsed (the `open` record), or None if it has no complete line."""
    with path.open("rb") as handle:
        line = handle.readline(16 * 1024 * 1024)
    if not line.endswith(b"\n"):
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def last_record(end: FileEnd) -> dict[str, Any] | None:
    """The last complete record of a file if its bytes match its hash, else None."""
    if end.last_line is None:
        return None
    checked = check_line(end.last_line)
    return checked.record if checked.intact else None
