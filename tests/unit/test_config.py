"""Tests for broker.config: schema validation, messages with line numbers, secrets.

Every test works on real files under tmp_path (or text with a tmp_path base
directory) so relative-path handling is exercised the way operators use it.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

from broker.config import (
    _PATTERN_HINTS,
    DEFAULT_CHILD_ENV_VARS,
    SCHEMA_PATH,
    BrokerConfig,
    CatalogConfig,
    ConfigError,
    HttpFrontConfig,
    LoggingConfig,
    RestartPolicy,
    SecretRef,
    SecretUnavailable,
    ServerInfoConfig,
    Timeouts,
    UpstreamConfig,
    load_config,
    load_schema,
    parse_config,
    resolve_value,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"

MINIMAL = """\
upstreams:
  notes:
    transport: stdio
    command: python
"""


@pytest.fixture(autouse=True)
def policies_folder(tmp_path: Path) -> None:
    """Every config needs its policies (default: policies/ next to the file); give each test one."""
    (tmp_path / "policies" / "cedar").mkdir(parents=True)
    (tmp_path / "policies" / "rego").mkdir()


def parse(text: str, base_dir: Path) -> BrokerConfig:
    return parse_config(textwrap.dedent(text), source="broker.yaml", base_dir=base_dir)


def problems(text: str, base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir)
    return info.value.problems


# --------------------------------------------------------------------------- valid files


def test_minimal_file_gets_every_default(tmp_path: Path) -> None:
    config = parse(MINIMAL, tmp_path)
    assert config.server == ServerInfoConfig()
    assert config.http == HttpFrontConfig()
    assert config.catalog == CatalogConfig()
    assert config.logging == LoggingConfig()
    assert config.source is None
    notes = config.upstream("notes")
    assert notes == UpstreamConfig(name="notes", transport="stdio", command="python")
    assert notes.timeouts == Timeouts(call=60.0, startup=15.0, ping_interval=30.0, ping=5.0)
    assert notes.restart == RestartPolicy(initial_backoff=0.5, max_backoff=30.0)
    assert dict(notes.env) == {}
    assert dict(notes.headers) == {}
    assert (notes.namespace, notes.isolation, notes.enabled, notes.inherit_env) == (
        True,
        "shared",
        True,
        False,
    )


def test_full_file_round_trips_to_dataclasses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_TOKEN", "t0k")
    (tmp_path / "srv").mkdir()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "notes.key").write_text("file-secret\n")
    config_file = tmp_path / "broker.yaml"
    config_file.write_text(
        textwrap.dedent(
            """\
            server:
              name: my-broker
              instructions: Use the notes tools.
            http:
              host: 0.0.0.0
              port: 0
              path: /gateway/mcp
              allowed_origins: [https://App.Example.com, "http://localhost:3000"]
              allowed_hosts: [broker.example.com, "broker.example.com:8443"]
              max_body_bytes: 1024
              session_idle_timeout: 2.5
              max_sessions: 1
            catalog:
              page_size: 50
            logging:
              level: debug
              format: json
            upstreams:
              notes:
                transport: stdio
                command: python
                args: [-m, notes_server, "--port", "9"]
                env:
                  NOTES_MODE: fast
                  NOTES_API_KEY: {file: keys/notes.key, prefix: "k-"}
                inherit_env: true
                cwd: srv
                namespace: false
                isolation: per_session
                enabled: false
                timeouts: {call: 1, startup: 2.5, ping_interval: 0, ping: 0.25}
                restart: {initial_backoff: 1, max_backoff: 1}
              remote:
                transport: streamable_http
                url: https://mcp.example.com/mcp
                headers:
                  Authorization: {env: REMOTE_TOKEN, prefix: "Bearer "}
                  X-Client: broker
              legacy:
                transport: sse
                url: http://127.0.0.1:9000/sse
            """
        )
    )
    config = load_config(config_file)
    assert config.source == config_file
    assert config.server == ServerInfoConfig(name="my-broker", instructions="Use the notes tools.")
    assert config.http == HttpFrontConfig(
        host="0.0.0.0",
        port=0,
        path="/gateway/mcp",
        allowed_origins=("https://app.example.com", "http://localhost:3000"),
        allowed_hosts=("broker.example.com", "broker.example.com:8443"),
        max_body_bytes=1024,
        session_idle_timeout=2.5,
        max_sessions=1,
    )
    assert config.catalog == CatalogConfig(page_size=50)
    assert config.logging == LoggingConfig(level="debug", format="json")
    assert [u.name for u in config.upstreams] == ["notes", "remote", "legacy"]

    notes = config.upstream("notes")
    assert notes.transport == "stdio"
    assert notes.args == ("-m", "notes_server", "--port", "9")
    assert notes.env["NOTES_MODE"] == "fast"
    assert notes.env["NOTES_API_KEY"] == SecretRef(file=tmp_path / "keys" / "notes.key", prefix="k-")
    assert notes.inherit_env is True
    assert notes.cwd == tmp_path / "srv"
    assert (notes.namespace, notes.isolation, notes.enabled) == (False, "per_session", False)
    assert notes.timeouts == Timeouts(call=1.0, startup=2.5, ping_interval=0.0, ping=0.25)
    assert notes.restart == RestartPolicy(initial_backoff=1.0, max_backoff=1.0)
    assert notes.url is None
    assert isinstance(notes.timeouts.call, float)

    remote = config.upstream("remote")
    assert remote.transport == "streamable_http"
    assert remote.command is None
    assert remote.url == "https://mcp.example.com/mcp"
    assert remote.resolved_headers() == {"Authorization": "Bearer t0k", "X-Client": "broker"}
    assert config.upstream("legacy").transport == "sse"

    # Frozen and hashable, mappings read-only.
    hash(config)
    with pytest.raises(TypeError):
        notes.env["X"] = "y"  # type: ignore[index]


def test_null_sections_mean_defaults(tmp_path: Path) -> None:
    config = parse(
        """\
        server:
        http:
        catalog:
        logging:
        upstreams:
          notes:
            transport: stdio
            command: python
            timeouts:
            restart:
        """,
        tmp_path,
    )
    assert config.http == HttpFrontConfig()
    assert config.upstream("notes").timeouts == Timeouts()


def test_upstream_lookup_raises_key_error(tmp_path: Path) -> None:
    config = parse(MINIMAL, tmp_path)
    with pytest.raises(KeyError):
        config.upstream("missing")


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    config = parse(
        """\
        upstreams:
          a:
            transport: stdio
            command: a
            timeouts: &fast {call: 3}
          b:
            <<: {transport: stdio, command: b}
            timeouts: *fast
        """,
        tmp_path,
    )
    assert config.upstream("b").command == "b"
    assert config.upstream("b").timeouts.call == 3.0


# --------------------------------------------------------------------------- schema problems


def test_unknown_key_suggests_the_closest_name(tmp_path: Path) -> None:
    text = """\
        upstreams:
          notes:
            tranport: stdio
            transport: stdio
            command: python
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:3: upstreams.notes: unknown key 'tranport' (did you mean 'transport'?)"
    ]


