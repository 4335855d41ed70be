"""The value types of config keys: how each is read from TOML and documented.

Each type is an `Annotated` alias carrying its parser (a pydantic
`PlainValidator` over the pure parsers in `units`, `schedule` and `paths`)
and a `TomlType` that the error messages and the generated reference read,
so the documentation cannot drift from the parsing.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

from pydantic import Field, PlainValidator, StrictStr, ValidationInfo

from conduitd.config.enums import ScheduleKind, SyncMode
from conduitd.config.paths import PATH_FORMAT, default_state_dir, expand_path, real_path
from conduitd.config.schedule import SCHEDULE_FORMAT, Schedule, parse_schedule
from conduitd.config.units import (
    DURATION_FORMAT,
    MIN_FREE_FORMAT,
    SIZE_FORMAT,
    MinFree,
    parse_duration,
    parse_min_free,
    parse_size,
)

NAME_PATTERN: Final = r"^[A-Za-z0-9._-]{1,64}$"
NAME_FORMAT: Final = "1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
CONFIG_DIR_CONTEXT: Final = "config_dir"
_SHOWN_CHARS: Final = 60


@dataclass(frozen=True, slots=True)
class TomlType:
    """How a key's value is written: a short type name and what is allowed."""

    name: str
    allowed: str
    empty_means: str | None = None

    def describe(self) -> str:
        """The type as the reference's table shows it, e.g. 'duration or "" (off)'."""
        if self.empty_means is None:
            return self.name
        return f'{self.name} or "" ({self.empty_means})'


@dataclass(frozen=True, slots=True)
class DefaultText:
    """How the reference shows a default that is computed at load time."""

    text: str


@dataclass(frozen=True, slots=True)
class OnlyFor:
    """Marks a key that has an effect only in some modes or with some schedules."""

    modes: tuple[SyncMode, ...] = ()
    schedules: tuple[ScheduleKind, ...] = ()

    def applies(self, mode: SyncMode, schedule: ScheduleKind) -> bool:
        """Whether the key has an effect for a conduit of this mode and schedule."""
        return (not self.modes or mode in self.modes) and (
            not self.schedules or schedule in self.schedules
        )

    def describe(self) -> str:
        """Where the key applies, e.g. "mode bidirectional", "schedule instant"."""
        parts = []
        if self.modes:
            parts.append("mode " + " or ".join(self.modes))
        if self.schedules:
            parts.append("schedule " + " or ".join(self.schedules))
        return " with ".join(parts)


def show_value(value: object) -> str:
    """A TOML value as an error message quotes it: 'text', 5, true, an array."""
    if isinstance(value, str):
        shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
        return repr(shown)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return f"the date/time {value.isoformat()}"
    return repr(value)


def _text(value: object, example: str) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a string such as {example}, got {show_value(value)}")


def _duration(value: object) -> float:
    return parse_duration(_text(value, '"30s"'))


def _optional_duration(value: object) -> float | None:
    text = _text(value, '"30d" or ""')
    return None if text == "" else parse_duration(text)


def _optional_size(value: object) -> int | None:
    text = _text(value, '"20G" or ""')
    return None if text == "" else parse_size(text)


def _min_free(value: object) -> MinFree:
    if isinstance(value, MinFree):
        return value
    return parse_min_free(_text(value, '"1G" or "1%"'))


def _schedule(value: object) -> Schedule:
    if isinstance(value, Schedule):
        return value
    return parse_schedule(_text(value, '"manual" or "interval:5m"'))


def _config_dir(info: ValidationInfo) -> Path:
    """The directory relative paths start from: the config file's, else the cwd."""
    context = info.context
    base = context.get(CONFIG_DIR_CONTEXT) if isinstance(context, dict) else None
    return base if isinstance(base, Path) else Path.cwd()


def _endpoint(value: object, info: ValidationInfo) -> Path:
    text = os.fspath(value) if isinstance(value, Path) else _text(value, '"~/Photos"')
    return real_path(text, _config_dir(info))


def _state_dir(value: object, info: ValidationInfo) -> Path:
    if value is None:
        return default_state_dir()
    text = os.fspath(value) if isinstance(value, Path) else _text(value, '"/var/lib/x"')
    return expand_path(text, _config_dir(info))


Duration = Annotated[
    float, PlainValidator(_duration), TomlType("duration", DURATION_FORMAT)
]
OptionalDuration = Annotated[
    float | None,
    PlainValidator(_optional_duration),
    TomlType("duration", DURATION_FORMAT, empty_means="off"),
]
OptionalSize = Annotated[
    int | None,
    PlainValidator(_optional_size),
    TomlType("size", SIZE_FORMAT, empty_means="no cap"),
]
MinFreeValue = Annotated[
    MinFree, PlainValidator(_min_free), TomlType("size or percentage", MIN_FREE_FORMAT)
]
ScheduleValue = Annotated[
    Schedule, PlainValidator(_schedule), TomlType("schedule", SCHEDULE_FORMAT)
]
EndpointPath = Annotated[Path, PlainValidator(_endpoint), TomlType("path", PATH_FORMAT)]
StateDirPath = Annotated[
    Path, PlainValidator(_state_dir), TomlType("path", PATH_FORMAT)
]
ConduitName = Annotated[
    StrictStr, Field(pattern=NAME_PATTERN), TomlType("name", NAME_FORMAT)
]
Strings = tuple[StrictStr, ...]
