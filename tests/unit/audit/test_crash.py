"""kill -9 of a process in the middle of a load of appends: the trail it leaves verifies, and
holds every record whose append() had returned (what the process acknowledged on stdout)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from broker.audit.config import AuditConfig
from broker.audit.file_sink import FileAuditSink
from broker.audit.layout import trail_files
from broker.audit.verify import verify
from tests.unit.audit.conftest import KeyPair

REPO = Path(__file__).resolve().parents[3]
TOTAL = 200_000
"""Upper bound of the child's loop; it is killed long before."""
KILL_AFTER_ACKS = 3000
DEADLINE = 60.0


def requests_in(directory: Path) -> list[int]:
    found = []
    for path in trail_files(directory):
        for line in path.read_bytes().splitlines(keepends=True):
            if not line.endswith(b"\n"):
                continue  # a torn last line: never acknowledged
            record = orjson.loads(line)
            if record["kind"] == "request":
                found.append(record["i"])
    return found


def run_and_kill(directory: Path, durability: str, key: Path) -> set[int]:
    """Start the writer, SIGKILL it once it has acknowledged KILL_AFTER_ACKS records; the acks."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.unit.audit.crash_writer",
            str(directory),
            durability,
            str(key),
            str(TOTAL),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    acked: set[int] = set()
    deadline = time.monotonic() + DEADLINE
    try:
        assert child.stdout.readline() == b"started\n"
        while len(acked) < KILL_AFTER_ACKS and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line.startswith(b"ack "), line
            acked.add(int(line.split()[1]))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        rest, _ = child.communicate(timeout=DEADLINE)
    assert child.returncode == -signal.SIGKILL
    for line in rest.splitlines():
        if line.startswith(b"ack "):  # printed before the kill, still in the pipe
            acked.add(int(line.split()[1]))
    assert b"finished" not in rest, "the child finished before it was killed: raise TOTAL"
    assert len(acked) >= KILL_AFTER_ACKS
    return acked


@pytest.mark.parametrize("durability", ["fsync", "write"])
def test_kill_9_mid_load_leaves_a_trail_with_every_acknowledged_record(
    tmp_path: Path, keys: KeyPair, durability: str
) -> None:
    directory = tmp_path / "audit"
    acked = run_and_kill(directory, durability, keys.private)

    report = verify(directory, keys.public_key)
    assert report.ok, report.lines()
    assert report.live and report.checkpoints_verified > 0 and report.sidecar == "verified"
    written = requests_in(directory)
    assert len(written) == len(set(written))
    assert acked <= set(written), f"acknowledged but missing: {sorted(acked - set(written))[:10]}"

    async def restart() -> None:  # the next broker resumes the same chain
        sink = FileAuditSink(AuditConfig(directory=directory, signing_key=keys.private))
        await sink.start()
        await sink.append({"v": 1, "kind": "request", "i": -1})
        await sink.close()

    asyncio.run(restart())
    report = verify(directory, keys.public_key)
    assert report.ok, report.lines()
    assert not report.live
    after = requests_in(directory)
    assert acked <= set(after) and after[-1] == -1
    resumes = [
        orjson.loads(line)
        for path in trail_files(directory)
        for line in path.read_bytes().splitlines()
        if b'"kind":"resume"' in line
    ]
    assert [r["reason"] for r in resumes] == ["unclean_shutdown"]
