"""Stage guard-in: a call's arguments checked against the tool's `inputSchema`, before the decision.

Order of checks: the arguments are an object; the payload caps (nesting depth and length
of any string or key, walked without recursion; then the size of the JSON); then the schema
(JSON Schema 2020-12 via `jsonschema`, `format` as an annotation, as the draft says). The first problem is the
error: `InvalidArguments` names the field as a JSON pointer and the rule it broke
(`/path: maxLength: 'xxxx…' is too long`), so an agent can fix its call.

Validators are compiled once per schema digest and held in a bounded cache on the
`ArgumentValidator` (a `SchemaHandle` per distinct schema); a tool that changes its schema
gets a new handle, never a stale one.

An upstream schema that is not a valid 2020-12 schema (or holds a `$ref` that cannot be
resolved — remote references are never fetched) cannot vouch for any argument. With
`invalid_schema: reject` (default) every call to that tool is refused with
`InvalidToolSchema` (fail closed: the broker would otherwise forward arguments it cannot
check); with `skip` the caps still apply and the schema is ignored, with a warning logged
once per schema.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing.exceptions import Unresolvable

from broker.registry.canonical import digest
from broker.registry.errors import InvalidArguments, InvalidToolSchema
from broker.registry.findings import pointer, visible
from broker.registry.settings import ValidationSettings

log = logging.getLogger("broker.registry")

CACHE_SIZE: Final = 4096
EMPTY_OBJECT: Final[dict[str, Any]] = {"type": "object"}


@dataclass(frozen=True, slots=True)
class SchemaHandle:
    """One compiled input schema; `problem` says why it cannot be used (None when it can)."""

    sha256: str
    validator: Any  # Draft202012Validator; jsonschema's stubs type it loosely
    problem: str | None = None


class ArgumentValidator:
    def __init__(self, settings: ValidationSettings | None = None) -> None:
        self.settings = settings or ValidationSettings()
        self._handles: collections.OrderedDict[str, SchemaHandle] = collections.OrderedDict()

    def handle(self, input_schema: Any) -> SchemaHandle:
        """The compiled validator of `input_schema` (compiled on first sight of its digest)."""
        schema = input_schema if isinstance(input_schema, dict) else EMPTY_OBJECT
        sha = digest(schema)
        found = self._handles.get(sha)
        if found is not None:
            self._handles.move_to_end(sha)
            return found
        made = _compile(sha, schema, input_schema)
        if made.problem is not None and self.settings.invalid_schema == "skip":
            log.warning("registry: ignoring an invalid input schema (%s): %s", sha, made.problem)
        self._handles[sha] = made
        if len(self._handles) > CACHE_SIZE:
            self._handles.popitem(last=False)
        return made

    def validate(self, tool_def: Mapping[str, Any], arguments: Any, *, tool: str | None = None) -> None:
        """Raise InvalidArguments / InvalidToolSchema unless `arguments` fit `tool_def["inputSchema"]`."""
        self.check(
            self.handle(tool_def.get("inputSchema")), arguments, tool=tool or str(tool_def.get("name"))
        )

    def check(self, handle: SchemaHandle, arguments: Any, *, tool: str) -> None:
        """Validate with an already resolved handle (the hot path: no hashing)."""
        if not self.settings.enabled:
            return
        args: Any = {} if arguments is None else arguments
        if not isinstance(args, dict):
            raise InvalidArguments(f"{tool}: the arguments must be an object", field="", rule="type")
        self._caps(args, tool)
        if handle.problem is not None:
            if self.settings.invalid_schema == "skip":
                return
            raise InvalidToolSchema(
                f"{tool}: the upstream's inputSchema is not valid ({handle.problem}); "
                "the broker refuses calls it cannot check",
                tool=tool,
            )
        validator = handle.validator
        try:
            if validator.is_valid(args):
                return
            error = best_match(validator.iter_errors(args))
        except Unresolvable as exc:
            raise InvalidToolSchema(
                f"{tool}: the upstream's inputSchema has a reference that cannot be resolved ({exc})",
                tool=tool,
            ) from None
        raise _invalid(tool, error)

    def _caps(self, args: dict[str, Any], tool: str) -> None:
        settings = self.settings
        _walk(args, (), settings.max_depth, settings.max_string_length, tool)
        size = len(orjson.dumps(args))
        if size > settings.max_payload_bytes:
            raise InvalidArguments(
                f"{tool}: the arguments are {size} bytes of JSON, "
                f"more than the {settings.max_payload_bytes} allowed",
                field="",
                rule="max_payload_bytes",
            )


def _walk(value: Any, path: tuple[str | int, ...], max_depth: int, max_string: int, tool: str) -> None:
    """Depth and string-length caps, iteratively (a deep payload must not hit Python's recursion limit)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if len(where) > max_depth:
            raise InvalidArguments(
                f"{tool}: argument {pointer(*where[:max_depth])} is nested deeper than {max_depth} levels",
                field=pointer(*where[:max_depth]),
                rule="max_depth",
            )
        if isinstance(item, str):
            if len(item) > max_string:
                raise InvalidArguments(
                    f"{tool}: argument {pointer(*where) or '/'} is {len(item)} characters long, "
                    f"more than the {max_string} allowed",
                    field=pointer(*where),
                    rule="max_string_length",
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                if len(key) > max_string:
                    raise InvalidArguments(
                        f"{tool}: a key under {pointer(*where) or '/'} is longer "
                        f"than {max_string} characters",
                        field=pointer(*where),
                        rule="max_string_length",
                    )
                stack.append((child, (*where, key)))
        elif isinstance(item, list):
            stack.extend((child, (*where, index)) for index, child in enumerate(item))


def _compile(sha: str, schema: dict[str, Any], original: Any) -> SchemaHandle:
    if original is not None and not isinstance(original, dict):
        return SchemaHandle(sha, None, "inputSchema is not an object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = pointer(*exc.path) or "/"
        return SchemaHandle(sha, None, f"at {where}: {exc.message}")
    return SchemaHandle(sha, Draft202012Validator(schema))


def _invalid(tool: str, error: ValidationError | None) -> InvalidArguments:
    if error is None:  # pragma: no cover - is_valid said no, so there is an error
        return InvalidArguments(
            f"{tool}: the arguments do not match the tool's inputSchema", field="", rule=""
        )
    field = pointer(*error.absolute_path)
    rule = str(error.validator)
    message = visible(error.message, 200)
    return InvalidArguments(
        f"{tool}: argument {field or '/'} is invalid ({rule}): {message}", field=field, rule=rule
    )
