"""SIGKILL a real daemon at random moments while files change (issue 8).

One daemon runs two instant conduits: a mirror (the user writes its source)
and a bidirectional one (the user writes both sides, conflicts included).
Each round starts the daemon, changes files at random for a while, and kills
the daemon with SIGKILL at a random moment of that churn; the sides are then
observed (no partial file under a final name, nothing outside the roots
touched). After the last round the daemon restarts and must converge (at most
2 restarts); then every version the user wrote, or that was seen on a side,
and that the user did not destroy there, must still be on that side.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from crash_ledger import CrashLedger
from crash_run import base_seed, trials_per_case
from crash_world import SIDES, Violation, World, database_problems, temp_names

from helpers.cli import write_config
from helpers.daemon import DaemonProcess

pytestmark = pytest.mark.crash

CONVERGE_TIMEOUT_S = 30.0
MAX_RESTARTS = 2


def churn(
    worlds: dict[str, World],
    rng: random.Random,
    seconds: float,
    kill_at: float,
    daemon: DaemonProcess,
) -> float:
    """Random user changes for `seconds`; SIGKILL the daemon at `kill_at`.

    Returns how long the daemon had run when it was killed.
    """
    started = time.monotonic()
    killed_after = 0.0
    while (elapsed := time.monotonic() - started) < seconds:
        if not killed_after and elapsed >= kill_at:
            daemon.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            killed_after = elapsed
        name = rng.choice(sorted(worlds))
        side = "src" if name == "mirror" else rng.choice(SIDES)
        worlds[name].change(side, 1)
        time.sleep(rng.uniform(0.0, 0.04))
    if not killed_after:
        daemon.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        killed_after = time.monotonic() - started
    daemon.process.wait(timeout=20)  # type: ignore[union-attr]
    return killed_after


@contextmanager
def daemon_started(config: Path, workdir: Path) -> Iterator[DaemonProcess]:
    """A ready daemon; killed (by its pid) if still running when the block ends."""
    daemon = DaemonProcess(config, workdir).start()
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.kill()


def restart_until_converged(
    config: Path, workdir: Path, worlds: dict[str, World]
) -> int:
    """Start the daemon until the sides agree (at most MAX_RESTARTS); how many."""
    for restart in range(1, MAX_RESTARTS + 1):
        with daemon_started(config, workdir) as daemon:
            deadline = time.monotonic() + CONVERGE_TIMEOUT_S
            while not converged(worlds) and time.monotonic() < deadline:
                time.sleep(0.2)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait_exit() == 0, daemon.log_text()[-3000:]
        if converged(worlds):
            return restart
    return MAX_RESTARTS


def interrupted_generations(state: Path) -> int:
    """Generations a kill (or the final SIGTERM) cut short."""
    total = 0
    for db in state.glob("libraries/*/library.db"):
        with sqlite3.connect(db) as conn:
            (found,) = conn.execute(
                "SELECT count(*) FROM sync_generation WHERE status = 'interrupted'"
            ).fetchone()
        conn.close()
        total += found
    return total


def converged(worlds: dict[str, World]) -> bool:
    return all(not World.divergence(world.snapshot()) for world in worlds.values())


@pytest.mark.timeout(900)
def test_random_sigkills_of_a_daemon_lose_nothing(
    tmp_path: Path, crash_ledger: CrashLedger
) -> None:
    seed = zlib.crc32(f"{base_seed()}/sigkill".encode())
    rng = random.Random(seed)
    worlds = {
        "mirror": World(tmp_path / "mirror", rng),
        "bidi": World(tmp_path / "bidi", rng),
    }
    worlds["mirror"].populate("src", 24)
    worlds["bidi"].populate("src", 14)
    worlds["bidi"].populate("dst", 8)
    conduits = [
        {
            "name": name,
            "source": str(world.root("src")),
            "target": str(world.root("dst")),
            "mode": "mirror" if name == "mirror" else "bidirectional",
            "schedule": "instant",
            "debounce": "50ms",
            "max_delay": "1s",
            "max_delete_percent": 100,
        }
        for name, world in worlds.items()
    ]
    conduits[0]["bandwidth_limit_mbps"] = 200  # copies long enough to be cut
    state = tmp_path / "state"
    config = write_config(tmp_path / "conduitd.toml", state, conduits)
    kills = 3 * trials_per_case(2)
    violations: list[Violation] = []
    for round_ in range(kills):
        with daemon_started(config, tmp_path) as daemon:
            seconds = rng.uniform(0.4, 1.6)
            ran = churn(worlds, rng, seconds, rng.uniform(0.0, seconds), daemon)
        found: list[Violation] = []
        for world in worlds.values():
            observed = world.observe()
            found += world.partial_files(observed) + world.outside_changed()
        crash_ledger.record(
            "sigkill (daemon)",
            violations=found,
            trial=f"seed={seed} round={round_} killed after {ran:.2f} s",
        )
        violations += found
    restarts = restart_until_converged(config, tmp_path, worlds)
    final: list[Violation] = []
    for name, world in worlds.items():
        observed = world.observe()
        final += [
            Violation(v.kind, f"{name}: {v.detail}")
            for v in (
                world.divergence(observed)
                + world.lost_versions(observed)
                + world.partial_files(observed)
                + world.outside_changed()
            )
        ]
        for side in SIDES:
            left = temp_names(world.root(side))
            if left:
                final.append(Violation("temps", f"{name} {side}: {left[:3]}"))
    final += database_problems(state)
    cut_short = interrupted_generations(state)
    crash_ledger.notes.append(
        f"sigkill: {kills} kills of a daemon, {cut_short} generations cut short"
    )
    crash_ledger.record(
        "sigkill (final)",
        violations=final,
        restarts=restarts,
        trial=f"seed={seed} after {kills} kills",
    )
    violations += final
    assert not violations, "\n".join(map(str, violations[:20]))
