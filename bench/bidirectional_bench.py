"""Bidirectional benchmark (issue 6): `conduitd sync`, one-shot and daemon, next to unison.

Run (with the project installed in a venv; the venv's console script is timed):
  /work/venv/bin/python bench/bidirectional_bench.py --files 10000 --rounds 3
  /work/venv/bin/python bench/bidirectional_bench.py --files 100000 --rounds 2
  /work/venv/bin/python bench/bidirectional_bench.py --files 10000 --profile out.prof

Workloads (BENCHMARKING.md): `small` = files of 1-64 KiB over files/20
directories (W1 at 10k), `tiny` = files of 1 KiB over files/100 directories
(W3 at 100k; the default from 20k files up).

Phases, each timed as whole processes (interpreter start included):
- initial sync: one side holds the tree, the other is empty (a fresh pair per
  round and tool, copied untimed with `cp -a` beforehand);
- no-op: round 0's pair again;
- 1 % changed on each side: a fresh, disjoint 1 % of the files rewritten on
  each side of round 0's pair (the same files and bytes for every tool; no
  file is rewritten twice in a run).

Tools:
- `conduitd`: `conduitd --config X sync NAME --json` with no daemon running
  (one-shot: it scans both sides itself);
- `conduitd daemon`: the same command answered by a running daemon
  (`conduitd --config Y daemon`, its own config, state dir and pairs, started
  untimed before the phases and ready: its watchers keep the index, so the run
  walks nothing; its conduits are `manual`). In the 1 % phase the change is
  made before the settle, so the watcher has indexed it when `sync` is called;
- `conduitd instant` (1 % phase only; not a `sync` call): an `instant`
  conduit of the same daemon on a pair of its own; seconds from the end of the
  change to the end of the daemon's own run that leaves both sides equal (its
  generation's `completed_at`; no CLI call, no settle between). It has no
  initial-sync column: an instant conduit syncs by itself when its daemon
  starts; its no-op would be the daemon's;
- `unison -batch`: `unison A B -batch -times -terse` with its archives in a
  directory of the benchmark's own (`UNISON=`), so earlier runs on this
  machine do not matter. It preserves mtimes like conduitd (`-times`); it does
  not fsync what it writes, while conduitd makes every batch durable before
  its rows.

Fairness: before every timed run, untimed, conduitd's bytecode is compiled
(timed processes run without PYTHONDONTWRITEBYTECODE), `os.sync()` writes
back what the previous tool left dirty, and the machine settles `--settle`
seconds. Tools run interleaved, round r starting with tool r mod n. Trees are
never deleted between timed rounds (fresh pairs). Medians, every sample and
ratios conduitd / tool are printed per phase and in a summary. Every conduitd
run must report `verified` with no errors, and every unison run must exit 0,
or the benchmark stops; at the end every tool's round-0 pair must hold equal
sides, and the same tree as the others. A last, untimed probe calls the
daemon's `sync` right after a change (no settle) and reports whether the
sides were equal when it returned. `--profile` profiles one more 1 % changed
one-shot run (cProfile, untimed).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import (
    ENV,
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
from treegen import small_files_tree, tiny_files_tree

INITIAL_NOTES = (
    (
        "conduitd daemon: its index of side a was built at daemon start "
        "(untimed); `sync` copies from it."
    ),
    (
        "no conduitd instant column: an instant conduit syncs by itself when "
        "its daemon starts, before anyone calls `sync`."
    ),
)
CHANGE_SEED = 100
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


def conduit(name: str, pair: Path, **extra: str) -> dict[str, object]:
    return {
        "name": name,
        "source": str(pair / "a"),
        "target": str(pair / "b"),
        "mode": "bidirectional",
        "min_free": "1%",
        "max_delete_percent": 100,
        **extra,
    }


def prepare_pairs(work: Path, seed_tree: Path, label: str, rounds: int) -> None:
    """Side `a` a copy of the tree, side `b` empty, per tool and round (untimed);
    the instant conduit gets round 0 only."""
    pairs = [
        work / f"{label}-{tool}-r{r}"
        for tool in ("conduitd", "unison", "daemon")
        for r in range(rounds)
    ]
    for pair in [*pairs, work / f"{label}-instant-r0"]:
        pair.mkdir()
        subprocess.run(["cp", "-a", str(seed_tree), str(pair / "a")], check=True)
        (pair / "b").mkdir()


def change_each_side(pair: Path, fraction: float, turn: int) -> int:
    """Rewrite a disjoint `fraction` of the files on each side (no conflicts).

    Turn t takes the t-th slice of one fixed shuffle of the files, so no file
    is rewritten twice in a benchmark: unison's fast check misses a same-size
    rewrite in place within the second of the mtime its previous run recorded
    (seen with unison 2.52.1 when turns came about a second apart).
    """
    files = sorted(
        p.relative_to(pair / "a")
        for p in (pair / "a").rglob("*")
        if p.is_file() and ".conduitd" not in p.parts
    )
    count = max(1, int(len(files) * fraction))
    random.Random(CHANGE_SEED).shuffle(files)
    start = turn % max(1, len(files) // (2 * count)) * 2 * count
    chosen = files[start : start + 2 * count]
    rng = random.Random(turn)
    for side, picked in (("a", chosen[:count]), ("b", chosen[count:])):
        for rel in picked:
            path = pair / side / rel
            path.write_bytes(rng.randbytes(path.stat().st_size))
    return len(chosen)


class Bench:
    """The tools of one tree size, their configs, and the daemon."""

    def __init__(self, work: Path, label: str, args: argparse.Namespace):
        self.work, self.label, self.args = work, label, args
        rounds = args.rounds
        self.config = conduit_config(
            work / f"conduitd-{label}.toml",
            work / f"state-{label}",
            [conduit(f"{label}-r{r}", self.pair("conduitd", r)) for r in range(rounds)],
        )
        self.unison_env = {**ENV, "UNISON": str(work / "unison-home")}
        (work / "unison-home").mkdir(exist_ok=True)
        self.daemon: Daemon | None = None
        if not args.no_daemon:
            conduits = [
                conduit(f"{label}-d-r{r}", self.pair("daemon", r))
                for r in range(rounds)
            ]
            conduits.append(
                conduit(f"{label}-instant", self.pair("instant", 0), schedule="instant")
            )
            state = work / f"daemon-state-{label}"
            config = conduit_config(work / f"daemon-{label}.toml", state, conduits)
            self.daemon = Daemon(
                args.conduitd, config, state, work / f"daemon-{label}.log"
            )
        self.instant_turn = 0

    def pair(self, tool: str, r: int | str) -> Path:
        tag = r if isinstance(r, str) else f"r{r}"
        return self.work / f"{self.label}-{tool}-{tag}"

    def one_shot(self, tag: str, prefix: list[str] | None = None) -> float:
        name = f"{self.label}-{tag}"
        command = [self.args.conduitd] if prefix is None else prefix
        return timed_conduitd(
            [*command, "--config", str(self.config), "sync", name, "--json"]
        )[0]

    def unison(self, tag: str) -> float:
        pair = self.pair("unison", tag)
        command = ["unison", str(pair / "a"), str(pair / "b")]
        return timed([*command, "-batch", "-times", "-terse"], self.unison_env)

    def daemon_sync(self, tag: str) -> float:
        assert self.daemon is not None  # only a tool with a daemon
        return self.daemon.sync(f"{self.label}-d-{tag}")[0]

    def plan_instant_change(self, _tag: str, r: int) -> None:
        """Untimed, before the hygiene: the next change's turn (made after it)."""
        self.instant_turn = r

    def instant_change(self, _tag: str) -> float:
        assert self.daemon is not None  # only a tool with a daemon
        pair = self.pair("instant", 0)
        return self.daemon.change_to_synced(
            f"{self.label}-instant",
            lambda: change_each_side(pair, 0.01, self.instant_turn),
            lambda: trees_equal(pair / "a", pair / "b"),
        )

    def change_before(self, tool: str) -> Tool:
        """`tool`'s re-sync of round 0's pair after a fresh 1 % on each side."""
        runs = {
            "conduitd": self.one_shot,
            "unison": self.unison,
            "daemon": self.daemon_sync,
        }
        name = {"conduitd": "conduitd", "unison": "unison -batch"}.get(
            tool, "conduitd daemon"
        )
        return Tool(
            name,
            runs[tool],
            lambda _tag, r: change_each_side(self.pair(tool, 0), 0.01, r),
        )


