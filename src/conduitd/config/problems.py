"""Pydantic's validation errors, told as short problems a user can act on."""

from __future__ import annotations

import difflib
import enum
import json
import re
from collections.abc import Sequence
from typing import Final

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from conduitd.config.enums import (
    ConflictStrategy,
    DeleteStrategy,
    LogFormat,
    LogLevel,
    SyncMode,
)
from conduitd.config.fields import TomlType, show_value
from conduitd.errors import ConfigProblem

KeyPath = tuple[str | int, ...]

_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_NOUNS: Final[dict[type[enum.Enum], str]] = {
    SyncMode: "mode",
    ConflictStrategy: "conflict strategy",
    DeleteStrategy: "delete strategy",
    LogLevel: "log level",
    LogFormat: "log format",
}
_RANGE_ERRORS: Final = frozenset(
    {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}
)
_TYPE_NAMES: Final = {
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "an array",
    "list_type": "an array",
    "iterable_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
}


def key_path(loc: Sequence[str | int]) -> str:
    """A 0-based key path: ('conduit', 1, 'schedule') -> 'conduit[1].schedule'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        # Keys TOML would need quoted are shown quoted, as in the file.
        name = part if _BARE_KEY_RE.fullmatch(part) else json.dumps(part)
        out = f"{out}.{name}" if out else name
    return out


def problems_from_error(
    error: ValidationError, model: type[BaseModel], prefix: KeyPath, file: str
) -> list[ConfigProblem]:
    """One problem per pydantic error of validating `model` at key path `prefix`."""
    return [
        ConfigProblem(
            file, key_path((*prefix, *details["loc"])), _message(details, model)
        )
        for details in error.errors(include_url=False)
    ]


def toml_keys(model: type[BaseModel]) -> list[str]:
    """The TOML keys a model accepts, in declaration order."""
    return [info.alias or name for name, info in model.model_fields.items()]


def field_for_key(model: type[BaseModel], key: str) -> FieldInfo | None:
    """The field a TOML key sets, if any."""
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def _message(details: ErrorDetails, model: type[BaseModel]) -> str:
    kind = details["type"]
    loc = details["loc"]
    shown = show_value(details["input"])
    field = field_for_key(model, loc[0]) if loc and isinstance(loc[0], str) else None
    if kind == "missing":
        return "missing; this key is required"
    if kind == "extra_forbidden":
        return unknown_key_message(str(loc[-1]), toml_keys(model))
    if kind == "value_error":
        return str(details.get("ctx", {}).get("error", details["msg"]))
    if kind == "enum" and field is not None:
        return _not_a_member(shown, field)
    if kind == "string_pattern_mismatch" and field is not None:
        toml_type = toml_type_of(field)
        allowed = toml_type.allowed if toml_type else details["msg"]
        return f"{shown} is not a valid {loc[-1]}; allowed: {allowed}"
    if kind in _RANGE_ERRORS:
        return f"{shown} is out of range; allowed: {range_text(field)}"
    if kind.startswith("int_"):
        bounds = range_text(field)
        within = "" if bounds == "any" else f" ({bounds})"
        return f"must be a whole number{within}, got {shown}"
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}, got {shown}"
    return details["msg"]


def unknown_key_message(key: str, allowed: Sequence[str]) -> str:
    """'unknown key (did you mean ...?); allowed keys: ...'."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; allowed keys: {', '.join(allowed)}"


def _not_a_member(shown: str, field: FieldInfo) -> str:
    members = field.annotation
    if not (isinstance(members, type) and issubclass(members, enum.Enum)):
        return f"{shown} is not allowed"
    noun = _NOUNS.get(members, "allowed value")
    allowed = ", ".join(str(member.value) for member in members)
    return f"{shown} is not a {noun}; allowed: {allowed}"


def range_text(field: FieldInfo | None) -> str:
    """'1..64', '0 or more', 'at most 100', or 'any' from a field's bounds."""
    metadata = field.metadata if field is not None else []
    low = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    if low is not None and high is not None:
        return f"{low}..{high}"
    if low is not None:
        return f"{low} or more"
    if high is not None:
        return f"at most {high}"
    return "any"


def toml_type_of(field: FieldInfo) -> TomlType | None:
    """The TomlType a field's annotation carries, if any."""
    return next((m for m in field.metadata if isinstance(m, TomlType)), None)
