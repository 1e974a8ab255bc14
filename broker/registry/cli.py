"""`mcp-broker registry <command>`: pin, diff and scan what the configured upstreams offer.

Each command starts the config's upstreams through the broker's own `Broker` (the same
connections, commands, credentials and listing code as `serve`), reads their listings, and
stops everything before returning, success or not. No policy is loaded.

Exit codes: 0 all good; 1 something was found (`diff`: an item drifted, is unpinned or
missing; `scan`: a finding of severity `quarantine`); 2 the command could not do its job (bad
config, an upstream that does not start, a broken lock file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.registry.canonical import KINDS
from broker.registry.findings import Finding, Severity

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_ERROR = 2
EXIT_CODES = (
    "exit codes: 0 = all good, 1 = something was found (drift, unpinned or missing items; "
    "quarantine-level findings), 2 = the command could not run"
)


class CommandError(Exception):
    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)


@dataclass(frozen=True)
class LiveRegistry:
    """What the upstreams offer right now, and the settings that apply to it."""

    listings: dict[str, Any]  # server → UpstreamListing
    namespaces: dict[str, bool]
    order: list[str]
    settings: Any  # RegistrySettings
    pins: Any  # Pins, read before any upstream started


async def fetch_live(config_path: Path, servers: Sequence[str] = (), lock: str | None = None) -> LiveRegistry:
    """Start the upstreams (all, or `servers`), read their listings, stop them."""
    from broker.app import Broker
    from broker.config import ConfigError, load_config
    from broker.upstream.supervisor import UpstreamState

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CommandError(
            f"the config {config_path} is not valid; fix the problems above "
            f"(mcp-broker check-config {config_path})",
            exc.problems,
        ) from None
    settings = settings_for(config, lock)
    pins = _load_pins(Path(settings.lock_file))  # a broken lock file fails before anything starts
    broker = Broker(config)
    unknown = [name for name in servers if name not in broker.upstreams]
    if unknown:
        raise CommandError(
            f"no enabled upstream named {', '.join(unknown)} in {config_path} "
            f"(known: {', '.join(broker.upstreams) or 'none'})"
        )
    chosen = [u for name, u in broker.upstreams.items() if not servers or name in servers]
    try:
        await asyncio.gather(*(u.start() for u in chosen))
        failed = [u for u in chosen if u.state is not UpstreamState.READY]
        if failed:
            raise CommandError(
                f"upstream(s) {', '.join(u.name for u in failed)} did not start",
                [f"upstream {u.name}: {u.last_error or u.state.value}" for u in failed],
            )
        return LiveRegistry(
            {u.name: u.listing for u in chosen},
            {u.name: u.config.namespace for u in chosen},
            [u.name for u in chosen],
            settings,
            pins,
        )
    finally:
        await broker.stop()


def settings_for(config: Any, lock: str | None) -> Any:
    """The config's `registry` settings when it has them, else the defaults next to its policies."""
    import dataclasses

    from broker.registry.pins import default_lock_path
    from broker.registry.settings import RegistrySettings

    found = getattr(config, "registry", None)
    settings = found if isinstance(found, RegistrySettings) else None
    if settings is None:
        settings = RegistrySettings(lock_file=default_lock_path(Path(config.policy.path)))
    if lock is not None:
        settings = dataclasses.replace(settings, lock_file=Path(lock))
    return settings


def _load_pins(path: Path) -> Any:
    from broker.registry.pins import LockFileError, load_pins

    try:
        return load_pins(path)
    except LockFileError as exc:
        raise CommandError(f"the lock file {path} cannot be used", exc.problems) from None


# -- commands ---------------------------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> Path:
    """The config file, or one `error:` line saying how to name it (before anything starts)."""
    path = Path(args.config)
    if not path.is_file():
        raise CommandError(f"the config {path} does not exist; give the broker's config with -c FILE")
    return path


