"""Output redaction: built-in detectors, configured patterns, byte-identical clean output."""

from __future__ import annotations

import copy
import json

import pytest

from broker.registry.dlp import BUILTIN_DETECTORS, DETECTOR_GROUPS, Redactor, card_number_ok, luhn_ok
from tests.fixtures import fixture_script, import_script

POISONED = import_script(fixture_script("poisoned"))
REDACTOR = Redactor()


@pytest.mark.parametrize("detector", sorted(POISONED.SEEDED_SECRETS))
def test_each_seeded_secret_is_found_by_its_detector(detector: str) -> None:
    line = POISONED.SEEDED_SECRETS[detector]
    result = {"content": [{"type": "text", "text": line}]}
    redacted, summary = REDACTOR.apply(result, BUILTIN_DETECTORS)
    assert dict(summary.counts) == {detector: 1}
    text = redacted["content"][0]["text"]
    assert f"[REDACTED:{detector}]" in text


def test_every_builtin_detector_has_a_seeded_secret() -> None:
    assert set(POISONED.SEEDED_SECRETS) == set(BUILTIN_DETECTORS)


def test_secrets_in_structured_content_and_resources() -> None:
    secrets = POISONED.SEEDED_SECRETS
    result = {
        "content": [
            {"type": "text", "text": "nothing here"},
            {"type": "resource", "resource": {"uri": "x://k", "text": secrets["private_key"]}},
        ],
        "structuredContent": {"user": {"email": "bob@example.org", "cards": ["4111-1111-1111-1111"]}},
    }
    original = copy.deepcopy(result)
    redacted, summary = REDACTOR.apply(result, BUILTIN_DETECTORS)
    assert summary.to_json() == {"redacted": {"card_number": 1, "email": 1, "private_key": 1}, "total": 3}
    assert redacted["structuredContent"] == {
        "user": {"email": "[REDACTED:email]", "cards": ["[REDACTED:card_number]"]}
    }
    assert redacted["content"][1]["resource"] == {"uri": "x://k", "text": "[REDACTED:private_key]"}
    assert redacted["content"][0] is result["content"][0]  # unchanged parts are shared
    assert result == original  # the upstream's result is never mutated
    assert "bob@" not in json.dumps(summary.to_json())


@pytest.mark.parametrize(
    ("inner", "detector"),
    [
        ('{"type": "service_account", "private_key_id": "' + "ab" * 20 + '"}', "gcp_service_account_key"),
        ('aws_secret_access_key: "' + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" + '"', "aws_secret_key"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY-----\n", "private_key"),
    ],
)
def test_secrets_in_strings_that_json_escapes(inner: str, detector: str) -> None:
    """structuredContent is probed as one JSON text: escaped quotes and newlines must not hide a match."""
    result = {"content": [], "structuredContent": {"files": [{"name": "key.json", "text": inner}]}}
    redacted, summary = REDACTOR.apply(result, [detector])
    assert dict(summary.counts) == {detector: 1}
    assert redacted["structuredContent"]["files"][0]["text"] != inner


def test_a_clean_result_is_the_same_object() -> None:
    result = {
        "content": [{"type": "text", "text": POISONED.CLEAN_TEXT}],
        "structuredContent": {"s": POISONED.CLEAN_TEXT},
    }
    redacted, summary = REDACTOR.apply(result, BUILTIN_DETECTORS)
    assert redacted is result
    assert summary.total == 0


def test_only_the_requested_detectors_run() -> None:
    result = {"content": [{"type": "text", "text": "mail alice@example.com key AKIAIOSFODNN7EXAMPLE"}]}
    redacted, summary = REDACTOR.apply(result, DETECTOR_GROUPS["pii"])
    assert dict(summary.counts) == {"email": 1}
    assert "AKIAIOSFODNN7EXAMPLE" in redacted["content"][0]["text"]


def test_overlapping_matches_are_redacted_once() -> None:
    jwt = POISONED.SEEDED_SECRETS["jwt"]
    result = {"content": [{"type": "text", "text": f"Authorization: Bearer {jwt}"}]}
    redacted, summary = REDACTOR.apply(result, BUILTIN_DETECTORS)
    # Both detectors match the same span; the more specific one (listed first) names it.
    assert redacted["content"][0]["text"] == "Authorization: Bearer [REDACTED:jwt]"
    assert summary.total == 1


def test_configured_patterns_and_replacement() -> None:
    redactor = Redactor({"ticket_id": r"TKT-\d{4,}"})
    result = {"content": [{"type": "text", "text": "see TKT-12345 and TKT-1"}]}
    redacted, summary = redactor.apply(result, ["ticket_id"], "<{type} hidden>")
    assert redacted["content"][0]["text"] == "see <ticket_id hidden> and TKT-1"
    assert dict(summary.counts) == {"ticket_id": 1}
    with pytest.raises(ValueError, match="built-in"):
        Redactor({"email": "x"})
    with pytest.raises(KeyError):
        redactor.detectors(["nope"])


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        ("4111 1111 1111 1111", True),
        ("5500-0000-0000-0004", True),
        ("378282246310005", True),
        ("4111 1111 1111 1112", False),  # Luhn fails
        ("1234 5678 9012 3452", False),  # Luhn passes, no issuer starts with 1
        ("4444444444444444", False),  # Luhn fails
        ("0000000000000000", False),  # one repeated digit
    ],
)
def test_card_numbers_need_luhn_and_an_issuer(number: str, ok: bool) -> None:
    assert card_number_ok(number) is ok


def test_luhn() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")


def test_numbers_that_are_not_cards_stay() -> None:
    text = "order 1234 5678 9012 3452, timestamp 1700000000000, phone 4155552671, id 4111111111111112"
    result = {"content": [{"type": "text", "text": text}]}
    assert REDACTOR.apply(result, ["card_number"])[0] is result
