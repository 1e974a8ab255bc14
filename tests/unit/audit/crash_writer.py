"""A child process for the crash test: 16 appenders writing records in a bounded loop, each
printing `ack <i>` once its append() has returned. The parent SIGKILLs it mid-load.

    python -m tests.unit.audit.crash_writer DIR DURABILITY SIGNING_KEY TOTAL
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from broker.audit.config import AuditConfig
from broker.audit.file_sink import FileAuditSink
from tests.unit.audit.conftest import record

APPENDERS = 16


async def main(directory: Path, durability: str, key: Path, total: int) -> None:
    sink = FileAuditSink(
        AuditConfig(
            directory=directory,
            durability=durability,  # type: ignore[arg-type]
            signing_key=key,
            checkpoint_records=50,
            rotate_bytes=256 * 1024,
        )
    )
    await sink.start()
    print("started", flush=True)
    counter = iter(range(total))
    out = sys.stdout

    async def appender() -> None:
        for i in counter:
            await sink.append(record(i, pad="z" * 700))
            out.write(f"ack {i}\n")
            out.flush()

    await asyncio.gather(*(appender() for _ in range(APPENDERS)))
    await sink.close()
    print("finished", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
