"""`mcp-broker approvals list|show|approve|deny`: the approvals API from a terminal.

The CLI holds no authority of its own: it calls the running broker's approvals API with
the approver's bearer token (or, on a broker without token authentication, from loopback
as the configured local approver), so every rule — policy, separation of duties, expiry
— is the broker's.

Exit codes: 0 done, 1 the broker refused (not allowed, unknown id, already decided),
2 the command could not run (no broker, bad arguments).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import httpx2
import orjson

from broker.config import ConfigError, load_config

DEFAULT_TOKEN_ENV = "MCP_BROKER_TOKEN"


class _Failure(Exception):
    """Stops a command with `code`: `details` lines (config problems), then one `error: …` line."""

    def __init__(self, code: int, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)


EXIT_CODES = (
    "exit codes: 0 = done, 1 = the broker refused (not allowed, unknown id, already decided), "
    "2 = the command could not run (no broker, bad arguments)"
)
WHERE = (
    "The broker is named by --url URL, -c CONFIG or $MCP_BROKER_URL; the approver's token is read from "
    "$MCP_BROKER_TOKEN (or --token-env NAME)"
)

# name, summary, description, example
_COMMANDS = (
    (
        "list",
        "approvals you may see (pending by default)",
        "List the approvals the approver may see, newest first: id, status, requester, target, times.",
        "mcp-broker approvals list -c broker.yaml --status all",
    ),
    (
        "show",
        "show one approval: the call, its arguments, why it needs approval",
        "Show one approval: requester, call and arguments, argument digest, the policy reasons, times.",
        "mcp-broker approvals show apr_123 --url http://127.0.0.1:8787",
    ),
    (
        "approve",
        "approve one approval (the waiting call then goes through)",
        "Approve a pending approval. The broker checks that you may (policy, separation of duties, "
        "expiry); the waiting call then reaches its upstream.",
        "mcp-broker approvals approve apr_123 -c broker.yaml --note 'checked the diff'",
    ),
    (
        "deny",
        "deny one approval (the waiting call fails)",
        "Deny a pending approval; the waiting call is refused.",
        "mcp-broker approvals deny apr_123 -c broker.yaml --note 'not during the freeze'",
    ),
)


def add_approval_commands(sub: Any) -> None:
    parser = sub.add_parser(
        "approvals",
        help="list, show, approve or deny pending approvals (through the broker's API)",
        description="Talk to a running broker's approvals API; every rule (policy, separation of duties, "
        f"expiry) is the broker's. {WHERE}.",
        epilog="examples:\n  mcp-broker approvals list -c broker.yaml\n"
        "  mcp-broker approvals approve apr_123 -c broker.yaml --note 'checked'\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="approvals_command", required=True, metavar="COMMAND")
    actions: dict[str, Callable[[argparse.Namespace], None]] = {
        "list": _list,
        "show": _show,
        "approve": _approve,
        "deny": _deny,
    }
    for name, summary, description, example in _COMMANDS:
        p = commands.add_parser(
            name,
            help=summary,
            description=f"{description} {WHERE}.",
            epilog=f"example:\n  {example}\n\n{EXIT_CODES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(p)
        if name == "list":
            p.add_argument(
                "--status", default="pending", help="pending, approved, denied, expired, cancelled or all"
            )
        else:
            p.add_argument("approval_id", metavar="ID", help="the approval's id (apr_…), from `list`")
        if name in ("approve", "deny"):
            p.add_argument("--note", default="", help="why (recorded with the decision)")
        p.set_defaults(func=_command(actions[name]))


def _common(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="the broker's base URL, e.g. http://127.0.0.1:8787 (or $MCP_BROKER_URL)")
    where.add_argument("-c", "--config", help="take the broker's address from its config file")
    p.add_argument(
        "--token-env",
        default=DEFAULT_TOKEN_ENV,
        help=f"environment variable holding the approver's bearer token (default {DEFAULT_TOKEN_ENV})",
    )
    p.add_argument("--format", choices=["table", "json"], default="table")


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise _Failure(
                2,
                f"the config {args.config} is not valid; fix the problems above "
                f"(mcp-broker check-config {args.config}) or give --url",
                exc.problems,
            ) from None
        host = "127.0.0.1" if config.http.host in ("0.0.0.0", "::") else config.http.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{config.http.port}"
    env = os.environ.get("MCP_BROKER_URL")
    if env:
        return env.rstrip("/")
    raise _Failure(2, "say which broker: --url URL, -c CONFIG or $MCP_BROKER_URL")


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    headers = {"accept": "application/json"}
    token = os.environ.get(args.token_env)
    if token:
        headers["authorization"] = f"Bearer {token}"
    url = _base_url(args) + path
    try:
        response = httpx2.request(method, url, headers=headers, json=body, timeout=30.0)
    except httpx2.HTTPError as exc:
        raise _Failure(
            2,
            f"cannot reach the broker at {url} ({str(exc) or type(exc).__name__}); is it running? "
            "Name it with --url URL, -c CONFIG or $MCP_BROKER_URL",
        ) from None
    try:
        payload = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise _Failure(2, f"{url} answered {response.status_code} without JSON: is it a broker?") from None
    if response.status_code >= 400:
        message = payload.get("error") if isinstance(payload, dict) else None
        code = 2 if response.status_code >= 500 else 1
        raise _Failure(code, f"refused ({response.status_code}): {message or response.text}")
    return payload


def _when(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(approvals: list[dict[str, Any]]) -> str:
    if not approvals:
        return "no approvals"
    rows = [("ID", "STATUS", "REQUESTER", "TARGET", "CREATED", "EXPIRES")]
    for a in approvals:
        requester = a["requester"]
        who = requester.get("id", "?") + (
            f" for {requester['acting_for']}" if requester.get("acting_for") else ""
        )
        rows.append((a["id"], a["status"], who, a["target"], _when(a["created_at"]), _when(a["expires_at"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _detail(a: dict[str, Any]) -> str:
    reasons = "; ".join(f"{r.get('id')}: {r.get('message', '')}" for r in a["reasons"])
    approver = (a.get("approver") or {}).get("id", "-")
    lines = [
        f"id:         {a['id']}",
        f"status:     {a['status']}",
        f"requester:  {orjson.dumps(a['requester']).decode()}",
        f"call:       {a['method']} {a['target']} (server {a['server']})",
        f"arguments:  {orjson.dumps(a['arguments']).decode()}",
        f"digest:     {a['argument_digest']}",
        f"why:        {reasons}",
        f"policy:     {a['policy_version']}",
        f"created:    {_when(a['created_at'])}   expires: {_when(a['expires_at'])}",
        f"decided:    {_when(a.get('decided_at'))} by {approver} {a.get('note') or ''}".rstrip(),
    ]
    return "\n".join(lines)


def _out(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() if args.format == "json" else text)


def _list(args: argparse.Namespace) -> None:
    payload = _call(args, "GET", f"/approvals?status={args.status}")
    _out(args, payload, _table(payload["approvals"]))


def _show(args: argparse.Namespace) -> None:
    payload = _call(args, "GET", f"/approvals/{args.approval_id}")
    _out(args, payload, _detail(payload))


def _approve(args: argparse.Namespace) -> None:
    payload = _call(args, "POST", f"/approvals/{args.approval_id}/approve", {"note": args.note})
    _out(args, payload, f"approved {payload['id']}: {payload['target']}")


def _deny(args: argparse.Namespace) -> None:
    payload = _call(args, "POST", f"/approvals/{args.approval_id}/deny", {"note": args.note})
    _out(args, payload, f"denied {payload['id']}: {payload['target']}")


def _command(action: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            action(args)
        except _Failure as exc:
            for line in exc.details:
                print(line, file=sys.stderr)
            print(f"error: {exc.message}", file=sys.stderr)
            return exc.code
        return 0

    return run
