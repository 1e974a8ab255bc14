"""Name patterns and rule matches."""

from __future__ import annotations

import pytest

from broker.traffic.patterns import NamePattern, parse_match


def test_exact_prefix_and_star() -> None:
    assert NamePattern("github__search").matches("github__search")
    assert not NamePattern("github__search").matches("github__search2")
    assert NamePattern("github__*").matches("github__create_issue")
    assert not NamePattern("github__*").matches("gitlab__search")
    assert NamePattern("*").matches("anything")
    assert NamePattern("*").matches(None)
    assert not NamePattern("acme").matches(None)


def test_only_a_trailing_star_is_a_wildcard() -> None:
    with pytest.raises(ValueError, match="trailing"):
        NamePattern("*__search")
    with pytest.raises(ValueError, match="empty"):
        NamePattern("")


def test_match_needs_every_given_field() -> None:
    match = parse_match({"tenant": "acme", "tool": "github__*"}, "m")
    assert match.accepts("Agent:a", "acme", "github__x")
    assert not match.accepts("Agent:a", "globex", "github__x")
    assert not match.accepts("Agent:a", None, "github__x")
    assert parse_match(None, "m").accepts("p", None, "t")


def test_match_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"^r\.match: unknown key\(s\) role"):
        parse_match({"role": "x"}, "r.match")
    with pytest.raises(ValueError, match=r"^r\.match\.tool: pattern 'a\*b': only a trailing"):
        parse_match({"tool": "a*b"}, "r.match")
