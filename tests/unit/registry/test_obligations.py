"""Obligations: parsing, combining, Cedar annotations, and the settings that carry them."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.registry.dlp import BUILTIN_DETECTORS, DETECTOR_GROUPS
from broker.registry.findings import Severity
from broker.registry.obligations import (
    ObligationError,
    Redact,
    ResultScan,
    combine,
    obligations_from_annotations,
    parse_obligations,
)
from broker.registry.settings import registry_settings


def test_redact_and_result_scan_are_parsed_and_others_left_alone() -> None:
    parsed = parse_obligations(
        [
            {"type": "redact", "detectors": ["secrets", "email", "ticket_id"], "replacement": "<{type}>"},
            {"type": "result_scan", "action": "block"},
            {"type": "notify", "channel": "#sec"},
        ],
        {"ticket_id"},
    )
    assert parsed == [
        Redact(DETECTOR_GROUPS["secrets"] | {"email", "ticket_id"}, "<{type}>"),
        ResultScan("block"),
    ]


def test_defaults_and_groups() -> None:
    [redact] = parse_obligations([{"type": "redact"}])
    assert isinstance(redact, Redact)
    assert redact.detectors == DETECTOR_GROUPS["secrets"]
    [everything] = parse_obligations([{"type": "redact", "detectors": "all"}], {"mine"})
    assert isinstance(everything, Redact)
    assert everything.detectors == BUILTIN_DETECTORS | {"mine"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "redact"}, "must be a list"),
        ([1], "obligation 0 is not an object"),
        ([{"type": "redact", "detectors": ["nope"]}], "unknown detector 'nope'"),
        ([{"type": "redact", "detectors": []}], "non-empty list"),
        ([{"type": "redact", "replacement": "{value}"}], "placeholder {type}"),
        ([{"type": "redact", "replacement": 3}], "short string"),
        ([{"type": "result_scan", "action": "ignore"}], "result_scan.action"),
    ],
)
def test_malformed_obligations_fail_closed(raw: object, message: str) -> None:
    with pytest.raises(ObligationError, match=message):
        parse_obligations(raw)


def test_combining_keeps_the_union_and_the_strongest_action() -> None:
    redact, scan = combine(
        [
            ResultScan("annotate"),
            Redact(frozenset({"email"})),
            ResultScan("strip"),
            Redact(frozenset({"jwt"}), "***"),
            ResultScan("record"),
        ]
    )
    assert redact == Redact(frozenset({"email", "jwt"}), "***")
    assert scan == ResultScan("strip")
    assert combine([]) == (None, None)


def test_cedar_annotations_become_obligations() -> None:
    assert obligations_from_annotations({"id": "p1", "redact": "secrets, email", "result_scan": "block"}) == [
        {"type": "redact", "detectors": ["secrets", "email"]},
        {"type": "result_scan", "action": "block"},
    ]
    assert obligations_from_annotations({"id": "p1"}) == []
    parsed = parse_obligations(obligations_from_annotations({"redact": ""}))
    assert parsed == [Redact(DETECTOR_GROUPS["secrets"])]


def test_settings_defaults(tmp_path: Path) -> None:
    settings = registry_settings(None, tmp_path / "policies")
    assert settings.lock_file == tmp_path / "policies" / "registry.lock.yaml"
    assert settings.unpinned == "quarantine"
    assert settings.result_scan == "record"
    assert settings.validation.invalid_schema == "reject"
    assert settings.severities["hidden_tag"] is Severity.QUARANTINE


def test_settings_from_a_section(tmp_path: Path) -> None:
    settings = registry_settings(
        {
            "lock_file": "locks/registry.yaml",
            "unpinned": "allow",
            "findings": {"encoded_blob": "quarantine"},
            "result_scan": "annotate",
            "validation": {"max_depth": 10, "invalid_schema": "skip"},
            "dlp": {
                "patterns": {"ticket_id": r"TKT-\d+"},
                "tools": {"github__*": [{"type": "redact", "detectors": ["secrets", "ticket_id"]}]},
            },
        },
        tmp_path / "policies",
        tmp_path,
    )
    assert settings.lock_file == tmp_path / "locks" / "registry.yaml"
    assert settings.unpinned == "allow"
    assert settings.severities["encoded_blob"] is Severity.QUARANTINE
    assert settings.validation.max_depth == 10
    assert settings.dlp_tools["github__*"][0]["detectors"] == sorted(
        DETECTOR_GROUPS["secrets"] | {"ticket_id"}
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"unknown": 1}, "registry: unknown key"),
        ({"unpinned": "maybe"}, "registry.unpinned"),
        ({"result_scan": "drop"}, "registry.result_scan"),
        ({"findings": {"nope": "warn"}}, "registry.findings"),
        ({"validation": {"max_depth": 0}}, "registry.validation.max_depth"),
        ({"validation": {"max_depth": 500}}, "at most 200"),
        ({"validation": {"invalid_schema": "allow"}}, "registry.validation.invalid_schema"),
        ({"dlp": {"patterns": {"Bad Name": "x"}}}, "registry.dlp.patterns.Bad Name"),
        ({"dlp": {"patterns": {"bad": "("}}}, "not a valid regular expression"),
        ({"dlp": {"tools": {"x": [{"type": "redact", "detectors": ["nope"]}]}}}, "registry.dlp.tools.x"),
    ],
)
def test_settings_errors_name_the_key(tmp_path: Path, raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        registry_settings(raw, tmp_path)
