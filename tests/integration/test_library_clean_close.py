"""`PRAGMA quick_check` is skipped only for a library.db exactly as a writer
left it on a clean close (storage/library.py `closed_cleanly`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conduitd.storage import library as library_module
from conduitd.storage.library import CLEAN_CLOSE, LIBRARY_DB, open_library

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every quick_check run, by path."""
    seen: list[Path] = []
    real = library_module._quick_check

    def spy(path: Path) -> str | None:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(library_module, "_quick_check", spy)
    return seen


async def test_a_clean_close_lets_the_next_writer_skip_the_check_once(
    tmp_path: Path, checks: list[Path]
) -> None:
    library = await open_library(tmp_path, repair=True)
    await library.close(clean=True)
    assert (library.directory / CLEAN_CLOSE).exists()

    again = await open_library(tmp_path, repair=True)
    # Consumed at open: a crash from here on leaves no record behind.
    assert not (again.directory / CLEAN_CLOSE).exists()
    await again.close()  # not clean (an error, say)
    third = await open_library(tmp_path, repair=True)
    await third.close()

    assert checks == [third.directory / LIBRARY_DB]


async def test_a_change_made_after_the_clean_close_is_checked_and_moved_aside(
    tmp_path: Path, checks: list[Path]
) -> None:
    library = await open_library(tmp_path, repair=True)
    await library.close(clean=True)
    db = library.directory / LIBRARY_DB
    with open(db, "r+b") as handle:  # noqa: ASYNC230 - corrupted while no writer held it
        handle.seek(4096)
        handle.write(b"\xff" * 3 * 4096)

    reopened = await open_library(tmp_path, repair=True)
    await reopened.close()

    assert checks == [db]
    assert sorted(p.name for p in reopened.directory.glob("library.db.corrupt-*"))
    with sqlite3.connect(db) as conn:  # rebuilt empty, and sound
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


async def test_a_damaged_record_means_a_check(
    tmp_path: Path, checks: list[Path]
) -> None:
    library = await open_library(tmp_path, repair=True)
    await library.close(clean=True)
    (library.directory / CLEAN_CLOSE).write_text("{not json")

    reopened = await open_library(tmp_path, repair=True)
    await reopened.close()

    assert checks == [library.directory / LIBRARY_DB]