def cmd_pin(args: argparse.Namespace) -> int:
    from broker.registry.pins import Pins, pins_for, save_pins

    live = asyncio.run(fetch_live(_config_path(args), args.server, args.lock))
    path = Path(live.settings.lock_file)
    old = live.pins
    pins = old if args.server else Pins({}, path)
    for server, listing in live.listings.items():
        pins = pins.replacing(server, pins_for(listing))
    save_pins(pins, path)
    added, changed, removed = _changes(old, pins)
    print(
        f"wrote {path}: {len(pins.servers)} server(s), {pins.count()} pinned item(s) "
        f"({added} new, {changed} changed, {removed} removed)",
        file=sys.stderr,
    )
    findings = _scan(live, pins)
    serious = [f for f in findings if f.severity is Severity.QUARANTINE]
    if serious:
        print(
            f"note: {len(serious)} finding(s) will still quarantine items whatever their pins: "
            "see `mcp-broker registry scan`",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from broker.registry.diff import json_report, text_lines
    from broker.registry.pins import compare

    live = asyncio.run(fetch_live(_config_path(args), args.server, args.lock))
    pins = live.pins
    states = [compare(pins, server, live.listings[server]) for server in live.order]
    if not args.server:  # servers pinned but no longer configured
        states.extend(compare(pins, s, _Empty()) for s in sorted(pins.servers) if s not in live.listings)
    if args.format == "json":
        print(json.dumps(json_report(states), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        lines = list(text_lines(states))
        for line in lines:
            print(line)
        if not lines:
            print(f"all {sum(len(s.items) for s in states)} item(s) match their pins in {pins.source}")
    return EXIT_OK if all(state.clean for state in states) else EXIT_FOUND


def cmd_scan(args: argparse.Namespace) -> int:
    live = asyncio.run(fetch_live(_config_path(args), (), args.lock))
    findings = _scan(live, live.pins)
    if args.format == "json":
        print(json.dumps({"findings": [f.to_json() for f in findings]}, indent=2, ensure_ascii=False))
    else:
        for finding in findings:
            print(finding.line())
        counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
        print(
            f"{len(findings)} finding(s): {counts[Severity.QUARANTINE]} quarantine, "
            f"{counts[Severity.WARN]} warn ({len(live.listings)} server(s) scanned)"
        )
    return EXIT_FOUND if any(f.severity is Severity.QUARANTINE for f in findings) else EXIT_OK


def _scan(live: LiveRegistry, pins: Any) -> list[Finding]:
    from broker.registry.markers import MarkerScanner
    from broker.registry.pins import PinStatus, compare
    from broker.registry.scan import RegistryScanner, ServerOffer

    settings = live.settings
    states = {server: compare(pins, server, live.listings[server]) for server in live.order}

    def trusted(server: str, kind: str, key: str) -> bool:
        item = states[server].items.get((kind, key))
        return item is not None and item.status is PinStatus.PINNED

    scanner = RegistryScanner(
        settings.severities, markers=MarkerScanner(min_blob_length=settings.min_blob_length)
    )
    offers = [ServerOffer(s, live.listings[s], live.namespaces[s]) for s in live.order]
    return scanner.scan(offers, trusted)


def _changes(old: Any, new: Any) -> tuple[int, int, int]:
    added = changed = removed = 0
    for server in set(old.servers) | set(new.servers):
        for kind in KINDS:
            before = old.server(server).get(kind, {})
            after = new.server(server).get(kind, {})
            added += len(set(after) - set(before))
            removed += len(set(before) - set(after))
            changed += sum(1 for k in set(before) & set(after) if before[k].sha256 != after[k].sha256)
    return added, changed, removed


class _Empty:
    tools: tuple[dict[str, Any], ...] = ()
    resource_templates: tuple[dict[str, Any], ...] = ()
    prompts: tuple[dict[str, Any], ...] = ()


# -- parser -----------------------------------------------------------------------------------------


def _guarded(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        import logging

        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR, stream=sys.stderr)
        try:
            code: int = command(args)
            return code
        except CommandError as exc:
            for line in exc.details:
                print(line, file=sys.stderr)
            print(f"error: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return EXIT_ERROR

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", default="broker.yaml", help="config file (default: broker.yaml)")
    parser.add_argument(
        "--lock",
        metavar="FILE",
        help="lock file (default: registry.lock_file, else registry.lock.yaml in the policy directory)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the upstreams do")


def _command(sub: Any, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser)
    return parser


def add_registry_commands(subparsers: Any) -> None:
    """Register `mcp-broker registry …` on the main parser's subparsers (docs/registry.md)."""
    group: argparse.ArgumentParser = subparsers.add_parser(
        "registry",
        help="pin, diff and scan the upstreams' tool definitions",
        description="The tool registry: pin what the upstreams offer, show drift, scan for "
        "shadowing and poisoning (docs/registry.md).",
        epilog="example:\n  mcp-broker registry pin -c examples/broker.yaml\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = group.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")

    pin = _command(
        sub,
        "pin",
        "write the lock file: the sha256 and a readable copy of every definition offered now",
        "mcp-broker registry pin -c broker.yaml --server github",
    )
    pin.add_argument(
        "--server", action="append", default=[], metavar="S", help="pin only this upstream (repeatable)"
    )
    pin.set_defaults(func=_guarded(cmd_pin))

    diff = _command(
        sub,
        "diff",
        "show pinned vs live: drifted (with a diff), unpinned and missing definitions",
        "mcp-broker registry diff -c broker.yaml",
    )
    diff.add_argument(
        "--server", action="append", default=[], metavar="S", help="only this upstream (repeatable)"
    )
    diff.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )
    diff.set_defaults(func=_guarded(cmd_diff))

    scan = _command(
        sub,
        "scan",
        "report shadowing and poisoning findings across all upstreams",
        "mcp-broker registry scan -c broker.yaml --format json",
    )
    scan.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )
    scan.set_defaults(func=_guarded(cmd_scan))


def main(argv: list[str] | None = None) -> int:
    """`python -m broker.registry.cli …` (until `mcp-broker registry` is registered in broker/cli.py)."""
    from broker.cli import CommandLineParser  # here: broker.cli imports this module

    parser = CommandLineParser(prog="mcp-broker")
    add_registry_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
