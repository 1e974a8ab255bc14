"""`mcp-broker audit <command>`: verify, query, replay, keygen (docs/audit.md).

Exit codes: 0 all good (verify: the trail is intact; query/replay: records found), 1 the
answer is no (verify: a broken link; query/replay: nothing matched), 2 the command could not
run (no such file or directory, unreadable key, bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from broker.progress import add_progress_option, progress_reporter

EXIT_OK = 0
EXIT_FOUND_NOTHING = 1
EXIT_ERROR = 2
EXIT_CODES = (
    "exit codes: 0 = all good / records found, 1 = verification failed / nothing matched, "
    "2 = the command could not run"
)

Command = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """Stops a command with exit 2 and one `error: …` line."""


def _guarded(command: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
        return EXIT_ERROR

    return run


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")


def _target(paths: Sequence[str]) -> Path | list[Path]:
    targets = [Path(p) for p in paths]
    for path in targets:
        if not path.exists():
            raise CommandError(
                f"{path}: no such file or directory; give the audit directory (audit.directory in the "
                "broker's config) or files in it"
            )
    if len(targets) == 1:
        return targets[0]
    if any(p.is_dir() for p in targets):
        raise CommandError("give one directory, or one or more files")
    return targets


# -- commands ----------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from broker.audit.signing import KeyFileError, load_public_key
    from broker.audit.verify import verify

    try:
        keys = [load_public_key(Path(p)) for p in args.public_key or ()]
    except KeyFileError as exc:
        raise CommandError(str(exc)) from None
    target = _target(args.paths)
    with progress_reporter("audit verify", requested=args.progress) as progress:
        report = verify(
            target,
            keys or None,
            checkpoint=Path(args.checkpoint) if args.checkpoint else None,
            progress=progress.update,
        )
    if args.format == "json":
        _print_json(report.to_json())
    else:
        for line in report.lines():
            print(line)
    return EXIT_OK if report.ok else EXIT_FOUND_NOTHING


def cmd_export(args: argparse.Namespace) -> int:
    """The PostgreSQL trail as JSON Lines files, then checked like a file trail."""
    import asyncio
    import os

    from broker.audit.pg_sink import verify_table

    if args.dsn_env:
        dsn = os.environ.get(args.dsn_env)
        if not dsn:
            raise CommandError(f"the environment variable {args.dsn_env} is not set")
    else:
        try:
            dsn = Path(args.dsn_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CommandError(f"cannot read {args.dsn_file}: {exc.strerror}") from None
    directory = Path(args.directory)
    if directory.exists() and any(directory.iterdir()):
        raise CommandError(f"{directory} is not empty: export into a new directory")
    try:
        exported, report = asyncio.run(verify_table(dsn, directory))
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    except Exception as exc:  # psycopg's errors: connection refused, authentication, missing table
        raise CommandError(f"cannot read the audit table: {type(exc).__name__}: {exc}") from None
    print(f"exported {exported.records} record(s) to {exported.path}")
    if args.format == "json":
        _print_json(report.to_json())
    else:
        for line in report.lines():
            print(line)
    return EXIT_OK if report.ok else EXIT_FOUND_NOTHING


def _filters(args: argparse.Namespace) -> Any:
    from broker.audit.query import Filters, parse_time

    return Filters(
        principal=args.principal,
        tool=args.tool,
        effect=args.effect,
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        session=args.session,
        kind=args.kind,
    )


def cmd_query(args: argparse.Namespace) -> int:
    from broker.audit.query import ReadStats, query, table

    stats = ReadStats()
    found = query(_target(args.paths), _filters(args), limit=args.limit, stats=stats)
    if args.format == "json":
        for record in found:
            sys.stdout.write(orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode() + "\n")
    else:
        for line in table(found):
            print(line)
    if stats.unreadable:
        print(f"warning: {stats.unreadable} line(s) are not JSON records (run audit verify)", file=sys.stderr)
    print(
        f"{len(found)} record(s) matched of {stats.lines} line(s) in {stats.files} file(s)", file=sys.stderr
    )
    return EXIT_OK if found else EXIT_FOUND_NOTHING


def cmd_replay(args: argparse.Namespace) -> int:
    from broker.audit.query import replay, replay_lines

    records = replay(_target(args.paths), args.session)
    if args.format == "json":
        for record in records:
            sys.stdout.write(orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode() + "\n")
    else:
        for line in replay_lines(args.session, records):
            print(line)
    return EXIT_OK if records else EXIT_FOUND_NOTHING


def cmd_keygen(args: argparse.Namespace) -> int:
    from broker.audit.signing import KeyFileError, generate_key_pair

    private = Path(args.out + ".pem")
    public = Path(args.out + ".pub.pem")
    try:
        signer = generate_key_pair(private, public, overwrite=args.force)
    except KeyFileError as exc:
        raise CommandError(str(exc)) from None
    print(f"wrote {private} (private, mode 0600) and {public} (public); key id {signer}")
    print(f"configure `audit: {{signing_key: {private}}}`; verify with `--public-key {public}`")
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------------


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _command(
    sub: Any, name: str, func: Command, summary: str, description: str, example: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"example:\n  {example}\n\n{EXIT_CODES}",
        formatter_class=_formatter,
    )
    parser.set_defaults(func=_guarded(func))
    return parser


def _paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        default=["audit"],
        metavar="PATH",
        help="audit directory, or audit files in chain order (default: audit)",
    )


def add_audit_commands(subparsers: Any) -> None:
    """Register `mcp-broker audit …` on the main parser's subparsers (docs/audit.md)."""
    group: argparse.ArgumentParser = subparsers.add_parser(
        "audit",
        help="verify, search and replay the audit trail; make a checkpoint key",
        description="Tools for the audit trail (docs/audit.md).",
        epilog="example:\n  mcp-broker audit verify audit/ --public-key audit-signing.pub.pem\n\n"
        + EXIT_CODES,
        formatter_class=_formatter,
    )
    sub = group.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    verify = _command(
        sub,
        "verify",
        cmd_verify,
        "check the hash chain, the files' order and the signed checkpoints",
        "Check every line against its hash and the one before it, files against each other, "
        "checkpoints against the public key, and the end of the trail against audit.checkpoint. "
        "Prints the FIRST broken link as FILE:LINE: KIND: why (edit, broken_link, deletion, insertion, "
        "reorder, truncation, signature, format). A directory is checked from its first record; files "
        "are checked in the order given. Exit 1 if anything is broken.",
        "mcp-broker audit verify audit/ --public-key audit-signing.pub.pem",
    )
    verify.add_argument("paths", nargs="+", metavar="FILE|DIR", help="audit directory or files")
    verify.add_argument(
        "--public-key",
        action="append",
        metavar="PEM",
        help="Ed25519 public key (or the private key) that signs checkpoints; repeat for every key used "
        "over the trail's life (key rotation)",
    )
    verify.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="checkpoint file to hold the trail to (default: DIR/audit.checkpoint)",
    )
    verify.add_argument("--format", choices=("text", "json"), default="text", help="output (default: text)")
    add_progress_option(verify)

    export = _command(
        sub,
        "export",
        cmd_export,
        "copy a PostgreSQL trail (audit.sink: postgresql) to JSON Lines and verify it",
        "Read the broker_audit table in chain order into DIR/audit-000000000001.jsonl, then verify it "
        "as `audit verify` does (and that the table's head row matches its last record: rows cut off "
        "the end are a truncation). The DSN is read from an environment variable or a file, never "
        "from the command line (it holds a password). Exit 1 if anything is broken.",
        "mcp-broker audit export --dsn-env BROKER_AUDIT_DSN ./audit-copy",
    )
    export.add_argument("directory", metavar="DIR", help="a new (or empty) directory for the copy")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--dsn-env", metavar="NAME", help="environment variable holding the DSN")
    source.add_argument("--dsn-file", metavar="FILE", help="file holding the DSN")
    export.add_argument("--format", choices=("text", "json"), default="text", help="output (default: text)")

    query = _command(
        sub,
        "query",
        cmd_query,
        "find records by principal, tool, effect, time and session",
        "Print the records that match every filter given, in chain order. Wildcards (*, ?) work in "
        "--principal and --tool. Times: ISO 8601 (UTC unless an offset is given) or a duration back "
        "from now (90s, 15m, 2h, 7d). Exit 1 if nothing matched.",
        "mcp-broker audit query audit/ --principal 'review-*' --effect deny --since 2h",
    )
    _paths(query)
    query.add_argument("--principal", metavar="ID", help="principal id or the user it acts for")
    query.add_argument(
        "--tool", metavar="NAME", help="target id (server__tool, resource URI) or upstream name"
    )
    query.add_argument("--effect", choices=("allow", "deny", "require_approval"), help="decision effect")
    query.add_argument("--since", metavar="TIME", help="records at or after TIME")
    query.add_argument("--until", metavar="TIME", help="records before TIME")
    query.add_argument("--session", metavar="ID", help="MCP session id")
    query.add_argument(
        "--kind", metavar="KIND", help="request, approval, auth_failure, policy_reload, open, …"
    )
    query.add_argument("--limit", type=int, metavar="N", help="stop after N records")
    query.add_argument("--format", choices=("table", "json"), default="table", help="output (default: table)")

    replay = _command(
        sub,
        "replay",
        cmd_replay,
        "show one session's calls in order, with their decisions",
        "Print the session's requests, approval events and authentication failures in the order they "
        "were recorded: method and target, the effect with the determining policies, engine and policy "
        "version, the outcome and latency, the redacted arguments. Exit 1 if the session has no records.",
        "mcp-broker audit replay 6f1c2a… audit/",
    )
    replay.add_argument("session", metavar="SESSION", help="MCP session id")
    _paths(replay)
    replay.add_argument("--format", choices=("text", "json"), default="text", help="output (default: text)")

    keygen = _command(
        sub,
        "keygen",
        cmd_keygen,
        "write an Ed25519 key pair for signing checkpoints",
        "Write PREFIX.pem (private key, mode 0600: configure it as audit.signing_key) and PREFIX.pub.pem "
        "(public key: give it to whoever verifies). Refuses to overwrite unless --force.",
        "mcp-broker audit keygen --out /etc/mcp-broker/audit-signing",
    )
    keygen.add_argument(
        "--out", default="audit-signing", metavar="PREFIX", help="file name prefix (default: audit-signing)"
    )
    keygen.add_argument("--force", action="store_true", help="replace existing files")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m broker.audit.cli audit …`: the same commands without the rest of the broker's CLI."""
    from broker.cli import CommandLineParser  # here: broker.cli imports this module

    parser = CommandLineParser(prog="mcp-broker")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_audit_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
