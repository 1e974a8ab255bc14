"""Anchored patterns: the same matches as a plain scan, found only around literal anchors."""

from __future__ import annotations

import re

from broker.registry.anchored import Anchored, case_variants
from broker.registry.diff import field_lines
from broker.registry.findings import Finding, Severity, pointer, visible


def test_case_variants_drop_the_first_letter() -> None:
    assert case_variants(["ignore", "aws"]) == ("gnore", "GNORE", "aws", "AWS")


def test_exact_matches_start_before_the_anchor() -> None:
    finder = Anchored(re.compile(r"(?i)\bbearer\s+(\S+)"), case_variants(["bearer"]), before=1, exact=True)
    text = "Authorization: Bearer abc; BEARER def; unbearer ghi; Bearer"
    assert [m.group(1) for m in finder.finditer(text)] == ["abc;", "def;"]


def test_windows_find_matches_of_any_length_near_the_anchor() -> None:
    pattern = re.compile(r"(?<![\w.])[\w.]+@[\w.]+\.[a-z]{2,}")
    finder = Anchored(pattern, ("@",), before=30, after=40)
    text = "mail a.b@example.com or c@d.org, not @nothing"
    assert [m.group() for m in finder.finditer(text)] == [m.group() for m in pattern.finditer(text)]
    assert [m.group() for m in finder.finditer(text)] == ["a.b@example.com", "c@d.org"]


def test_no_anchor_no_match() -> None:
    finder = Anchored(re.compile("AKIA[0-9A-Z]{16}"), ("AKIA",), exact=True)
    assert list(finder.finditer("nothing to see" * 1000)) == []


def test_findings_show_what_a_reviewer_would_miss() -> None:
    assert visible("a\u200bb\u202ec") == "a<U+200B>b<U+202E>c"
    assert visible("x" * 200, 10).endswith("…")
    assert pointer("inputSchema", "properties", "a/b", "c~d", 0) == "/inputSchema/properties/a~1b/c~0d/0"
    finding = Finding("bidi_control", Severity.QUARANTINE, "s", "t\u200b", "/description", "x", related="u")
    assert "t<U+200B> (vs u)" in finding.line()
    assert finding.to_json()["related"] == "u"


def test_diff_lines_split_descriptions_at_sentences() -> None:
    assert field_lines("description", "One. Two!\nThree") == ["One.", "Two!", "Three"]
    assert field_lines("inputSchema", {"b": 1, "a": "\u0430"}) == ["{", '  "a": "\\u0430",', '  "b": 1', "}"]
    assert field_lines("title", None) == []
