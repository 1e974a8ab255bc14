"""Check an audit trail: every line matches its hash, every record links to the one before,
files follow each other, checkpoints are signed by the expected key, nothing is missing at
the end. Stops at the FIRST broken link and names it (file:line, what kind, why): after a
break nothing later can be trusted, and the first break is where an investigation starts.

What each kind of tampering looks like here:

- edit          a line's bytes do not match its `hash`; or a record re-hashed after an edit
                no longer matches the `prev` of the record after it (`broken_link`)
- deletion      `seq` jumps forward (and no later line in the file carries the missing seq)
- insertion     `seq` repeats or goes back; a record after the `close` record; a second `open`
- reorder       `seq` jumps forward and the missing seq comes later in the same file
- truncation    a rotated file without its `close` record, or ending in a partial line; the
                next file's `open` naming a different last record; the live file ending before
                the record the last signed checkpoint (`audit.checkpoint`) vouches for
- signature     a checkpoint (in the chain or `audit.checkpoint`) that does not verify with
                the public key, names another key, or vouches for a record that is not there
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.chain import GENESIS, check_line
from broker.audit.layout import CHECKPOINT_FILE, FILE_PATTERN, torn_files, trail_files
from broker.audit.signing import key_id, signature_valid
from broker.progress import ProgressCallback

BreakKind = Literal[
    "edit", "broken_link", "deletion", "insertion", "reorder", "truncation", "signature", "format"
]


@dataclass(frozen=True, slots=True)
class Break:
    """The first place where the trail is not what the writer wrote."""

    file: str
    line: int | None
    kind: BreakKind
    message: str
    seq: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.kind}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "kind": self.kind,
            "seq": self.seq,
            "message": self.message,
        }


@dataclass(slots=True)
class VerifyReport:
    files: list[str] = field(default_factory=list)
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    checkpoints_verified: int = 0
    checkpoints_unchecked: int = 0
    sidecar: str = "absent"
    """`verified`, `unchecked` (no public key), `present` (not reached: the chain broke first),
    `absent`, or `not applicable` (it names a file that was not checked)."""
    live: bool = False
    """The last file has no `close` record: a broker is (or was, until a crash) writing it."""
    first_break: Break | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def lines(self) -> list[str]:
        out = [f"warning: {w}" for w in self.warnings]
        span = f"seq {self.first_seq}..{self.last_seq}" if self.first_seq is not None else "no records"
        summary = (
            f"{len(self.files)} file(s), {self.records} records ({span}), "
            f"{self.checkpoints_verified} checkpoint(s) verified"
            + (f", {self.checkpoints_unchecked} not checked" if self.checkpoints_unchecked else "")
            + f", audit.checkpoint {self.sidecar}"
            + (", last file open (live or not closed)" if self.live else ", last file closed")
        )
        if self.first_break is not None:
            out.append(f"FAILED: {self.first_break}")
            out.append(f"checked before the break: {summary}")
        else:
            out.append(f"OK: {summary}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files": self.files,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "checkpoints_verified": self.checkpoints_verified,
            "checkpoints_unchecked": self.checkpoints_unchecked,
            "sidecar": self.sidecar,
            "live": self.live,
            "first_break": self.first_break.to_json() if self.first_break else None,
            "warnings": self.warnings,
        }


class _Stop(Exception):
    def __init__(self, found: Break) -> None:
        super().__init__(str(found))
        self.found = found


def _seq_of(line: bytes) -> int | None:
    with contextlib.suppress(orjson.JSONDecodeError):
        record = orjson.loads(line)
        if isinstance(record, dict) and type(record.get("seq")) is int:
            return int(record["seq"])
    return None


PROGRESS_BYTES = 1 << 16  # bytes checked between two progress calls: cheap next to hashing them


class _Verifier:
    def __init__(
        self,
        files: list[Path],
        whole: bool,
        keys: dict[str, Ed25519PublicKey],
        sidecar: dict[str, Any] | None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.files = files
        self.progress = progress
        self.total_bytes = sum(p.stat().st_size for p in files) if progress is not None else 0
        self.done_bytes = 0
        self.reported_bytes = 0
        self.whole = whole
        self.keys = keys
        self.key_names = ", ".join(sorted(keys))
        self.sidecar = sidecar
        self.report = VerifyReport(files=[str(p) for p in files], sidecar="present" if sidecar else "absent")
        self.last_seq: int | None = None
        self.last_hash: str | None = None
        self.last_where: tuple[str, int] | None = None
        self.sidecar_seen = False

    def fail(
        self, path: Path, line: int | None, kind: BreakKind, message: str, seq: int | None = None
    ) -> NoReturn:
        raise _Stop(Break(str(path), line, kind, message, seq))

    def run(self) -> VerifyReport:
        try:
            for index, path in enumerate(self.files):
                before = self.done_bytes
                self.file(path, index)
                if self.progress is not None:  # whole files: the per-line count misses a torn tail
                    self.done_bytes = before + path.stat().st_size
                    self.progress(self.done_bytes, self.total_bytes)
            self.after()
        except _Stop as stop:
            self.report.first_break = stop.found
        self.report.last_seq = self.last_seq
        self.report.last_hash = self.last_hash
        return self.report

    def file(self, path: Path, index: int) -> None:
        last_file = index == len(self.files) - 1
        data = path.read_bytes()
        lines = data.split(b"\n")
        fragment = lines.pop()  # b"" when the file ends with a newline
        if fragment:
            checked = check_line(fragment)
            if checked.intact and last_file:
                self.report.warnings.append(
                    f"{path}: the last line has no newline (written up to its last byte)"
                )
                lines.append(fragment)
            elif last_file:
                self.report.warnings.append(
                    f"{path}:{len(lines) + 1}: torn final line ({len(fragment)} bytes): a write cut short "
                    "by a crash, never acknowledged; the broker moves it aside when it starts"
                )
            else:
                self.fail(
                    path,
                    len(lines) + 1,
                    "truncation",
                    f"the file ends in a partial line ({len(fragment)} bytes) but another file follows it",
                )
        if not lines:
            if not last_file:
                self.fail(path, None, "truncation", "the file is empty but another file follows it")
            self.report.warnings.append(f"{path}: no complete record")
            return
        kind = ""
        for number, raw in enumerate(lines, start=1):
            if self.progress is not None:
                self.done_bytes += len(raw) + 1
                if self.done_bytes - self.reported_bytes >= PROGRESS_BYTES:
                    self.reported_bytes = self.done_bytes
                    self.progress(self.done_bytes, self.total_bytes)
            record = self.line(path, number, raw, lines)
            kind = record.get("kind", "")
            if number == 1:
                self.opening(path, record, index)
            elif kind == "open":
                self.fail(path, number, "insertion", "an `open` record inside a file", record["seq"])
            if kind == "checkpoint":
                self.checkpoint(path, number, record)
            elif kind == "close":
                if number != len(lines):
                    self.fail(
                        path,
                        number + 1,
                        "insertion",
                        f"{len(lines) - number} line(s) after the file's `close` record",
                    )
                expected = self.files[index + 1].name if not last_file else None
                named = record.get("next_file")
                if expected is not None and named is not None and named != expected:
                    self.fail(
                        path,
                        number,
                        "deletion",
                        f"the `close` record names the next file {named}, "
                        f"but {expected} follows: files in between are missing",
                        record["seq"],
                    )
        if not last_file and kind != "close":
            self.fail(
                path,
                len(lines),
                "truncation",
                f"the file ends at seq {self.last_seq} without its `close` record, but another file follows: "
                "records were cut off its end",
                self.last_seq,
            )
        if last_file:
            self.report.live = kind != "close"

    def line(self, path: Path, number: int, raw: bytes, lines: list[bytes]) -> dict[str, Any]:
        checked = check_line(raw)
        if checked.record is None:
            self.fail(path, number, "format", f"not an audit record: {checked.problem}")
        if not checked.intact:
            kind: BreakKind = "edit" if checked.hash is not None else "format"
            claimed = checked.record.get("seq")
            self.fail(path, number, kind, checked.problem, claimed if type(claimed) is int else None)
        record = checked.record
        assert record is not None
        seq: int = record["seq"]
        report = self.report
        if self.last_seq is not None:
            expected = self.last_seq + 1
            before = (
                f"seq {self.last_seq} at {self.last_where[0]}:{self.last_where[1]}" if self.last_where else ""
            )
            if seq > expected:
                later = next(
                    (n for n in range(number + 1, len(lines) + 1) if _seq_of(lines[n - 1]) == expected), None
                )
                if later is not None:
                    self.fail(
                        path,
                        number,
                        "reorder",
                        f"seq {seq} comes before seq {expected} (line {later}); expected seq {expected} "
                        f"after {before}",
                        seq,
                    )
                missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
                self.fail(
                    path, number, "deletion", f"{missing} missing: this is seq {seq}, after {before}", seq
                )
            if seq < expected:
                self.fail(
                    path,
                    number,
                    "insertion",
                    f"seq {seq} repeats or goes back: expected seq {expected} after {before}",
                    seq,
                )
            if record["prev"] != self.last_hash:
                self.fail(
                    path,
                    number,
                    "broken_link",
                    f"`prev` does not match the hash of the record before it ({before}): that record was "
                    "changed and re-hashed, or this one was put in its place",
                    seq,
                )
        elif self.whole and record["prev"] != GENESIS:
            self.fail(
                path,
                number,
                "deletion",
                f"the trail starts at seq {seq}, not at the beginning: earlier files were removed",
                seq,
            )
        if report.first_seq is None:
            report.first_seq = seq
        report.records += 1
        self.last_seq = seq
        self.last_hash = record["hash"]
        self.last_where = (str(path), number)
        sidecar = self.sidecar
        if sidecar is not None and sidecar.get("seq") == seq:
            self.sidecar_seen = True
            if sidecar.get("hash") != record["hash"] or sidecar.get("file") != path.name:
                self.fail(
                    path,
                    number,
                    "signature",
                    f"{CHECKPOINT_FILE} vouches for a different record at seq {seq} "
                    f"({sidecar.get('file')}, {sidecar.get('hash')})",
                    seq,
                )
        return record

    def opening(self, path: Path, record: dict[str, Any], index: int) -> None:
        seq = record["seq"]
        if record.get("kind") != "open":
            self.fail(path, 1, "truncation", "the file does not start with its `open` record", seq)
        if record.get("file") != path.name:
            self.fail(
                path, 1, "format", f"the file was renamed: its `open` record names {record.get('file')}", seq
            )
        match = FILE_PATTERN.match(path.name)
        if match is not None and int(match.group(1)) != seq:
            self.fail(
                path, 1, "format", f"the name says the file starts at seq {int(match.group(1))}, not {seq}"
            )
        previous = record.get("previous")
        if index > 0:
            before = self.files[index - 1]
            if not isinstance(previous, dict) or previous.get("file") != before.name:
                self.fail(
                    path,
                    1,
                    "deletion",
                    f"the file continues {previous and previous.get('file')}, not {before.name}",
                )
        elif previous is not None and not self.whole:
            self.report.warnings.append(
                f"{path}: continues {previous.get('file')} (seq {previous.get('seq')}), which was not checked"
            )

    def checkpoint(self, path: Path, number: int, record: dict[str, Any]) -> None:
        covers = record.get("covers") or {}
        seq = record["seq"]
        if (
            covers.get("seq") != seq - 1
            or covers.get("hash") != record["prev"]
            or record.get("file") != path.name
        ):
            self.fail(
                path,
                number,
                "signature",
                "the checkpoint vouches for a record other than the one before it",
                seq,
            )
        if not self.keys:
            self.report.checkpoints_unchecked += 1
            return
        signer = str(record.get("key_id"))
        public_key = self.keys.get(signer)
        if public_key is None:
            self.fail(
                path,
                number,
                "signature",
                f"the checkpoint is signed by {signer}, not by {self.key_names}",
                seq,
            )
        if not signature_valid(
            public_key, path.name, covers["seq"], covers["hash"], signer, str(record.get("signature"))
        ):
            self.fail(path, number, "signature", "the checkpoint's signature does not verify", seq)
        self.report.checkpoints_verified += 1

    def after(self) -> None:
        sidecar = self.sidecar
        report = self.report
        if sidecar is None:
            return
        where = Path(self.files[-1]).with_name(CHECKPOINT_FILE) if self.files else Path(CHECKPOINT_FILE)
        seq = sidecar.get("seq")
        if self.keys:
            signer = str(sidecar.get("key_id"))
            public_key = self.keys.get(signer)
            if public_key is None or not signature_valid(
                public_key,
                str(sidecar.get("file")),
                seq if type(seq) is int else -1,
                str(sidecar.get("hash")),
                signer,
                str(sidecar.get("signature")),
            ):
                self.fail(
                    where, None, "signature", f"{CHECKPOINT_FILE} does not verify with {self.key_names}"
                )
            report.sidecar = "verified"
        else:
            report.sidecar = "unchecked"
        if type(seq) is not int:
            self.fail(where, None, "format", f"{CHECKPOINT_FILE} has no seq")
        if self.last_seq is None or seq > self.last_seq:
            end = (
                f"seq {self.last_seq} ({self.last_where[0]}:{self.last_where[1]})"
                if self.last_where
                else "nothing"
            )
            self.fail(
                Path(self.files[-1]) if self.files else where,
                self.last_where[1] if self.last_where else None,
                "truncation",
                f"the last signed checkpoint ({CHECKPOINT_FILE}) vouches for seq {seq} in "
                f"{sidecar.get('file')}, but the trail ends at {end}: records were cut off its end",
                self.last_seq,
            )


def load_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a checkpoint")
    return data


def verify(
    target: Path | Sequence[Path],
    public_key: Ed25519PublicKey | Sequence[Ed25519PublicKey] | None = None,
    *,
    checkpoint: Path | None = None,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Verify a directory (the whole trail, from the first record) or the given files (in order).

    `public_key`: the checkpoint key, or every key the trail was signed with (after a key
    rotation); each checkpoint is checked with the key its `key_id` names.

    For a directory, `audit.checkpoint` in it is checked too; for files, the one next to
    them is used when it names one of them. `progress(bytes_done, bytes_total)` is called as the
    files are checked (for the CLI's progress bar); it changes nothing else. Raises
    FileNotFoundError when there is nothing to verify and ValueError for an unreadable
    checkpoint file.
    """
    if isinstance(target, Path) and target.is_dir():
        files = trail_files(target)
        whole = True
        directory = target
    else:
        files = [target] if isinstance(target, Path) else list(target)
        whole = False
        directory = files[0].parent if files else Path(".")
    if not files:
        raise FileNotFoundError(f"no audit files (audit-<seq>.jsonl) in {target}")
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    sidecar_path = checkpoint or directory / CHECKPOINT_FILE
    sidecar = load_sidecar(sidecar_path)
    names = {p.name for p in files}
    applicable = sidecar is not None and (whole or checkpoint is not None or sidecar.get("file") in names)
    if public_key is None:
        keys = {}
    elif isinstance(public_key, Ed25519PublicKey):
        keys = {key_id(public_key): public_key}
    else:  # several: the keys a trail was signed with over time (key rotation)
        keys = {key_id(k): k for k in public_key}
    verifier = _Verifier(files, whole, keys, sidecar if applicable else None, progress)
    report = verifier.run()
    if sidecar is None:
        report.warnings.append(
            f"no {CHECKPOINT_FILE}: records cut off the end of the last file would go unnoticed "
            "(configure audit.signing_key)"
        )
    elif not applicable:
        report.sidecar = "not applicable"
    if public_key is None and (report.checkpoints_unchecked or sidecar is not None):
        report.warnings.append("checkpoint signatures not checked: pass --public-key")
    if whole:
        for path in torn_files(directory):
            report.warnings.append(
                f"{path}: bytes of a torn line moved aside after a crash (never acknowledged)"
            )
    return report
