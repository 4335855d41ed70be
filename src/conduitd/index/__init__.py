"""The index: scanner, watchers, location state and barriers (issue 4).

Public surface; everything else in this package is an implementation detail.
"""

from __future__ import annotations

from conduitd.index.feed import ChangeFeed, IndexChange
from conduitd.index.indexer import BARRIER_TIMEOUT_S, Indexer, ScanReport
from conduitd.index.marker import Marker, MarkerStatus, marker_status
from conduitd.index.state import IndexStep, advance
from conduitd.storage.locations import LocationState

__all__ = [
    "BARRIER_TIMEOUT_S",
    "ChangeFeed",
    "IndexChange",
    "IndexStep",
    "Indexer",
    "LocationState",
    "Marker",
    "MarkerStatus",
    "ScanReport",
    "advance",
    "marker_status",
]
