"""Mirror benchmark (issue 5): `conduitd sync`, one-shot and daemon, next to rsync and cp.

Run (with the project installed in a venv; the venv's console script is timed):
  /work/venv/bin/python bench/mirror_bench.py --files 10000 --rounds 3 --big
  /work/venv/bin/python bench/mirror_bench.py --files 100000 --rounds 2

Workloads (BENCHMARKING.md): `small` = files of 1-64 KiB over files/20
directories (W1 at 10k), `tiny` = files of 1 KiB over files/100 directories
(W3 at 100k; the default from 20k files up), `--big` adds 50 x 10 MiB (W2).

Phases, each timed as whole processes (interpreter start included):
- initial mirror into a fresh target per round and tool;
- no-op resync of round 0's targets;
- resync after rewriting 1 % of the source's files (a fresh 1 % per round,
  the same files and bytes for every tool; cp has no incremental mode).

Tools:
- `conduitd`: `conduitd --config X sync NAME --json` with no daemon running
  (one-shot: it scans both trees itself);
- `conduitd daemon`: the same command answered by a running daemon
  (`conduitd --config Y daemon`, its own config, state dir and copy of the
  source, started untimed before the phases and ready: its watchers keep the
  index, so the run walks nothing). In the 1 % phase the change is made before
  the settle, so the watcher has indexed it when `sync` is called;
- `conduitd instant` (1 % phase only; not a `sync` call): an `instant`
  conduit of the same daemon with its own source copy; seconds from the end
  of the change to the end of the daemon's own run that leaves the trees
  equal (its generation's `completed_at`; no CLI call, no settle between);
- `rsync -a --delete`, `rsync --fsync`, `cp -a && sync -f`, `cp -a`; a peer
  that is not installed is skipped with a note.

Fairness: before every timed run, untimed, conduitd's bytecode is compiled
(timed processes run without PYTHONDONTWRITEBYTECODE), `os.sync()` writes
back what the previous tool left dirty, and the machine settles `--settle`
seconds. Tools run interleaved, round r starting with tool r mod n. Trees are
never deleted between timed rounds (fresh names). Medians, every sample and
ratios conduitd / tool are printed per phase and in a summary. Every conduitd
run must report `verified` with no errors, or the benchmark stops; round 0's
targets must equal the source at the end. A last, untimed probe calls the
daemon's `sync` right after a change (no settle) and reports whether the
trees were equal when it returned.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import (
    Daemon,
    Hygiene,
    Reporter,
    Tool,
    conduit_config,
    default_conduitd,
    interleaved,
    race_probe,
    source_revision,
    timed,
    timed_conduitd,
    trees_equal,
)
from treegen import big_files_tree, change_fraction, small_files_tree, tiny_files_tree

RSYNC_FSYNC = ["rsync", "-a", "--delete", "--fsync"]
INITIAL_NOTES = (
    (
        "conduitd daemon: its index of the source was built at daemon start "
        "(untimed); `sync` copies from it."
    ),
    (
        "no instant-daemon column: an instant conduit mirrors by itself when "
        "its daemon starts, before anyone calls `sync`."
    ),
)
CHANGED_NOTES = (
    (
        "conduitd daemon: the change is made before the settle, so the watcher "
        "has indexed (re-hashed) it before the timed `sync`."
    ),
    (
        "conduitd instant: seconds from the end of the change to the end of the "
        "daemon's own run (no CLI call; no settle between the change and the run)."
    ),
)


def one_shot_config(work: Path, label: str, source: Path, rounds: int) -> Path:
    """One library for every round: conduit `<label>-rN` mirrors into its own
    fresh target, so the source's marker stays that library's."""
    conduits = [
        {
            "name": f"{label}-r{r}",
            "source": str(source),
            "target": str(work / f"{label}-conduitd-r{r}"),
            "min_free": "1%",
        }
        for r in range(rounds)
    ]
    return conduit_config(
        work / f"conduitd-{label}.toml", work / f"state-{label}", conduits
    )


def peers(work: Path, source: Path, label: str) -> list[Tool]:
    """Each peer mirrors `source` into its own target named by the round tag."""

    def target(tool: str, tag: str) -> str:
        return str(work / f"{label}-{tool}-{tag}")

    tools: list[Tool] = []
    if shutil.which("rsync"):
        tools.append(
            Tool(
                "rsync -a --delete",
                lambda tag: timed(
                    ["rsync", "-a", "--delete", f"{source}/", target("rsync", tag)]
                ),
            )
        )
        tools.append(
            Tool(
                "rsync --fsync",
                lambda tag: timed([*RSYNC_FSYNC, f"{source}/", target("rsyncf", tag)]),
            )
        )
    else:
        print("rsync not found: its columns are skipped")
    tools.append(
        Tool(
            "cp -a && sync -f",
            lambda tag: timed(
                f"cp -a '{source}' '{target('cps', tag)}'"
                f" && sync -f '{target('cps', tag)}'"
            ),
        )
    )
    tools.append(
        Tool("cp -a", lambda tag: timed(["cp", "-a", str(source), target("cp", tag)]))
    )
    return tools


class DaemonSide:
    """The daemon's conduits: `<label>-d-rN` (manual) and `<label>-instant`,
    each mirroring its own copy of the source (a root belongs to one library)."""

    def __init__(
        self, work: Path, source: Path, label: str, rounds: int, conduitd: str
    ):
        self.label = label
        self.instant_seed = 0
        self.source = work / f"{label}-daemon-source"
        self.instant_source = work / f"{label}-instant-source"
        self.instant_target = work / f"{label}-instant-target"
        for copy in (self.source, self.instant_source):
            subprocess.run(["cp", "-a", str(source), str(copy)], check=True)
        # Empty targets, as a user makes them: a daemon holds a missing root
        # for unmounted until a run creates it.
        for target in [
            self.instant_target,
            *(self.target(f"r{r}") for r in range(rounds)),
        ]:
            target.mkdir()
        conduits = [
            {
                "name": f"{label}-d-r{r}",
                "source": str(self.source),
                "target": str(self.target(f"r{r}")),
                "min_free": "1%",
            }
            for r in range(rounds)
        ]
        conduits.append(
            {
                "name": f"{label}-instant",
                "source": str(self.instant_source),
                "target": str(self.instant_target),
                "schedule": "instant",
                "min_free": "1%",
            }
        )
        state = work / f"daemon-state-{label}"
        config = conduit_config(work / f"daemon-{label}.toml", state, conduits)
        self.daemon = Daemon(conduitd, config, state, work / f"daemon-{label}.log")

    def target(self, tag: str) -> Path:
        return self.source.parent / f"{self.label}-daemon-{tag}"

    def sync(self, tag: str) -> float:
        return self.daemon.sync(f"{self.label}-d-{tag}")[0]

    def plan_instant_change(self, seed: int) -> None:
        """Untimed, before the hygiene: the next change's seed (made after it)."""
        self.instant_seed = seed

    def instant_change(self, _tag: str) -> float:
        return self.daemon.change_to_synced(
            f"{self.label}-instant",
            lambda: change_fraction(self.instant_source, 0.01, seed=self.instant_seed),
            lambda: trees_equal(self.instant_source, self.instant_target),
        )


