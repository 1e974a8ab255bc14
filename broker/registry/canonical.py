"""The canonical form of a definition (tool, resource template, prompt) and its sha256.

A pin must change exactly when what the model is shown changes, and never otherwise:

- **Fields**: only what describes the item to a model or a client (per kind below). `_meta`,
  `icons` and `execution` are left out: they are transport or display details that servers
  change between releases without changing what the tool does.
- **Key order**: sorted at every level; no whitespace (`separators=(",", ":")`), UTF-8.
- **Numbers**: an integral float is written as an integer (`1.0` → `1`), as JSON does not tell
  them apart and upstream JSON encoders differ.
- **Unicode**: *not* normalised. NFC/NFKC would make a description that switched to decomposed
  or compatibility characters (or to homoglyphs NFKC folds) hash the same, yet the model reads
  different code points. Every code point counts; the readable copy in the lock file escapes
  non-ASCII so a reviewer sees it too.
- Absent and `null` are the same (an upstream that starts sending `"outputSchema": null` has
  not changed its tool).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Final

KINDS: Final = ("tools", "resource_templates", "prompts")
"""The kinds of item that are pinned, as named in the lock file."""

KIND_SINGULAR: Final[Mapping[str, str]] = {
    "tools": "tool",
    "resource_templates": "resource_template",
    "prompts": "prompt",
}

FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "tools": ("name", "title", "description", "inputSchema", "outputSchema", "annotations"),
    "resource_templates": ("uriTemplate", "name", "title", "description", "mimeType", "annotations"),
    "prompts": ("name", "title", "description", "arguments"),
}

KEY_FIELD: Final[Mapping[str, str]] = {
    "tools": "name",
    "resource_templates": "uriTemplate",
    "prompts": "name",
}
"""The field that identifies an item of each kind within one server."""


def canonical_definition(kind: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """The pinned fields of `item`, numbers normalised; key order does not matter here (see `digest`)."""
    return {key: _numbers(item[key]) for key in FIELDS[kind] if item.get(key) is not None}


def canonical_bytes(definition: Mapping[str, Any]) -> bytes:
    return json.dumps(
        definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest(definition: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of the canonical bytes of an already canonical definition."""
    return "sha256:" + hashlib.sha256(canonical_bytes(definition)).hexdigest()


def item_key(kind: str, item: Mapping[str, Any]) -> str | None:
    value = item.get(KEY_FIELD[kind])
    return value if isinstance(value, str) and value else None


def _numbers(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_numbers(v) for v in value]
    return value