def test_unknown_key_without_close_match_lists_allowed_keys(tmp_path: Path) -> None:
    assert problems("zzz: 1\n" + MINIMAL, tmp_path) == [
        "broker.yaml:1: (top level): unknown key 'zzz' "
        "(allowed: approvals, audit, catalog, dashboard, http, identity, logging, metrics, policy, "
        "registry, server, tracing, traffic, upstreams)"
    ]


def test_enum_problem_lists_choices(tmp_path: Path) -> None:
    text = """\
        upstreams:
          notes:
            transport: stdoi
            command: python
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:3: upstreams.notes.transport: 'stdoi' is not one of 'stdio', 'streamable_http', 'sse'"
    ]


def test_type_problem_names_expected_and_actual(tmp_path: Path) -> None:
    assert problems("http:\n  port: 80a\n" + MINIMAL, tmp_path) == [
        "broker.yaml:2: http.port: expected integer, got string '80a'"
    ]


def test_missing_required_key(tmp_path: Path) -> None:
    text = """\
        logging: {level: info}
        upstreams:
          notes:
            transport: stdio
            args: [x]
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:3: upstreams.notes: missing required key 'command' (required when transport is 'stdio')"
    ]
    assert problems("logging: {level: info}\n", tmp_path) == [
        "broker.yaml:1: (top level): missing required key 'upstreams'"
    ]


