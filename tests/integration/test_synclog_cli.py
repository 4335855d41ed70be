"""`conduitd log` in a subprocess: JSON documents, --since/--limit, text lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conduitd.config import load_config
from conduitd.storage.library import open_library
from conduitd.storage.reconcile import reconcile_conduits
from helpers.cli import run_cli, write_config

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def config_file(tmp_path: Path) -> Path:
    for name in ("src", "dst"):
        (tmp_path / name).mkdir()
    conduit = {"name": "photos", "source": "src", "target": "dst"}
    path = write_config(tmp_path / "conduitd.toml", tmp_path / "state", [conduit])
    config = load_config(path)
    library = await open_library(config.daemon.state_dir)
    try:
        await reconcile_conduits(library, config)
    finally:
        await library.close()
    return path


async def test_log_json_lists_the_entries_design_shape(config_file: Path) -> None:
    result = run_cli("log", "--json", config=config_file)
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [e["sequence"] for e in entries] == [1, 2, 3]
    assert [e["model_type"] for e in entries] == ["location", "location", "conduit"]
    assert set(entries[2]) == {
        "sequence",
        "device_id",
        "timestamp",
        "model_type",
        "record_id",
        "change_type",
        "version",
        "data",
    }
    assert entries[2]["data"]["name"] == "photos"
    assert entries[2]["timestamp"].endswith("Z")


async def test_log_since_and_limit(config_file: Path) -> None:
    result = run_cli(
        "log", "--since", "1", "--limit", "1", "--json", config=config_file
    )
    assert [e["sequence"] for e in json.loads(result.stdout)] == [2]
    result = run_cli("log", "--since", "3", "--json", config=config_file)
    assert json.loads(result.stdout) == []


async def test_log_text_has_one_line_per_entry(config_file: Path) -> None:
    result = run_cli("log", config=config_file)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert "photos" in lines[2]
    assert "insert" in lines[2]
    empty = run_cli("log", "--since", "3", config=config_file)
    assert empty.stdout.splitlines() == ["no sync log entries"]


def test_log_with_a_missing_config_exits_2(tmp_path: Path) -> None:
    result = run_cli("log", "--json", config=tmp_path / "missing.toml")
    assert result.returncode == 2
    assert "error" in json.loads(result.stdout)
