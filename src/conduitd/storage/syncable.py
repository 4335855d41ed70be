"""The Syncable protocol (seed LSYNC-007) and its deterministic sync-safe JSON.

A syncable record names its `model_type`, its `record_uuid`, a `version`
counter bumped by every write of a synced field, the fields it never syncs
(`SYNC_EXCLUDED`: local ids, this device's absolute paths, runtime state) and
`sync_fields()`, the rest as JSON values. `to_sync_json` renders them with
sorted keys and no whitespace, so equal records give equal bytes.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import os
import uuid
from collections.abc import Mapping
from typing import ClassVar, Protocol, TypeAlias, runtime_checkable

from conduitd.errors import StorageError

JsonValue: TypeAlias = (
    str | int | bool | list["JsonValue"] | dict[str, "JsonValue"] | None
)


class ChangeType(enum.StrEnum):
    """What a sync log entry records (seed LSYNC-008 `change_type`)."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    BULK_INSERT = "bulk_insert"


@runtime_checkable
class Syncable(Protocol):
    """A record that is written to the sync log and replayed on other devices."""

    model_type: ClassVar[str]
    SYNC_EXCLUDED: ClassVar[frozenset[str]]

    @property
    def record_uuid(self) -> uuid.UUID: ...

    @property
    def version(self) -> int: ...

    def sync_fields(self) -> dict[str, JsonValue]: ...

    def to_sync_json(self) -> str: ...


def canonical_json(value: Mapping[str, object]) -> str:
    """Deterministic JSON: sorted keys, no whitespace, ASCII, no NaN.

    ASCII because a path decoded with surrogateescape holds lone surrogates,
    which only an escape (`\\udcff`) carries into SQLite's UTF-8 text.

    UUIDs, enums and bytes (as paths) are converted; anything else that JSON
    cannot hold raises StorageError.
    """
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"value cannot be logged as JSON: {exc}") from exc


def _json_default(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return os.fsdecode(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# One encoder for every call: `json.dumps` with options builds a new one each
# time, which is a third of the cost of a small record (issue 3 benchmark).
_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=True,
    allow_nan=False,
    default=_json_default,
)


def path_fields(key: str, raw: bytes) -> dict[str, JsonValue]:
    """A byte path as DESIGN.md "Encodings" wants it in JSON.

    `{key: text}` decoded with surrogateescape, plus `{key}_b64` (standard
    base64 of the bytes) when they are not valid UTF-8.
    """
    fields: dict[str, JsonValue] = {key: os.fsdecode(raw)}
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        fields[f"{key}_b64"] = base64.b64encode(raw).decode("ascii")
    return fields


def path_from_fields(key: str, data: Mapping[str, object]) -> bytes:
    """The bytes `path_fields` encoded (the `_b64` form wins when present)."""
    encoded = data.get(f"{key}_b64")
    try:
        if isinstance(encoded, str):
            return base64.b64decode(encoded, validate=True)
        text = data[key]
    except (KeyError, binascii.Error) as exc:
        raise StorageError(f"sync data has no valid {key!r}: {exc}") from exc
    if not isinstance(text, str):
        raise StorageError(f"sync data {key!r} is not a string")
    return os.fsencode(text)


def relative_path_from_fields(key: str, data: Mapping[str, object]) -> bytes:
    """A root-relative path from sync data; `..`, absolute or NUL is refused.

    A replayed log is input from another device: its paths must never name
    anything outside a root (issue 8).
    """
    path = path_from_fields(key, data)
    parts = path.split(b"/")
    if (
        b"\0" in path
        or path.startswith(b"/")
        or any(part in (b"", b".", b"..") for part in parts)
    ):
        raise StorageError(f"sync data {key!r} is not a safe relative path: {path!r}")
    return path


def uuid_text(value: uuid.UUID | None, what: str) -> str:
    """A record's reference to another record, which must be known."""
    if value is None:
        raise StorageError(f"{what} is unknown; read the record through its repository")
    return str(value)
