"""Running the `opa` command line (fmt, check, test) over policy files, with file:line messages."""

from __future__ import annotations

import fnmatch
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from broker.policytools.common import ToolError, shown

OPA_COMMAND_TIMEOUT = 120.0
DATA_SUFFIXES = (".json", ".yaml", ".yml")


def excluded(path: Path, root: Path, patterns: Sequence[str]) -> bool:
    """True when `path` matches a pattern, as a path relative to `root` or by its file name."""
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        relative = path.as_posix()
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(path.name, p) for p in patterns)


def policy_files(folder: Path, suffix: str, root: Path, patterns: Sequence[str]) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.rglob(f"*{suffix}")) if not excluded(p, root, patterns)]


def run_opa(binary: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [binary, *args], capture_output=True, text=True, timeout=OPA_COMMAND_TIMEOUT, check=False
        )
    except OSError as exc:
        raise ToolError(f"cannot run OPA ({binary}): {exc}; run scripts/install-opa.sh") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"opa {args[0]} did not finish in {OPA_COMMAND_TIMEOUT:.0f} s") from None


def unformatted(binary: str, files: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """(files `opa fmt` would change, files it cannot read with its message). One run per file:
    opa fmt stops at the first file it cannot parse."""
    changed: list[Path] = []
    unreadable: list[str] = []
    for path in files:
        done = run_opa(binary, ["fmt", "--fail", "-l", shown(path)])
        if done.returncode == 0:
            continue
        if done.stdout.strip():
            changed.append(path)
        else:
            first = (done.stderr.strip().splitlines() or ["opa fmt failed"])[0]
            unreadable.append(first.removeprefix("failed to format Rego source file: "))
    return changed, unreadable


def format_in_place(binary: str, files: Sequence[Path]) -> None:
    if not files:
        return
    done = run_opa(binary, ["fmt", "-w", *(shown(p) for p in files)])
    if done.returncode != 0:
        raise ToolError(f"opa fmt -w failed: {done.stderr.strip().splitlines()[0] if done.stderr else '?'}")


def check_strict(binary: str, files: Sequence[Path]) -> list[str]:
    """`opa check --strict` problems as `file:row: code: message` lines."""
    if not files:
        return []
    done = run_opa(binary, ["check", "--strict", "--format", "json", *(shown(p) for p in files)])
    if done.returncode == 0:
        return []
    try:  # OPA writes the JSON report to stderr (stdout in some versions)
        errors = json.loads(done.stderr.strip() or done.stdout)["errors"]
        return [_located(e) for e in errors]
    except (ValueError, KeyError, TypeError):
        return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def _located(error: dict[str, object]) -> str:
    location = error.get("location")
    where = ""
    if isinstance(location, dict) and location.get("file"):
        where = f"{location['file']}:{location.get('row', '?')}: "
    return f"{where}{error.get('code', 'error')}: {error.get('message', '')}"


def run_tests(binary: str, files: Sequence[Path]) -> list[str]:
    """`opa test` failures and errors as `file:row: data.pkg.test_x: FAIL` lines."""
    done = run_opa(binary, ["test", "--format", "json", *(shown(p) for p in files)])
    if done.returncode == 0:
        return []
    try:
        results = json.loads(done.stdout)
    except ValueError:
        return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][:20]
    problems = []
    for result in results if isinstance(results, list) else []:
        if not isinstance(result, dict) or not (result.get("fail") or result.get("error")):
            continue
        location = result.get("location") or {}
        where = f"{location.get('file', '?')}:{location.get('row', '?')}"
        name = f"{result.get('package', '')}.{result.get('name', '')}"
        error = result.get("error")
        detail = (
            f"ERROR: {error.get('message', error) if isinstance(error, dict) else error}" if error else "FAIL"
        )
        problems.append(f"{where}: opa test {name}: {detail}")
    return problems or [line for line in done.stderr.splitlines() if line.strip()][:20]