def run(
    work: Path, seed_tree: Path, label: str, args: argparse.Namespace, hygiene: Hygiene
) -> Reporter:
    reporter = Reporter()
    rounds = args.rounds
    prepare_pairs(work, seed_tree, label, rounds)
    bench = Bench(work, label, args)
    if bench.daemon is not None:
        bench.daemon.start(instant=[f"{label}-instant"])
    try:
        measure(bench, reporter, hygiene)
    finally:
        if bench.daemon is not None:
            bench.daemon.stop()
    if args.profile is not None:
        change_each_side(bench.pair("conduitd", 0), 0.01, args.rounds)
        hygiene()
        profiler = [hygiene.python, "-m", "cProfile", "-o", str(args.profile)]
        bench.one_shot("r0", [*profiler, "-m", "conduitd"])
        print(f"\nprofile of one 1% changed conduitd run: {args.profile}")
    return reporter


def measure(bench: Bench, reporter: Reporter, hygiene: Hygiene) -> None:
    label, rounds, daemon = bench.label, bench.args.rounds, bench.daemon
    one_shot = Tool("conduitd", bench.one_shot)
    unison = Tool("unison -batch", bench.unison)
    tools = [one_shot, unison]
    if daemon is not None:
        tools.insert(1, Tool("conduitd daemon", bench.daemon_sync))
    notes = () if daemon is None else INITIAL_NOTES
    samples = interleaved(tools, rounds, lambda r: f"r{r}", hygiene)
    reporter.phase(f"{label}: initial sync", samples, notes)
    samples = interleaved(tools, rounds, lambda r: "r0", hygiene)
    reporter.phase(f"{label}: no-op", samples)
    changed = [bench.change_before("conduitd"), bench.change_before("unison")]
    if daemon is not None:
        changed.insert(1, bench.change_before("daemon"))
        instant = Tool(
            "conduitd instant", bench.instant_change, bench.plan_instant_change
        )
        changed.append(instant)
    samples = interleaved(changed, rounds, lambda r: "r0", hygiene)
    notes = () if daemon is None else CHANGED_NOTES
    reporter.phase(f"{label}: 1% changed on each side", samples, notes)
    check_trees(bench)
    if daemon is not None:
        pair = bench.pair("daemon", 0)
        probe = race_probe(
            daemon,
            f"{label}-d-r0",
            lambda i: change_each_side(pair, 0.01, rounds + i),
            lambda: trees_equal(pair / "a", pair / "b"),
            rounds,
            hygiene,
        )
        print(f"\n- {probe}")


