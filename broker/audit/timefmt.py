"""The record format's version and its one time format, shared by every module that writes records."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Final

FORMAT_VERSION: Final = 1
"""`v` of every record; bumped when a field changes meaning."""


def iso_time(epoch: float) -> str:
    """`2026-01-07T10:00:00.123456Z`: UTC, fixed width, so string order is time order."""
    seconds = int(epoch)
    micros = round((epoch - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return f"{_second(seconds)}.{micros:06d}Z"


@lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """Formatting a second costs more than the rest of a record; records come many per second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
