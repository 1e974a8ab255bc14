"""`mcp-broker policy <command>`: argument parsing and output; the work is in the sibling modules.

Exit codes (every command): 0 all good, 1 something was found (failing cases, problems,
unformatted files, changed decisions), 2 the command could not do its job (bad arguments,
policies that do not load, a missing git ref, an upstream that does not start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.policytools.common import EXIT_ERROR, EXIT_OK, ToolError, setup_logging, shown
from broker.progress import add_progress_option, progress_reporter

if TYPE_CHECKING:  # engines imports broker.app, over a second: only the commands that decide load it
    from broker.policytools.engines import PolicySet

# = broker.policytools.engines.ENGINE_CHOICES (a test holds them equal), without importing it
ENGINE_CHOICES = ("cedar", "opa", "both")

EXIT_CODES = (
    "exit codes: 0 = all good, 1 = something was found (see the command), 2 = the command could not run"
)

Command = Callable[[argparse.Namespace], int]


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _guarded(command: Command) -> Command:
    """Run a command; a ToolError becomes its details plus one `error: …` line and exit 2."""

    def run(args: argparse.Namespace) -> int:
        setup_logging(getattr(args, "verbose", False))
        try:
            return command(args)
        except ToolError as exc:
            for line in exc.details:
                print(line, file=sys.stderr)
            print(f"error: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return EXIT_ERROR

    return run


def _policy_set(args: argparse.Namespace) -> PolicySet:
    from broker.policytools.engines import PolicySet, default_schema

    policies = Path(args.policies)
    return PolicySet(
        policies, default_schema(args.schema), shown(policies) + ("" if args.policies.endswith("/") else "/")
    )


def _opa_for(args: argparse.Namespace, names: Sequence[str]) -> str | None:
    from broker.policytools.engines import find_opa

    return find_opa(args.opa) if "opa" in names else None


def _engine_names(choice: str) -> tuple[str, ...]:
    from broker.policytools.engines import engine_names

    return engine_names(choice)


def _emit(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


# -- commands ----------------------------------------------------------------------------------------


def cmd_catalog(args: argparse.Namespace) -> int:
    from broker.policytools.catalog import counts, take_snapshot, write_snapshot

    snapshot = asyncio.run(take_snapshot(Path(args.config)))
    text = write_snapshot(snapshot, args.output)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        print(f"wrote {args.output}: {counts(snapshot)}", file=sys.stderr)
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    from broker.policytools.runner import json_report, run_suite, text_lines

    names = _engine_names(args.engine)
    policy_set = _policy_set(args)
    paths = [Path(p) for p in args.paths] or [Path("policy-tests")]
    report = asyncio.run(
        run_suite(
            paths, policy_set, names, _opa_for(args, names), Path(args.catalog) if args.catalog else None
        )
    )
    if args.format == "json":
        print(json_report(report))
    else:
        _emit(text_lines(report, args.verbose))
    return report.exit_code


def cmd_check(args: argparse.Namespace) -> int:
    from broker.policytools.check import check_all

    report = check_all(
        _policy_set(args),
        args.exclude,
        args.opa,
        [Path(p) for p in args.cases] if args.cases else None,
        Path(args.catalog) if args.catalog else None,
    )
    _emit(report.lines())
    return report.exit_code


def cmd_fmt(args: argparse.Namespace) -> int:
    from broker.policytools.fmt import format_policies

    report = format_policies(_policy_set(args), check=args.check, excludes=args.exclude, opa=args.opa)
    _emit(report.lines())
    return report.exit_code


def cmd_diff(args: argparse.Namespace) -> int:
    from broker.policytools.diff import json_report, markdown, run_diff, text_lines

    names = _engine_names(args.engine)
    paths: list[Path] | None = [Path(p) for p in args.paths] or None
    if paths is None and (args.log is None or Path("policy-tests").is_dir()):
        paths = [Path("policy-tests")]
    with progress_reporter("policy diff", requested=args.progress, unit="decisions") as progress:
        report = asyncio.run(
            run_diff(
                args.base,
                _policy_set(args),
                names,
                _opa_for(args, names),
                paths,
                Path(args.catalog) if args.catalog else None,
                Path(args.log) if args.log else None,
                progress.update,
            )
        )
    if args.format == "markdown":
        sys.stdout.write(markdown(report))
    elif args.format == "json":
        print(json_report(report))
    else:
        _emit(text_lines(report))
    return report.exit_code


def cmd_explain(args: argparse.Namespace) -> int:
    from broker.policytools.explain import explain, load_subject, text_lines

    names = _engine_names(args.engine)
    subject = load_subject(Path(args.request), args.case, Path(args.catalog) if args.catalog else None)
    result = asyncio.run(explain(subject, _policy_set(args), names, _opa_for(args, names)))
    if args.format == "json":
        print(json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        _emit(text_lines(result))
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------------


def _policies_options(parser: argparse.ArgumentParser, *, engines: str | None = None) -> None:
    parser.add_argument(
        "--policies",
        default="policies",
        metavar="DIR",
        help="policy directory with cedar/ and rego/ (default: policies)",
    )
    parser.add_argument(
        "--schema",
        metavar="FILE",
        help="Cedar schema (default: schemas/mcp.cedarschema, else the broker's own)",
    )
    if engines is not None:
        parser.add_argument(
            "--engine",
            choices=ENGINE_CHOICES,
            default=engines,
            help=f"which engine(s) decide (default: {engines})",
        )
    parser.add_argument(
        "--opa",
        metavar="PATH",
        help="OPA binary (default: $MCP_BROKER_OPA, opa on PATH, or scripts/install-opa.sh's)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="more output (passing cases, engine logs)"
    )


def _catalog_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog", metavar="FILE", help="catalog snapshot (default: catalog.yaml next to each case file)"
    )


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


def add_policy_commands(subparsers: Any) -> None:
    """Register `mcp-broker policy …` on the main parser's subparsers (docs/policy-cli.md)."""
    group: argparse.ArgumentParser = subparsers.add_parser(
        "policy",
        help="test, check, format, diff and explain policies",
        description="Tools for the policies: decision cases, checks, formatting, diffs, explanations "
        "(docs/policy-cli.md).",
        epilog="example:\n  mcp-broker policy test --engine both\n\n" + EXIT_CODES,
        formatter_class=_formatter,
    )
    sub = group.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    catalog = _command(
        sub,
        "catalog",
        cmd_catalog,
        "snapshot the upstreams' tools, resources and prompts for the cases",
        "Start the upstreams of CONFIG (not its policies), wait for them, write the resource documents "
        "the broker gives policies (servers, tools, resources, resource templates, prompts) to FILE, "
        "and stop everything. Exit 2 if an upstream does not start.",
        "mcp-broker policy catalog -c examples/organisation.yaml -o policy-tests/catalog.yaml",
    )
    catalog.add_argument("-c", "--config", required=True, help="broker config whose upstreams to start")
    catalog.add_argument("-o", "--output", required=True, help="file to write (- for stdout)")
    catalog.add_argument("-v", "--verbose", action="store_true", help="show the upstreams' log lines")

    test = _command(
        sub,
        "test",
        cmd_test,
        "run the decision cases through Cedar and/or OPA",
        "Decide every case with the broker's engine adapters and compare with its `expect`. Prints one "
        "line per failing case (file:line: name: expected X, got Y (reasons: …) [engine]), DISAGREE "
        "lines when the engines answer differently, case-file problems, and a summary. Exit 1 if "
        "anything failed.",
        "mcp-broker policy test --engine both policy-tests/",
    )
    test.add_argument(
        "paths", nargs="*", metavar="PATH", help="case files or directories (default: policy-tests/)"
    )
    _policies_options(test, engines="both")
    _catalog_option(test)
    test.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )

    check = _command(
        sub,
        "check",
        cmd_check,
        "validate and format-check every policy and case file",
        "Cedar: strict validation against the schema (the broker's loader) and the format check. Rego: "
        "opa check --strict, opa fmt, and opa test when there are *_test.rego files. Case files: "
        "schema and catalog. Lists every problem; exit 1 if there is any.",
        "mcp-broker policy check --policies policies --exclude 'rego/vendor/*'",
    )
    _policies_options(check)
    check.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip policy files matching GLOB (path under --policies, or file name) for the Rego checks "
        "and the Cedar format check; repeatable",
    )
    check.add_argument(
        "--cases",
        action="append",
        metavar="PATH",
        help="case files or directories (default: policy-tests/ if present)",
    )
    _catalog_option(check)

    fmt = _command(
        sub,
        "fmt",
        cmd_fmt,
        "format Cedar and Rego policy files in place",
        "Format Cedar files with cedarpy.format_policies (a file is left alone, and reported, if its "
        "comments or annotations would not survive) and Rego files with opa fmt -w. With --check, "
        "only list what is not formatted (exit 1 if any).",
        "mcp-broker policy fmt --check",
    )
    _policies_options(fmt)
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not formatted")
    fmt.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip files matching GLOB"
    )

    diff = _command(
        sub,
        "diff",
        cmd_diff,
        "show which decisions change between a git ref and the working tree",
        "Decide the cases (and the requests of an audit log) under the policies at REF and under the "
        "working tree, and print every request whose decision changes, grouped by target and "
        "principal. Exit 0 if nothing changed, 1 if something did, 2 on error.",
        "mcp-broker policy diff --base origin/main --format markdown",
    )
    diff.add_argument(
        "paths", nargs="*", metavar="PATH", help="case files or directories (default: policy-tests/)"
    )
    diff.add_argument(
        "--base", required=True, metavar="REF", help="git ref to compare with (origin/main, HEAD~1…)"
    )
    diff.add_argument(
        "--log",
        metavar="AUDIT_FILE",
        help="JSON Lines file; each line's `request` member (a full authorization request) is decided too",
    )
    _policies_options(diff, engines="both")
    _catalog_option(diff)
    diff.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="output format (default: text)"
    )
    add_progress_option(diff)

    explain = _command(
        sub,
        "explain",
        cmd_explain,
        "show one request's decision and the policies that made it",
        "Decide a full authorization request document (JSON/YAML), a single case, or one case of a case "
        "file (--case NAME), and show the decision of each engine, the determining policies with their "
        "reasons (Cedar: file:line), and the argument summary the engine saw.",
        "mcp-broker policy explain request.json --engine cedar",
    )
    explain.add_argument("request", metavar="REQUEST", help="request document, case, or case file")
    explain.add_argument("--case", metavar="NAME", help="the case to explain, in a file of several")
    _policies_options(explain, engines="both")
    _catalog_option(explain)
    explain.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )
