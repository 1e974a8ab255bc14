"""A child process for the full-disk test: the operating system's file size limit
(RLIMIT_FSIZE; writes past it fail with EFBIG, as writes to a full disk fail with ENOSPC)
is lowered under a running sink, then lifted. Prints what happened as one JSON object.

    python -m tests.unit.audit.fsize_writer DIR fail_closed|degraded DEGRADED_BUFFER
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from pathlib import Path
from typing import Any

from broker.audit.config import AuditConfig
from broker.audit.file_sink import FileAuditSink
from broker.audit.layout import trail_files
from broker.audit.sink import AuditUnavailable
from tests.unit.audit.conftest import record

RETRY = 0.05


async def main(directory: Path, mode: str, buffer: int) -> dict[str, Any]:
    sink = FileAuditSink(
        AuditConfig(
            directory=directory,
            failure_mode=mode,  # type: ignore[arg-type]
            retry_interval=RETRY,
            degraded_buffer=buffer,
        )
    )
    await sink.start()
    acked: list[int] = []
    refused: list[int] = []
    errors: list[str] = []
    for i in range(5):
        await sink.append(record(i))
        acked.append(i)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    live = trail_files(directory)[-1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (live.stat().st_size + 2500, hard))
    for i in range(5, 25):
        try:
            await sink.append(record(i, pad="f" * 400))
            acked.append(i)
        except AuditUnavailable as exc:
            refused.append(i)
            errors.append(str(exc))
        await asyncio.sleep(RETRY / 4)
    failing = sink.status().to_json()
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    await asyncio.sleep(RETRY * 3)
    for i in range(100, 105):
        await sink.append(record(i))
        acked.append(i)
    recovered = sink.status().to_json()
    await sink.close()
    return {"acked": acked, "refused": refused, "errors": errors, "failing": failing, "recovered": recovered}


if __name__ == "__main__":
    result = asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
    print(json.dumps(result))
