"""The hash chain: how a record becomes a line, and how one line is checked on its own.

A line is the record's canonical JSON (orjson, keys sorted, compact, UTF-8) with `seq`
(1, 2, 3, … across all files) and `prev` (the `hash` of the record before; GENESIS for the
first) included, followed by one more member, `hash`:

    {"kind":"request",…,"prev":"sha256:…","seq":42,…,"hash":"sha256:<hex>"}\\n

`hash` is sha256 over the line's bytes without that last member, i.e. over
`line[:-HASH_SUFFIX_LEN] + b"}"`, which is exactly the canonical JSON of the record without
`hash`. Hashing the bytes as written (not a re-serialisation) means any verifier, in any
language, checks a line without reproducing a JSON encoder, and any change to a byte is
an edit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from broker.audit.sink import AuditRecord

GENESIS: Final = "sha256:" + "0" * 64
"""The `prev` of the very first record of a trail."""

_HASH_SUFFIX: Final = re.compile(rb',"hash":"(sha256:[0-9a-f]{64})"}')
HASH_SUFFIX_LEN: Final = len(',"hash":"sha256:') + 64 + len('"}')
_OPTIONS: Final = orjson.OPT_SORT_KEYS


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the chain stands: the last record's seq and hash (seq 0 and GENESIS before the first)."""

    seq: int
    hash: str


START: Final = ChainHead(0, GENESIS)


def seal(record: AuditRecord, head: ChainHead) -> tuple[bytes, ChainHead]:
    """The line for `record` after `head`, and the new head. Sets `seq` and `prev` on `record`.

    Raises TypeError (orjson.JSONEncodeError) if the record is not JSON data.
    """
    seq = head.seq + 1
    record["seq"] = seq
    record["prev"] = head.hash
    record.pop("hash", None)
    body = orjson.dumps(record, option=_OPTIONS)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    line = b"".join((body[:-1], b',"hash":"', digest.encode("ascii"), b'"}\n'))
    return line, ChainHead(seq, digest)


@dataclass(frozen=True, slots=True)
class LineCheck:
    """One line checked on its own: parsed, and whether its bytes match its `hash`."""

    record: dict[str, Any] | None
    """The parsed record, or None if the line is not a JSON object."""
    hash: str | None
    """The hash the line claims (its last member), or None if it has no well-formed one."""
    intact: bool
    """The claimed hash is sha256 of the line without it."""
    problem: str = ""


def check_line(line: bytes) -> LineCheck:
    """Parse one line (without its newline) and check its hash against its bytes."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return LineCheck(None, None, False, f"not JSON ({exc})")
    if not isinstance(record, dict):
        return LineCheck(None, None, False, "not a JSON object")
    match = _HASH_SUFFIX.fullmatch(line[-HASH_SUFFIX_LEN:])
    if match is None:
        return LineCheck(record, None, False, "no `hash` as the last member: not written by the audit sink")
    claimed = match.group(1).decode("ascii")
    body = line[:-HASH_SUFFIX_LEN] + b"}"
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if actual != claimed or record.get("hash") != claimed:
        return LineCheck(record, claimed, False, "the record does not match its hash: it was edited")
    seq, prev = record.get("seq"), record.get("prev")
    if type(seq) is not int or not isinstance(prev, str):
        return LineCheck(record, claimed, False, "no integer `seq` or no `prev`")
    return LineCheck(record, claimed, True)