def check_trees(bench: Bench) -> None:
    """Every tool's round-0 pair has equal sides, and all hold the same tree."""
    tools = ["conduitd", "unison"]
    if bench.daemon is not None:
        tools += ["daemon", "instant"]
    for tool in tools:
        pair = bench.pair(tool, 0)
        if not trees_equal(pair / "a", pair / "b"):
            sys.exit(f"{tool}: the two sides of {pair} differ after the runs")
        if not trees_equal(bench.pair("conduitd", 0) / "a", pair / "a"):
            sys.exit(f"conduitd and {tool} ended with different trees")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", choices=["small", "tiny"], default=None)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--conduitd", default=None, help="the console script")
    parser.add_argument(
        "--settle", type=float, default=1.5, help="seconds before each timed run"
    )
    parser.add_argument(
        "--no-daemon", action="store_true", help="skip the daemon columns"
    )
    parser.add_argument("--keep", action="store_true", help="keep the trees")
    args = parser.parse_args()
    if shutil.which("unison") is None:
        sys.exit("unison not found (apt-get install -y unison): nothing to compare")
    args.conduitd = args.conduitd or default_conduitd()
    hygiene = Hygiene.for_conduitd(args.conduitd, args.settle)
    workload = args.workload or ("small" if args.files < 20_000 else "tiny")
    work = Path(tempfile.mkdtemp(prefix="conduitd-bidi-bench-"))
    print(f"timed conduitd: {args.conduitd} (python {hygiene.python})")
    print(f"bytecode: compiled in {hygiene.package}; PYTHONDONTWRITEBYTECODE unset")
    print(f"source: {source_revision()}")
    print(f"work: {work}; settle {args.settle} s after os.sync() before each run")
    try:
        seed_tree = work / "tree"
        if workload == "small":
            total = small_files_tree(seed_tree, args.files, max(1, args.files // 20))
        else:
            total = tiny_files_tree(seed_tree, args.files, max(1, args.files // 100))
        hygiene()
        print(f"tree: {args.files} {workload} files, {total / 2**20:.0f} MiB")
        label = f"{args.files // 1000}k"
        run(work, seed_tree, label, args, hygiene).summary()
        print(f"\nsource at the end: {source_revision()}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.umask(0o022)
    main()
