"""Every system call the file sink makes, in one small class.

Why a class: the sink's guarantees are statements about these calls (one write and one
fdatasync per batch in `fsync` mode, a directory fsync after a new file appears), so a
test can check them by wrapping this class (counting, then calling the real thing)
instead of mocking the operating system.
"""

from __future__ import annotations

import os
from pathlib import Path


class FileOps:
    """Plain POSIX file operations on raw descriptors (no Python buffering in between)."""

    def open_append(self, path: Path) -> int:
        """Open (create) `path` for appending; every write lands at the current end."""
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, fd: int, data: bytes) -> None:
        """Write all of `data`: a short write (signal, quota) continues where it stopped."""
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def sync(self, fd: int) -> None:
        """Data (and the size that makes it readable) on stable storage."""
        os.fdatasync(fd)

    def sync_dir(self, directory: Path) -> None:
        """A created or renamed file's directory entry on stable storage."""
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace_file(self, path: Path, data: bytes, *, durable: bool) -> None:
        """Replace `path` atomically with `data` (temporary file, then rename)."""
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            self.write(fd, data)
            if durable:
                self.sync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        if durable:
            self.sync_dir(path.parent)
