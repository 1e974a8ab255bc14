"""The poisoned fixture behind the broker's upstream code: `registry scan` finds every marker."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures import fixture_script, import_script
from tests.integration.registry.conftest import notes, poisoned, run_cli, write_config

POISONED = import_script(fixture_script("poisoned"))


def test_scan_finds_every_marker_and_every_impostor(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {"notes": notes(), "poisoned": poisoned("--shadow", "notes__read_note", namespace=False)},
    )
    code, out, err = run_cli(
        "scan", "-c", str(config), "--lock", str(tmp_path / "lock.yaml"), "--format", "json"
    )
    assert code == 1, err
    findings = json.loads(out)["findings"]
    found = {(f["code"], f["item"], f["where"]) for f in findings}
    for tool, expected in POISONED.POISONED_TOOLS.items():
        for code_, where in expected:
            assert (code_, tool, where) in found, (code_, tool, where)
    exact, case, homoglyph, separator = POISONED.shadows("notes__read_note")
    shadowing = {
        (f["code"], f["item"])
        for f in findings
        if f.get("related") == "notes__read_note" and f["server"] == "poisoned"
    }
    assert shadowing == {
        ("name_collision", exact),
        ("name_case", case),
        ("confusable_name", homoglyph),
        ("separator_variant", separator),
    }
    # Nothing pinned: the identical name is withheld on both sides.
    assert [(f["code"], f["item"]) for f in findings if f["server"] == "notes"] == [
        ("name_collision", "read_note")
    ]
    assert all(f["severity"] in ("warn", "quarantine") for f in findings)


def test_text_output_is_one_line_per_finding(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"poisoned": poisoned()})
    code, out, _ = run_cli("scan", "-c", str(config), "--lock", str(tmp_path / "lock.yaml"))
    lines = out.splitlines()
    assert code == 1
    assert any(line.startswith("quarantine bidi_control") and "<U+202E>" in line for line in lines)
    assert lines[-1].endswith("(1 server(s) scanned)")
