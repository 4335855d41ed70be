"""Copies whose names would collide on a folding filesystem (DESIGN.md Jobs).

On a case-insensitive or normalising root, `Photo.jpg` and `photo.jpg` are
one file: writing one would overwrite the other. A copy that creates a name
folding to another name present (or being created) in the same directory is
refused for that path — held, counted as an error — never written; so is
everything the run would put beneath a refused directory. Pure.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable

from conduitd.sync.operations import (
    CopyOp,
    Direction,
    DirectionalOps,
    Held,
    SyncOperations,
)

FoldName = Callable[[bytes], str]
HELD_REASON = "name_collision"


def name_folder(*, case_insensitive: bool, normalising: bool) -> FoldName | None:
    """How a filesystem folds a name, or None when it keeps names apart."""
    if not (case_insensitive or normalising):
        return None

    def fold(name: bytes) -> str:
        text = unicodedata.normalize("NFC", name.decode("utf-8", "surrogateescape"))
        return text.casefold() if case_insensitive else text

    return fold


def _split(path: bytes) -> tuple[bytes, bytes]:
    parent, _, name = path.rpartition(b"/")
    return parent, name


def _key(path: bytes, fold: FoldName) -> tuple[bytes, str]:
    parent, name = _split(path)
    return parent, fold(name)


def colliding_paths(
    existing: Collection[bytes], created: Iterable[bytes], fold: FoldName
) -> set[bytes]:
    """Created paths whose folded name meets another name in the same directory.

    `existing` are the paths on the root now; a created path already present
    under its exact name is an overwrite, not a collision.
    """
    new = [p for p in created if p not in existing]
    if not new:
        return set()
    by_key: dict[tuple[bytes, str], set[bytes]] = defaultdict(set)
    parents = {_split(p)[0] for p in new}
    for path in existing:
        if path and _split(path)[0] in parents:
            by_key[_key(path, fold)].add(path)
    for path in new:
        by_key[_key(path, fold)].add(path)
    return {p for p in new if len(by_key[_key(p, fold)]) > 1}


def _under(path: bytes, refused: Collection[bytes]) -> bool:
    while path:
        if path in refused:
            return True
        path = path.rpartition(b"/")[0]
    return False


def refuse_collisions(
    operations: SyncOperations,
    folds: dict[Direction, FoldName],
    existing: dict[Direction, Collection[bytes]],
) -> SyncOperations:
    """`operations` with colliding copies (and their subtrees) held.

    Args:
        folds: per direction, how the root it writes folds names.
        existing: per direction, the paths on the root it writes.
    """
    held = list(operations.held)
    directional: dict[Direction, DirectionalOps] = {}
    for direction, ops in operations.directions():
        fold = folds.get(direction)
        if fold is None or not ops.to_copy:
            continue
        refused = colliding_paths(
            existing.get(direction, ()), (op.dest_path for op in ops.to_copy), fold
        )
        if not refused:
            continue
        kept: list[CopyOp] = []
        for op in ops.to_copy:
            if _under(op.dest_path, refused):
                held.append(Held(op.dest_path, HELD_REASON))
            else:
                kept.append(op)
        directional[direction] = DirectionalOps.of(kept, ops.to_update, ops.to_delete)
    if not directional:
        return operations
    return dataclasses.replace(
        operations,
        source_to_target=directional.get(
            Direction.SOURCE_TO_TARGET, operations.source_to_target
        ),
        target_to_source=directional.get(
            Direction.TARGET_TO_SOURCE, operations.target_to_source
        ),
        held=tuple(held),
    )