def test_empty_upstreams_and_range_checks(tmp_path: Path) -> None:
    assert problems("upstreams: {}\n", tmp_path) == [
        "broker.yaml:1: upstreams: at least one upstream must be configured"
    ]
    text = (
        MINIMAL + "    timeouts:\n      call: 0\n      ping_interval: -1\nhttp:\n  port: 70000\n  path: mcp\n"
    )
    assert problems(text, tmp_path) == [
        "broker.yaml:6: upstreams.notes.timeouts.call: must be > 0, got 0",
        "broker.yaml:7: upstreams.notes.timeouts.ping_interval: must be >= 0, got -1",
        "broker.yaml:9: http.port: must be <= 65535, got 70000",
        "broker.yaml:10: http.path: 'mcp' must start with '/'",
    ]


def test_invalid_names_for_upstreams_env_and_headers(tmp_path: Path) -> None:
    text = """\
        upstreams:
          Notes_1:
            transport: stdio
            command: python
            env:
              1BAD: x
          web:
            transport: sse
            url: https://example.com/sse
            headers:
              "Bad Header": x
        """
    found = problems(text, tmp_path)
    assert len(found) == 3
    assert found[0].startswith("broker.yaml:2: upstreams: 'Notes_1' is not a valid upstream name")
    assert found[1].startswith(
        "broker.yaml:6: upstreams.Notes_1.env: '1BAD' is not a valid environment variable"
    )
    assert found[2] == "broker.yaml:11: upstreams.web.headers: 'Bad Header' is not a valid HTTP header name"


def test_transport_specific_keys_with_the_wrong_transport(tmp_path: Path) -> None:
    text = """\
        upstreams:
          local:
            transport: stdio
            command: python
            url: http://localhost:1/mcp
            headers: {}
          remote:
            transport: streamable_http
            url: https://example.com/mcp
            command: python
            cwd: .
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:5: upstreams.local.url: not allowed when transport is 'stdio' "
        "(only for streamable_http, sse)",
        "broker.yaml:6: upstreams.local.headers: not allowed when transport is 'stdio' "
        "(only for streamable_http, sse)",
        "broker.yaml:10: upstreams.remote.command: not allowed when transport is 'streamable_http' "
        "(only for stdio)",
        "broker.yaml:11: upstreams.remote.cwd: not allowed when transport is 'streamable_http' "
        "(only for stdio)",
    ]


def test_http_upstream_requires_url(tmp_path: Path) -> None:
    text = "upstreams:\n  web:\n    transport: sse\n"
    assert problems(text, tmp_path) == [
        "broker.yaml:2: upstreams.web: missing required key 'url' (required when transport is 'sse')"
    ]


def test_secret_reference_needs_exactly_one_source(tmp_path: Path) -> None:
    text = """\
        upstreams:
          web:
            transport: sse
            url: https://example.com/sse
            headers:
              Authorization: {env: A, file: b}
              X-Token: {prefix: "Bearer "}
              X-Count: 5
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:6: upstreams.web.headers.Authorization: needs exactly one of 'env' or 'file', "
        "got both 'env' and 'file'",
        "broker.yaml:7: upstreams.web.headers.X-Token: needs exactly one of 'env' or 'file', got neither",
        "broker.yaml:8: upstreams.web.headers.X-Count: expected string or mapping, got integer 5 "
        "(quote it to make it a string)",
    ]


