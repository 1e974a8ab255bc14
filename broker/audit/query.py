"""Find records in an audit trail, and replay one session's calls in order.

Reading only: query and replay neither verify nor change anything (run `audit verify`
for that). Records are read file by file in chain order; times compare as strings
because every record's `time` is fixed-width UTC.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from broker.audit.layout import trail_files
from broker.audit.timefmt import iso_time

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> str:
    """An ISO 8601 time (a date, or a date and time; UTC unless it has an offset) or a duration
    back from now (`90s`, `15m`, `2h`, `7d`), as a record-comparable UTC string."""
    match = _RELATIVE.match(text.strip())
    if match is not None:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return iso_time((time.time() if now is None else now) - seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use 2026-01-07, 2026-01-07T10:00:00Z or 15m / 2h / 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_time(moment.timestamp())


@dataclass(frozen=True, slots=True)
class Filters:
    principal: str | None = None
    """Principal id or the user it acts for; shell-style wildcards allowed."""
    tool: str | None = None
    """Target id (`server__tool`, a resource URI) or upstream name; wildcards allowed."""
    effect: str | None = None
    since: str | None = None
    until: str | None = None
    session: str | None = None
    kind: str | None = None
    """Record kind (`request`, `approval`, `auth_failure`, `policy_reload`, …); default: all."""

    def __post_init__(self) -> None:
        # any accepted time form becomes the records' own fixed-width form, so strings compare as times
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_time(value))

    def match(self, record: dict[str, Any]) -> bool:
        if self.kind is not None and record.get("kind") != self.kind:
            return False
        when = record.get("time")
        if self.since is not None and not (isinstance(when, str) and when >= self.since):
            return False
        if self.until is not None and not (isinstance(when, str) and when < self.until):
            return False
        if self.session is not None and record.get("session") != self.session:
            return False
        if self.principal is not None:
            who = record.get("principal")
            if not isinstance(who, dict) or not any(
                isinstance(who.get(k), str) and fnmatch.fnmatchcase(who[k], self.principal)
                for k in ("id", "acting_for")
            ):
                return False
        if self.tool is not None:
            target = record.get("target")
            if not isinstance(target, dict) or not any(
                isinstance(target.get(k), str) and fnmatch.fnmatchcase(target[k], self.tool)
                for k in ("id", "name")
            ):
                return False
        if self.effect is not None:
            decision = record.get("decision")
            if not isinstance(decision, dict) or decision.get("effect") != self.effect:
                return False
        return True


@dataclass(slots=True)
class ReadStats:
    files: int = 0
    lines: int = 0
    unreadable: int = 0


def read_records(target: Path | Sequence[Path], stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Every record of a directory's trail (or of the given files), in chain order."""
    files = (
        trail_files(target)
        if isinstance(target, Path) and target.is_dir()
        else ([target] if isinstance(target, Path) else list(target))
    )
    if not files:
        raise FileNotFoundError(f"no audit files (audit-<seq>.jsonl) in {target}")
    stats = stats if stats is not None else ReadStats()
    for path in files:
        stats.files += 1
        with path.open("rb") as handle:
            for raw in handle:
                stats.lines += 1
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    stats.unreadable += 1
                    continue
                if isinstance(record, dict):
                    yield record
                else:
                    stats.unreadable += 1


