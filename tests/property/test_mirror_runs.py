"""Whole mirror runs on random trees with random changes (issue 5).

After `sync` the target equals the source (ignored paths aside, which are
never copied nor deleted), and every file or symlink that disappeared from
the target, or whose content was replaced, is in
`.conduitd/trash/<generation>/...` with a `sync_trash` row saying where.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conduitd.errors import SafetyRefusal
from conduitd.logs import configure_logging
from helpers.digests import ENTRY_ROWS, untrue_digests
from helpers.mirror import (
    Listed,
    Mirror,
    listing,
    make_mirror,
    query,
    sync_api,
    tmp_entries,
    trash_rows,
)

IGNORE = ["*.tmp", "cache/"]
NAMES = st.sampled_from(["a", "b", "c.txt", "d.tmp", "cache", "caf\udce9"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
CONTENT = st.binary(max_size=48)
MODES = st.sampled_from([0o644, 0o600, 0o755, 0o444])

OPS = st.one_of(
    st.tuples(st.just("write"), PATHS, CONTENT),
    st.tuples(st.just("mkdir"), PATHS, st.just(b"")),
    st.tuples(st.just("remove"), PATHS, st.just(b"")),
    st.tuples(st.just("symlink"), PATHS, st.sampled_from([b"a", b"../x", b"/etc"])),
    st.tuples(st.just("chmod"), PATHS, MODES.map(lambda m: bytes([m >> 6, m & 63]))),
    st.tuples(st.just("touch"), PATHS, st.just(b"")),
)
SIDES = st.sampled_from(["source", "source", "source", "target"])


def apply(root: Path, op: tuple[str, str, bytes]) -> None:
    """One filesystem change; ones that do not fit the tree are no-ops."""
    kind, rel, data = op
    path = root / rel
    try:
        if kind == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            _clear(path)
            path.write_bytes(data)
        elif kind == "mkdir":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "remove":
            _clear(path)
        elif kind == "symlink":
            path.parent.mkdir(parents=True, exist_ok=True)
            _clear(path)
            path.symlink_to(os.fsdecode(data))
        elif kind == "chmod" and path.is_file() and not path.is_symlink():
            path.chmod((data[0] << 6) | data[1])
        elif kind == "touch" and os.path.lexists(path):
            st_ = path.lstat()
            when = st_.st_mtime_ns + 1_234_567
            os.utime(path, ns=(when, when), follow_symlinks=False)
    except (NotADirectoryError, FileExistsError, FileNotFoundError):
        pass  # a parent is a file or a symlink: the change does not apply
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # a parent is a symlink to itself
            raise


def _clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def ignored_paths(*listings: dict[str, Listed]) -> set[str]:
    """Paths `IGNORE` covers, as the kind they have in any listing: a name
    ending `.tmp`, a directory `cache`, and everything beneath either."""
    kinds: dict[str, set[str]] = {}
    for seen in listings:
        for rel, version in seen.items():
            kinds.setdefault(rel, set()).add(version[0])
    found = set()
    for rel in kinds:
        parts = rel.split("/")
        for depth, name in enumerate(parts, start=1):
            below = depth < len(parts)  # an ancestor: a directory
            as_dir = below or "dir" in kinds.get("/".join(parts[:depth]), set())
            if name.endswith(".tmp") or (name == "cache" and as_dir):
                found.add(rel)
                break
    return found


def without(seen: dict[str, Listed], paths: set[str]) -> dict[str, Listed]:
    return {p: v for p, v in seen.items() if p not in paths}


def only(seen: dict[str, Listed], paths: set[str]) -> dict[str, Listed]:
    return {p: v for p, v in seen.items() if p in paths}


def gone_or_replaced(before: Listed, after: Listed | None) -> bool:
    """True when the version `before` is no longer at its path."""
    if after is None or after[0] != before[0]:
        return True
    return before[0] != "dir" and after[3] != before[3]


def trashed_version(root: Path, rows: list[dict[str, Any]], rel: str) -> Listed:
    """Where the trash holds `rel`: its own row, or an ancestor's (a directory
    trashed as one). Returns the trashed entry as `listing` describes it."""
    for row in rows:
        top = row["relative_path"]
        if rel == top or rel.startswith(top + "/"):
            place = root / (row["trash_path"] + rel[len(top) :])
            st_ = os.lstat(place)
            if stat.S_ISLNK(st_.st_mode):
                return ("link", 0, st_.st_mtime_ns, os.readlink(place).encode())
            mode = stat.S_IMODE(st_.st_mode)
            return ("file", mode, st_.st_mtime_ns, place.read_bytes())
    raise AssertionError(f"{rel!r} left the target without a sync_trash row")


def run_sync(m: Mirror) -> Any:
    return anyio.run(sync_api, m)


@settings(
    max_examples=min(settings().max_examples, 20),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@example(  # a symlink to itself under a directory to be made (found by a run)
    initial=[("write", "a", b""), ("symlink", "a", b"a"), ("mkdir", "a/a", b"")],
    changes=[],
)
@example(  # file -> directory, directory -> file, a target edit, a symlink
    initial=[
        ("write", "a", b"file a"),
        ("write", "b/c.txt", b"in b"),
        ("write", "b/a", b"also in b"),
        ("symlink", "c.txt", b"a"),
    ],
    changes=[
        ("source", ("remove", "a", b"")),
        ("source", ("write", "a/c.txt", b"now a dir")),
        ("source", ("write", "b", b"b is a file now")),
        ("target", ("write", "c.txt", b"edited on the target")),
        ("target", ("write", "d.tmp", b"ignored, kept")),
        ("source", ("touch", "a/c.txt", b"")),
    ],
)
@example(  # an empty source, a target whose only file is ignored: refused all
    # the same (the run deletes nothing, so the brakes once looked no further)
    initial=[("remove", "a", b"")],
    changes=[("target", ("write", "a/d.tmp", b""))],
)
@example(  # an ignored directory on one side, a file of that name on the other
    initial=[("write", "a", b"a"), ("write", "cache/x", b"x")],
    changes=[("target", ("write", "cache", b"not ignored as a file"))],
)
@given(
    initial=st.lists(OPS, min_size=1, max_size=12),
    changes=st.lists(st.tuples(SIDES, OPS), max_size=12),
)
def test_mirror_run_makes_target_equal_source_and_trashes_what_it_replaces(
    initial: list[tuple[str, str, bytes]],
    changes: list[tuple[str, tuple[str, str, bytes]]],
) -> None:
    configure_logging("error")
    base = Path(tempfile.mkdtemp(prefix="conduitd-mirror-prop-"))
    try:
        m = make_mirror(base, max_delete_percent=100, ignore=IGNORE)
        for op in initial:
            apply(m.source, op)
        check_one_run(m, first=True)
        for side, op in changes:
            apply(m.source if side == "source" else m.target, op)
        check_one_run(m, first=False)
    finally:
        shutil.rmtree(base)


def check_one_run(m: Mirror, *, first: bool) -> None:
    before = listing(m.target) if m.target.exists() else {}
    source = listing(m.source)
    skip = ignored_paths(before, source)
    if without(before, skip) and not without(source, skip):
        try:
            run_sync(m)
        except SafetyRefusal:
            assert listing(m.target) == before  # refused: nothing touched
            return
        raise AssertionError("an empty source facing a full target ran")
    generation = run_sync(m)

    after = listing(m.target)
    # A target directory holding ignored entries cannot give way: it stays,
    # and if the source has something else there, that path is an error.
    holding = {
        "/".join(rel.split("/")[:depth])
        for rel in only(after, skip)
        for depth in range(1, rel.count("/") + 1)
    }
    stuck = {p for p in holding - skip if source.get(p, ("",))[0] != "dir"}
    assert without(after, skip | stuck) == without(source, skip | stuck)
    assert only(after, skip) == only(before, skip)  # never copied nor deleted
    assert tmp_entries(m.target) == []
    occupied = {p for p in stuck if p in source}
    assert generation.counts.errors_encountered == len(occupied)
    assert generation.verification_status == "verified"
    assert untrue_digests(query(m.state_dir, ENTRY_ROWS)) == []
    if first:
        return
    rows = [
        r
        for r in trash_rows(m.state_dir)
        if r["generation"] == generation.generation and r["root"] == "target"
    ]
    for rel, version in before.items():
        if version[0] == "dir" or not gone_or_replaced(version, after.get(rel)):
            continue
        trashed = trashed_version(m.target, rows, rel)
        assert trashed[0] == version[0]
        assert trashed[3] == version[3], rel
