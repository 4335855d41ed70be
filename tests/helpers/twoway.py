"""A conduit's two real trees driven through the real command line (issue 6)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from helpers.cli import run_cli, write_config

CONFLICT_NAME = re.compile(
    r"^(?P<stem>.*)\.conflict-(?P<stamp>\d{8}-\d{6})-(?P<side>source|target)"
    r"(?P<number>-\d+)?(?P<suffix>(\.[^.]*)?)$"
)
BASE_NS = 1_700_000_000_000_000_000


class Pair:
    """Source and target of one conduit named `pair`, its config and library."""

    def __init__(self, tmp_path: Path, mode: str = "bidirectional", **conduit: Any):
        self.root = tmp_path
        self.source = tmp_path / "src"
        self.target = tmp_path / "dst"
        self.source.mkdir()
        self.target.mkdir()
        self.state = tmp_path / "state"
        self.config = write_config(
            tmp_path / "conduitd.toml",
            self.state,
            [
                {
                    "name": "pair",
                    "source": str(self.source),
                    "target": str(self.target),
                    "mode": mode,
                    **conduit,
                }
            ],
        )

    # -- the command line ----------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, config=self.config)

    def sync(self, *args: str, expect: int = 0) -> dict[str, Any]:
        result = self.cli("sync", "pair", "--json", *args)
        assert result.returncode == expect, (result.stdout, result.stderr)
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def conflicts(self, *args: str) -> list[dict[str, Any]]:
        result = self.cli("conflicts", *args, "--json")
        assert result.returncode == 0, (result.stdout, result.stderr)
        listed: list[dict[str, Any]] = json.loads(result.stdout)
        return listed

    def resolve(
        self, conflict_id: int, keep: str, *, expect: int = 0
    ) -> subprocess.CompletedProcess[str]:
        result = self.cli("resolve", str(conflict_id), "--keep", keep)
        assert result.returncode == expect, (result.stdout, result.stderr)
        return result

    # -- the trees -----------------------------------------------------------

    def side(self, name: str) -> Path:
        return self.source if name == "source" else self.target

    def write(
        self, side: str, rel: str, data: bytes | str, mtime_ns: int | None = None
    ) -> Path:
        path = self.side(side) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))
        return path

    def tree(self, side: str) -> dict[str, object]:
        """Relative path -> bytes (files), "<dir>", or ("->", target) symlinks."""
        root = self.side(side)
        found: dict[str, object] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != ".conduitd"]
            for name in dirnames:
                path = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                found[rel] = (
                    ("->", os.readlink(path)) if os.path.islink(path) else "<dir>"
                )
            for name in filenames:
                path = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if os.path.islink(path):
                    found[rel] = ("->", os.readlink(path))
                else:
                    found[rel] = Path(path).read_bytes()
        return found

    def files(self, side: str) -> dict[str, bytes]:
        return {k: v for k, v in self.tree(side).items() if isinstance(v, bytes)}

    def assert_equal(self) -> dict[str, object]:
        source, target = self.tree("source"), self.tree("target")
        assert source == target
        return source

    def trashed(self, side: str) -> list[bytes]:
        """Contents of every file in the side's trash."""
        trash = self.side(side) / ".conduitd" / "trash"
        if not trash.exists():
            return []
        return sorted(p.read_bytes() for p in trash.rglob("*") if p.is_file())

    # -- the library ---------------------------------------------------------

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        (db_path,) = (self.state / "libraries").glob("*/library.db")
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            return list(db.execute(sql, params))

    def baseline(self) -> dict[str, sqlite3.Row]:
        rows = self.query("SELECT * FROM sync_baseline")
        return {bytes(r["relative_path"]).decode(): r for r in rows}

    def trash_rows(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM sync_trash ORDER BY id")


def conflict_copies(names: object) -> list[str]:
    """The conflict copy names among relative paths."""
    assert isinstance(names, dict)
    return sorted(n for n in names if CONFLICT_NAME.match(os.path.basename(n)))
