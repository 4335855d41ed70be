"""Observing real trees in tests: index entries, whole-tree digests, temp areas."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import blake3

from conduitd.storage.models import EntryKind, EntryRow


def entry_of(root: Path, rel: str) -> EntryRow:
    """The index entry a scanner would record for `root/rel` right now."""
    path = root / rel
    st = os.lstat(path)
    kinds = {stat.S_IFREG: EntryKind.FILE, stat.S_IFDIR: EntryKind.DIRECTORY}
    kind = kinds.get(stat.S_IFMT(st.st_mode), EntryKind.SYMLINK)
    content_id = None
    if kind is EntryKind.FILE:
        content_id = blake3.blake3(path.read_bytes()).hexdigest()
    target = os.readlink(os.fsencode(path)) if kind is EntryKind.SYMLINK else None
    return EntryRow(
        relative_path=os.fsencode(rel),
        kind=kind,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        mode=st.st_mode,
        content_id=content_id,
        symlink_target=target,
        inode=st.st_ino,
        ctime_ns=st.st_ctime_ns,
    )


def tree_digest(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything observable about a tree (kind, mode, mtime, content, target)."""
    seen: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            body: object = None
            if stat.S_ISREG(st.st_mode):
                body = blake3.blake3(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            seen[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, body)
    return seen


def tmp_entries(root: Path) -> list[str]:
    """What a root's `.conduitd/tmp/` holds (in-flight copies)."""
    tmp = root / ".conduitd" / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []
