"""`mcp-broker audit verify|query|replay|keygen` on a real trail, through the real argument parser."""

from __future__ import annotations

import argparse
import asyncio
import stat
from pathlib import Path

import orjson
import pytest

from broker.audit.cli import add_audit_commands, main
from broker.audit.layout import trail_files
from broker.audit.query import Filters, parse_time, query, replay
from tests.unit.audit.conftest import KeyPair, SinkFactory, record

NOW = 1_800_000_000.0


@pytest.fixture
def trail(make_sink: SinkFactory, keys: KeyPair, tmp_path: Path) -> Path:
    """40 requests: principals agent-0..2, sessions s0/s1, every 4th denied, times 10:00:00..10:00:39."""

    async def write() -> None:
        sink = make_sink(signing_key=keys.private, durability="write", checkpoint_records=10)
        await sink.start()
        for i in range(40):
            await sink.append(record(i))
        await sink.append(
            record(
                40, target={"kind": "resource", "id": "notes://secret/plan", "name": "notes://secret/plan"}
            )
        )
        await sink.close()

    asyncio.run(write())
    return tmp_path / "audit"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_function_registers_on_any_parser(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="mcp-broker")
    add_audit_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", "query", "some-dir", "--effect", "deny"])
    assert args.audit_command == "query" and args.paths == ["some-dir"] and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["audit", "query", "--effect", "maybe"])
    capsys.readouterr()


def test_filters(trail: Path) -> None:
    def ids(filters: Filters) -> list[int]:
        return [r["i"] for r in query(trail, filters)]

    assert ids(Filters(principal="agent-1")) == [i for i in range(41) if i % 3 == 1]
    assert ids(Filters(principal="agent-*", effect="deny")) == [i for i in range(41) if i % 4 == 0]
    assert ids(Filters(session="s1", effect="allow")) == [i for i in range(41) if i % 2 and i % 4]
    assert ids(Filters(tool="notes://*")) == [40]
    assert ids(Filters(tool="read", principal="agent-2")) == [i for i in range(40) if i % 3 == 2]
    assert ids(Filters(since="2026-01-07T10:00:10Z", until="2026-01-07T10:00:12Z")) == [10, 11]
    assert [r["kind"] for r in query(trail, Filters(kind="close"))] == ["close"]
    assert len(query(trail, Filters(), limit=5)) == 5


def test_parse_time() -> None:
    assert parse_time("2026-01-07") == "2026-01-07T00:00:00.000000Z"
    assert parse_time("2026-01-07T12:00:00+02:00") == "2026-01-07T10:00:00.000000Z"
    assert parse_time("2h", now=NOW) == "2027-01-15T06:00:00.000000Z"
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


def test_query_command(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["audit", "query", str(trail), "--principal", "agent-0", "--effect", "deny"], capsys)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == [
        "SEQ",
        "TIME",
        "KIND",
        "METHOD",
        "PRINCIPAL",
        "TARGET",
        "EFFECT",
        "OUTCOME",
        "SESSION",
    ]
    assert len(rows) == len([i for i in range(40) if i % 3 == 0 and i % 4 == 0])
    assert all(" deny " in row and "agent-0" in row and "notes__read" in row for row in rows)
    assert "record(s) matched" in err

    code, out, _ = run(
        ["audit", "query", str(trail), "--session", "s0", "--format", "json", "--limit", "3"], capsys
    )
    found = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["i"] for r in found] == [0, 2, 4] and all("hash" in r for r in found)

    code, out, _ = run(["audit", "query", str(trail), "--principal", "nobody"], capsys)
    assert code == 1 and out.splitlines()[1:] == []

    code, _, err = run(["audit", "query", str(trail / "missing")], capsys)
    assert code == 2 and "no such file or directory" in err
    code, _, err = run(["audit", "query", str(trail), "--since", "last tuesday"], capsys)
    assert code == 2 and "not a time" in err


def test_replay_command(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = replay(trail, "s1")
    assert [r["i"] for r in records] == list(range(1, 41, 2))
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)

    code, out, _ = run(["audit", "replay", "s1", str(trail)], capsys)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("session s1: 20 record(s)")
    calls = [line for line in lines[1:] if line.startswith("#")]
    assert len(calls) == 20 and "tools/call notes__read  allow [p]" in calls[0]

    code, out, _ = run(["audit", "replay", "s1", str(trail), "--format", "json"], capsys)
    assert code == 0 and [orjson.loads(line)["i"] for line in out.splitlines()] == list(range(1, 41, 2))

    code, out, _ = run(["audit", "replay", "no-such-session", str(trail)], capsys)
    assert code == 1 and "no records" in out


def test_verify_command(trail: Path, keys: KeyPair, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["audit", "verify", str(trail), "--public-key", str(keys.public)], capsys)
    assert code == 0 and out.startswith("OK: 1 file(s)") and "checkpoint(s) verified" in out

    code, out, _ = run(["audit", "verify", str(trail), "--format", "json"], capsys)
    report = orjson.loads(out)
    assert code == 0 and report["ok"] and report["checkpoints_unchecked"] > 0

    path = trail_files(trail)[0]
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[7]
    path.write_bytes(b"".join(lines))
    code, out, _ = run(["audit", "verify", str(trail), "--public-key", str(keys.public)], capsys)
    assert code == 1
    assert f"FAILED: {path}:8: deletion: seq 8 missing" in out

    code, _, err = run(["audit", "verify", str(trail / "nothing-here")], capsys)
    assert code == 2 and "no such file or directory" in err
    code, _, err = run(["audit", "verify", str(trail), "--public-key", str(path)], capsys)
    assert code == 2 and "not a PEM public key" in err


def test_keygen_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = str(tmp_path / "checkpoints")
    code, out, _ = run(["audit", "keygen", "--out", prefix], capsys)
    private, public = Path(prefix + ".pem"), Path(prefix + ".pub.pem")
    assert code == 0 and "key id ed25519:" in out
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes() and b"BEGIN PUBLIC KEY" in public.read_bytes()

    before = private.read_bytes()
    code, _, err = run(["audit", "keygen", "--out", prefix], capsys)
    assert code == 2 and "exists" in err and private.read_bytes() == before
    code, _, _ = run(["audit", "keygen", "--out", prefix, "--force"], capsys)
    assert code == 0 and private.read_bytes() != before
