from __future__ import annotations

import pytest

from broker.catalog.names import public_name, public_uri, split_name, split_uri


def test_tool_names_round_trip() -> None:
    assert public_name("notes", "read_note", True) == "notes__read_note"
    assert split_name("notes__read_note") == ("notes", "read_note")
    assert split_name("notes__a__b") == ("notes", "a__b")  # server names have no "_": first "__" splits
    assert public_name("notes", "read_note", False) == "read_note"


@pytest.mark.parametrize("name", ["plain", "__x", "x__", "a_b"])
def test_names_without_a_namespace(name: str) -> None:
    assert split_name(name) is None


def test_resource_uris_round_trip() -> None:
    assert public_uri("notes", "notes://note/1", True) == "notes+notes://note/1"
    assert split_uri("notes+notes://note/1") == ("notes", "notes://note/1")
    assert split_uri("git+git+https://host/repo") == ("git", "git+https://host/repo")
    assert split_uri("file:///a+b") is None  # a "+" after the scheme is not a namespace
    assert split_uri("no-scheme+at-all") is None
