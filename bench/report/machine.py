"""What a report was measured on: absolute numbers mean nothing without the machine and its load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    cores: int
    cpu_model: str
    python: str
    system: str
    mcp_sdk: str
    load_average: tuple[float, float, float]


def cpu_model(cpuinfo: str) -> str:
    """The first `model name` of /proc/cpuinfo (x86); other architectures name it differently."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model", "Processor") and value.strip():
            return value.strip()
    return "unknown"


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def describe() -> Machine:
    try:
        model = cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        model = platform.processor() or "unknown"
    return Machine(
        cores=os.cpu_count() or 0,
        cpu_model=model,
        python=platform.python_version(),
        system=f"{os_name()}, Linux {platform.release()}",
        mcp_sdk=importlib.metadata.version("mcp"),
        load_average=os.getloadavg(),
    )
