"""The free-space guard, pure: bytes per destination against free space and min_free."""

from __future__ import annotations

from conduitd.config import MinFree
from conduitd.storage.models import EntryKind, EntryRow
from conduitd.sync.operations import CopyOp, DirectionalOps, SyncOperations
from conduitd.sync.space import FsSpace, bytes_to_write, shortage

MIB = 1 << 20


def entry(path: bytes, size: int, kind: EntryKind = EntryKind.FILE) -> EntryRow:
    return EntryRow(
        relative_path=path,
        kind=kind,
        size=size,
        mtime_ns=0,
        ctime_ns=0,
        inode=0,
        mode=0o100644,
        content_id="0" * 64,
        symlink_target=None,
    )


def test_bytes_to_write_counts_regular_files_per_destination() -> None:
    ops = SyncOperations(
        source_to_target=DirectionalOps.of(
            [
                CopyOp(b"a", entry(b"a", 5 * MIB), None),
                CopyOp(b"d", entry(b"d", 4096, EntryKind.DIRECTORY), None),
            ]
        ),
        target_to_source=DirectionalOps.of([CopyOp(b"b", entry(b"b", MIB), None)]),
    )
    assert bytes_to_write(ops) == {"source": MIB, "target": 5 * MIB}


def test_a_run_that_fits_with_min_free_left_is_allowed() -> None:
    space = FsSpace(total_bytes=100 * MIB, free_bytes=10 * MIB)
    assert shortage("/t", 5 * MIB, space, MinFree(size_bytes=5 * MIB)) is None
    assert shortage("/t", 0, FsSpace(100, 0), MinFree(size_bytes=1)) is None


def test_a_run_that_would_eat_into_min_free_is_refused() -> None:
    space = FsSpace(total_bytes=100 * MIB, free_bytes=10 * MIB)
    reason = shortage("/t", 6 * MIB, space, MinFree(size_bytes=5 * MIB))
    assert reason is not None
    assert reason.startswith("not enough free space on /t")
    # a percentage of the filesystem: 5 % of 100 MiB
    assert shortage("/t", 6 * MIB, space, MinFree(percent=5.0)) is not None
    assert shortage("/t", 5 * MIB, space, MinFree(percent=5.0)) is None
