"""Reconcile the config's conduits into `sync_conduit`, by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from conduitd.config import ConduitConfig, Config
from conduitd.storage.conduits import ConduitManager, ConduitRecord, ConduitSettings
from conduitd.storage.library import Library
from conduitd.storage.locations import ensure_location
from conduitd.storage.transactions import (
    LoggedTransaction,
    TransactionManager,
    open_transaction_manager,
)


@dataclass(slots=True)
class ReconcileReport:
    """Names of conduits created, updated, reset (baseline dropped), disabled."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)


async def reconcile_conduits(
    library: Library, config: Config, *, tm: TransactionManager | None = None
) -> ReconcileReport:
    """Create or update each configured conduit; disable the ones removed.

    History is never deleted: a removed conduit is disabled, and root entries
    are upserted so the seed's ON DELETE CASCADE never fires. A changed source,
    target or mode drops the conduit's baseline, so its next run is a first
    sync (a union in bidirectional mode). `paused` is never touched here.

    Writes are logged through `tm` (the process's TransactionManager); without
    one, a private one is opened and flushed before returning.
    """
    own_tm = tm is None
    if tm is None:
        tm = await open_transaction_manager(library)
    manager = ConduitManager(library.db)
    report = ReconcileReport()
    async with tm.transaction() as tx:
        configured = {c.name for c in config.conduits}
        for conduit in config.conduits:
            await _reconcile_one(tx, manager, library, conduit, report)
        rows = await tx.fetch_all("SELECT id, name FROM sync_conduit WHERE enabled = 1")
        for row in rows:
            if row["name"] not in configured:
                await manager.disable(tx, int(row["id"]))
                report.disabled.append(str(row["name"]))
    if own_tm:
        await tm.flushed()
    return report


async def _reconcile_one(
    tx: LoggedTransaction,
    manager: ConduitManager,
    library: Library,
    conduit: ConduitConfig,
    report: ReconcileReport,
) -> ConduitRecord:
    device = str(library.device_id)
    source, _ = await ensure_location(tx, device, conduit.source)
    target, _ = await ensure_location(tx, device, conduit.target)
    settings = ConduitSettings(
        name=conduit.name,
        source_entry_id=source.entry_id,
        target_entry_id=target.entry_id,
        sync_mode=conduit.mode,
        enabled=conduit.enabled,
        schedule=conduit.schedule.text,
        use_index_rules=conduit.use_index_rules,
        parallel_transfers=conduit.parallel_transfers,
        bandwidth_limit_mbps=conduit.bandwidth_limit,
    )
    row = await tx.fetch_one(
        "SELECT * FROM sync_conduit WHERE name = ?", (conduit.name,)
    )
    if row is None:
        report.created.append(conduit.name)
        return await manager.create(tx, settings)
    existing = ConduitRecord.from_row(row)
    if _identity(existing) != _identity_of(settings):
        await tx.execute(
            "DELETE FROM sync_baseline WHERE conduit_id = ?", (existing.id,)
        )
        report.reset.append(conduit.name)
    if _settings_of(existing) == settings:
        return existing
    report.updated.append(conduit.name)
    return await manager.update_settings(tx, existing.id, settings)


def _identity(record: ConduitRecord) -> tuple[int, int, str]:
    return (record.source_entry_id, record.target_entry_id, record.sync_mode.value)


def _identity_of(settings: ConduitSettings) -> tuple[int, int, str]:
    return (
        settings.source_entry_id,
        settings.target_entry_id,
        settings.sync_mode.value,
    )


def _settings_of(record: ConduitRecord) -> ConduitSettings:
    return ConduitSettings(
        name=record.name,
        source_entry_id=record.source_entry_id,
        target_entry_id=record.target_entry_id,
        sync_mode=record.sync_mode,
        enabled=record.enabled,
        schedule=record.schedule,
        use_index_rules=record.use_index_rules,
        parallel_transfers=record.parallel_transfers,
        bandwidth_limit_mbps=record.bandwidth_limit_mbps,
    )
