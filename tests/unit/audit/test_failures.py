"""The trail cannot be written: a full disk (a real OS file size limit), an unwritable directory.
Fail closed by default: the append raises AuditUnavailable and nothing unrecorded is acknowledged;
the degraded mode holds records in memory and says in the chain what it lost."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from broker.audit.layout import trail_files
from broker.audit.sink import AuditUnavailable
from broker.audit.verify import verify
from tests.unit.audit.conftest import SinkFactory, record

REPO = Path(__file__).resolve().parents[3]


def run_fsize_writer(directory: Path, mode: str, buffer: int = 10000) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.audit.fsize_writer", str(directory), mode, str(buffer)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def records_of(directory: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for path in trail_files(directory) for line in path.read_bytes().splitlines()]


def test_full_disk_fails_closed_then_recovers(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    result = run_fsize_writer(directory, "fail_closed")

    assert result["refused"], "the file size limit never bit"
    assert all("cannot be written" in e for e in result["errors"])
    assert "File too large" in result["errors"][0]
    failing, recovered = result["failing"], result["recovered"]
    assert failing["state"] == "failed" and not failing["ready"] and "File too large" in failing["error"]
    assert recovered["state"] == "ok" and recovered["ready"] and recovered["error"] is None

    report = verify(directory)
    assert report.ok, report.lines()
    records = records_of(directory)
    written = [r["i"] for r in records if r["kind"] == "request"]
    assert written == result["acked"]  # every acknowledged record, in order, and no refused one
    assert not set(written) & set(result["refused"])
    # each time the disk took a write again, a `resume` record says what had failed (a recovery may
    # succeed while the limit still leaves room for that record alone, and the next batch fail again)
    recovery = [r for r in records if r["kind"] == "resume"]
    assert recovery and all(r["reason"] == "recovery" for r in recovery)
    assert all("File too large" in r["detail"]["error"] for r in recovery)
    assert sum(r["detail"]["refused"] for r in recovery) >= len(result["refused"])
    assert records.index(recovery[-1]) < [r.get("i") for r in records].index(100)


def test_full_disk_in_degraded_mode_holds_records_and_records_the_gap(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    result = run_fsize_writer(directory, "degraded", buffer=3)

    assert result["refused"] == []
    failing = result["failing"]
    assert (
        failing["state"] == "degraded"
        and failing["ready"]
        and failing["held"] == 3
        and failing["dropped"] > 0
    )

    report = verify(directory)
    assert report.ok, report.lines()
    records = records_of(directory)
    written = [r["i"] for r in records if r["kind"] == "request"]
    gaps = [r for r in records if r["kind"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["lost"] == failing["dropped"]
    assert set(written) <= set(result["acked"])
    assert len(set(result["acked"]) - set(written)) == gaps[0]["lost"]
    assert written[-5:] == [100, 101, 102, 103, 104]


@pytest.mark.anyio
async def test_a_directory_that_cannot_exist_fails_closed_at_start(
    make_sink: SinkFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the audit directory should be")
    sink = make_sink(blocker / "audit")
    with pytest.raises(AuditUnavailable, match="cannot open the audit trail"):
        await sink.start()
    status = sink.status()
    assert status.state == "failed" and not status.ready
    with pytest.raises(AuditUnavailable):
        await sink.append(record(1))


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a directory unwritable for this process: chmod for a normal user; for root, whom
    permissions do not stop, the immutable attribute (chattr +i)."""
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield
        finally:
            path.chmod(0o700)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i is not available here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.anyio
async def test_an_unwritable_directory_fails_closed_at_start(make_sink: SinkFactory, tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir()
    with read_only(directory):
        probe = directory / "probe"
        with pytest.raises(PermissionError):
            probe.write_text("x")
        sink = make_sink(directory)
        with pytest.raises(AuditUnavailable, match="cannot open the audit trail"):
            await sink.start()
        assert not sink.status().ready
