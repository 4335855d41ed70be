"""The oracle of the crash suite: two roots, an outside tree, every user write.

A `World` plays the user: it writes files (atomically, through a scratch
directory, so every version it ever made is known whole), deletes, renames,
changes modes and mtimes, on either side. It remembers every version written
and when each (side, path) was last touched by the user. `observe()` records
what both sides hold at a moment when no conduitd process runs.

The invariants (issue 8) are checked against that record:
- lost: a version the user wrote, or one seen on a side, that the user did not
  destroy on that side afterwards, must still be on that side, under a final
  name or in its `.conduitd/trash`. Checking per side is stricter than "on a
  side or in trash": conduitd never moves a version from one side to the
  other, so a version gone from its side was overwritten without trash;
- partial: every file or symlink under a final name (or in trash) is a version
  the user wrote, byte for byte;
- outside: the sibling tree, which symlinks in the roots point into, is
  unchanged;
- converged: both sides hold the same tree (kind, content, mode, mtime).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SIDES = ("src", "dst")
INTERNAL = ".conduitd"
EMPTY_KEY = "F:" + hashlib.blake2b(b"").hexdigest()
MIB = 1 << 20
_BESIDE_ROOTS = {"src", "dst", "outside", "scratch", "state", "conduitd.toml"}


@dataclass(frozen=True, slots=True)
class Node:
    """One entry as a side holds it; `key` names a file's or symlink's version."""

    kind: str  # "f", "l" or "d"
    key: str
    mode: int
    mtime_ns: int

    def comparable(self) -> tuple[str, str, int, int]:
        """What convergence compares (directories' mtimes are best effort)."""
        if self.kind == "d":
            return ("d", "", self.mode, 0)
        return (self.kind, self.key, self.mode, self.mtime_ns)


@dataclass(frozen=True, slots=True)
class Observation:
    """Both sides at one quiet moment: final names and trash contents."""

    seq: int
    final: dict[str, dict[str, Node]]
    trash: dict[str, set[str]]


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str  # lost, partial, outside, converged, exit, integrity, temps
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def file_key(data: bytes) -> str:
    return "F:" + hashlib.blake2b(data).hexdigest()


def link_key(target: str) -> str:
    return "L:" + target


def scan_tree(
    root: Path, *, skip_internal: bool = True, contents: bool = True
) -> dict[str, Node]:
    """Every entry under `root` (never following symlinks), by relative path.

    Without `contents`, files are not read (their keys are empty).
    """
    found: dict[str, Node] = {}
    if not root.is_dir():
        return found
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            names = os.listdir(root / rel_dir) if rel_dir else os.listdir(root)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if skip_internal and rel == INTERNAL:
                continue
            node = _node(root / rel, contents)
            if node is None:
                continue
            found[rel] = node
            if node.kind == "d":
                stack.append(rel)
    return found


def _node(path: Path, contents: bool = True) -> Node | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return Node("d", "", mode, st.st_mtime_ns)
    if stat.S_ISLNK(st.st_mode):
        return Node("l", link_key(os.readlink(path)), 0, st.st_mtime_ns)
    if stat.S_ISREG(st.st_mode):
        if not contents:
            return Node("f", "", mode, st.st_mtime_ns)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return Node("f", file_key(data), mode, st.st_mtime_ns)
    return Node("?", "", mode, st.st_mtime_ns)


def trash_keys(root: Path) -> set[str]:
    """The versions in a root's trash (whole trashed directories included)."""
    tree = scan_tree(root / INTERNAL / "trash", skip_internal=False)
    return {n.key for n in tree.values() if n.kind in ("f", "l")}


def temp_names(root: Path) -> list[str]:
    tmp = root / INTERNAL / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


def tree_digest(root: Path) -> str:
    """A digest of a whole tree: names, kinds, contents, modes, mtimes."""
    digest = hashlib.blake2b()
    for rel, node in sorted(scan_tree(root, skip_internal=False).items()):
        digest.update(f"{rel}\0{node}\n".encode())
    return digest.hexdigest()


def database_problems(state_dir: Path) -> list[Violation]:
    """`PRAGMA integrity_check` of every library.db and sync.db; the outbox
    drained; sync log sequences gap-free."""
    problems: list[Violation] = []
    databases = sorted(state_dir.glob("libraries/*/*.db"))
    if not databases:
        return [Violation("integrity", f"no database under {state_dir}")]
    for db in databases:
        with sqlite3.connect(db) as conn:
            (result,) = conn.execute("PRAGMA integrity_check").fetchone()
            if result != "ok":
                problems.append(Violation("integrity", f"{db.name}: {result}"))
            if db.name == "library.db":
                (left,) = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()
                if left:
                    problems.append(
                        Violation("integrity", f"{left} outbox rows never drained")
                    )
            if db.name == "sync.db":
                low, high, count = conn.execute(
                    "SELECT min(sequence), max(sequence), count(*) FROM sync_log"
                ).fetchone()
                if count and high - low + 1 != count:
                    problems.append(
                        Violation("integrity", f"sync log gaps: {low}..{high}/{count}")
                    )
        conn.close()
    return problems


@dataclass
class World:
    """The user of two roots, and the record of everything they did."""

    base: Path
    rng: random.Random
    known: set[str] = field(default_factory=lambda: {EMPTY_KEY})
    writes: list[tuple[str, str, str, int]] = field(default_factory=list)
    touched: dict[tuple[str, str], int] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    seq: int = 0
    _token: int = 0

    def __post_init__(self) -> None:
        for name in ("src", "dst", "outside", "scratch"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        outside = self.base / "outside"
        for i in range(3):
            (outside / "keep").mkdir(exist_ok=True)
            (outside / "keep" / f"o{i}.txt").write_bytes(b"outside %d\n" % i)
        self.outside_digest = tree_digest(outside)

    # -- places ---------------------------------------------------------------

    def root(self, side: str) -> Path:
        return self.base / side

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    def files(self, side: str, kinds: str = "f") -> list[str]:
        tree = scan_tree(self.root(side), contents=False)
        return sorted(rel for rel, node in tree.items() if node.kind in kinds)

    # -- user actions -----------------------------------------------------------

    def _touch(self, side: str, rel: str) -> None:
        """Mark `rel` and everything under it as changed by the user now."""
        path = self.root(side) / rel
        self.touched[(side, rel)] = self.seq
        if path.is_dir() and not path.is_symlink():
            for sub in scan_tree(path, skip_internal=False, contents=False):
                self.touched[(side, f"{rel}/{sub}")] = self.seq

    def _clear_way(self, side: str, rel: str) -> None:
        """Ancestors that are not directories, and a directory at `rel`, go."""
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            path = self.root(side) / ancestor
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                self._touch(side, ancestor)
                path.unlink()
        path = self.root(side) / rel
        if path.is_dir() and not path.is_symlink():
            self._touch(side, rel)
            shutil.rmtree(path, ignore_errors=True)

    def _body(self, size: int) -> bytes:
        self._token += 1
        if size == 0:
            return b""
        head = b"v%d:%d:" % (self._token, self.rng.getrandbits(48))
        return (head + self.rng.randbytes(max(size - len(head), 0)))[: max(size, 1)]

    def write_file(
        self, side: str, rel: str, size: int | None = None, *, mode: int = 0o644
    ) -> str:
        """Write a new version at `rel`, atomically (a rename from scratch)."""
        self.seq += 1
        data = self._body(self.random_size() if size is None else size)
        scratch = self.base / "scratch" / f"w{self.seq}"
        scratch.write_bytes(data)
        os.chmod(scratch, mode)
        mtime_ns = self.rng.randrange(1_500_000_000, 1_700_000_000) * 10**9
        os.utime(scratch, ns=(mtime_ns, mtime_ns))
        key = file_key(data)
        self.known.add(key)
        self._place(side, rel, scratch)
        self.writes.append((side, rel, key, self.seq))
        return key

    def write_symlink(self, side: str, rel: str, target: str | None = None) -> str:
        self.seq += 1
        self._token += 1
        target = target or f"missing-{self._token}-{self.rng.getrandbits(32)}"
        scratch = self.base / "scratch" / f"l{self.seq}"
        os.symlink(target, scratch)
        key = link_key(target)
        self.known.add(key)
        self._place(side, rel, scratch)
        self.writes.append((side, rel, key, self.seq))
        return key

    def _place(self, side: str, rel: str, scratch: Path) -> None:
        for _ in range(20):  # a daemon may remove a directory meanwhile
            try:
                self._clear_way(side, rel)
                self._touch(side, rel)
                (self.root(side) / rel).parent.mkdir(parents=True, exist_ok=True)
                os.rename(scratch, self.root(side) / rel)
                return
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as exc:  # ENOTEMPTY: a directory refilled meanwhile
                if exc.errno not in (39,):
                    raise
        raise AssertionError(f"could not write {side}/{rel}")

    def delete(self, side: str, rel: str) -> None:
        self.seq += 1
        path = self.root(side) / rel
        self._touch(side, rel)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def chmod(self, side: str, rel: str, mode: int) -> None:
        self.seq += 1
        self.touched[(side, rel)] = self.seq
        os.chmod(self.root(side) / rel, mode)

    def set_mtime(self, side: str, rel: str) -> None:
        self.seq += 1
        self.touched[(side, rel)] = self.seq
        mtime_ns = self.rng.randrange(1_500_000_000, 1_700_000_000) * 10**9 + 123
        os.utime(self.root(side) / rel, ns=(mtime_ns, mtime_ns), follow_symlinks=False)

    def random_size(self) -> int:
        roll = self.rng.random()
        if roll < 0.05:
            return 0
        if roll < 0.75:
            return self.rng.randrange(1, 4096)
        if roll < 0.95:
            return self.rng.randrange(4096, 200_000)
        return self.rng.randrange(MIB, 3 * MIB)  # more than one copy chunk

    # -- trees and changes ----------------------------------------------------

    def populate(self, side: str, files: int) -> None:
        """A random tree: nested directories, files, symlinks, empty directories."""
        dirs = [""]
        for _ in range(self.rng.randrange(2, 6)):
            parent = self.rng.choice(dirs)
            name = f"d{len(dirs)}"
            dirs.append(f"{parent}/{name}" if parent else name)
            path = self.root(side) / dirs[-1]
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, self.rng.choice((0o755, 0o750, 0o711, 0o700)))
        for i in range(files):
            parent = self.rng.choice(dirs)
            rel = f"{parent}/f{i}.bin" if parent else f"f{i}.bin"
            self.write_file(side, rel, mode=self.rng.choice((0o644, 0o600, 0o755)))
        for i in range(self.rng.randrange(1, 3)):
            parent = self.rng.choice(dirs)
            rel = f"{parent}/s{i}" if parent else f"s{i}"
            outside = str(self.base / "outside" / "keep")
            self.write_symlink(side, rel, outside if i == 0 else None)
        empty = self.rng.choice(dirs[1:] or [""])
        if empty:
            (self.root(side) / empty / "empty").mkdir(parents=True, exist_ok=True)
        self.write_file(side, "keep.txt", 64)  # never touched: no empty-side brake

    def copy_over(self, rel: str, *, src: str = "src", dst: str = "dst") -> None:
        """The same version on both sides (a path that agrees at the first sync)."""
        self.seq += 1
        source = self.root(src) / rel
        target = self.root(dst) / rel
        self._clear_way(dst, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        self.touched[(dst, rel)] = self.seq
        self.writes.append((dst, rel, _node(target).key, self.seq))  # type: ignore[union-attr]

    def change(self, side: str, count: int, *, deletes: bool = True) -> None:
        """`count` random user changes on one side (few deletes: no brake)."""
        for _ in range(count):
            files = [f for f in self.files(side, "fl") if f != "keep.txt"]
            dirs = self.files(side, "d")
            roll = self.rng.random()
            if not files or roll < 0.25:
                parent = self.rng.choice(["", *dirs])
                name = f"n{self.seq}-{self.rng.randrange(1000)}"
                if self.rng.random() < 0.3:
                    name = f"nd{self.seq}/{name}"
                self.write_file(side, f"{parent}/{name}" if parent else name)
            elif roll < 0.50:
                rel = self.rng.choice(files)
                self.write_file(side, rel)
            elif roll < 0.60 and deletes:
                self.delete(side, self.rng.choice(files))
            elif roll < 0.66 and deletes and dirs:
                victim = self.rng.choice(dirs)
                if len(scan_tree(self.root(side) / victim, contents=False)) <= 3:
                    self.delete(side, victim)
            elif roll < 0.72:
                rel = self.rng.choice(files)
                if (self.root(side) / rel).is_symlink():
                    self.write_symlink(side, rel)
                else:
                    self.chmod(side, rel, self.rng.choice((0o600, 0o640, 0o755)))
                if dirs and self.rng.random() < 0.3:
                    self.chmod(side, self.rng.choice(dirs), 0o750)
            elif roll < 0.78:
                self.set_mtime(side, self.rng.choice(files))
            elif roll < 0.84 and deletes:
                rel = self.rng.choice(files)  # a file becomes a directory
                self.write_file(side, f"{rel}/inner.bin")
            elif roll < 0.90 and dirs:
                victim = self.rng.choice(dirs)  # a directory becomes a file
                if len(scan_tree(self.root(side) / victim, contents=False)) <= 3:
                    self.write_file(side, victim)
            else:
                rel = self.rng.choice(files)  # a rename: delete + create
                self.delete(side, rel)
                self.write_file(side, f"{rel}.moved")

    # -- observing and judging ------------------------------------------------

    def snapshot(self) -> Observation:
        """Both sides now, not recorded."""
        return Observation(
            self.seq,
            {side: scan_tree(self.root(side)) for side in SIDES},
            {side: trash_keys(self.root(side)) for side in SIDES},
        )

    def observe(self) -> Observation:
        """Record both sides now (no conduitd process may be running)."""
        observation = self.snapshot()
        self.observations.append(observation)
        return observation

    def partial_files(self, observation: Observation) -> list[Violation]:
        """Files under final names or in trash that are no version ever written."""
        found = []
        for side in SIDES:
            for rel, node in observation.final[side].items():
                if node.kind == "?":
                    found.append(Violation("partial", f"{side}/{rel}: odd file type"))
                elif node.kind != "d" and node.key not in self.known:
                    found.append(Violation("partial", f"{side}/{rel}: unknown content"))
            unknown = observation.trash[side] - self.known
            if unknown:
                found.append(
                    Violation("partial", f"{side} trash: {len(unknown)} unknown")
                )
        return found

    def outside_changed(self) -> list[Violation]:
        """The sibling tree changed, or something appeared next to the roots."""
        found = []
        if tree_digest(self.base / "outside") != self.outside_digest:
            found.append(Violation("outside", "the tree outside the roots changed"))
        strays = set(os.listdir(self.base)) - _BESIDE_ROOTS
        if strays:
            found.append(Violation("outside", f"written next to the roots: {strays}"))
        return found

    def required(self) -> Iterator[tuple[str, str, str, str]]:
        """(side, path, key, why) for every version that must still be on its side."""
        for side, rel, key, seq in self.writes:
            if self.touched.get((side, rel), seq) <= seq:
                yield side, rel, key, f"written at step {seq}"
        for observation in self.observations:
            for side in SIDES:
                for rel, node in observation.final[side].items():
                    if node.kind == "d":
                        continue
                    if self.touched.get((side, rel), -1) <= observation.seq:
                        yield side, rel, node.key, f"seen at step {observation.seq}"
                for key in observation.trash[side]:
                    yield side, "(trash)", key, f"in trash at step {observation.seq}"

    def lost_versions(self, final: Observation) -> list[Violation]:
        present = {
            side: {n.key for n in final.final[side].values()} | final.trash[side]
            for side in SIDES
        }
        lost = {}
        for side, rel, key, why in self.required():
            if key not in present[side]:
                lost[(side, rel, key)] = why
        return [
            Violation("lost", f"{side}/{rel} ({why}) is on no final name nor in trash")
            for (side, rel, _key), why in sorted(lost.items())
        ]

    @staticmethod
    def divergence(final: Observation) -> list[Violation]:
        src, dst = final.final["src"], final.final["dst"]
        differ = sorted(
            rel
            for rel in src.keys() | dst.keys()
            if (src[rel].comparable() if rel in src else None)
            != (dst[rel].comparable() if rel in dst else None)
        )
        if not differ:
            return []
        return [Violation("converged", f"{len(differ)} paths differ: {differ[:5]}")]
