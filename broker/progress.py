"""How far a long command (`audit verify`, `policy diff --log`) has got, on stderr only.

Stdout stays machine-readable (reports, JSON): progress never goes there. On a terminal the
reporter redraws one line (`\\r`) at most ~10 times a second; elsewhere (logs, CI) it is silent
unless asked for with `--progress`, and then writes a plain line every `step_percent` percent,
so a CI log shows the command is alive without thousands of carriage returns.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from enum import Enum
from types import TracebackType
from typing import TextIO

ProgressCallback = Callable[[int, int], None]
"""`callback(done, total)`: how much of the work (bytes, records) is done, of how much."""

MIN_INTERVAL = 0.1  # seconds between two redraws of the terminal line: ~10 updates/s
STEP_PERCENT = 10  # a plain line each time this many more percent are done


class ProgressMode(Enum):
    TERMINAL = "terminal"  # one redrawn line
    LINES = "lines"  # a line every STEP_PERCENT percent
    OFF = "off"


def choose_mode(stream: TextIO, requested: bool | None) -> ProgressMode:
    """`--progress` (True), `--no-progress` (False) or neither (None) for a stream.

    A terminal gets the redrawn line unless `--no-progress`; anything else (a log file, CI) stays
    quiet unless `--progress` asks for plain lines.
    """
    if requested is False:
        return ProgressMode.OFF
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return ProgressMode.TERMINAL
    return ProgressMode.LINES if requested else ProgressMode.OFF


def _amount(value: float, unit: str) -> str:
    if unit != "B":
        return f"{value:,.0f} {unit}"
    for name in ("B", "KB", "MB", "GB"):
        if value < 1000 or name == "GB":
            return f"{value:.0f} {name}" if name == "B" else f"{value:.1f} {name}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover - the loop always returns


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressReporter:
    """Turns `update(done, total)` calls into a progress display; use it as a context manager.

    The producer (the verifier, the diff) may call `update` as often as it likes: the reporter
    decides what is worth writing, so producers need not know about terminals or throttling.
    """

    def __init__(
        self,
        label: str,
        *,
        mode: ProgressMode,
        unit: str = "B",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_INTERVAL,
        step_percent: int = STEP_PERCENT,
    ) -> None:
        self.label = label
        self.mode = mode
        self.unit = unit
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._min_interval = min_interval
        self._step = max(1, step_percent)
        self._started = clock()
        self._last_draw: float | None = None
        self._last_percent = -1
        self._width = 0  # of the last terminal line, to blank what a shorter one leaves behind
        self._drawn = False

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.finish()

    def update(self, done: int, total: int) -> None:
        """Record that `done` of `total` units are done (a ProgressCallback)."""
        if self.mode is ProgressMode.OFF:
            return
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        if self.mode is ProgressMode.TERMINAL:
            now = self._clock()
            due = self._last_draw is None or now - self._last_draw >= self._min_interval
            if due or (percent == 100 and self._last_percent != 100):
                self._last_draw = now
                self._last_percent = percent
                self._draw(self._text(done, total, percent, now))
            return
        reached = percent - percent % self._step if percent < 100 else 100
        if reached > self._last_percent:
            self._last_percent = reached
            self._stream.write(self._text(done, total, reached, self._clock()) + "\n")
            self._stream.flush()

    def finish(self) -> None:
        """End the terminal line so what follows starts on its own line."""
        if self.mode is ProgressMode.TERMINAL and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def _text(self, done: int, total: int, percent: int, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = done / elapsed
        parts = [f"{_amount(done, self.unit)}/{_amount(total, self.unit)}"]
        if rate > 0:
            parts.append(f"{_amount(rate, self.unit)}/s")
            if done < total:
                parts.append(f"ETA {_duration((total - done) / rate)}")
        return f"{self.label}: {percent:3d}% ({', '.join(parts)})"

    def _draw(self, text: str) -> None:
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._stream.write("\r" + text + padding)
        self._stream.flush()
        self._drawn = True


def progress_reporter(label: str, *, requested: bool | None, unit: str = "B") -> ProgressReporter:
    """The reporter for a CLI command: on stderr, in the mode its terminal-ness and `--progress` call for."""
    return ProgressReporter(label, mode=choose_mode(sys.stderr, requested), unit=unit, stream=sys.stderr)


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """`--progress` / `--no-progress` for a command that can take a while."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr: a redrawn line on a terminal (default), plain lines every "
        f"{STEP_PERCENT}%% with --progress when stderr is not one (logs, CI); --no-progress for none",
    )