def run(
    work: Path,
    source: Path,
    args: argparse.Namespace,
    label: str,
    hygiene: Hygiene,
    reporter: Reporter,
) -> None:
    rounds, conduitd = args.rounds, args.conduitd
    config = one_shot_config(work, label, source, rounds)
    one_shot = Tool(
        "conduitd",
        lambda tag: timed_conduitd(
            [conduitd, "--config", str(config), "sync", f"{label}-{tag}", "--json"]
        )[0],
    )
    others = peers(work, source, label)
    side = None if args.no_daemon else DaemonSide(work, source, label, rounds, conduitd)
    if side is not None:
        side.daemon.start(instant=[f"{label}-instant"])
    try:
        daemon = [] if side is None else [Tool("conduitd daemon", side.sync)]
        notes = () if side is None else INITIAL_NOTES
        reporter.phase(
            f"{label}: initial mirror",
            interleaved(
                [one_shot, *daemon, *others], rounds, lambda r: f"r{r}", hygiene
            ),
            notes,
        )
        # Re-syncs of round 0's targets (cp has no incremental mode).
        resync = [t for t in others if not t.name.startswith("cp")]
        reporter.phase(
            f"{label}: no-op resync",
            interleaved([one_shot, *daemon, *resync], rounds, lambda r: "r0", hygiene),
        )
        changed = [one_shot, *resync]
        if side is not None:
            changed += [
                Tool(
                    "conduitd daemon",
                    side.sync,
                    lambda _tag, r: change_fraction(side.source, 0.01, seed=100 + r),
                ),
                Tool(
                    "conduitd instant",
                    side.instant_change,
                    lambda _tag, r: side.plan_instant_change(seed=100 + r),
                ),
            ]
        reporter.phase(
            f"{label}: 1% changed resync",
            interleaved(
                changed,
                rounds,
                lambda r: "r0",
                hygiene,
                round_start=lambda r: change_fraction(source, 0.01, seed=100 + r),
            ),
            () if side is None else CHANGED_NOTES,
        )
        targets = [work / f"{label}-conduitd-r0"]
        if side is not None:
            targets.append(side.target("r0"))
            if not trees_equal(side.source, source):
                sys.exit("the daemon's source copy took other changes than the source")
        for target in targets:
            if not trees_equal(source, target):
                sys.exit(f"{target} differs from the source after the runs")
        if side is not None:
            print(
                "\n- "
                + race_probe(
                    side.daemon,
                    f"{label}-d-r0",
                    lambda i: change_fraction(side.source, 0.01, seed=500 + i),
                    lambda: trees_equal(side.source, side.target("r0")),
                    rounds,
                    hygiene,
                )
            )
    finally:
        if side is not None:
            side.daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", choices=["small", "tiny"], default=None)
    parser.add_argument("--big", action="store_true", help="also 50 x 10 MiB")
    parser.add_argument("--conduitd", default=None, help="the console script")
    parser.add_argument(
        "--settle", type=float, default=1.5, help="seconds before each timed run"
    )
    parser.add_argument(
        "--no-daemon", action="store_true", help="skip the daemon columns"
    )
    parser.add_argument("--keep", action="store_true", help="keep the trees")
    args = parser.parse_args()
    args.conduitd = args.conduitd or default_conduitd()
    hygiene = Hygiene.for_conduitd(args.conduitd, args.settle)
    workload = args.workload or ("small" if args.files < 20_000 else "tiny")
    work = Path(tempfile.mkdtemp(prefix="conduitd-bench-"))
    print(f"timed conduitd: {args.conduitd} (python {hygiene.python})")
    print(f"bytecode: compiled in {hygiene.package}; PYTHONDONTWRITEBYTECODE unset")
    print(f"source: {source_revision()}")
    print(f"work: {work}; settle {args.settle} s after os.sync() before each run")
    reporter = Reporter()
    try:
        source = work / "source"
        if workload == "small":
            total = small_files_tree(source, args.files, max(1, args.files // 20))
        else:
            total = tiny_files_tree(source, args.files, max(1, args.files // 100))
        hygiene()
        print(f"tree: {args.files} {workload} files, {total / 2**20:.0f} MiB")
        run(work, source, args, f"{args.files // 1000}k", hygiene, reporter)
        if args.big:
            big = work / "bigsource"
            big_files_tree(big, 50, 10 * 2**20)
            hygiene()
            run(work, big, args, "50x10MiB", hygiene, reporter)
        reporter.summary()
        print(f"\nsource at the end: {source_revision()}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.umask(0o022)
    main()
