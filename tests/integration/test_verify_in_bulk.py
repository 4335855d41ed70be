"""A daemon's service compares the two indexes in SQL, as a one-shot run
does, where it would otherwise load both trees whole: to plan a run with
every path dirty, and to verify a run that touched many paths. It loads only
the paths that differ; what a whole load would have found, it still finds.

The daemon's service here runs without watchers (its barrier then rescans
both roots, as after a lost watcher): the bulk comparison only needs both
indexes current, however the barrier made them so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conduitd.jobs.runner import TransferRunner
from conduitd.sync import service as service_module
from helpers.mirror import (
    Mirror,
    generation_rows,
    listing,
    make_mirror,
    scan_both,
    write,
)
from helpers.seams import SeamCopier


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes] | None]:
    """What each snapshot a run takes asks for: sorted paths, None for the
    whole trees."""
    asked: list[list[bytes] | None] = []
    real = service_module.FileSyncService._snapshot

    async def spy(self: Any, record: Any, endpoints: Any, paths: Any = None) -> Any:
        asked.append(None if paths is None else sorted(paths))
        return await real(self, record, endpoints, paths)

    monkeypatch.setattr(service_module.FileSyncService, "_snapshot", spy)
    return asked


async def sync_as_daemon(m: Mirror, *, runner: Any = None) -> Any:
    """One run through a daemon's service (`one_shot=False`), both roots
    scanned first as the daemon's watchers would have them."""
    from conduitd.config import load_config
    from conduitd.oneshot import writer_session
    from conduitd.sync.service import FileSyncService

    config = load_config(m.config)
    async with writer_session(config) as session:
        await scan_both(m, session)
        service = FileSyncService(
            session.library,
            session.tm,
            session.indexer,
            config,
            one_shot=False,
            runner=runner,
        )
        return await service.sync_now(m.name)


async def test_a_daemon_run_verifies_in_bulk_and_still_sees_a_late_edit(
    tmp_path: Path, compared: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "VERIFY_PATHS_MAX", 1)  # whole trees
    m = make_mirror(tmp_path, create_target=True)
    for i in range(10):
        write(m.source / "d" / f"f{i}.txt", f"file {i}".encode())
    edited = m.source / "d" / "f3.txt"

    def after(rel: bytes) -> None:
        # The user edits a file once its copy has landed in the temp file:
        # the target gets the old bytes, only verification can tell.
        if rel == b"d/f3.txt" and edited.read_bytes() == b"file 3":
            write(edited, b"edited after its copy, by the user")

    last = await sync_as_daemon(
        m, runner=TransferRunner(copier=SeamCopier(after=after))
    )

    generations = generation_rows(m.state_dir)
    assert generations[0]["verification_status"].startswith("failed:")
    assert last.verification_status == "verified"
    assert last.generation == generations[-1]["generation"] == 2
    # In SQL: the first run's plan (10 new files and their directory), its
    # verification (the edit), the retry's plan (the edit); the retry
    # touched one path, which its verification probes.
    assert compared == [11, 1, 1]
    assert (m.target / "d" / "f3.txt").read_bytes() == edited.read_bytes()
    assert listing(m.target) == listing(m.source)


async def test_a_daemon_run_that_converged_loads_nothing_to_verify(
    tmp_path: Path,
    compared: list[int],
    loaded: list[list[bytes] | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_module, "VERIFY_PATHS_MAX", 1)
    m = make_mirror(tmp_path, create_target=True)
    for i in range(10):
        write(m.source / "d" / f"f{i}.txt", f"file {i}".encode())

    last = await sync_as_daemon(m)

    assert last.verification_status == "verified"
    assert compared == [11, 0]  # the plan, then verification
    # Verification loads none of the equal paths.
    assert loaded[-1] == []
    assert listing(m.target) == listing(m.source)


async def test_a_daemon_run_with_everything_dirty_resolves_only_what_differs(
    tmp_path: Path, compared: list[int], loaded: list[list[bytes] | None]
) -> None:
    """After a daemon's start every path is dirty: its first run compares
    the indexes in SQL and loads only the paths that differ."""
    m = make_mirror(tmp_path, create_target=True)
    for i in range(10):
        write(m.source / "d" / f"f{i}.txt", f"file {i}".encode())
    await sync_as_daemon(m)
    write(m.source / "d" / "f3.txt", b"changed while no daemon ran")
    (m.source / "d" / "f7.txt").unlink()
    compared.clear()
    loaded.clear()

    last = await sync_as_daemon(m)

    assert last.verification_status == "verified"
    assert last.counts.files_copied == 1
    assert last.counts.files_deleted == 1
    assert compared[0] == 2  # f3 changed, f7 gone
    plan = loaded[0]
    assert isinstance(plan, list)  # not the whole trees
    assert b"d/f3.txt" in plan
    assert b"d/f0.txt" not in plan
    assert listing(m.target) == listing(m.source)
