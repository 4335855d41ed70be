"""The state directory: device identity and where each library lives."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from conduitd.errors import StorageError

DEVICE_FILE = "device.json"
LIBRARIES_DIR = "libraries"


def ensure_state_dir(state_dir: Path) -> Path:
    """Create the state dir with mode 0700 (the control socket lives there)."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
    except OSError as exc:
        raise StorageError(f"cannot create state dir {state_dir}: {exc}") from exc
    return state_dir


def device_id(state_dir: Path) -> uuid.UUID:
    """This device's id from device.json, created once."""
    path = state_dir / DEVICE_FILE
    try:
        return uuid.UUID(json.loads(path.read_text())["device_id"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{path} is unreadable or corrupt: {exc}") from exc
    new_id = uuid.uuid4()
    _write_atomically(path, json.dumps({"device_id": str(new_id)}) + "\n")
    return new_id


def library_directory(state_dir: Path) -> tuple[uuid.UUID, Path, bool]:
    """The state dir's library (uuid, directory, created?); one per state dir."""
    root = state_dir / LIBRARIES_DIR
    root.mkdir(mode=0o700, exist_ok=True)
    found = sorted(p for p in root.iterdir() if p.is_dir() and _is_uuid(p.name))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise StorageError(f"{root} holds several libraries ({names}); keep one")
    if found:
        return uuid.UUID(found[0].name), found[0], False
    library_id = uuid.uuid4()
    directory = root / str(library_id)
    directory.mkdir(mode=0o700)
    return library_id, directory, True


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
