"""From resolved operations to the jobs' generic job lists, and the dry-run plan."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from conduitd.jobs.outcomes import CopyJob, DeleteJob, Job, MetadataJob, MkdirJob
from conduitd.jobs.rootfs import RootFs
from conduitd.jobs.trash import TrashReason
from conduitd.storage.models import EntryKind
from conduitd.sync.conflicts import Settlement
from conduitd.sync.operations import CopyOp, Direction, Side, SyncOperations
from conduitd.wire import path_json


@dataclass(frozen=True, slots=True)
class Roots:
    """The two endpoint roots of a run, opened for dir_fd-relative work."""

    source: RootFs
    target: RootFs

    def side_of(self, root: RootFs) -> Side:
        return Side.SOURCE if root is self.source else Side.TARGET

    def ends(self, direction: Direction) -> tuple[RootFs, RootFs]:
        if direction is Direction.SOURCE_TO_TARGET:
            return self.source, self.target
        return self.target, self.source

    def of(self, side: Side) -> RootFs:
        return self.source if side is Side.SOURCE else self.target


def _copy_job(
    op: CopyOp, src: RootFs, dst: RootFs, reason: TrashReason
) -> CopyJob | MkdirJob:
    if op.source.kind is EntryKind.DIRECTORY:
        return MkdirJob(dst, op.dest_path, op.source, op.target, reason)
    return CopyJob(
        src, op.relative_path, dst, op.dest_path, op.source, op.target, reason
    )


def build_jobs(
    operations: SyncOperations, roots: Roots, settlements: Iterable[Settlement] = ()
) -> list[Job]:
    """Every job of a generation; the runner orders them (copies before deletes).

    A copy that settles a conflict labels the version it overwrites `conflict`
    in the trash; every other overwrite is `overwritten`.
    """
    settled = {
        (direction, op.dest_path)
        for s in settlements
        for direction, ops in (
            (Direction.SOURCE_TO_TARGET, s.source_to_target),
            (Direction.TARGET_TO_SOURCE, s.target_to_source),
        )
        for op in ops
    }
    jobs: list[Job] = []
    for side, within in (
        (Side.SOURCE, operations.within_source),
        (Side.TARGET, operations.within_target),
    ):
        root = roots.of(side)
        jobs.extend(_copy_job(op, root, root, TrashReason.CONFLICT) for op in within)
    for direction, ops in operations.directions():
        src, dst = roots.ends(direction)
        for op in ops.to_copy:
            reason = (
                TrashReason.CONFLICT
                if (direction, op.dest_path) in settled
                else TrashReason.OVERWRITTEN
            )
            jobs.append(_copy_job(op, src, dst, reason))
        jobs.extend(
            MetadataJob(dst, op.relative_path, op.source, op.target)
            for op in ops.to_update
        )
        jobs.extend(DeleteJob(dst, op.relative_path, op.target) for op in ops.to_delete)
    return jobs


def written_paths(jobs: Iterable[Job], roots: Roots) -> dict[Side, set[bytes]]:
    """Per root, the relative paths the jobs may create, replace or remove."""
    written: dict[Side, set[bytes]] = {Side.SOURCE: set(), Side.TARGET: set()}
    for job in jobs:
        if isinstance(job, CopyJob):
            written[roots.side_of(job.dst_root)].add(job.dest_rel)
        elif isinstance(job, DeleteJob):
            written[roots.side_of(job.root)].add(job.rel)
        else:
            written[roots.side_of(job.root)].add(job.rel)
    return written


def touched_paths(operations: SyncOperations) -> set[bytes]:
    """Every relative path a run may change, on either side."""
    paths: set[bytes] = set()
    for op in (*operations.within_source, *operations.within_target):
        paths.add(op.dest_path)
    for _, ops in operations.directions():
        paths.update(op.dest_path for op in ops.to_copy)
        paths.update(op.relative_path for op in ops.to_copy)
        paths.update(op.relative_path for op in ops.to_update)
        paths.update(op.relative_path for op in ops.to_delete)
    paths.update(c.relative_path for c in operations.conflicts)
    return paths


def plan_document(
    conduit: str, operations: SyncOperations, refused: str | None
) -> dict[str, Any]:
    """`sync --dry-run --json` (DESIGN.md Interfaces)."""
    listed: list[dict[str, Any]] = []
    for direction, ops in operations.directions():
        listed.extend(
            _op("copy", direction, op.dest_path, op.source.size) for op in ops.to_copy
        )
        listed.extend(
            _op("update", direction, op.relative_path, 0) for op in ops.to_update
        )
        listed.extend(
            _op("delete", direction, op.relative_path, op.target.size)
            for op in ops.to_delete
        )
    for side, within in (
        (Direction.TARGET_TO_SOURCE, operations.within_source),
        (Direction.SOURCE_TO_TARGET, operations.within_target),
    ):
        listed.extend(_op("copy", side, op.dest_path, op.source.size) for op in within)
    for conflict in operations.conflicts:
        entry = conflict.source or conflict.target
        size = entry.size if entry is not None else 0
        listed.append(
            _op("conflict", Direction.SOURCE_TO_TARGET, conflict.relative_path, size)
        )
    return {"conduit": conduit, "operations": listed, "refused": refused}


def _op(kind: str, direction: Direction, path: bytes, size: int) -> dict[str, Any]:
    return {"op": kind, "direction": direction.value, **path_json(path), "size": size}
