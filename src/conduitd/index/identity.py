"""Is this root still the location we indexed? (DESIGN.md Data and Safety)

`inspect_root` (blocking: run it in a worker thread) stats the root and reads
its marker; `judge_root` (pure) decides:
- root missing, not a directory → unmounted (a scan never creates a root);
- marker names this library and location → ours (a changed st_dev or root
  inode is accepted: a re-plugged disk gets another st_dev);
- marker names another library or location, or is corrupt or unreadable →
  ours, but the index is lost (`index_lost`): the marker is left in place;
- no marker although we wrote one → unmounted (the marker vanished);
- no marker, never written → identity by st_dev + root inode: a change means
  unmounted; otherwise write the marker (first scan), unless read-only.
"""

from __future__ import annotations

import enum
import os
import uuid
from dataclasses import dataclass

from conduitd.index.marker import MarkerRead, MarkerStatus, classify_marker, read_marker
from conduitd.index.walk import stat_root
from conduitd.storage.locations import LocationRecord


@dataclass(frozen=True, slots=True)
class RootInspection:
    st: os.stat_result | None  # None: missing or not a directory
    marker: MarkerRead


def inspect_root(root: bytes) -> RootInspection:
    st = stat_root(root)
    if st is None:
        return RootInspection(None, MarkerRead(exists=False))
    return RootInspection(st, read_marker(root))


class RootVerdict(enum.StrEnum):
    OURS = "ours"
    INDEX_LOST = "index_lost"
    FIRST_SEEN = "first_seen"  # ours; write the marker if the root is writable
    ROOT_MISSING = "root_missing"
    MARKER_VANISHED = "marker_vanished"
    DEVICE_CHANGED = "device_changed"

    @property
    def unmounted(self) -> bool:
        return self in (
            RootVerdict.ROOT_MISSING,
            RootVerdict.MARKER_VANISHED,
            RootVerdict.DEVICE_CHANGED,
        )


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: RootVerdict
    marker_status: MarkerStatus
    identity_changed: bool = False  # st_dev or root inode differ from the row's


def judge_root(
    location: LocationRecord, found: RootInspection, library: uuid.UUID
) -> Judgement:
    if found.st is None:
        return Judgement(RootVerdict.ROOT_MISSING, MarkerStatus.MISSING)
    status = classify_marker(found.marker, library, location.uuid)
    changed = location.st_dev is not None and (
        location.st_dev != found.st.st_dev or location.root_inode != found.st.st_ino
    )
    if status is MarkerStatus.OK:
        return Judgement(RootVerdict.OURS, status, changed)
    if status in (MarkerStatus.FOREIGN, MarkerStatus.UNREADABLE):
        return Judgement(RootVerdict.INDEX_LOST, status, changed)
    if location.has_marker:
        return Judgement(RootVerdict.MARKER_VANISHED, status, changed)
    if changed:
        return Judgement(RootVerdict.DEVICE_CHANGED, status, changed)
    return Judgement(RootVerdict.FIRST_SEEN, status, False)
