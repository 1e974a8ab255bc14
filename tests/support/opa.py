"""The real OPA binary for tests: from $MCP_BROKER_OPA, or built (and cached) by scripts/install-opa.sh.

Never a skip: OPA tests are part of the suite, so a missing OPA is a failure that says
how to get it.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def opa_binary() -> Path:
    given = os.environ.get("MCP_BROKER_OPA")
    if given:
        path = Path(given)
        if not path.is_file():
            raise AssertionError(f"MCP_BROKER_OPA={given} does not exist")
        return path
    done = subprocess.run(
        [str(REPO / "scripts" / "install-opa.sh")], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"OPA is required by the tests and could not be installed:\n{done.stderr[-2000:]}"
        )
    return Path(done.stdout.strip().splitlines()[-1])
