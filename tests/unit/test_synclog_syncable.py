"""Syncable records: deterministic sync JSON, exclusions, path encoding, crash hooks."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import pytest

from conduitd.config.enums import SyncMode
from conduitd.crashpoints import _parse
from conduitd.errors import StorageError
from conduitd.storage.conduits import (
    ConduitRecord,
    GenerationCounts,
    GenerationRecord,
    GenerationStatus,
)
from conduitd.storage.conflicts import (
    ConflictRecord,
    ConflictSide,
    ConflictStatus,
)
from conduitd.storage.locations import LocationRecord, LocationState
from conduitd.storage.models import EntryKind
from conduitd.storage.syncable import (
    Syncable,
    canonical_json,
    path_fields,
    path_from_fields,
)

LOCATION_UUID = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER_UUID = uuid.UUID("22222222-2222-4222-8222-222222222222")
CONDUIT_UUID = uuid.UUID("33333333-3333-4333-8333-333333333333")


def a_location(**changes: object) -> LocationRecord:
    record = LocationRecord(
        id=7,
        uuid=LOCATION_UUID,
        device_id="dev-a",
        entry_id=9,
        name="Photos",
        path=Path("/home/me/Photos"),
        st_dev=42,
        root_inode=1234,
        index_mode="deep",
        state=LocationState.READY,
        index_lost=False,
        last_scan_at="2026-01-01T00:00:00.000000Z",
        total_file_count=3,
        total_byte_size=300,
        version=2,
        has_marker=True,
        created_at="2026-01-01T00:00:00.000000Z",
    )
    return dataclasses.replace(record, **changes)


def a_conduit(**changes: object) -> ConduitRecord:
    record = ConduitRecord(
        id=1,
        uuid=CONDUIT_UUID,
        name="photos",
        source_entry_id=9,
        target_entry_id=10,
        sync_mode=SyncMode.MIRROR,
        enabled=True,
        paused=False,
        schedule="manual",
        use_index_rules=True,
        parallel_transfers=3,
        bandwidth_limit_mbps=None,
        last_sync_completed_at=None,
        sync_generation=0,
        last_sync_error=None,
        last_checked_at="2026-01-02T00:00:00.000000Z",
        total_syncs=0,
        files_synced=0,
        bytes_transferred=0,
        created_at="2026-01-01T00:00:00.000000Z",
        updated_at="2026-01-01T00:00:00.000000Z",
        version=1,
        source_location_uuid=LOCATION_UUID,
        target_location_uuid=OTHER_UUID,
    )
    return dataclasses.replace(record, **changes)


def a_generation(**changes: object) -> GenerationRecord:
    record = GenerationRecord(
        id=5,
        conduit_id=1,
        generation=3,
        started_at="2026-01-01T00:00:00.000000Z",
        completed_at=None,
        counts=GenerationCounts(files_copied=2, bytes_transferred=10),
        verified_at=None,
        verification_status="unverified",
        status=GenerationStatus.RUNNING,
        uuid=uuid.UUID("44444444-4444-4444-8444-444444444444"),
        version=1,
        conduit_uuid=CONDUIT_UUID,
    )
    return dataclasses.replace(record, **changes)


def a_conflict(**changes: object) -> ConflictRecord:
    record = ConflictRecord(
        id=12,
        uuid=uuid.UUID("55555555-5555-4555-8555-555555555555"),
        conduit_id=1,
        conduit_uuid=CONDUIT_UUID,
        relative_path=b"dir/caf\xe9.txt",
        detected_generation=3,
        detected_at="2026-01-01T00:00:00.000000Z",
        status=ConflictStatus.PENDING,
        source=ConflictSide(EntryKind.FILE, 1, 2, "a" * 64),
        target=ConflictSide(),
        resolution=None,
        resolved_at=None,
        version=1,
    )
    return dataclasses.replace(record, **changes)


RECORDS = [a_location(), a_conduit(), a_generation(), a_conflict()]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.model_type)
def test_every_field_is_either_synced_or_excluded(record: Syncable) -> None:
    fields = {f.name for f in dataclasses.fields(record)}
    synced = set(record.sync_fields())
    # `counts` and the path's `_b64` twin are how a field travels, not new ones.
    synced = {k.removesuffix("_b64") for k in synced}
    assert not (synced & record.SYNC_EXCLUDED)
    assert fields <= synced | record.SYNC_EXCLUDED | {"counts", "source", "target"}
    assert isinstance(record, Syncable)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.model_type)
def test_sync_json_is_canonical(record: Syncable) -> None:
    text = record.to_sync_json()
    assert text == canonical_json(json.loads(text))
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert record.to_sync_json() == text


def test_location_sync_json_leaves_out_this_devices_path_and_ids() -> None:
    data = json.loads(a_location().to_sync_json())
    assert data == {
        "uuid": str(LOCATION_UUID),
        "device_id": "dev-a",
        "name": "Photos",
        "index_mode": "deep",
        "created_at": "2026-01-01T00:00:00.000000Z",
        "version": 2,
    }
    changed = a_location(path=Path("/elsewhere"), id=99, st_dev=1, entry_id=3)
    assert changed.to_sync_json() == a_location().to_sync_json()


def test_conduit_refers_to_locations_by_uuid_not_entry_id() -> None:
    data = json.loads(a_conduit().to_sync_json())
    assert data["source_location_uuid"] == str(LOCATION_UUID)
    assert data["target_location_uuid"] == str(OTHER_UUID)
    assert "source_entry_id" not in data
    assert "id" not in data
    assert (
        a_conduit(source_entry_id=77, id=5).to_sync_json() == a_conduit().to_sync_json()
    )


def test_conduit_read_without_its_locations_cannot_be_logged() -> None:
    with pytest.raises(StorageError, match="source"):
        a_conduit(source_location_uuid=None).to_sync_json()


def test_generation_without_uuid_is_named_by_conduit_and_number() -> None:
    first = a_generation(uuid=None)
    assert first.record_uuid == a_generation(uuid=None, id=99).record_uuid
    assert first.record_uuid != a_generation(uuid=None, generation=4).record_uuid
    assert json.loads(first.to_sync_json())["conduit_uuid"] == str(CONDUIT_UUID)


def test_conflict_path_that_is_not_utf8_travels_as_base64_too() -> None:
    data = json.loads(a_conflict().to_sync_json())
    assert data["relative_path"] == "dir/caf\udce9.txt"
    assert path_from_fields("relative_path", data) == b"dir/caf\xe9.txt"
    plain = json.loads(a_conflict(relative_path=b"a/b.txt").to_sync_json())
    assert "relative_path_b64" not in plain
    assert path_from_fields("relative_path", plain) == b"a/b.txt"


@pytest.mark.parametrize("raw", [b"", b"plain", b"\xff\xfe", "é".encode(), b"a\x00b"])
def test_path_fields_round_trip(raw: bytes) -> None:
    encoded = json.loads(canonical_json(path_fields("p", raw)))
    assert path_from_fields("p", encoded) == raw


def test_canonical_json_refuses_floats_that_are_not_numbers() -> None:
    with pytest.raises(StorageError):
        canonical_json({"x": float("nan")})
    with pytest.raises(StorageError):
        canonical_json({"x": object()})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, (None, 0)),
        ("", (None, 0)),
        ("tm.after_domain_write", ("tm.after_domain_write", 1)),
        ("drain.after_append:3", ("drain.after_append", 3)),
        ("drain.after_append:0", ("drain.after_append", 1)),
        ("odd:label:x", ("odd:label:x", 1)),
    ],
)
def test_crash_point_spec_parsing(
    spec: str | None, expected: tuple[str | None, int]
) -> None:
    assert _parse(spec) == expected
