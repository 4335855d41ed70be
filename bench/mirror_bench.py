"""Mirror benchmark: one-shot `conduitd sync` next to rsync and cp on the same trees.

Run:  .venv/bin/python bench/mirror_bench.py [--files 10000] [--rounds 3] [--big]

Every tool gets its own fresh target; rounds are interleaved (A B C A B C ...)
and medians are reported with the ratio conduitd / peer (BENCHMARKING.md).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from treegen import big_files_tree, change_fraction, small_files_tree

CONDUITD = Path(sys.executable).with_name("conduitd")


def timed(command: list[str] | str) -> float:
    start = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        shell=isinstance(command, str),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def conduitd_config(work: Path, source: Path, target: Path, tag: str) -> Path:
    config = work / f"conduitd-{tag}.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{work}/state-{tag}"\nlog_level = "error"\n\n'
        f'[[conduit]]\nname = "bench"\nsource = "{source}"\ntarget = "{target}"\n'
        'max_delete_percent = 100\nmin_free = "1%"\n'
    )
    return config


def peers(work: Path, source: Path) -> dict[str, Callable[[str], float]]:
    """Each peer syncs `source` into its own target named by the round tag."""

    def conduitd(tag: str) -> float:
        config = conduitd_config(work, source, work / f"conduitd-{tag}", tag)
        return timed([str(CONDUITD), "--config", str(config), "sync", "bench"])

    tools: dict[str, Callable[[str], float]] = {"conduitd": conduitd}
    if shutil.which("rsync"):
        tools["rsync"] = lambda tag: timed(
            ["rsync", "-a", "--delete", f"{source}/", str(work / f"rsync-{tag}")]
        )
        tools["rsync --fsync"] = lambda tag: timed(
            [
                "rsync",
                "-a",
                "--delete",
                "--fsync",
                f"{source}/",
                str(work / f"rsyncf-{tag}"),
            ]
        )
    else:
        print("rsync not found: its columns are skipped")
    tools["cp -a && sync -f"] = lambda tag: timed(
        f"cp -a '{source}' '{work}/cp-{tag}' && sync -f '{work}/cp-{tag}'"
    )
    tools["cp -a"] = lambda tag: timed(
        ["cp", "-a", str(source), str(work / f"cpp-{tag}")]
    )
    return tools


def report(title: str, samples: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(times) for name, times in samples.items()}
    base = medians["conduitd"]
    print(f"\n## {title}")
    print("| tool | median s | conduitd / tool |\n| --- | ---: | ---: |")
    for name, median in medians.items():
        print(f"| {name} | {median:.3f} | {base / median:.2f}x |")


def run(work: Path, source: Path, rounds: int, label: str) -> None:
    tools = peers(work, source)
    initial: dict[str, list[float]] = {name: [] for name in tools}
    for r in range(rounds):
        for name, tool in tools.items():
            initial[name].append(tool(f"r{r}"))
    report(f"{label}: initial mirror", initial)
    # Re-sync of round 0's targets: no-op, then 1 % changed.
    resync_tools = {k: v for k, v in tools.items() if not k.startswith("cp")}
    noop: dict[str, list[float]] = {name: [] for name in resync_tools}
    for _ in range(rounds):
        for name, tool in resync_tools.items():
            noop[name].append(tool("r0"))
    report(f"{label}: no-op resync", noop)
    changed: dict[str, list[float]] = {name: [] for name in resync_tools}
    for r in range(rounds):
        change_fraction(source, 0.01, seed=100 + r)
        for name, tool in resync_tools.items():
            changed[name].append(tool("r0"))
    report(f"{label}: 1% changed resync", changed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="also 50 x 10 MiB")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="conduitd-bench-"))
    try:
        source = work / "source"
        total = small_files_tree(source, args.files, max(1, args.files // 20))
        print(f"tree: {args.files} files, {total / 2**20:.0f} MiB, in {work}")
        run(work, source, args.rounds, f"{args.files} small files")
        if args.big:
            big = work / "bigsource"
            big_files_tree(big, 50, 10 * 2**20)
            run(work, big, args.rounds, "50 x 10 MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