def test_all_problems_are_reported_sorted_by_line(tmp_path: Path) -> None:
    text = """\
        upstreams:
          notes:
            transport: stdio
            command: python
            args: [-v, 3]
            isolaton: shared
        logging:
          level: loud
        http:
          max_sessions: 0
          port: "80"
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:5: upstreams.notes.args[1]: expected string, got integer 3 "
        "(quote it to make it a string)",
        "broker.yaml:6: upstreams.notes: unknown key 'isolaton' (did you mean 'isolation'?)",
        "broker.yaml:8: logging.level: 'loud' is not one of 'debug', 'info', 'warning', 'error'",
        "broker.yaml:10: http.max_sessions: must be >= 1, got 0",
        "broker.yaml:11: http.port: expected integer, got string '80'",
    ]


def test_problem_on_a_missing_key_points_at_the_nearest_parent(tmp_path: Path) -> None:
    text = """\
        # comment

        upstreams:

          remote:
            transport: streamable_http
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:5: upstreams.remote: missing required key 'url' "
        "(required when transport is 'streamable_http')"
    ]


# --------------------------------------------------------------------------- YAML-level problems


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    found = problems("upstreams:\n  notes:\n    transport: stdio\n\tcommand: x\n", tmp_path)
    assert found == [
        "broker.yaml:4:1: YAML syntax error: found character '\\t' that cannot start any token "
        "(while scanning for the next token)"
    ]


def test_unclosed_flow_mapping(tmp_path: Path) -> None:
    [found] = problems("upstreams:\n  notes: {transport: stdio\n", tmp_path)
    assert re.fullmatch(r"broker\.yaml:3:1: YAML syntax error: expected ',' or '}'.*", found)


def test_multiple_documents_rejected(tmp_path: Path) -> None:
    [found] = problems(MINIMAL + "---\nother: 1\n", tmp_path)
    assert found.startswith("broker.yaml:5:1: YAML syntax error: expected a single document")


def test_unknown_yaml_tag(tmp_path: Path) -> None:
    [found] = problems("upstreams: !include other.yaml\n", tmp_path)
    assert found.startswith(
        "broker.yaml:1:12: YAML syntax error: could not determine a constructor for the tag"
    )


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    assert problems(text, tmp_path) == [
        "broker.yaml:1: (top level): the file is empty; expected a mapping with an 'upstreams' section"
    ]


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "scalar value"), ("\n\n42\n", "scalar value")]
)
def test_top_level_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    [found] = problems(text, tmp_path)
    assert re.fullmatch(
        rf"broker\.yaml:\d: \(top level\): expected a mapping of sections, got a {kind}", found
    )


