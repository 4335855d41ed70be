"""Reconciliation keeps history: root entries are upserted, never replaced."""

from __future__ import annotations

from pathlib import Path

from conduitd.config import load_config
from conduitd.storage.conduits import ConduitManager, GenerationStatus
from conduitd.storage.library import open_library
from conduitd.storage.locations import ensure_location, upsert_root_entry
from conduitd.storage.reconcile import reconcile_conduits
from conduitd.storage.transactions import open_transaction_manager
from helpers.cli import write_config


def _config(tmp_path: Path, **overrides: object) -> Path:
    for name in ("src", "dst", "other"):
        (tmp_path / name).mkdir(exist_ok=True)
    conduit = {"name": "photos", "source": "src", "target": "dst", **overrides}
    return write_config(tmp_path / "conduitd.toml", tmp_path / "state", [conduit])


async def _one_generation(state: Path) -> None:
    library = await open_library(state)
    try:
        manager = ConduitManager(library.db)
        record = await manager.get_by_name("photos")
        assert record is not None
        tm = await open_transaction_manager(library)
        async with tm.transaction() as tx:
            generation = await manager.create_generation(tx, record.id)
            await manager.complete_generation(
                tx, generation.id, GenerationStatus.COMPLETED
            )
    finally:
        await library.close()


async def test_history_survives_reconciliation_and_root_entry_updates(
    tmp_path: Path,
) -> None:
    config = load_config(_config(tmp_path))
    library = await open_library(config.daemon.state_dir)
    try:
        report = await reconcile_conduits(library, config)
        assert report.created == ["photos"]
        await library.close()
        await _one_generation(config.daemon.state_dir)
        library = await open_library(config.daemon.state_dir)
        again = await reconcile_conduits(library, config)
        assert again.created == again.updated == again.disabled == []
        async with library.db.transaction() as tx:
            location, created = await ensure_location(
                tx, str(library.device_id), config.conduits[0].source
            )
            assert not created
            assert await upsert_root_entry(tx, location.id) == location.entry_id
        manager = ConduitManager(library.db)
        record = await manager.get_by_name("photos")
        assert record is not None
        assert [g.generation for g in await manager.generations(record.id)] == [1]
        assert record.total_syncs == 1
    finally:
        await library.close()


async def test_removed_conduit_is_disabled_and_keeps_its_history(
    tmp_path: Path,
) -> None:
    config = load_config(_config(tmp_path))
    library = await open_library(config.daemon.state_dir)
    await reconcile_conduits(library, config)
    await library.close()
    await _one_generation(config.daemon.state_dir)
    empty = write_config(tmp_path / "empty.toml", tmp_path / "state", [])
    library = await open_library(config.daemon.state_dir)
    try:
        report = await reconcile_conduits(library, load_config(empty))
        assert report.disabled == ["photos"]
        manager = ConduitManager(library.db)
        record = await manager.get_by_name("photos")
        assert record is not None
        assert not record.enabled
        assert len(await manager.generations(record.id)) == 1
    finally:
        await library.close()


async def test_changed_target_resets_the_baseline_but_keeps_history(
    tmp_path: Path,
) -> None:
    config = load_config(_config(tmp_path))
    library = await open_library(config.daemon.state_dir)
    try:
        await reconcile_conduits(library, config)
        record = await ConduitManager(library.db).get_by_name("photos")
        assert record is not None
        async with library.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO sync_baseline (conduit_id, relative_path, kind, generation)"
                " VALUES (?, x'61', 0, 1)",
                (record.id,),
            )
        moved = load_config(_config(tmp_path, target="other"))
        report = await reconcile_conduits(library, moved)
        assert report.reset == ["photos"]
        assert report.updated == ["photos"]
        rows = await library.db.fetch_all("SELECT * FROM sync_baseline")
        assert rows == []
    finally:
        await library.close()
