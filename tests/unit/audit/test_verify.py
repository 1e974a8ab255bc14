"""Tamper with a real audit trail every way an insider might, and see `verify` name the first
broken link: the file, the line, the kind of tampering."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import orjson
import pytest

from broker.audit.chain import ChainHead, seal
from broker.audit.layout import CHECKPOINT_FILE, trail_files
from broker.audit.signing import CheckpointSigner, generate_key_pair, load_private_key
from broker.audit.verify import Break, VerifyReport, verify
from tests.unit.audit.conftest import KeyPair, SinkFactory, record


@pytest.fixture
def trail(make_sink: SinkFactory, keys: KeyPair, tmp_path: Path) -> Path:
    """Three closed files (rotation), a checkpoint every 10 records, audit.checkpoint beside them."""
    directory = tmp_path / "trail"

    async def write() -> None:
        sink = make_sink(
            directory, signing_key=keys.private, rotate_bytes=8192, checkpoint_records=10, durability="write"
        )
        await sink.start()
        for i in range(60):
            await sink.append(record(i, pad="p" * 80))
        await sink.close()

    asyncio.run(write())
    assert len(trail_files(directory)) >= 3
    report = verify(directory, keys.public_key)
    assert report.ok, report.lines()
    return directory


def file_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def rechain(lines: list[bytes], start: int) -> list[bytes]:
    """Recompute hashes and links from `start` on, as someone who knows the format would."""
    out = lines[:start]
    for raw in lines[start:]:
        record = orjson.loads(raw)
        prev = orjson.loads(out[-1])["hash"]
        line, _ = seal(record, ChainHead(record["seq"] - 1, prev))
        out.append(line)
    return out


def request_line(lines: list[bytes], nth: int) -> int:
    """Index of the nth request record in a file."""
    return [i for i, raw in enumerate(lines) if b'"kind":"request"' in raw][nth]


def failed(report: VerifyReport) -> Break:
    assert not report.ok, report.lines()
    assert report.first_break is not None
    return report.first_break


def test_an_intact_trail_verifies(trail: Path, keys: KeyPair) -> None:
    report = verify(trail, keys.public_key)
    assert report.ok and report.sidecar == "verified" and report.records > 60 and not report.warnings


def test_edit_of_a_field(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[1]
    lines = file_lines(path)
    at = request_line(lines, 3)
    lines[at] = lines[at].replace(b'"effect":"deny"', b'"effect":"allow"').replace(b'"agent-', b'"agenT-')
    write_lines(path, lines)
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, at + 1, "edit")


def test_edit_that_recomputes_the_hash_breaks_the_next_link(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[0]
    lines = file_lines(path)
    at = request_line(lines, 4)
    lines[at] = lines[at].replace(b'"agent-', b'"agenT-')
    record = orjson.loads(lines[at])
    lines[at], _ = seal(record, ChainHead(record["seq"] - 1, record["prev"]))
    write_lines(path, lines)
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, at + 2, "broken_link")


def test_rewriting_the_whole_tail_is_caught_by_the_next_signed_checkpoint(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[-1]
    lines = file_lines(path)
    at = request_line(lines, 1)
    lines[at] = lines[at].replace(b'"agent-', b'"agenT-')
    lines = rechain(lines, at)
    for i in range(at, len(lines)):  # even with each checkpoint's `covers` updated to the new hashes
        record = orjson.loads(lines[i])
        if record["kind"] == "checkpoint":
            record["covers"]["hash"] = record["prev"]
            lines[i], _ = seal(record, ChainHead(record["seq"] - 1, record["prev"]))
            lines = rechain(lines, i + 1)
    write_lines(path, lines)
    first_checkpoint = next(i for i in range(at, len(lines)) if b'"kind":"checkpoint"' in lines[i])
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, first_checkpoint + 1, "signature")
    # Without the public key, only audit.checkpoint's hash of the last record gives it away ...
    unsigned = failed(verify(trail))
    assert unsigned.kind == "signature" and CHECKPOINT_FILE in unsigned.message
    # ... and with that file gone too, a full rewrite is exactly what the key is needed for.
    (trail / CHECKPOINT_FILE).unlink()
    assert verify(trail).ok
    assert failed(verify(trail, keys.public_key)).line == first_checkpoint + 1


def test_deletion_of_a_line(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[1]
    lines = file_lines(path)
    at = request_line(lines, 5)
    del lines[at]
    write_lines(path, lines)
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, at + 1, "deletion")
    assert "missing" in found.message


def test_insertion_of_a_copied_line(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[1]
    lines = file_lines(path)
    at = request_line(lines, 6)
    lines.insert(at + 1, lines[request_line(lines, 2)])
    write_lines(path, lines)
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, at + 2, "insertion")


def test_insertion_of_a_forged_line_with_a_correct_hash(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[1]
    lines = file_lines(path)
    at = request_line(lines, 2)
    before = orjson.loads(lines[at - 1])
    forged, _ = seal(record(999), ChainHead(before["seq"], before["hash"]))
    lines.insert(at, forged)
    write_lines(path, lines)
    found = failed(verify(trail, keys.public_key))
    # the forged record links; the real record after it now repeats its seq
    assert (Path(found.file).name, found.line, found.kind) == (path.name, at + 2, "insertion")


def test_reorder_of_two_lines(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[0]
    lines = file_lines(path)
    at = request_line(lines, 7)
    lines[at], lines[at + 1] = lines[at + 1], lines[at]
    write_lines(path, lines)
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, at + 1, "reorder")
    assert f"line {at + 2}" in found.message


def test_truncation_of_a_rotated_file(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[0]
    lines = file_lines(path)
    write_lines(path, lines[:-3])  # the close record, the checkpoint and one record gone
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, len(lines) - 3, "truncation")


def test_truncation_of_a_rotated_file_in_the_middle_of_a_line(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (
        path.name,
        len(data.splitlines()),
        "truncation",
    )


def test_truncation_of_the_last_file_is_caught_by_audit_checkpoint(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[-1]
    lines = file_lines(path)
    cut = request_line(lines, 2)
    write_lines(path, lines[:cut])  # a valid-looking live file, minus its signed end
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, cut, "truncation")
    assert CHECKPOINT_FILE in found.message


@pytest.mark.anyio
async def test_truncation_of_a_live_file_behind_its_last_checkpoint(
    make_sink: SinkFactory, keys: KeyPair, tmp_path: Path
) -> None:
    live, image = tmp_path / "live", tmp_path / "image"
    sink = make_sink(live, signing_key=keys.private, checkpoint_records=10)
    await sink.start()
    for i in range(25):
        await sink.append(record(i))
    shutil.copytree(live, image)  # as a crash leaves it: no close record
    await sink.close()
    path = trail_files(image)[-1]
    lines = file_lines(path)
    assert verify(image, keys.public_key).ok
    last_checkpoint = max(i for i, raw in enumerate(lines) if b'"kind":"checkpoint"' in raw)
    write_lines(path, lines[:last_checkpoint])
    found = failed(verify(image, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, last_checkpoint, "truncation")


def test_forged_checkpoint_signed_with_another_key(trail: Path, keys: KeyPair, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    generate_key_pair(other, tmp_path / "other.pub.pem")
    forger = CheckpointSigner.from_private_key(load_private_key(other))
    path = trail_files(trail)[-1]
    lines = file_lines(path)
    at = next(i for i, raw in enumerate(lines) if b'"kind":"checkpoint"' in raw)
    checkpoint = orjson.loads(lines[at])
    checkpoint["key_id"] = forger.key_id
    checkpoint["signature"] = forger.sign(
        path.name, checkpoint["covers"]["seq"], checkpoint["covers"]["hash"]
    )
    lines[at], _ = seal(checkpoint, ChainHead(checkpoint["seq"] - 1, checkpoint["prev"]))
    write_lines(path, rechain(lines, at + 1))
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, at + 1, "signature")
    assert forger.key_id in found.message


def test_forged_checkpoint_signature_under_the_right_key_id(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[1]
    lines = file_lines(path)
    at = next(i for i, raw in enumerate(lines) if b'"kind":"checkpoint"' in raw)
    checkpoint = orjson.loads(lines[at])
    checkpoint["covers"]["seq"] -= 0
    checkpoint["signature"] = (
        checkpoint["signature"][:10]
        + ("A" if checkpoint["signature"][10] != "A" else "B")
        + checkpoint["signature"][11:]
    )
    lines[at], _ = seal(checkpoint, ChainHead(checkpoint["seq"] - 1, checkpoint["prev"]))
    write_lines(path, rechain(lines, at + 1))
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, at + 1, "signature")


def test_forged_audit_checkpoint_file(trail: Path, keys: KeyPair) -> None:
    sidecar_path = trail / CHECKPOINT_FILE
    sidecar = orjson.loads(sidecar_path.read_bytes())
    sidecar["seq"] += 5  # claims more than was written
    sidecar_path.write_bytes(orjson.dumps(sidecar))
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.kind) == (CHECKPOINT_FILE, "signature")


def test_deletion_of_a_whole_middle_file(trail: Path, keys: KeyPair) -> None:
    files = trail_files(trail)
    files[1].unlink()
    found = failed(verify(trail, keys.public_key))
    # the first file's `close` record names the file that should follow it
    last = len(file_lines(files[0]))
    assert (Path(found.file).name, found.line, found.kind) == (files[0].name, last, "deletion")
    assert files[1].name in found.message and files[2].name in found.message


def test_deletion_of_the_first_file(trail: Path, keys: KeyPair) -> None:
    files = trail_files(trail)
    files[0].unlink()
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (files[1].name, 1, "deletion")
    # one rotated file on its own still verifies, with a note that its predecessor was not checked
    alone = verify(files[1], keys.public_key)
    assert alone.ok and any("not checked" in w for w in alone.warnings)


def test_files_given_out_of_order(trail: Path, keys: KeyPair) -> None:
    files = trail_files(trail)
    found = failed(verify([files[0], files[2], files[1]], keys.public_key))
    last = len(file_lines(files[0]))
    assert (Path(found.file).name, found.line, found.kind) == (files[0].name, last, "deletion")


def test_a_line_that_is_not_json(trail: Path, keys: KeyPair) -> None:
    path = trail_files(trail)[0]
    lines = file_lines(path)
    lines.insert(4, b"hello\n")
    write_lines(path, lines)
    found = failed(verify(trail, keys.public_key))
    assert (Path(found.file).name, found.line, found.kind) == (path.name, 5, "format")


def test_without_a_public_key_signatures_are_reported_unchecked(trail: Path) -> None:
    report = verify(trail)
    assert report.ok and report.checkpoints_verified == 0 and report.checkpoints_unchecked > 0
    assert report.sidecar == "unchecked"
    assert any("--public-key" in w for w in report.warnings)


@pytest.mark.anyio
async def test_a_trail_signed_by_two_keys_over_time(
    make_sink: SinkFactory, keys: KeyPair, tmp_path: Path
) -> None:
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    generate_key_pair(old, tmp_path / "old.pub.pem")
    generate_key_pair(new, tmp_path / "new.pub.pem")
    directory = tmp_path / "rotated-keys"
    for key in (old, new):
        sink = make_sink(directory, signing_key=key, durability="write", checkpoint_records=3)
        await sink.start()
        for i in range(5):
            await sink.append(record(i))
        await sink.close()
    old_public = load_private_key(old).public_key()
    new_public = load_private_key(new).public_key()
    assert verify(directory, [old_public, new_public]).ok
    found = failed(verify(directory, old_public))
    second = trail_files(directory)[1]
    assert (Path(found.file).name, found.kind) == (second.name, "signature") and "signed by" in found.message
