"""FileAuditSink on real files: the chain, rotation, checkpoints, restarts, group commit."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from broker.audit.layout import CHECKPOINT_FILE, trail_files
from broker.audit.sink import AuditUnavailable
from broker.audit.verify import verify
from tests.unit.audit.conftest import Clock, CountingFileOps, KeyPair, SinkFactory, record

pytestmark = pytest.mark.anyio


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def all_records(directory: Path) -> list[dict[str, Any]]:
    return [r for path in trail_files(directory) for r in lines(path)]


async def test_records_form_one_chain_that_verifies(
    make_sink: SinkFactory, keys: KeyPair, tmp_path: Path
) -> None:
    sink = make_sink(signing_key=keys.private)
    await sink.start()
    for i in range(20):
        await sink.append(record(i))
    await sink.close()

    records = all_records(tmp_path / "audit")
    assert [r["kind"] for r in records[:2]] == ["open", "request"]
    assert [r["kind"] for r in records[-2:]] == ["checkpoint", "close"]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    assert [r["i"] for r in records if r["kind"] == "request"] == list(range(20))
    report = verify(tmp_path / "audit", keys.public_key)
    assert report.ok, report.lines()
    assert report.sidecar == "verified" and report.checkpoints_verified == 1 and not report.live


async def test_rotation_by_size_starts_each_file_from_the_last_hash(
    make_sink: SinkFactory, keys: KeyPair, tmp_path: Path
) -> None:
    sink = make_sink(signing_key=keys.private, rotate_bytes=4096)
    await sink.start()
    for start in range(0, 200, 10):
        await asyncio.gather(*(sink.append(record(i, pad="x" * 100)) for i in range(start, start + 10)))
    await sink.close()

    files = trail_files(tmp_path / "audit")
    assert len(files) >= 5
    for before, after in itertools.pairwise(files):
        last, first = lines(before)[-1], lines(after)[0]
        assert last["kind"] == "close" and last["reason"] == "rotation" and last["next_file"] == after.name
        assert lines(before)[-2]["kind"] == "checkpoint"  # a rotated file ends signed
        assert first["kind"] == "open" and first["reason"] == "rotation"
        assert first["previous"] == {"file": before.name, "seq": last["seq"], "hash": last["hash"]}
        assert first["prev"] == last["hash"] and first["seq"] == last["seq"] + 1
        assert after.name == f"audit-{first['seq']:012d}.jsonl"
        assert (
            before.stat().st_size < 4096 + 10 * 600
        )  # rotation happens at the end of the batch that fills it
    assert sorted(r["i"] for r in all_records(tmp_path / "audit") if r["kind"] == "request") == list(
        range(200)
    )
    report = verify(tmp_path / "audit", keys.public_key)
    assert report.ok, report.lines()
    assert report.checkpoints_verified == len(files)


async def test_rotation_by_age(make_sink: SinkFactory, tmp_path: Path) -> None:
    clock = Clock()
    sink = make_sink(clock=clock, rotate_interval=3600)
    await sink.start()
    await sink.append(record(1))
    clock.advance(3599)
    await sink.append(record(2))
    assert len(trail_files(tmp_path / "audit")) == 1
    clock.advance(2)
    await sink.append(record(3))
    await sink.append(record(4))
    await sink.close()
    files = trail_files(tmp_path / "audit")
    assert len(files) == 2
    assert [r.get("i") for r in lines(files[0]) if r["kind"] == "request"] == [1, 2, 3]
    assert [r.get("i") for r in lines(files[1]) if r["kind"] == "request"] == [4]
    assert verify(tmp_path / "audit").ok


async def test_checkpoints_by_count_and_by_time(
    make_sink: SinkFactory, keys: KeyPair, tmp_path: Path
) -> None:
    clock = Clock()
    sink = make_sink(clock=clock, signing_key=keys.private, checkpoint_records=5, checkpoint_interval=30)
    await sink.start()
    for i in range(12):
        await sink.append(record(i))
    clock.advance(31)
    await sink.append(record(12))
    sidecar = orjson.loads((tmp_path / "audit" / CHECKPOINT_FILE).read_bytes())
    await sink.close()

    records = all_records(tmp_path / "audit")
    checkpoints = [r for r in records if r["kind"] == "checkpoint"]
    before = [
        [r["i"] for r in records[: records.index(c)] if r["kind"] == "request"][-1] for c in checkpoints
    ]
    assert before == [4, 9, 12]  # after 5 records, 5 more, 30 s later (nothing new before the close)
    by_seq = {r["seq"]: r for r in records}
    assert sidecar["seq"] == checkpoints[2]["seq"] and sidecar["hash"] == by_seq[sidecar["seq"]]["hash"]
    report = verify(tmp_path / "audit", keys.public_key)
    assert report.ok and report.checkpoints_verified == 3 and report.sidecar == "verified"
    assert (
        all_records(tmp_path / "audit")[-1]["seq"]
        == orjson.loads((tmp_path / "audit" / CHECKPOINT_FILE).read_bytes())["seq"]
    )


async def test_restart_after_a_clean_close_opens_a_new_file(make_sink: SinkFactory, tmp_path: Path) -> None:
    for run in range(3):
        sink = make_sink()
        await sink.start()
        await sink.append(record(run))
        await sink.close()
    files = trail_files(tmp_path / "audit")
    assert len(files) == 3
    opens = [lines(f)[0] for f in files]
    assert [o["reason"] for o in opens] == ["new", "restart", "restart"]
    assert opens[1]["previous"]["file"] == files[0].name
    assert verify(tmp_path / "audit").ok


async def crash_image(make_sink: SinkFactory, source: Path, image: Path, count: int) -> None:
    """The files of a trail as a crash leaves them: copied while the writer is running."""
    sink = make_sink(source)
    await sink.start()
    for i in range(count):
        await sink.append(record(i))
    shutil.copytree(source, image)
    await sink.close()


async def test_restart_after_a_crash_resumes_the_same_file(make_sink: SinkFactory, tmp_path: Path) -> None:
    image = tmp_path / "image"
    await crash_image(make_sink, tmp_path / "live", image, 5)
    assert verify(image).live

    sink = make_sink(image)
    await sink.start()
    await sink.append(record(99))
    await sink.close()
    files = trail_files(image)
    assert len(files) == 1
    kinds = [r["kind"] for r in lines(files[0])]
    assert kinds == ["open", *["request"] * 5, "resume", "request", "close"]
    resume = lines(files[0])[6]
    assert resume["reason"] == "unclean_shutdown" and resume["torn"] is None
    assert verify(image).ok


async def test_a_torn_last_line_is_moved_aside_and_recorded(make_sink: SinkFactory, tmp_path: Path) -> None:
    image = tmp_path / "image"
    await crash_image(make_sink, tmp_path / "live", image, 3)
    live = trail_files(image)[-1]
    complete = live.read_bytes()
    torn = b'{"v":1,"kind":"request","time":"2026-01-07T10:00:0'
    with live.open("ab") as handle:
        handle.write(torn)
    report = verify(image)
    assert report.ok and any("torn final line" in w for w in report.warnings)

    sink = make_sink(image)
    await sink.start()
    await sink.append(record(7))
    await sink.close()
    aside = image / f"{live.name}.torn-{len(complete)}"
    assert aside.read_bytes() == torn
    assert live.read_bytes().startswith(complete)
    resume = next(r for r in lines(live) if r["kind"] == "resume")
    assert resume["torn"]["bytes"] == len(torn) and resume["torn"]["moved_to"] == aside.name
    report = verify(image)
    assert report.ok, report.lines()
    assert any(aside.name in w for w in report.warnings)


async def test_a_start_cut_short_before_its_first_record_is_undone(
    make_sink: SinkFactory, tmp_path: Path
) -> None:
    sink = make_sink()
    await sink.start()
    await sink.append(record(1))
    await sink.close()
    directory = tmp_path / "audit"
    (directory / "audit-000000000004.jsonl").write_bytes(b'{"v":1,"kind":"op')  # died inside the open record

    sink = make_sink()
    await sink.start()
    await sink.append(record(2))
    await sink.close()
    files = trail_files(directory)
    assert [f.name for f in files] == ["audit-000000000001.jsonl", "audit-000000000004.jsonl"]
    assert lines(files[1])[0]["torn"]["bytes"] == len(b'{"v":1,"kind":"op')
    assert verify(directory).ok


async def test_group_commit_one_fsync_per_batch(make_sink: SinkFactory, tmp_path: Path) -> None:
    ops = CountingFileOps()
    sink = make_sink(ops=ops)
    await sink.start()
    at_start = ops.syncs

    for i in range(20):  # one at a time: every append is its own batch
        await sink.append(record(i))
    assert ops.syncs - at_start == 20
    assert sink.status().batches == 20

    before, batches = ops.syncs, sink.status().batches
    await asyncio.gather(*(sink.append(record(i)) for i in range(20, 420)))
    load_syncs = ops.syncs - before
    load_batches = sink.status().batches - batches
    assert load_syncs == load_batches
    assert load_batches <= 2  # 400 concurrent appends: everything that waits joins the next batch

    async def appender(first: int) -> None:
        for i in range(first, first + 25):
            await sink.append(record(i))

    before, batches = ops.syncs, sink.status().batches
    await asyncio.gather(*(appender(1000 + 100 * k) for k in range(16)))
    assert ops.syncs - before == sink.status().batches - batches <= 25 + 1  # 16 appenders share each fsync
    await sink.close()
    requests = [r for r in all_records(tmp_path / "audit") if r["kind"] == "request"]
    assert len(requests) == 20 + 400 + 16 * 25
    assert verify(tmp_path / "audit").ok


async def test_group_commit_window_lets_later_records_join(make_sink: SinkFactory, tmp_path: Path) -> None:
    ops = CountingFileOps()
    sink = make_sink(ops=ops, group_commit_window=0.05)
    await sink.start()
    before = ops.syncs

    async def late(i: int, delay: float) -> None:
        await asyncio.sleep(delay)
        await sink.append(record(i))

    await asyncio.gather(late(1, 0), late(2, 0.01), late(3, 0.02))
    assert ops.syncs - before == 1
    await sink.close()


@pytest.mark.parametrize("durability", ["write", "none"])
async def test_weaker_durability_does_not_fsync_per_batch(
    make_sink: SinkFactory, tmp_path: Path, durability: str
) -> None:
    ops = CountingFileOps()
    sink = make_sink(ops=ops, durability=durability)
    await sink.start()
    before = ops.syncs
    live = trail_files(tmp_path / "audit")[0]
    await sink.append(record(1))
    written = b'"i":1,' in live.read_bytes()
    assert written is (durability == "write")  # `none` returns before the writer ran
    for i in range(2, 50):
        await sink.append(record(i))
    await asyncio.sleep(0.01)
    assert ops.syncs == before
    await sink.close()
    assert len([r for r in all_records(tmp_path / "audit") if r["kind"] == "request"]) == 49


async def test_a_second_writer_is_refused(make_sink: SinkFactory, tmp_path: Path) -> None:
    first = make_sink()
    await first.start()
    second = make_sink()
    with pytest.raises(AuditUnavailable, match="another process"):
        await second.start()
    assert not second.status().ready
    await first.append(record(1))
    await first.close()
    third = make_sink()  # the lock went with the first writer
    await third.start()
    await third.close()


async def test_a_record_that_is_not_json_fails_only_its_own_append(
    make_sink: SinkFactory, tmp_path: Path
) -> None:
    sink = make_sink()
    await sink.start()
    results = await asyncio.gather(
        sink.append(record(1)),
        sink.append({"kind": "request", "bad": object()}),
        sink.append(record(2)),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AuditUnavailable) and "not JSON" in str(results[1])
    await sink.close()
    assert [r["i"] for r in all_records(tmp_path / "audit") if r["kind"] == "request"] == [1, 2]
    assert verify(tmp_path / "audit").ok


async def test_status_and_append_after_close(make_sink: SinkFactory) -> None:
    sink = make_sink()
    assert not sink.status().ready and sink.status().state == "starting"
    await sink.start()
    await sink.append(record(1))
    status = sink.status()
    assert (
        status.ready
        and status.state == "ok"
        and status.seq == 2
        and status.file == "audit-000000000001.jsonl"
    )
    await sink.close()
    assert sink.status().state == "closed" and not sink.status().ready
    with pytest.raises(AuditUnavailable):
        await sink.append(record(2))


async def test_an_idle_writer_still_checkpoints_and_rotates_on_time(
    make_sink: SinkFactory, keys: KeyPair, tmp_path: Path
) -> None:
    directory = tmp_path / "audit"
    sink = make_sink(
        signing_key=keys.private, checkpoint_interval=0.05, rotate_interval=0.2, durability="write"
    )
    await sink.start()
    await sink.append(record(1))
    for _ in range(500):  # bounded: at most 5 s
        if len(trail_files(directory)) == 2:
            break
        await asyncio.sleep(0.01)
    first, second = trail_files(directory)
    kinds = [r["kind"] for r in lines(first)]
    assert kinds[:2] == ["open", "request"] and kinds[-1] == "close" and "checkpoint" in kinds
    assert lines(second)[0]["reason"] == "rotation"
    assert (directory / CHECKPOINT_FILE).exists()
    await sink.close()
    assert verify(directory, keys.public_key).ok
