"""Canonical definitions, the lock file, and comparing live listings with their pins."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from broker.registry.canonical import canonical_bytes, canonical_definition, digest
from broker.registry.pins import (
    LockFileError,
    Pins,
    PinStatus,
    compare,
    load_pins,
    pins_for,
    render_pins,
    save_pins,
)
from tests.unit.registry.conftest import Listing, tool

SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string", "maxLength": 4096}},
    "required": ["path"],
}


def test_canonical_form_ignores_key_order_meta_and_nulls() -> None:
    a = {"name": "read", "description": "Read.", "inputSchema": SCHEMA, "_meta": {"x": 1}, "icons": []}
    b = {
        "inputSchema": {
            "required": ["path"],
            "properties": {"path": {"maxLength": 4096, "type": "string"}},
            "type": "object",
        },
        "outputSchema": None,
        "description": "Read.",
        "name": "read",
    }
    assert canonical_bytes(canonical_definition("tools", a)) == canonical_bytes(
        canonical_definition("tools", b)
    )
    assert digest(canonical_definition("tools", a)) == digest(canonical_definition("tools", b))


def test_integral_floats_hash_like_integers() -> None:
    one = canonical_definition("tools", tool("t", schema={"type": "object", "maxProperties": 1}))
    other = canonical_definition("tools", tool("t", schema={"type": "object", "maxProperties": 1.0}))
    assert digest(one) == digest(other)


@pytest.mark.parametrize(
    "changed",
    [
        "Read a file\u0301.",  # a combining accent: NFC would fold it into the letter before
        "Read a file.\u200b",  # an invisible character
        "Re\u0430d a file.",  # a Cyrillic a
        "Read a file. ",  # one more space
    ],
)
def test_every_code_point_counts(changed: str) -> None:
    base = digest(canonical_definition("tools", tool("t", "Read a file.")))
    assert digest(canonical_definition("tools", tool("t", changed))) != base


def test_compare_classifies_every_item() -> None:
    pinned = pins_for(Listing(tools=[tool("same"), tool("changes"), tool("goes_away")]))
    pins = Pins({"fs": pinned})
    live = Listing(tools=[tool("same"), tool("changes", "Does another thing."), tool("is_new")])
    state = compare(pins, "fs", live)
    status = {key: item.status for (_, key), item in state.items.items()}
    assert status == {
        "same": PinStatus.PINNED,
        "changes": PinStatus.DRIFTED,
        "is_new": PinStatus.UNPINNED,
        "goes_away": PinStatus.MISSING,
    }
    assert state.items[("tools", "changes")].changes == ("description",)
    assert "changed since it was pinned (description)" in state.items[("tools", "changes")].reason()
    assert not state.clean


def test_compare_names_each_changed_field() -> None:
    pins = Pins(
        {"fs": pins_for(Listing(tools=[tool("t", schema=SCHEMA, annotations={"readOnlyHint": True})]))}
    )
    live = Listing(tools=[tool("t", schema={**SCHEMA, "required": []}, annotations={"readOnlyHint": False})])
    assert compare(pins, "fs", live).items[("tools", "t")].changes == ("inputSchema", "annotations")


def test_templates_and_prompts_are_pinned_by_their_keys() -> None:
    listing = Listing(
        resource_templates=[{"uriTemplate": "notes://note/{id}", "name": "note", "description": "A note"}],
        prompts=[{"name": "summarize", "description": "Summarise", "arguments": [{"name": "id"}]}],
    )
    pins = Pins({"notes": pins_for(listing)})
    assert compare(pins, "notes", listing).clean
    drifted = Listing(
        resource_templates=[{"uriTemplate": "notes://note/{id}", "name": "note", "description": "Any note"}],
        prompts=[
            {"name": "summarize", "description": "Summarise", "arguments": [{"name": "id", "required": True}]}
        ],
    )
    state = compare(pins, "notes", drifted)
    assert state.items[("resource_templates", "notes://note/{id}")].changes == ("description",)
    assert state.items[("prompts", "summarize")].changes == ("arguments",)


def test_lock_file_round_trip_is_deterministic(tmp_path: Path) -> None:
    listing = Listing(
        tools=[tool("b", "Line one.\nLine two."), tool("a", "Caf\u00e9 \u200b hidden", schema=SCHEMA)],
        prompts=[{"name": "p", "description": "A prompt"}],
    )
    pins = Pins({"fs": pins_for(listing), "alpha": pins_for(Listing(tools=[tool("x")]))})
    path = tmp_path / "policies" / "registry.lock.yaml"
    save_pins(pins, path)
    text = path.read_text(encoding="utf-8")
    assert text.isascii(), "non-ASCII must be escaped so reviewers see look-alikes"
    assert "\\u200B" in text or "\\u200b" in text
    assert "description: |-" in text or "description: |" in text  # multi-line descriptions stay readable
    loaded = load_pins(path)
    assert compare(loaded, "fs", listing).clean
    assert render_pins(loaded) == text
    assert text.index("alpha:") < text.index("fs:")


def test_a_missing_lock_file_pins_nothing(tmp_path: Path) -> None:
    pins = load_pins(tmp_path / "none.yaml")
    assert pins.count() == 0
    assert compare(pins, "fs", Listing(tools=[tool("t")])).items[("tools", "t")].status is PinStatus.UNPINNED


def test_a_definition_edited_by_hand_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lock.yaml"
    save_pins(Pins({"fs": pins_for(Listing(tools=[tool("t", "Reads.")]))}), path)
    data = yaml.safe_load(path.read_text())
    data["servers"]["fs"]["tools"]["t"]["definition"]["description"] = "Reads. <IMPORTANT>x</IMPORTANT>"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LockFileError) as raised:
        load_pins(path)
    assert "servers.fs.tools.t: the definition does not match its sha256" in str(raised.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("version: 2\nservers: {}\n", "not a registry lock file of version 1"),
        ("[1, 2]\n", "not a registry lock file"),
        ("version: 1\nservers: {fs: {widgets: {}}}\n", "expected only tools"),
        ("version: 1\nservers: {fs: {tools: {t: {sha256: x}}}}\n", "needs `sha256` and `definition`"),
        (
            "version: 1\nservers: {fs: {tools: {t: {sha256: x, definition: {name: u}}}}}\n",
            "the definition's name is not 't'",
        ),
        ("version: 1\nservers: [\n", "cannot read the registry lock file"),
    ],
)
def test_broken_lock_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "lock.yaml"
    path.write_text(content)
    with pytest.raises(LockFileError) as raised:
        load_pins(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_replacing_one_server_keeps_the_others() -> None:
    pins = Pins({"a": pins_for(Listing(tools=[tool("x")])), "b": pins_for(Listing(tools=[tool("y")]))})
    updated = pins.replacing("b", pins_for(Listing(tools=[tool("z")])))
    assert set(updated.server("a")["tools"]) == {"x"}
    assert set(updated.server("b")["tools"]) == {"z"}
    assert set(pins.server("b")["tools"]) == {"y"}
