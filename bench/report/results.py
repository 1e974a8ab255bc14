"""What a report run produced: one entry per path, measured or with the reason it was not."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.report.machine import Machine
from bench.report.workload import Budget, LevelResult


@dataclass
class PathResult:
    """A path's levels in the order run; `note` says why there are fewer than asked, if there are.

    A path that could not run keeps its row with `note = "not run: <reason>"`: a peer that is
    missing from the table would read as one that was never considered.
    """

    name: str
    what: str
    levels: list[LevelResult] = field(default_factory=list)
    note: str | None = None

    def level(self, sessions: int) -> LevelResult | None:
        return next((lv for lv in self.levels if lv.sessions == sessions), None)

    def cpu_ms_per_call(self) -> float | None:
        """Gateway CPU over all timed calls of all levels (set-up and warm-up excluded)."""
        timed = [lv for lv in self.levels if lv.gateway_cpu_s is not None]
        calls = sum(lv.calls for lv in timed)
        if not timed or calls == 0:
            return None
        return sum(lv.gateway_cpu_s or 0.0 for lv in timed) * 1000 / calls


@dataclass
class Report:
    stamp: str
    machine: Machine
    era: str
    budgets: list[Budget]
    versions: dict[str, str]
    paths: list[PathResult]
    baseline: str = "direct http"
    load_average_end: tuple[float, float, float] | None = None

    def base(self) -> PathResult | None:
        return next((p for p in self.paths if p.name == self.baseline and p.levels), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for path, raw in zip(self.paths, data["paths"], strict=True):
            raw["gateway_cpu_ms_per_call"] = path.cpu_ms_per_call()
        return data
