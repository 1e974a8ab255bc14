"""Demo upstream for the organisation policy: the release side of source control.

The published ``mcp-server-git`` works on a local checkout (status, diff, commit, reset of
the index …) and has no push and no deploy. This server stands in for the shared remote and
the deployment pipeline, so the organisation policy can talk about protected branches and
production:

| tool | readOnly | destructive | what it does |
|---|---|---|---|
| ``list_branches()`` | true | false | branches of the remote and their tips |
| ``list_deployments()`` | true | false | what was deployed where |
| ``push(branch, revision, force)`` | false | false | point a branch at a commit (fast-forward or ``force``) |
| ``reset_branch(branch, revision)`` | false | **true** | move a branch anywhere, dropping later commits |
| ``deploy(environment, ref)`` | false | false | deploy a branch or commit to staging or production |

All are idempotent; only ``deploy`` reaches the outside world (``openWorldHint``).

A push that is not a fast-forward is refused unless ``force`` is true (then it drops commits
like ``reset_branch``; the organisation policy refuses that on protected branches). Branch
names must be canonical short names: lowercase letters, digits, ``.``, ``_``, ``-`` and ``/``
between non-empty parts, no ``..``, no ``refs/`` prefix and no ``.lock`` suffix. The server
never rewrites a name, so ``refs/heads/main`` or ``Main`` is refused rather than quietly
turned into ``main``: what the policy judged is what is pushed.

    python examples/release_server.py                                  # stdio
    python examples/release_server.py --transport http --port 8804     # http://127.0.0.1:8804/mcp

The remote lives in memory and is seeded with a small history; every start begins afresh.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from _serve import make_parser, serve
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations as Hints

Environment = Literal["staging", "production"]

READ = Hints(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
MOVE = Hints(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DROP = Hints(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
DEPLOY = Hints(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)

BRANCH = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*")
REVISION = re.compile(r"[0-9a-f]{7,40}")

# commit -> parent (a small history: main and a release branch, one feature branch ahead of main)
SEED_COMMITS = {
    "a1b2c3d": None,
    "b2c3d4e": "a1b2c3d",
    "c3d4e5f": "b2c3d4e",
    "d4e5f6a": "c3d4e5f",
    "e5f6a7b": "d4e5f6a",
}
SEED_BRANCHES = {
    "main": "d4e5f6a",
    "release/1.0": "b2c3d4e",
    "feature/login": "e5f6a7b",
}


def check_branch(branch: str) -> str:
    if (
        len(branch) > 100
        or not BRANCH.fullmatch(branch)
        or ".." in branch
        or branch.startswith("refs/")
        or branch.endswith(".lock")
    ):
        raise ToolError(f"{branch!r} is not a canonical branch name (lowercase short names only)")
    return branch


class Remote:
    def __init__(self) -> None:
        self.parents: dict[str, str | None] = dict(SEED_COMMITS)
        self.branches: dict[str, str] = dict(SEED_BRANCHES)
        self.deployments: list[dict[str, str]] = []

    def commit(self, revision: str) -> str:
        if not REVISION.fullmatch(revision):
            raise ToolError(f"{revision!r} is not a commit id")
        found = [c for c in self.parents if c.startswith(revision)]
        if len(found) != 1:
            raise ToolError(f"Unknown or ambiguous revision: {revision!r}")
        return found[0]

    def descends(self, commit: str, ancestor: str) -> bool:
        current: str | None = commit
        while current is not None:
            if current == ancestor:
                return True
            current = self.parents[current]
        return False

    def push(self, branch: str, revision: str, force: bool) -> dict[str, Any]:
        target = self.commit(revision)
        tip = self.branches.get(check_branch(branch))
        if tip is not None and not self.descends(target, tip) and not force:
            raise ToolError(f"Not a fast-forward of {branch} ({tip}): pass force=true to overwrite")
        self.branches[branch] = target
        return {"branch": branch, "from": tip, "to": target, "forced": tip is not None and force}

    def reset(self, branch: str, revision: str) -> dict[str, Any]:
        if check_branch(branch) not in self.branches:
            raise ToolError(f"Unknown branch: {branch!r}")
        target = self.commit(revision)
        tip, self.branches[branch] = self.branches[branch], target
        return {"branch": branch, "from": tip, "to": target}

    def deploy(self, environment: str, ref: str) -> dict[str, Any]:
        commit = self.branches[ref] if ref in self.branches else self.commit(ref)
        record = {"environment": environment, "ref": ref, "commit": commit}
        self.deployments.append(record)
        return record


def build_server() -> MCPServer[Any]:
    remote = Remote()
    mcp = MCPServer(
        "release",
        version="1.0.0",
        instructions="The shared remote and the deployment pipeline: push, reset branches, deploy.",
        log_level="WARNING",
    )

    @mcp.tool(title="List branches", annotations=READ)
    async def list_branches() -> str:
        """Branches of the remote and the commit each points at."""
        return json.dumps(remote.branches, sort_keys=True)

    @mcp.tool(title="List deployments", annotations=READ)
    async def list_deployments() -> str:
        """Every deployment so far, oldest first."""
        return json.dumps(remote.deployments)

    @mcp.tool(title="Push a branch", annotations=MOVE)
    async def push(branch: str, revision: str, force: bool = False) -> str:
        """Point a branch of the remote at a commit (creating the branch if needed).

        Refused when it is not a fast-forward, unless force is true.
        """
        return json.dumps(remote.push(branch, revision, force))

    @mcp.tool(title="Reset a branch", annotations=DROP)
    async def reset_branch(branch: str, revision: str) -> str:
        """Move an existing branch to any commit; commits after it are no longer on the branch."""
        return json.dumps(remote.reset(branch, revision))

    @mcp.tool(title="Deploy", annotations=DEPLOY)
    async def deploy(environment: Environment, ref: str) -> str:
        """Deploy a branch or a commit to staging or production."""
        return json.dumps(remote.deploy(environment, ref))

    return mcp


def main() -> None:
    args = make_parser(
        "Demo release MCP server (remote branches and deployments).", default_port=8804
    ).parse_args()
    serve(build_server(), args)


if __name__ == "__main__":
    main()
