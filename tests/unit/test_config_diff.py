"""Reload diff: which conduits were added, removed, changed or left alone."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from conduitd.config import ConduitDiff, Config, diff_conduits, load_config


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    return home


def config_of(tmp_path: Path, label: str, *conduits: Mapping[str, object]) -> Config:
    text = "".join(
        "[[conduit]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in c.items())
        for c in conduits
    )
    path = tmp_path / f"{label}.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


PHOTOS = {"name": "photos", "source": "photos", "target": "backup/photos"}
NOTES = {"name": "notes", "source": "notes", "target": "backup/notes"}
MUSIC = {"name": "music", "source": "music", "target": "backup/music"}


def test_same_config_leaves_every_conduit_unchanged(tmp_path: Path) -> None:
    old = config_of(tmp_path, "old", PHOTOS, NOTES)
    new = config_of(tmp_path, "new", PHOTOS, NOTES)
    assert diff_conduits(old, new) == ConduitDiff((), (), (), ("photos", "notes"))


def test_diff_sorts_conduits_by_fate(tmp_path: Path) -> None:
    old = config_of(tmp_path, "old", PHOTOS, NOTES, MUSIC)
    new = config_of(
        tmp_path,
        "new",
        {**MUSIC, "schedule": "interval:1h"},
        {"name": "videos", "source": "videos", "target": "backup/videos"},
        PHOTOS,
    )
    assert diff_conduits(old, new) == ConduitDiff(
        added=("videos",),
        removed=("notes",),
        changed=("music",),
        unchanged=("photos",),
    )


def test_a_renamed_conduit_is_removed_and_added(tmp_path: Path) -> None:
    old = config_of(tmp_path, "old", PHOTOS)
    new = config_of(tmp_path, "new", {**PHOTOS, "name": "pictures"})
    assert diff_conduits(old, new) == ConduitDiff(("pictures",), ("photos",), (), ())


@pytest.mark.parametrize(
    ("change", "resets"),
    [
        ({"target": "elsewhere/photos"}, True),
        ({"source": "pictures"}, True),
        ({"mode": "bidirectional"}, True),
        ({"schedule": "instant"}, False),
        ({"parallel_transfers": 8}, False),
        ({"ignore": ["*.tmp"]}, False),
    ],
)
def test_identity_changes_only_with_source_target_or_mode(
    tmp_path: Path, change: dict[str, object], resets: bool
) -> None:
    (old,) = config_of(tmp_path, "old", PHOTOS).conduits
    (new,) = config_of(tmp_path, "new", {**PHOTOS, **change}).conduits
    assert old != new
    assert new.identity_changed(old) is resets
