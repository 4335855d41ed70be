"""Which paths a conduit syncs: gitignore-style ignore and include patterns."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pathspec

STATE_DIR_NAME = b".conduitd"


def _spec(patterns: Iterable[str]) -> pathspec.GitIgnoreSpec | None:
    lines = [line for line in patterns if line.strip()]
    if not lines:
        return None
    # Imported here: it costs a one-shot `sync` ~8 ms, which a conduit
    # without patterns need not pay.
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def _as_pattern_path(relative_path: bytes, is_dir: bool) -> str:
    text = os.fsdecode(relative_path)
    return text + "/" if is_dir else text


class IndexRules:
    """A conduit's ignore and include rules over relative paths (bytes).

    Ignore follows git: a directory is matched with a trailing `/` (so
    `node_modules/` works) and everything beneath an ignored directory is
    ignored, whatever a later `!` pattern says. `.conduitd` is ignored at any
    depth, even with `use_index_rules=False` (which drops the `ignore` list).
    Include patterns select with gitignore matching of the path itself (a
    directory pattern covers its subtree; a later `!` pattern can carve a part
    out); no include patterns select everything.

    Results are cached per directory, so asking for every path of a large tree
    costs one match per path plus one per directory.
    """

    def __init__(
        self,
        ignore: Iterable[str] = (),
        include: Iterable[str] = (),
        *,
        use_index_rules: bool = True,
    ) -> None:
        self._ignore = _spec(ignore) if use_index_rules else None
        self._include = _spec(include)
        self._dir_ignored: dict[bytes, bool] = {b"": False}

    @property
    def has_include(self) -> bool:
        """True when include patterns restrict the selection."""
        return self._include is not None

    def is_ignored(self, relative_path: bytes, is_dir: bool) -> bool:
        """True when the path, or a directory above it, is ignored."""
        if not relative_path:
            return False
        if is_dir:
            return self._directory_ignored(relative_path)
        parent, _, name = relative_path.rpartition(b"/")
        if name == STATE_DIR_NAME or self._directory_ignored(parent):
            return True
        return self._ignore is not None and self._ignore.match_file(
            _as_pattern_path(relative_path, False)
        )

    def _directory_ignored(self, relative_path: bytes) -> bool:
        cache = self._dir_ignored
        cached = cache.get(relative_path)
        if cached is not None:
            return cached
        # Climb to the nearest cached ancestor, then decide top-down (no recursion:
        # paths may be deeper than the interpreter's recursion limit).
        pending = [relative_path]
        parent = relative_path.rpartition(b"/")[0]
        while parent not in cache:
            pending.append(parent)
            parent = parent.rpartition(b"/")[0]
        ignored = cache[parent]
        for path in reversed(pending):
            ignored = ignored or self._matches_directory(path)
            cache[path] = ignored
        return ignored

    def _matches_directory(self, relative_path: bytes) -> bool:
        if relative_path.rpartition(b"/")[2] == STATE_DIR_NAME:
            return True
        return self._ignore is not None and self._ignore.match_file(
            _as_pattern_path(relative_path, True)
        )

    def is_selected(self, relative_path: bytes, is_dir: bool) -> bool:
        """True when the include patterns select the path (always, without any)."""
        if self._include is None or not relative_path:
            return True
        return self._include.match_file(_as_pattern_path(relative_path, is_dir))