def test_duplicate_keys_are_reported_with_schema_problems(tmp_path: Path) -> None:
    text = """\
        upstreams:
          notes:
            transport: stdio
            command: python
            command: node
            enabled: maybe
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:5: upstreams.notes: duplicate key 'command'",
        "broker.yaml:6: upstreams.notes.enabled: expected boolean, got string 'maybe'",
    ]


def test_non_string_keys_are_rejected(tmp_path: Path) -> None:
    text = """\
        upstreams:
          notes:
            transport: stdio
            command: python
            env:
              1: x
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:6: upstreams.notes.env: key '1' is not a string; quote it (\"1\")"
    ]


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"{missing}: cannot read configuration file: No such file or directory"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.problems == [f"{tmp_path}: cannot read configuration file: Is a directory"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "broker.yaml"
    path.write_bytes(b"upstreams: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}: configuration file is not valid UTF-8 (invalid start byte at byte 11)"
    ]


def test_messages_name_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "broker.yaml").write_text("upstreams:\n  a:\n    transport: stdio\n    comand: x\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("etc/broker.yaml")
    assert str(info.value) == (
        "etc/broker.yaml:2: upstreams.a: missing required key 'command' "
        "(required when transport is 'stdio')\n"
        "etc/broker.yaml:4: upstreams.a: unknown key 'comand' (did you mean 'command'?)"
    )


# --------------------------------------------------------------------------- semantic problems


def test_inline_credentials_are_rejected(tmp_path: Path) -> None:
    text = """\
        upstreams:
          local:
            transport: stdio
            command: python
            env:
              GITHUB_TOKEN: ghp_abc
              DB_PASSWORD: hunter2
              LOG_LEVEL: debug
          remote:
            transport: streamable_http
            url: https://example.com/mcp
            headers:
              Authorization: Bearer abc
              X-Api-Key: abc
              Accept-Language: en
        """
    found = problems(text, tmp_path)
    advice = "use {env: NAME} or {file: PATH} so the secret stays out of the config file"
    assert found == [
        f"broker.yaml:6: upstreams.local.env.GITHUB_TOKEN: inline values are not allowed for "
        f"credential-like name 'GITHUB_TOKEN'; {advice}",
        f"broker.yaml:7: upstreams.local.env.DB_PASSWORD: inline values are not allowed for "
        f"credential-like name 'DB_PASSWORD'; {advice}",
        f"broker.yaml:13: upstreams.remote.headers.Authorization: inline values are not allowed for "
        f"credential-like name 'Authorization'; {advice}",
        f"broker.yaml:14: upstreams.remote.headers.X-Api-Key: inline values are not allowed for "
        f"credential-like name 'X-Api-Key'; {advice}",
    ]
    assert not any("hunter2" in p or "ghp_abc" in p for p in found)


def test_unset_env_reference_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REMOTE_TOKEN", raising=False)
    text = """\
        upstreams:
          remote:
            transport: streamable_http
            url: https://example.com/mcp
            headers:
              Authorization: {env: REMOTE_TOKEN, prefix: "Bearer "}
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:6: upstreams.remote.headers.Authorization: environment variable REMOTE_TOKEN is not set"
    ]


def test_unreadable_file_reference_is_reported(tmp_path: Path) -> None:
    text = """\
        upstreams:
          local:
            transport: stdio
            command: python
            env:
              API_KEY: {file: secrets/missing.key}
        """
    assert problems(text, tmp_path) == [
        f"broker.yaml:6: upstreams.local.env.API_KEY: secret file {tmp_path / 'secrets' / 'missing.key'} "
        "cannot be read: No such file or directory"
    ]


def test_bad_urls(tmp_path: Path) -> None:
    text = """\
        upstreams:
          a:
            transport: streamable_http
            url: ftp://example.com/mcp
          b:
            transport: sse
            url: example.com/sse
          c:
            transport: sse
            url: https://user:pw@example.com/sse
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:4: upstreams.a.url: 'ftp://example.com/mcp' is not an http:// or https:// URL",
        "broker.yaml:7: upstreams.b.url: 'example.com/sse' is not an http:// or https:// URL",
        "broker.yaml:10: upstreams.c.url: credentials in the URL are not allowed; "
        "put them in headers as {env: NAME} or {file: PATH}",
    ]


def test_cwd_must_be_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    text = """\
        upstreams:
          a:
            transport: stdio
            command: python
            cwd: nowhere
          b:
            transport: stdio
            command: python
            cwd: file.txt
        """
    assert problems(text, tmp_path) == [
        f"broker.yaml:5: upstreams.a.cwd: directory {tmp_path / 'nowhere'} does not exist",
        f"broker.yaml:9: upstreams.b.cwd: {tmp_path / 'file.txt'} is not a directory",
    ]


