"""Trash list, restore and retention on real trees, without a daemon (issue 9)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import blake3
import pytest

from conduitd.config import Config, load_config
from conduitd.errors import SafetyRefusal
from conduitd.jobs.restore import DestinationTaken
from conduitd.oneshot import sync_once, writer_session
from conduitd.oneshot_ops import purge_once, restore_once, trash_list_once
from conduitd.sync import trash_retention
from conduitd.sync.trash_retention import prune_conduit_trash
from conduitd.timeutil import utc_now
from helpers.cli import run_cli, write_config


def setup(
    tmp_path: Path, mode: str = "mirror", **extra: Any
) -> tuple[Config, Path, Path]:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    conduit = {"name": "photos", "source": source, "target": target, "mode": mode}
    path = write_config(
        tmp_path / "conduitd.toml", tmp_path / "state", [{**conduit, **extra}]
    )
    return load_config(path), source, target


def write(path: Path, text: str, mtime_s: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime_s is not None:
        os.utime(path, (mtime_s, mtime_s))


async def sync(config: Config) -> dict[str, Any]:
    result = await sync_once(config, "photos", force=False)
    assert result["errors_encountered"] == 0, result
    return result


def rows_of(listing: Sequence[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    return [(r["generation"], r["root"], r["path"], r["reason"]) for r in listing]


async def test_mirror_versions_are_listed_newest_first_and_restored_on_the_source(
    tmp_path: Path,
) -> None:
    config, source, target = setup(tmp_path)
    write(source / "a.txt", "v1", 1_000_000)
    write(source / "d" / "b.txt", "bee", 1_000_000)
    await sync(config)
    write(source / "a.txt", "v2", 2_000_000)
    await sync(config)
    (source / "d" / "b.txt").unlink()
    await sync(config)

    listing = await trash_list_once(config, "photos", None)
    assert rows_of(listing) == [
        (3, "target", "d/b.txt", "deleted"),
        (2, "target", "a.txt", "overwritten"),
    ]
    assert set(listing[0]) == {
        "conduit", "generation", "root", "path", "reason", "size", "mtime_ns",
        "content_id", "trashed_at",
    }  # fmt: skip
    assert listing[1]["content_id"] == blake3.blake3(b"v1").hexdigest()
    assert rows_of(await trash_list_once(config, "photos", b"d")) == rows_of(
        listing[:1]
    )

    # A deleted file comes back on the source; the next run re-creates it.
    done = await restore_once(config, "photos", b"d/b.txt", generation=None, dest=None)
    assert done["restored_to"] == str(source / "d" / "b.txt")
    assert (source / "d" / "b.txt").read_text() == "bee"
    assert (source / "d" / "b.txt").stat().st_mtime == 1_000_000

    # An overwritten version replaces the current file, which goes to trash.
    done = await restore_once(config, "photos", b"a.txt", generation=2, dest=None)
    assert (source / "a.txt").read_text() == "v1"
    displaced = done["displaced"]
    assert (displaced["root"], displaced["reason"]) == ("source", "overwritten")
    assert displaced["content_id"] == blake3.blake3(b"v2").hexdigest()
    trashed = list((source / ".conduitd" / "trash").rglob("a*.txt"))
    assert [p.read_text() for p in trashed] == ["v2"]

    await sync(config)
    assert (target / "a.txt").read_text() == "v1"
    assert (target / "d" / "b.txt").read_text() == "bee"
    # The restored versions stay in the trash too, until retention prunes them.
    assert (await trash_list_once(config, "photos", b"d/b.txt"))[-1]["generation"] == 3


async def test_restore_to_a_place_outside_the_roots_never_replaces(
    tmp_path: Path,
) -> None:
    config, source, _ = setup(tmp_path)
    write(source / "notes.md", "keep me")
    write(source / "other.md", "an empty source would be refused")
    await sync(config)
    (source / "notes.md").unlink()
    await sync(config)
    out = tmp_path / "out"
    out.mkdir()
    done = await restore_once(config, "photos", b"notes.md", generation=None, dest=out)
    assert done["root"] is None
    assert (out / "notes.md").read_text() == "keep me"
    with pytest.raises(DestinationTaken):
        await restore_once(
            config, "photos", b"notes.md", generation=None, dest=out / "notes.md"
        )
    assert sorted(os.listdir(out)) == ["notes.md"]  # no temp left behind


async def test_bidirectional_conflict_loser_is_restored_on_its_own_side(
    tmp_path: Path,
) -> None:
    config, source, target = setup(tmp_path, mode="bidirectional")
    write(source / "plan.txt", "base", 1_000_000)
    await sync(config)
    write(source / "plan.txt", "source edit", 3_000_000)
    write(target / "plan.txt", "target edit", 2_000_000)  # older: loses
    await sync(config)
    assert (target / "plan.txt").read_text() == "source edit"
    [row] = await trash_list_once(config, "photos", b"plan.txt")
    assert (row["root"], row["reason"]) == ("target", "conflict")

    done = await restore_once(config, "photos", b"plan.txt", generation=None, dest=None)
    assert done["root"] == "target"
    assert (target / "plan.txt").read_text() == "target edit"
    assert done["displaced"]["root"] == "target"
    listing = await trash_list_once(config, "photos", b"plan.txt")
    assert [r["reason"] for r in listing] == ["overwritten", "conflict"]


async def test_retention_by_age_keeps_the_last_copy_of_a_vanished_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, source, target = setup(tmp_path)
    write(source / "kept.txt", "1")
    write(source / "gone.txt", "only copy")
    await sync(config)
    for version in ("2", "3"):
        write(source / "kept.txt", version)
        await sync(config)
    (source / "gone.txt").unlink()
    await sync(config)
    assert len(await trash_list_once(config, "photos", None)) == 3

    conduit = config.conduit("photos")
    later = utc_now() + timedelta(days=31)
    async with writer_session(config) as session:
        summary = await prune_conduit_trash(
            session.library, session.tm, conduit, now=later
        )
    assert (summary.pruned, summary.kept) == (2, 1)
    [left] = await trash_list_once(config, "photos", None)
    assert (left["path"], left["reason"]) == ("gone.txt", "deleted")
    trash = target / ".conduitd" / "trash"
    assert [p.name for p in trash.rglob("*") if p.is_file()] == ["gone.txt"]
    assert [p.name for p in trash.iterdir()] == ["4"]  # empty generations removed

    # From then on the old last copy is all there is: later passes (one after
    # every run) find nothing to prune without loading the rows.
    loads: list[int] = []
    real_list = trash_retention.list_trashed

    async def counted(*args: Any, **kwargs: Any) -> Any:
        loads.append(1)
        return await real_list(*args, **kwargs)

    monkeypatch.setattr(trash_retention, "list_trashed", counted)
    async with writer_session(config) as session:
        again = await prune_conduit_trash(
            session.library, session.tm, conduit, now=later
        )
    assert (again.pruned, again.kept, loads) == (0, 1, [])


async def test_retention_by_size_prunes_the_oldest_generations_first(
    tmp_path: Path,
) -> None:
    config, source, target = setup(tmp_path, trash_max_bytes="250")
    write(source / "f.bin", "x" * 100)
    await sync(config)
    for fill in "abc":
        write(source / "f.bin", fill * 100)
        await sync(config)
    # Pruning ran after each run: at most 250 bytes, the newest versions kept.
    listing = await trash_list_once(config, "photos", None)
    assert [r["generation"] for r in listing] == [4, 3]
    contents = sorted(p.read_text()[0] for p in target.rglob(".conduitd/trash/*/*"))
    assert contents == ["a", "b"]
    summary = await purge_once(config, "photos", older_than_s=0)
    assert summary["pruned"] == 2
    assert await trash_list_once(config, "photos", None) == []


async def test_free_space_guard_refuses_before_writing_anything(
    tmp_path: Path,
) -> None:
    config, source, target = setup(tmp_path, min_free="1M")
    write(source / "big.bin", "z" * 600_000)

    def nearly_full(path: Path) -> os.statvfs_result:
        # 4 KiB blocks: 100 MiB filesystem, 1.5 MiB available.
        return os.statvfs_result((4096, 4096, 25_600, 384, 384, 0, 0, 0, 0, 255))

    async with writer_session(config) as session:
        service = session.service()
        service.statvfs = nearly_full
        with pytest.raises(SafetyRefusal, match="not enough free space"):
            await service.sync_now("photos")
    assert [p.name for p in target.iterdir() if p.name != ".conduitd"] == []
    assert not list((target / ".conduitd").rglob("tmp/*"))
    status = run_cli("status", "--json", config=config.path)
    [conduit] = json.loads(status.stdout)["conduits"]
    assert "not enough free space" in conduit["last_error"]
    assert conduit["last_generation"] is None