def query(
    target: Path | Sequence[Path],
    filters: Filters,
    *,
    limit: int | None = None,
    stats: ReadStats | None = None,
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for record in read_records(target, stats):
        if filters.match(record):
            found.append(record)
            if limit is not None and len(found) >= limit:
                break
    return found


REPLAYED_KINDS = frozenset({"request", "approval", "auth_failure"})


def replay(
    target: Path | Sequence[Path], session: str, stats: ReadStats | None = None
) -> list[dict[str, Any]]:
    """The session's requests and approval events, in the order the broker recorded them."""
    return [  # files are read in chain order, lines in file order: that is seq order
        r
        for r in read_records(target, stats)
        if r.get("session") == session and r.get("kind") in REPLAYED_KINDS
    ]


# -- output -----------------------------------------------------------------------------------------


def _who(record: dict[str, Any]) -> str:
    who = record.get("principal")
    if not isinstance(who, dict):
        return "-"
    name = str(who.get("id"))
    return f"{name}→{who['acting_for']}" if who.get("acting_for") else name


def _what(record: dict[str, Any]) -> str:
    target = record.get("target")
    if isinstance(target, dict):
        return str(target.get("id") or target.get("name"))
    kind = record.get("kind")
    if kind == "policy_reload":
        return str(record.get("policy_version"))
    return "-"


def _effect(record: dict[str, Any]) -> str:
    decision = record.get("decision")
    if isinstance(decision, dict):
        return str(decision.get("effect"))
    if record.get("kind") == "auth_failure":
        return str(record.get("reason"))
    if record.get("kind") == "policy_reload":
        return "ok" if record.get("ok") else "failed"
    return "-"


def _outcome(record: dict[str, Any]) -> str:
    outcome = record.get("outcome")
    if isinstance(outcome, dict):
        status = str(outcome.get("status"))
        latency = outcome.get("latency_ms")
        return f"{status} {latency:.1f}ms" if isinstance(latency, int | float) else status
    if record.get("kind") == "approval":
        return str(record.get("event"))
    return "-"


TABLE_COLUMNS = ("seq", "time", "kind", "method", "principal", "target", "effect", "outcome", "session")


def table(records: Sequence[dict[str, Any]]) -> list[str]:
    """Records as an aligned text table, one row each."""
    rows = [
        (
            str(r.get("seq", "")),
            str(r.get("time", ""))[:23],
            str(r.get("kind", "")),
            str(r.get("method") or "-"),
            _who(r),
            _what(r),
            _effect(r),
            _outcome(r),
            str(r.get("session") or "-"),
        )
        for r in records
    ]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(TABLE_COLUMNS)]
    line = "  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(TABLE_COLUMNS)).rstrip()
    return [line] + ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]


def _compact(value: Any, width: int = 160) -> str:
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


def replay_lines(session: str, records: Sequence[dict[str, Any]]) -> list[str]:
    """A session as a readable timeline: each call, its decision and why, what came back."""
    if not records:
        return [f"session {session}: no records"]
    out = [
        f"session {session}: {len(records)} record(s), "
        f"{records[0].get('time')} .. {records[-1].get('time')}, principal {_who(records[0])}"
    ]
    for r in records:
        head = f"#{r.get('seq')} {str(r.get('time', ''))[11:23]} "
        kind = r.get("kind")
        if kind == "approval":
            approval = r.get("approval") or {}
            approver = approval.get("approver")
            approver = approver.get("id") if isinstance(approver, dict) else approver
            out.append(
                head
                + f"approval {r.get('event')} {approval.get('id')} for {_what(r)}"
                + (f" by {approver}" if approver else "")
            )
            continue
        if kind == "auth_failure":
            out.append(head + f"authentication failed: {r.get('reason')}: {r.get('description')}")
            continue
        decision = r.get("decision") if isinstance(r.get("decision"), dict) else None
        line = head + f"{r.get('method')} {_what(r)}"
        if decision is not None:
            policies = ", ".join(decision.get("policies") or []) or "no policy"
            engine = f"{decision.get('engine')} {decision.get('policy_version')}"
            line += f"  {decision.get('effect')} [{policies}] ({engine})"
        line += f" → {_outcome(r)}"
        out.append(line)
        arguments = r.get("arguments")
        if isinstance(arguments, dict) and arguments.get("summary"):
            out.append(f"    arguments {_compact(arguments['summary'])}")
        outcome = r.get("outcome")
        if isinstance(outcome, dict) and isinstance(outcome.get("error"), dict):
            error = outcome["error"]
            out.append(f"    error {error.get('reason')}: {error.get('message')}")
    return out
