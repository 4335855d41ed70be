"""Bidirectional benchmark (issue 6): one-shot `conduitd sync` next to `unison -batch`.

Run (from the repository; any venv with the dependencies):
  python bench/bidirectional_bench.py --files 10000 --rounds 3
  python bench/bidirectional_bench.py --files 100000 --rounds 2
  python bench/bidirectional_bench.py --files 10000 --profile out.prof

Workloads (BENCHMARKING.md): `small` = files of 1-64 KiB over files/20
directories (W1 at 10k), `tiny` = files of 1 KiB over files/100 directories
(W3 at 100k; the default from 20k files up).

Phases, each timed as whole processes (interpreter start included):
- initial sync: one side holds the tree, the other is empty (a fresh pair per
  round and tool, copied untimed with `cp -a` beforehand);
- no-op: round 0's pair again;
- 1 % changed on each side: a fresh, disjoint 1 % of the files rewritten on
  each side of round 0's pair (the same files and bytes for every tool).
Tools run interleaved; medians and ratios conduitd / unison are printed per
phase and in a summary. Every conduitd run must report `verified` with no
errors, and every unison run must exit 0, or the benchmark stops; at the end
both tools' pairs must hold equal trees.

unison runs as `unison A B -batch -times -terse` with its archives in a
directory of the benchmark's own (`UNISON=`), so earlier runs on this machine
do not matter. It preserves mtimes like conduitd (`-times`); it does not fsync
what it writes, while conduitd makes every batch durable before its rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from treegen import small_files_tree, tiny_files_tree

SRC = Path(__file__).resolve().parents[1] / "src"
Tool = Callable[[str], float]
SUMMARY: list[tuple[str, float, float, float]] = []  # phase, conduitd, unison, ratio


def conduitd_command(profile: Path | None) -> list[str]:
    if profile is None:
        return [sys.executable, "-m", "conduitd"]
    return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "conduitd"]


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        sys.exit(f"{command[0]} failed (exit {done.returncode}):\n{output}")
    return elapsed


def timed_conduitd(command: list[str]) -> float:
    """Time one `conduitd sync --json` and insist that it converged."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    try:
        document = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"conduitd printed no JSON (exit {done.returncode}):\n{done.stderr}")
    if (
        done.returncode != 0
        or document.get("errors_encountered")
        or document.get("verification_status") != "verified"
    ):
        sys.exit(f"conduitd did not converge (exit {done.returncode}): {document}")
    return elapsed


def write_config(work: Path, label: str, rounds: int) -> Path:
    config = work / f"conduitd-{label}.toml"
    lines = ["[daemon]", f'state_dir = "{work}/state-{label}"', 'log_level = "error"']
    for r in range(rounds):
        pair = work / f"{label}-conduitd-r{r}"
        lines += [
            "",
            "[[conduit]]",
            f'name = "{label}-r{r}"',
            f'source = "{pair}/a"',
            f'target = "{pair}/b"',
            'mode = "bidirectional"',
            'min_free = "1%"',
            "max_delete_percent = 100",
        ]
    config.write_text("\n".join(lines) + "\n")
    return config


def prepare_pairs(work: Path, seed_tree: Path, label: str, rounds: int) -> None:
    """Side `a` a copy of the tree, side `b` empty, per tool and round (untimed)."""
    for tool in ("conduitd", "unison"):
        for r in range(rounds):
            pair = work / f"{label}-{tool}-r{r}"
            pair.mkdir()
            subprocess.run(["cp", "-a", str(seed_tree), str(pair / "a")], check=True)
            (pair / "b").mkdir()


def tools(
    work: Path, label: str, config: Path, profile: Path | None
) -> dict[str, Tool]:
    unison_home = work / "unison-home"
    unison_home.mkdir(exist_ok=True)
    unison_env = {**os.environ, "UNISON": str(unison_home)}
    prefix = conduitd_command(profile)

    def conduitd(tag: str) -> float:
        name = f"{label}-{tag}"
        return timed_conduitd(
            [*prefix, "--config", str(config), "sync", name, "--json"]
        )

    def unison(tag: str) -> float:
        pair = work / f"{label}-unison-{tag}"
        command = ["unison", str(pair / "a"), str(pair / "b")]
        return timed([*command, "-batch", "-times", "-terse"], unison_env)

    return {"conduitd": conduitd, "unison -batch": unison}


