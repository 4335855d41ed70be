"""Encodings at the edges: byte paths in JSON (DESIGN.md Data, Encodings)."""

from __future__ import annotations

import base64
import os


def path_text(path: bytes) -> str:
    """A byte path as text, undecodable bytes kept by surrogateescape."""
    return os.fsdecode(path)


def path_json(path: bytes, key: str = "path") -> dict[str, str]:
    """`{"path": ...}` plus `path_b64` when the name is not valid UTF-8."""
    document = {key: path.decode("utf-8", "surrogateescape")}
    try:
        path.decode("utf-8")
    except UnicodeDecodeError:
        document[f"{key}_b64"] = base64.b64encode(path).decode("ascii")
    return document


def path_from_user(text: str) -> bytes:
    """A relative path typed by a user (or sent over the socket) as bytes.

    Raises:
        UsageError: a `..` or `.` component or a NUL byte (issue 8).
    """
    path = os.fsencode(text.strip("/"))
    if b"\0" in path or any(part in (b".", b"..") for part in path.split(b"/")):
        from conduitd.errors import UsageError

        raise UsageError(f"{text!r}: a path inside the root, without '..' or NUL")
    return path
