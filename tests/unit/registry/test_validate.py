"""Argument validation against the tool's inputSchema, with payload caps."""

from __future__ import annotations

from typing import Any

import pytest

from broker.registry.errors import InvalidArguments, InvalidToolSchema
from broker.registry.settings import ValidationSettings
from broker.registry.validate import ArgumentValidator

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "path": {"type": "string", "maxLength": 16},
        "mode": {"enum": ["read", "write"]},
        "options": {
            "type": "object",
            "properties": {"depth": {"type": "integer", "minimum": 0}},
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
    },
    "required": ["path"],
    "$defs": {"tag": {"type": "string", "pattern": "^[a-z]+$"}},
}
TOOL = {"name": "fs__read", "inputSchema": SCHEMA}


def rejected(validator: ArgumentValidator, arguments: Any, tool: dict[str, Any] = TOOL) -> InvalidArguments:
    with pytest.raises(InvalidArguments) as raised:
        validator.validate(tool, arguments)
    return raised.value


def test_valid_arguments_pass() -> None:
    validator = ArgumentValidator()
    validator.validate(TOOL, {"path": "a.txt", "mode": "read", "options": {"depth": 2}, "tags": ["x"]})
    validator.validate({"name": "t", "inputSchema": {"type": "object"}}, None)  # no arguments: {}


@pytest.mark.parametrize(
    ("arguments", "field", "rule"),
    [
        ({}, "", "required"),
        ({"path": 3}, "/path", "type"),
        ({"path": "x" * 17}, "/path", "maxLength"),
        ({"path": "a", "mode": "delete"}, "/mode", "enum"),
        ({"path": "a", "options": {"depth": -1}}, "/options/depth", "minimum"),
        ({"path": "a", "options": {"other": 1}}, "/options", "additionalProperties"),
        ({"path": "a", "tags": ["ok", "NO"]}, "/tags/1", "pattern"),
    ],
)
def test_errors_name_the_field_and_the_rule(arguments: dict[str, Any], field: str, rule: str) -> None:
    error = rejected(ArgumentValidator(), arguments)
    assert (error.data["field"], error.data["rule"]) == (field, rule)
    assert error.message.startswith(f"fs__read: argument {field or '/'} is invalid ({rule})")
    assert error.to_error()["code"] == -32602
    assert error.to_error()["data"]["reason"] == "invalid_arguments"


def test_arguments_must_be_an_object() -> None:
    error = rejected(ArgumentValidator(), ["path"])
    assert error.data["rule"] == "type"


@pytest.mark.parametrize(
    ("settings", "arguments", "field", "rule"),
    [
        (ValidationSettings(max_payload_bytes=64), {"path": "a" * 100}, "", "max_payload_bytes"),
        (ValidationSettings(max_string_length=8), {"path": "a" * 9}, "/path", "max_string_length"),
        (ValidationSettings(max_string_length=8), {"path": "a", "k" * 9: 1}, "", "max_string_length"),
        (ValidationSettings(max_depth=3), {"path": "a", "x": {"y": {"z": {"w": 1}}}}, "/x/y/z", "max_depth"),
    ],
)
def test_caps_come_before_the_schema(
    settings: ValidationSettings, arguments: Any, field: str, rule: str
) -> None:
    error = rejected(ArgumentValidator(settings), arguments)
    assert (error.data["field"], error.data["rule"]) == (field, rule)


def test_a_very_deep_payload_does_not_exhaust_the_stack() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    error = rejected(ArgumentValidator(), {"path": "a", "deep": deep})
    assert error.data["rule"] == "max_depth"


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": {"a": {"type": "strnig"}}}, "at /properties/a/type"),
        ({"type": "object", "minProperties": -1}, "at /minProperties"),
        ("not a schema", "inputSchema is not an object"),
    ],
)
def test_an_invalid_upstream_schema_refuses_every_call(schema: Any, problem: str) -> None:
    validator = ArgumentValidator()
    with pytest.raises(InvalidToolSchema) as raised:
        validator.validate({"name": "bad", "inputSchema": schema}, {"a": "x"})
    assert problem in raised.value.message
    assert raised.value.to_error()["data"]["reason"] == "invalid_tool_schema"


def test_an_unresolvable_reference_refuses_the_call() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "https://example.invalid/schema.json"}}}
    with pytest.raises(InvalidToolSchema, match="cannot be resolved"):
        ArgumentValidator().validate({"name": "t", "inputSchema": schema}, {"a": 1})


def test_skip_mode_keeps_the_caps_but_ignores_a_broken_schema() -> None:
    validator = ArgumentValidator(ValidationSettings(invalid_schema="skip", max_string_length=4))
    tool = {"name": "bad", "inputSchema": {"type": "object", "properties": {"a": {"type": "strnig"}}}}
    validator.validate(tool, {"a": 1})
    with pytest.raises(InvalidArguments):
        validator.validate(tool, {"a": "xxxxx"})


def test_validators_are_compiled_once_per_schema() -> None:
    validator = ArgumentValidator()
    first = validator.handle(SCHEMA)
    assert validator.handle(dict(reversed(list(SCHEMA.items())))) is first
    changed = validator.handle({**SCHEMA, "required": []})
    assert changed is not first and changed.sha256 != first.sha256


def test_disabled_validation_checks_nothing() -> None:
    validator = ArgumentValidator(ValidationSettings(enabled=False))
    validator.validate(TOOL, {"path": 3})
