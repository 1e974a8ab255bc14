"""The JSON Schemas the policy tools check files against, and their errors as file:line problems."""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from broker.policytools.common import Problem, YamlDocument

SCHEMAS = Path(__file__).parents[1] / "schemas"  # broker/schemas: package data (docs in config.py)
AUTHZ_REQUEST = SCHEMAS / "authz-request.schema.json"
POLICY_TEST = SCHEMAS / "policy-test.schema.json"


@functools.cache
def _schema(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


@functools.cache
def _registry() -> Registry[Any]:
    resources = [
        (_schema(p)["$id"], Resource.from_contents(_schema(p))) for p in (AUTHZ_REQUEST, POLICY_TEST)
    ]
    return Registry().with_resources(resources)


def _validator(ref: str) -> Draft202012Validator:
    """A validator for `ref` (an $id, optionally with a #fragment) with both schemas resolvable."""
    return Draft202012Validator({"$ref": ref}, registry=_registry())


def case_file_validator() -> Draft202012Validator:
    return _validator(_schema(POLICY_TEST)["$id"])


def catalog_validator() -> Draft202012Validator:
    return _validator(_schema(POLICY_TEST)["$id"] + "#/$defs/catalog")


def request_validator() -> Draft202012Validator:
    return _validator(_schema(AUTHZ_REQUEST)["$id"])


def dotted(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def schema_problems(
    validator: Draft202012Validator, data: Any, doc: YamlDocument, base: Sequence[str | int] = ()
) -> list[tuple[tuple[str | int, ...], Problem]]:
    """Every schema error in `data` (found at `base` in `doc`), as (path, problem), in line order."""
    found: list[tuple[tuple[str | int, ...], Problem]] = []
    for error in validator.iter_errors(data):
        path = (*base, *error.absolute_path)
        for sub_path, message in _explain(error, path):
            found.append((sub_path, doc.problem(sub_path, f"{dotted(sub_path)}: {message}")))
    found.sort(key=lambda item: (item[1].line or 0, item[1].message))
    return found


def _explain(error: Any, path: tuple[str | int, ...]) -> Iterable[tuple[tuple[str | int, ...], str]]:
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        for key in sorted(k for k in instance if k not in allowed):
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            yield (*path, key), f"unknown key {key!r}{hint}"
        return
    if error.validator == "required" and isinstance(instance, dict):
        for key in error.validator_value:
            if key not in instance:
                yield path, f"missing required key {key!r}"
        return
    if error.validator == "enum":
        options = [str(o) for o in error.validator_value]
        close = difflib.get_close_matches(str(instance), options, n=1) if isinstance(instance, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        yield path, f"{_show(instance)} is not one of {', '.join(options)}{hint}"
        return
    if error.validator == "type":
        expected = error.validator_value
        names = expected if isinstance(expected, list) else [expected]
        yield path, f"must be {' or '.join(names)}, got {_show(instance)}"
        return
    yield path, str(error.message)