def test_relative_cwd_resolves_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "policies" / "cedar").mkdir(parents=True)
    (conf_dir / "servers" / "notes").mkdir(parents=True)
    (conf_dir / "broker.yaml").write_text(MINIMAL + "    cwd: servers/notes\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "conf" / "broker.yaml")
    assert config.upstream("notes").cwd == conf_dir / "servers" / "notes"
    assert config.source == conf_dir / "broker.yaml"


def test_backoff_origins_hosts_and_non_finite_numbers(tmp_path: Path) -> None:
    text = """\
        http:
          allowed_origins: ["*", "https://app.example.com/", "https://ok.example.com:8443"]
          allowed_hosts: [ok.example.com, "bad host", "ok:99999"]
          session_idle_timeout: .inf
        upstreams:
          notes:
            transport: stdio
            command: python
            timeouts: {call: .nan}
            restart:
              initial_backoff: 5
              max_backoff: 1
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:2: http.allowed_origins[0]: '*' is not allowed "
        "(it would let any web page drive the broker); list each trusted origin",
        "broker.yaml:2: http.allowed_origins[1]: 'https://app.example.com/' is not an origin; "
        "expected scheme://host[:port] such as 'https://app.example.com'",
        "broker.yaml:3: http.allowed_hosts[1]: 'bad host' is not a host or host:port "
        "(e.g. 'broker.example.com' or 'broker.local:8443')",
        "broker.yaml:3: http.allowed_hosts[2]: 'ok:99999' is not a host or host:port "
        "(e.g. 'broker.example.com' or 'broker.local:8443')",
        "broker.yaml:4: http.session_idle_timeout: must be a finite number, got inf",
        "broker.yaml:9: upstreams.notes.timeouts.call: must be a finite number, got nan",
        "broker.yaml:12: upstreams.notes.restart.max_backoff: max_backoff (1) must be >= initial_backoff (5)",
    ]


def test_header_names_are_case_insensitive(tmp_path: Path) -> None:
    text = """\
        upstreams:
          web:
            transport: sse
            url: https://example.com/sse
            headers: {X-Trace: a, x-trace: b}
        """
    assert problems(text, tmp_path) == [
        "broker.yaml:5: upstreams.web.headers.x-trace: header 'x-trace' repeats 'X-Trace' "
        "(header names are case-insensitive)"
    ]


def test_semantic_checks_run_beside_schema_problems(tmp_path: Path) -> None:
    """One run shows everything: schema problems and the checks that can still run (paths, secrets)."""
    text = """\
        upstreams:
          a:
            transport: stdio
            command: python
            cwd: nowhere
          b:
            transport: stdio
        """
    found = problems(text, tmp_path)
    assert (
        "broker.yaml:6: upstreams.b: missing required key 'command' (required when transport is 'stdio')"
        in found
    )
    assert any(
        p.startswith("broker.yaml:5: upstreams.a.cwd: directory ") and "does not exist" in p for p in found
    )


# --------------------------------------------------------------------------- secrets at use time


def test_file_reference_is_reread_and_loses_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "token.txt"
    secret.write_text("first\n")
    config = parse(
        """\
        upstreams:
          web:
            transport: streamable_http
            url: https://example.com/mcp
            headers:
              Authorization: {file: token.txt, prefix: "Bearer "}
        """,
        tmp_path,
    )
    web = config.upstream("web")
    assert web.headers["Authorization"] == SecretRef(file=secret, prefix="Bearer ")
    assert web.resolved_headers() == {"Authorization": "Bearer first"}
    secret.write_text("second\r\n\n")
    assert web.resolved_headers() == {"Authorization": "Bearer second"}
    secret.unlink()
    with pytest.raises(SecretUnavailable) as info:
        web.resolved_headers()
    assert str(info.value) == f"secret file {secret} cannot be read: No such file or directory"
    assert isinstance(info.value, ConfigError)


def test_env_reference_is_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTES_API_KEY", "one")
    config = parse(MINIMAL + "    env:\n      API_KEY: {env: NOTES_API_KEY}\n", tmp_path)
    notes = config.upstream("notes")
    assert notes.child_env()["API_KEY"] == "one"
    monkeypatch.setenv("NOTES_API_KEY", "two")
    assert notes.child_env()["API_KEY"] == "two"
    monkeypatch.delenv("NOTES_API_KEY")
    with pytest.raises(SecretUnavailable, match=r"^environment variable NOTES_API_KEY is not set$"):
        notes.child_env()


def test_child_env_passes_only_the_safe_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/bin")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak")
    config = parse(MINIMAL + "    env:\n      MODE: dev\n      PATH: /opt/bin\n", tmp_path)
    env = config.upstream("notes").child_env()
    assert env["MODE"] == "dev"
    assert env["PATH"] == "/opt/bin"  # configured entries win
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert set(env) <= DEFAULT_CHILD_ENV_VARS | {"MODE"}

    inherit = parse(MINIMAL + "    inherit_env: true\n", tmp_path).upstream("notes").child_env()
    assert inherit["AWS_SECRET_ACCESS_KEY"] == "leak"
    assert inherit == dict(os.environ)


def test_repr_never_shows_secret_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_TOKEN", "sup3r-s3cret")
    (tmp_path / "k").write_text("f1le-s3cret")
    config = parse(
        """\
        upstreams:
          remote:
            transport: streamable_http
            url: https://example.com/mcp
            headers:
              Authorization: {env: REMOTE_TOKEN, prefix: "Bearer "}
              Cookie: {file: k}
        """,
        tmp_path,
    )
    text = repr(config)
    assert "sup3r-s3cret" not in text
    assert "f1le-s3cret" not in text
    assert repr(SecretRef(env="REMOTE_TOKEN")) == "SecretRef(env='REMOTE_TOKEN')"
    assert (
        repr(SecretRef(env="REMOTE_TOKEN", prefix="Bearer "))
        == "SecretRef(env='REMOTE_TOKEN', prefix='Bearer ')"
    )
    assert repr(SecretRef(file=Path("/run/k"))) == "SecretRef(file='/run/k')"


def test_secret_ref_and_resolve_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_VALUE", "v")
    assert resolve_value("literal") == "literal"
    assert resolve_value(SecretRef(env="X_VALUE", prefix="p:")) == "p:v"
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef()
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef(env="A", file=Path("b"))


def test_config_error_joins_problems() -> None:
    error = ConfigError(["a:1: x: one", "a:2: y: two"])
    assert error.problems == ["a:1: x: one", "a:2: y: two"]
    assert str(error) == "a:1: x: one\na:2: y: two"
    assert SecretUnavailable("gone").problems == ["gone"]


# --------------------------------------------------------------------------- the schema and the docs


def _walk(schema: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, dict):
        found.append((where, schema))
        for key, sub in schema.items():
            found.extend(_walk(sub, f"{where}/{key}"))
    elif isinstance(schema, list):
        for index, sub in enumerate(schema):
            found.extend(_walk(sub, f"{where}/{index}"))
    return found


def test_schema_is_strict_and_documented() -> None:
    schema = load_schema()
    assert SCHEMA_PATH.is_file()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    for where, sub in _walk(schema):
        types = sub.get("type")
        is_object = types == "object" or (isinstance(types, list) and "object" in types)
        if is_object and "then" not in sub and not where.endswith("/if"):
            # Either a fixed set of keys (closed) or a user-keyed map with a value schema.
            assert "additionalProperties" in sub, f"{where} allows unknown keys"
            if "properties" in sub:
                assert sub["additionalProperties"] is False, f"{where} allows unknown keys"
        if "properties" in sub and "type" in sub:
            for name, prop in sub["properties"].items():
                assert prop.get("description"), f"{where}/properties/{name} has no description"
        if isinstance(sub.get("pattern"), str):
            assert sub["pattern"] in _PATTERN_HINTS, f"no human explanation for pattern {sub['pattern']!r}"


def test_documented_example_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = DOCS.read_text()
    example = docs.split("## Example", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", example, re.DOTALL)
    assert block is not None
    monkeypatch.setenv("REMOTE_MCP_TOKEN", "t")
    (tmp_path / "servers" / "notes").mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "notes-api-key").write_text("k\n")
    config = parse_config(block.group(1), source="docs/config.md", base_dir=tmp_path)
    assert [u.name for u in config.upstreams] == ["notes", "remote"]


def test_every_schema_key_is_documented() -> None:
    docs = DOCS.read_text()
    schema = load_schema()
    for where, sub in _walk(schema):
        if "properties" in sub and "type" in sub:
            for name in sub["properties"]:
                assert f"`{name}`" in docs, f"{where}/properties/{name} is not in docs/config.md"


def test_a_redis_url_with_a_password_comes_from_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER_REDIS_URL", "redis://:s3cret@127.0.0.1:6379/0")
    config = parse(MINIMAL + "traffic:\n  storage: {env: BROKER_REDIS_URL}\n", tmp_path)
    assert config.traffic.storage == "redis://:s3cret@127.0.0.1:6379/0"
    monkeypatch.delenv("BROKER_REDIS_URL")
    with pytest.raises(ConfigError, match="BROKER_REDIS_URL"):
        parse(MINIMAL + "traffic:\n  storage: {env: BROKER_REDIS_URL}\n", tmp_path)
