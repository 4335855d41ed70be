"""One-shot runs skip the SQL comparison only when neither index moved since
the conduit's last verified convergence under the same rules (storage/
agreement.py): every way of moving past that point makes them compare again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conduitd.jobs.runner import TransferRunner
from conduitd.sync import service as service_module
from helpers.mirror import Mirror, listing, make_mirror, query, sync_api, write
from helpers.seams import SeamCopier


def agreements(m: Mirror) -> list[Any]:
    return query(m.state_dir, "SELECT generation FROM conduit_agreement")


def seed(m: Mirror) -> None:
    for i in range(10):
        write(m.source / "d" / f"f{i}.txt", f"file {i}".encode())


@pytest.mark.parametrize("mode", ["mirror", "bidirectional"])
async def test_an_unchanged_pair_is_not_compared_again(
    tmp_path: Path, compared: list[int], mode: str
) -> None:
    m = make_mirror(tmp_path, mode=mode)
    seed(m)
    await sync_api(m)  # a two-way first sync is a union: it records nothing
    await sync_api(m)
    compared.clear()

    again = await sync_api(m)

    assert again.verification_status == "verified"
    assert compared == []
    assert listing(m.target) == listing(m.source)
    assert [row["generation"] for row in agreements(m)] == [3]


@pytest.mark.parametrize("mode", ["mirror", "bidirectional"])
async def test_a_change_on_either_side_is_synced_from_the_paths_the_scans_wrote(
    tmp_path: Path, compared: list[int], mode: str
) -> None:
    """From an agreement the scans started at, only the paths they wrote can
    differ: no SQL comparison, and the change still goes across."""
    m = make_mirror(tmp_path, mode=mode)
    seed(m)
    await sync_api(m)
    await sync_api(m)
    compared.clear()
    write(m.target / "d" / "f3.txt", b"edited on the target")
    os.utime(m.target / "d" / "f3.txt", ns=(4_000_000_000_000_000_000,) * 2)
    write(m.source / "e" / "new.txt", b"new on the source")

    generation = await sync_api(m)

    assert compared == []
    assert generation.verification_status == "verified"
    assert listing(m.target) == listing(m.source)
    expected = b"edited on the target" if mode == "bidirectional" else b"file 3"
    assert (m.source / "d" / "f3.txt").read_bytes() == expected
    assert (m.target / "e" / "new.txt").read_bytes() == b"new on the source"


async def test_an_index_write_before_the_scans_makes_the_run_compare(
    tmp_path: Path, compared: list[int]
) -> None:
    """A change indexed by something else than the run's own scans (here a
    refresh) is in no scan's paths: the versions the scans started from are
    past the agreement, so the run compares in SQL and finds it."""
    from conduitd.config import load_config
    from conduitd.oneshot import writer_session

    m = make_mirror(tmp_path)
    seed(m)
    await sync_api(m)
    await sync_api(m)
    write(m.source / "d" / "f3.txt", b"indexed before the run")
    async with writer_session(load_config(m.config)) as session:
        (location_id,) = [
            r["id"]
            for r in query(m.state_dir, "SELECT id, path FROM location")
            if bytes(r["path"]) == os.fsencode(m.source)
        ]
        await session.indexer.refresh(location_id, {b"d/f3.txt"})
    compared.clear()

    await sync_api(m)

    assert compared == [1]
    assert (m.target / "d" / "f3.txt").read_bytes() == b"indexed before the run"


async def test_new_rules_are_compared_again(
    tmp_path: Path, compared: list[int]
) -> None:
    m = make_mirror(tmp_path, ignore=["*.log"])
    seed(m)
    write(m.source / "keep.log", b"ignored at first")
    await sync_api(m)
    await sync_api(m)
    compared.clear()
    m.rewrite()  # no ignore rules any more: the same indexes mean other work

    await sync_api(m)

    assert compared != []
    assert (m.target / "keep.log").read_bytes() == b"ignored at first"


async def test_a_run_that_did_not_converge_leaves_no_agreement(
    tmp_path: Path, compared: list[int]
) -> None:
    m = make_mirror(tmp_path, mode="bidirectional", conflict="prompt_user")
    seed(m)
    await sync_api(m)
    write(m.source / "d" / "f1.txt", b"source side")
    write(m.target / "d" / "f1.txt", b"target side, longer")

    pending = await sync_api(m)
    assert pending.counts.conflicts_pending == 1
    assert agreements(m) == []
    compared.clear()

    await sync_api(m)  # the conflict still waits: compared every time

    assert compared != []
    assert agreements(m) == []


async def test_an_edit_seen_only_by_verification_is_not_taken_as_agreed(
    tmp_path: Path, compared: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verification after a run touching many paths rescans both trees whole
    and judges only the touched paths; an untouched file edited meanwhile is
    in the index by then, so the agreement must not vouch for it."""
    monkeypatch.setattr(service_module, "VERIFY_PATHS_MAX", 1)  # whole rescans
    m = make_mirror(tmp_path)
    seed(m)
    await sync_api(m)
    await sync_api(m)
    write(m.source / "d" / "f0.txt", b"changed before the run")
    write(m.source / "d" / "new.txt", b"new before the run")
    edited = m.source / "d" / "f9.txt"

    def after(rel: bytes) -> None:
        if edited.read_bytes() == b"file 9":  # the user, while the run copies
            write(edited, b"edited during the run, by the user")

    generation = await sync_api(
        m, runner=TransferRunner(copier=SeamCopier(after=after))
    )
    assert generation.verification_status == "verified"  # f9 was not touched
    assert agreements(m) == []
    compared.clear()

    await sync_api(m)

    assert compared != []
    assert (m.target / "d" / "f9.txt").read_bytes() == edited.read_bytes()
    assert listing(m.target) == listing(m.source)
