"""The free-space guard (issue 9): never start a copy the disk cannot hold.

Before a generation's copies, each destination filesystem must have room for
the bytes the run will write there plus the conduit's `min_free` (a size, or
a share of that filesystem). Old versions of overwritten files go to trash by
hard link, so an overwrite frees nothing: every copied byte counts. Roots on
one filesystem share its free space. `shortage` is pure; `check_free_space`
asks the filesystems (through an injectable `statvfs`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from conduitd.config import ConduitConfig, MinFree
from conduitd.storage.models import EntryKind
from conduitd.sync.operations import CopyOp, Direction, SyncOperations

StatVfs = Callable[[Path], os.statvfs_result]


@dataclass(frozen=True, slots=True)
class FsSpace:
    """A filesystem's size and the space an unprivileged writer may still use."""

    total_bytes: int
    free_bytes: int

    @classmethod
    def of(cls, result: os.statvfs_result) -> FsSpace:
        return cls(
            total_bytes=result.f_blocks * result.f_frsize,
            free_bytes=result.f_bavail * result.f_frsize,
        )


def bytes_to_write(operations: SyncOperations) -> dict[str, int]:
    """Bytes the run writes per destination side ("source"/"target")."""
    per_side = {"source": 0, "target": 0}

    def add(side: str, ops: tuple[CopyOp, ...]) -> None:
        per_side[side] += sum(
            op.source.size for op in ops if op.source.kind is EntryKind.FILE
        )

    for direction, ops in operations.directions():
        add(
            "target" if direction is Direction.SOURCE_TO_TARGET else "source",
            ops.to_copy,
        )
    add("source", operations.within_source)
    add("target", operations.within_target)
    return per_side


def shortage(
    where: str, needed_bytes: int, space: FsSpace, min_free: MinFree
) -> str | None:
    """Why `needed_bytes` cannot be written on `where`, or None when they fit."""
    if needed_bytes <= 0:
        return None
    keep = min_free.required_bytes(space.total_bytes)
    if space.free_bytes >= needed_bytes + keep:
        return None
    return (
        f"not enough free space on {where}: the run writes {_human(needed_bytes)}"
        f" and min_free keeps {_human(keep)}, but {_human(space.free_bytes)}"
        " are free"
    )


def _human(size_bytes: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size_bytes >= factor:
            return f"{size_bytes / factor:.1f} {unit} ({size_bytes} bytes)"
    return f"{size_bytes} bytes"


def _default_statvfs(path: Path) -> os.statvfs_result:
    return os.statvfs(path)


async def check_free_space(
    conduit: ConduitConfig,
    operations: SyncOperations,
    roots: Mapping[str, Path],
    statvfs: StatVfs | None = None,
) -> str | None:
    """The refusal reason when a destination filesystem is too full, else None.

    Args:
        roots: side ("source"/"target") -> that endpoint's root directory.
        statvfs: `os.statvfs` unless a test injects another.
    """
    ask = statvfs or _default_statvfs
    needed = bytes_to_write(operations)
    wanted = {side: n for side, n in needed.items() if n > 0}
    if not wanted:
        return None

    def measure() -> list[tuple[str, int, FsSpace]]:
        by_device: dict[int, tuple[str, int, FsSpace]] = {}
        for side, count in wanted.items():
            root = roots[side]
            device = os.stat(root).st_dev
            where, total, space = by_device.get(
                device, (str(root), 0, FsSpace.of(ask(root)))
            )
            by_device[device] = (where, total + count, space)
        return list(by_device.values())

    for where, count, space in await anyio.to_thread.run_sync(measure):
        reason = shortage(where, count, space, conduit.min_free)
        if reason is not None:
            return reason
    return None
