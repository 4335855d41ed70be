"""Kill a writer at each seam between a domain write and its log entry.

A subprocess does logged writes (each followed by a drain) with
`CONDUITD_CRASH_AT=<label>:3`; it dies with 137 mid-way. Reopening the
library and draining must leave every domain row with exactly one log entry,
no entry without its row, and sequences gap-free.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conduitd.storage.library import open_library
from conduitd.storage.locations import list_locations
from conduitd.storage.transactions import open_transaction_manager

pytestmark = [pytest.mark.anyio, pytest.mark.crash]

SRC = Path(__file__).resolve().parents[2] / "src"
WRITES = 5

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import anyio

    from conduitd.storage.library import open_library
    from conduitd.storage.locations import ensure_location
    from conduitd.storage.transactions import open_transaction_manager

    async def main(state: str, first: int, count: int) -> None:
        library = await open_library(Path(state))
        tm = await open_transaction_manager(library)
        for i in range(first, first + count):
            async with tm.transaction() as tx:
                await ensure_location(tx, str(library.device_id), Path(f"/data/{i}"))
            await tm.drain_once()
        await library.close()

    anyio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    """
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run_writer(state: Path, first: int, crash_at: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "CONDUITD_CRASH_AT"}
    env["PYTHONPATH"] = str(SRC)
    if crash_at:
        env["CONDUITD_CRASH_AT"] = crash_at
    result = subprocess.run(
        [sys.executable, "-c", WRITER, str(state), str(first), str(WRITES)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode


async def check_consistent(state: Path) -> int:
    """Drain what is left, then compare rows and entries; return the row count."""
    library = await open_library(state)
    try:
        tm = await open_transaction_manager(library)
        await tm.flushed()
        assert await tm.pending_count() == 0
        rows = {str(loc.uuid) for loc in await list_locations(library.db)}
        entries = await tm.log.fetch_since(0)
        assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
        record_ids = [e.record_id for e in entries]
        assert len(record_ids) == len(set(record_ids)), "an entry was appended twice"
        assert set(record_ids) == rows, "a row without its entry, or the reverse"
        return len(rows)
    finally:
        await library.close()


@pytest.mark.parametrize(
    ("label", "rows_after_crash"),
    [
        ("tm.after_domain_write", 2),  # the third write rolls back with its row
        ("tm.after_outbox_commit", 3),
        ("drain.after_append", 3),
        ("drain.before_outbox_delete", 3),
    ],
)
async def test_crash_at_the_seam_leaves_rows_and_log_consistent(
    tmp_path: Path, label: str, rows_after_crash: int
) -> None:
    state = tmp_path / "state"
    assert run_writer(state, 0, f"{label}:3") == 137
    assert await check_consistent(state) == rows_after_crash
    # The library goes on normally after recovery.
    assert run_writer(state, 100, None) == 0
    assert await check_consistent(state) == rows_after_crash + WRITES


async def test_an_unset_crash_variable_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert run_writer(state, 0, None) == 0
    assert await check_consistent(state) == WRITES
