"""The indexer's watchers in the daemon, and where their changes go.

A location (an endpoint root) may serve several conduits, as the source of
one and the target of another; each change notification of a location is
handed to every conduit using it, with the side it plays there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel

from conduitd.daemon.dirty import Side
from conduitd.forked_workers import ForkedWorkers
from conduitd.index.feed import ChangeFeed
from conduitd.index.indexer import Indexer
from conduitd.storage.locations import LocationRecord, list_locations

if TYPE_CHECKING:
    from conduitd.config import Config
    from conduitd.storage.library import Library
    from conduitd.storage.transactions import TransactionManager

ChangeSink = Callable[[str, Side, tuple[bytes, ...]], None]


class WatchService:
    """Runs `Indexer.run_watchers` for the enabled conduits' roots and routes
    the indexer's change feed to the conduits (`sink(name, side, paths)`)."""

    def __init__(
        self,
        library: Library,
        sink: ChangeSink,
        workers: ForkedWorkers | None = None,
    ) -> None:
        self._library = library
        self._sink = sink
        self._workers = workers
        self._routes: dict[int, list[tuple[str, Side]]] = {}
        self._feed: ChangeFeed | None = None
        self.indexer: Indexer | None = None

    async def run(
        self,
        config: Config,
        tm: TransactionManager,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch until cancelled; started once every root had its first scan."""
        self.indexer = Indexer.for_library(
            self._library,
            tm=tm,
            rescan_interval_s=config.daemon.rescan_interval_s,
            workers=self._workers,
        )
        locations = await self._plan(config)
        with self.indexer.subscribe() as feed:
            self._feed = feed
            async with anyio.create_task_group() as tg:
                await tg.start(self.indexer.run_watchers, locations)
                task_status.started()
                async for change in feed:
                    self.route(change.location_id, change.paths)

    async def catch_up(self, name: str) -> None:
        """Return once every change made to `name`'s roots before the call has
        been routed to it (`conduitd sync` right after a save must see it).

        Each root's barrier returns once its watcher has written the changes
        to the index, and the index publishes to the feed before it releases
        the barrier; the feed is then drained. Taking a change off the feed
        and routing it happen in one step of the loop below (no await
        between), so an empty feed means all of it was routed.
        """
        indexer, feed = self.indexer, self._feed
        if indexer is None:
            return
        mine = [
            location_id
            for location_id, routes in self._routes.items()
            if any(routed == name for routed, _ in routes)
        ]
        async with anyio.create_task_group() as tg:
            for location_id in mine:
                tg.start_soon(indexer.barrier, location_id)
        # A few turns of the loop at most: the consumer is ready to run.
        while feed is not None and feed.pending():
            await anyio.lowlevel.checkpoint()

    def route(self, location_id: int, paths: Iterable[bytes]) -> None:
        changed = tuple(paths)
        for name, side in self._routes.get(location_id, ()):
            self._sink(name, side, changed)

    async def refresh(self, config: Config) -> None:
        """After a reload: watch new roots, stop watching unused ones."""
        before = set(self._routes)
        after = {location.id for location in await self._plan(config)}
        if self.indexer is None:
            return
        for location_id in before - after:
            self.indexer.remove_watch(location_id)
        for location_id in after - before:
            await self.indexer.add_watch(location_id)

    async def _plan(self, config: Config) -> list[LocationRecord]:
        """The enabled conduits' locations; rebuilds the routing table."""
        by_path = {loc.path: loc for loc in await list_locations(self._library.db)}
        routes: dict[int, list[tuple[str, Side]]] = {}
        watched: dict[int, LocationRecord] = {}
        for conduit in config.conduits:
            if not conduit.enabled:
                continue
            for side, root in (
                (Side.SOURCE, conduit.source),
                (Side.TARGET, conduit.target),
            ):
                location = by_path.get(root)
                if location is not None:
                    routes.setdefault(location.id, []).append((conduit.name, side))
                    watched[location.id] = location
        self._routes = routes
        return list(watched.values())
