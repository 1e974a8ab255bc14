"""The version of a policy set: what every decision and audit record names.

The git commit of the policy directory when it is a clean git checkout (so a decision
can be traced to the reviewed change), otherwise a hash of the files' content (so two
different policy sets never share a version). Computed at load and reload, never per call.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path


def content_hash(files: Iterable[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        name = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        digest.update(str(name).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def policy_version(directory: Path, files: Iterable[Path]) -> str:
    """`git:<commit>` for a clean git checkout, else `sha256:<hash of the files>`."""
    files = list(files)
    content = content_hash(files, directory)
    commit = _git(directory, "rev-parse", "HEAD")
    if commit and _git(directory, "status", "--porcelain", "--", ".") == "":
        return f"git:{commit[:12]}"
    return f"sha256:{content}"


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
