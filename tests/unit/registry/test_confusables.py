"""TR39 skeletons from Unicode's confusables.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.registry.confusables import ConfusablesUnavailable, Skeletons, data_path, parse_confusables


def test_the_shipped_data_is_unicode_confusables_txt() -> None:
    text = data_path().read_text(encoding="utf-8-sig")
    assert "Unicode Security Mechanisms for UTS #39" in text
    assert len(parse_confusables(text)) > 6000


@pytest.mark.parametrize(
    ("impostor", "original"),
    [
        ("g\u0456t__status", "git__status"),  # Cyrillic i
        ("p\u0430yp\u0430l", "paypal"),  # Cyrillic a
        ("rnem__read", "mem__read"),  # r + n looks like m
        ("tool1", "tooll"),  # digit one vs small L
        ("t\u043ef\u0455", "tofs"),  # Cyrillic o and dze
    ],
)
def test_look_alikes_share_a_skeleton(skeletons: Skeletons, impostor: str, original: str) -> None:
    assert skeletons.confusable(impostor, original)


@pytest.mark.parametrize(("a", "b"), [("read_file", "read_files"), ("git_diff", "git_log"), ("same", "same")])
def test_different_names_do_not(skeletons: Skeletons, a: str, b: str) -> None:
    assert not skeletons.confusable(a, b)


def test_a_file_that_is_not_the_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "confusables.txt"
    path.write_text("0430 ;\t0061 ;\tMA\t# a\n")
    with pytest.raises(ConfusablesUnavailable):
        Skeletons(path)
    with pytest.raises(ConfusablesUnavailable):
        Skeletons(tmp_path / "missing.txt")


def test_malformed_lines_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"not a confusables\.txt line"):
        parse_confusables("0430\n")