def change_each_side(pair: Path, fraction: float, seed: int) -> int:
    """Rewrite a disjoint `fraction` of the files on each side (no conflicts)."""
    rng = random.Random(seed)
    files = sorted(
        p.relative_to(pair / "a")
        for p in (pair / "a").rglob("*")
        if p.is_file() and ".conduitd" not in p.parts
    )
    count = max(1, int(len(files) * fraction))
    chosen = rng.sample(files, 2 * count)
    for side, picked in (("a", chosen[:count]), ("b", chosen[count:])):
        for rel in picked:
            path = pair / side / rel
            path.write_bytes(rng.randbytes(path.stat().st_size))
    return 2 * count


def report(title: str, samples: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(times) for name, times in samples.items()}
    base, peer = medians["conduitd"], medians["unison -batch"]
    print(f"\n## {title}")
    print("| tool | median s | conduitd / tool |\n| --- | ---: | ---: |")
    for name, median in medians.items():
        print(f"| {name} | {median:.3f} | {base / median:.2f}x |")
    SUMMARY.append((title, base, peer, base / peer))
    sys.stdout.flush()


def trees_equal(a: Path, b: Path) -> bool:
    done = subprocess.run(
        ["diff", "-r", "-q", "--exclude=.conduitd", str(a), str(b)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def run(
    work: Path, seed_tree: Path, rounds: int, label: str, profile: Path | None
) -> None:
    prepare_pairs(work, seed_tree, label, rounds)
    config = write_config(work, label, rounds)
    runners = tools(work, label, config, None)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        for name, tool in runners.items():
            samples[name].append(tool(f"r{r}"))
    report(f"{label}: initial sync", samples)
    samples = {name: [] for name in runners}
    for _ in range(rounds):
        for name, tool in runners.items():
            samples[name].append(tool("r0"))
    report(f"{label}: no-op", samples)
    samples = {name: [] for name in runners}
    for r in range(rounds):
        for name, tool in runners.items():
            change_each_side(work / f"{label}-{name.split()[0]}-r0", 0.01, 100 + r)
            samples[name].append(tool("r0"))
    report(f"{label}: 1% changed on each side", samples)
    for tool in ("conduitd", "unison"):
        pair = work / f"{label}-{tool}-r0"
        if not trees_equal(pair / "a", pair / "b"):
            sys.exit(f"{tool}: the two sides of {pair} differ after the runs")
    if not trees_equal(work / f"{label}-conduitd-r0/a", work / f"{label}-unison-r0/a"):
        sys.exit("conduitd and unison ended with different trees")
    if profile is not None:
        change_each_side(work / f"{label}-conduitd-r0", 0.01, 999)
        tools(work, label, config, profile)["conduitd"]("r0")
        print(f"\nprofile of one 1% changed conduitd run: {profile}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", choices=["small", "tiny"], default=None)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the trees")
    args = parser.parse_args()
    if shutil.which("unison") is None:
        sys.exit("unison not found (apt-get install -y unison): nothing to compare")
    workload = args.workload or ("small" if args.files < 20_000 else "tiny")
    work = Path(tempfile.mkdtemp(prefix="conduitd-bidi-bench-"))
    print(f"work: {work}")
    try:
        seed_tree = work / "tree"
        if workload == "small":
            total = small_files_tree(seed_tree, args.files, max(1, args.files // 20))
        else:
            total = tiny_files_tree(seed_tree, args.files, max(1, args.files // 100))
        print(f"tree: {args.files} {workload} files, {total / 2**20:.0f} MiB")
        label = f"{args.files // 1000}k"
        run(work, seed_tree, args.rounds, label, args.profile)
        print("\n## Summary: conduitd / unison -batch (median whole-process times)")
        print("| phase | conduitd s | unison s | ratio |\n| --- | ---: | ---: | ---: |")
        for phase, ours, theirs, ratio in SUMMARY:
            print(f"| {phase} | {ours:.3f} | {theirs:.3f} | {ratio:.2f}x |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.umask(0o022)
    main()
