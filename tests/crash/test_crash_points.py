"""Crash a real one-shot sync at every hook, restart, and lose nothing (issue 8).

For each crash label, mode and seed: random trees (and, in half the trials,
a clean first sync followed by random changes on both sides), then `conduitd
sync` with `CONDUITD_CRASH_AT=<label>:<n>` (exit 137, or a normal exit when
the run never reaches the n-th hit: counted as "not hit"), then syncs without
the crash until the sides agree (at most 2 restarts). The invariants of
`crash_world` are checked after the crash and at the end, and every trial is
counted in the summary table.
"""

from __future__ import annotations

import os
import random
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from crash_ledger import CrashLedger
from crash_run import (
    CRASH_EXIT,
    base_seed,
    explain,
    sync,
    trials_per_case,
)
from crash_world import (
    SIDES,
    Violation,
    World,
    database_problems,
    temp_names,
)

from helpers.cli import write_config

pytestmark = pytest.mark.crash

# label -> how many hits a run may reach (n is drawn from 1..max).
LABELS: dict[str, int] = {
    "copy.after_temp_write": 10,
    "commit.after_durable": 2,
    "commit.after_rename": 10,
    "commit.after_dir_fsync": 2,
    "service.after_batch_rows": 3,
    "delete.before_trash": 2,
    "delete.after_trash": 2,
    "tm.after_domain_write": 12,
    "tm.after_outbox_commit": 12,
    "drain.after_append": 2,
    "drain.before_outbox_delete": 2,
    "service.mid_resolution": 1,
}
MODES = ("mirror", "bidirectional")
MAX_RESTARTS = 2
DOUBLE_CRASH = 0.25  # share of trials whose first restart crashes as well
WORKERS = max(2, min(4, os.cpu_count() or 2))


@dataclass
class Trial:
    label: str
    mode: str
    seed: int
    n: int = 1
    phase: str = ""
    then: str = ""  # a second crash, during the first restart
    crashed: bool = False
    restarts: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def name(self) -> str:
        then = f" then={self.then}" if self.then else ""
        return (
            f"{self.mode} seed={self.seed} at={self.label}:{self.n}{then} "
            f"phase={self.phase}"
        )


def trial_seed(label: str, mode: str, index: int) -> int:
    return zlib.crc32(f"{base_seed()}/{label}/{mode}/{index}".encode())


def build(world: World, trial: Trial, rng: random.Random) -> Path:
    """Random trees, the config; returns the config path."""
    trial.phase = "first" if rng.random() < 0.4 else "change"
    world.populate("src", rng.randrange(18, 32))
    if trial.mode == "bidirectional":
        world.populate("dst", rng.randrange(6, 14))
        for rel in rng.sample(world.files("src"), 4):
            if rel != "keep.txt":
                world.copy_over(rel)
    elif trial.phase == "first":
        for rel in rng.sample(world.files("src"), 2):
            if rel != "keep.txt":
                world.write_file("dst", rel)  # differs: overwritten, to trash
        world.write_file("dst", "only-on-target.bin")  # deleted, to trash
    conduit: dict[str, object] = {
        "name": "c",
        "source": str(world.root("src")),
        "target": str(world.root("dst")),
        "mode": trial.mode,
        "max_delete_percent": 100,
    }
    if trial.mode == "bidirectional":
        conduit["conflict"] = rng.choice(
            ["newest_wins", "create_conflict_file", "source_wins", "target_wins"]
        )
    return write_config(world.base / "conduitd.toml", world.state_dir, [conduit])


def run_trial(base: Path, trial: Trial) -> Trial:
    rng = random.Random(trial.seed)
    trial.n = rng.randrange(1, LABELS[trial.label] + 1)
    world = World(base, rng)
    config = build(world, trial, rng)
    if trial.phase == "change":
        setup = sync(config, "c")
        if setup.returncode != 0:
            trial.violations.append(Violation("exit", f"setup {explain(setup)}"))
            return trial
        world.change("src", rng.randrange(6, 12))
        for rel in rng.sample(world.files("src", "fl"), 2):  # deletes, every time
            if rel != "keep.txt":
                world.delete("src", rel)
        dst_changes = 6 if trial.mode == "bidirectional" else 2
        world.change("dst", rng.randrange(1, dst_changes + 1))
    world.observe()
    crashed = sync(config, "c", crash_at=f"{trial.label}:{trial.n}")
    trial.crashed = crashed.returncode == CRASH_EXIT
    if not trial.crashed and crashed.returncode != 0:
        trial.violations.append(Violation("exit", f"crash run {explain(crashed)}"))
    after = world.observe()
    trial.violations += world.partial_files(after) + world.outside_changed()
    if rng.random() < DOUBLE_CRASH:  # the restart crashes too, anywhere
        label = rng.choice(sorted(LABELS))
        trial.then = f"{label}:{rng.randrange(1, LABELS[label] + 1)}"
        again = sync(config, "c", crash_at=trial.then)
        if again.returncode not in (0, CRASH_EXIT):
            trial.violations.append(Violation("exit", f"2nd crash {explain(again)}"))
        after = world.observe()
        trial.violations += world.partial_files(after) + world.outside_changed()
    for trial.restarts in range(1, MAX_RESTARTS + 1):
        restarted = sync(config, "c")
        final = world.observe()
        if restarted.returncode == 0 and not world.divergence(final):
            break
    if restarted.returncode != 0:
        trial.violations.append(Violation("exit", f"restart {explain(restarted)}"))
    trial.violations += world.divergence(final)
    trial.violations += world.lost_versions(final)
    trial.violations += world.partial_files(final) + world.outside_changed()
    for side in SIDES:
        left = temp_names(world.root(side))
        if left:
            trial.violations.append(Violation("temps", f"{side}: {left[:3]}"))
    trial.violations += database_problems(world.state_dir)
    return trial


@pytest.mark.timeout(600)
@pytest.mark.parametrize("label", sorted(LABELS))
def test_crash_at_hook_then_restart_loses_nothing(
    label: str, tmp_path: Path, crash_ledger: CrashLedger
) -> None:
    trials = [
        Trial(label, mode, trial_seed(label, mode, i))
        for i in range(trials_per_case(2))
        for mode in MODES
    ]
    with ThreadPoolExecutor(WORKERS) as pool:
        done = list(
            pool.map(
                lambda t: run_trial(tmp_path / f"{t.mode}-{t.seed}", t),
                trials,
            )
        )
    for trial in done:
        if trial.then:
            crash_ledger.counts["trials crashed again during the first restart"] += 1
        crash_ledger.record(
            label,
            violations=trial.violations,
            crashed=trial.crashed,
            restarts=trial.restarts,
            trial=trial.name,
        )
    failed = [f"{t.name}: {v}" for t in done for v in t.violations]
    assert not failed, "\n".join(failed[:20])
