"""Mirror benchmark (issue 5): one-shot `conduitd sync` next to rsync and cp.

Run:
  python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -q .
  /tmp/benchvenv/bin/python bench/mirror_bench.py --files 10000 --rounds 3 --big
  /tmp/benchvenv/bin/python bench/mirror_bench.py --files 100000 --rounds 2

Workloads (BENCHMARKING.md): `small` = files of 1-64 KiB over files/20
directories (W1 at 10k), `tiny` = files of 1 KiB over files/100 directories
(W3 at 100k; the default from 20k files up), `--big` adds 50 x 10 MiB (W2).

Phases, each timed as whole processes (interpreter start included):
- initial mirror into a fresh target per round and tool;
- no-op resync of round 0's targets;
- resync after rewriting 1 % of the source's files (a fresh 1 % per round).
Tools run interleaved (A B C A B C ...); medians and ratios conduitd / tool
are printed per phase and in a summary at the end. Every conduitd run must
report `verified` with no errors, or the benchmark stops. A peer that is not
installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from treegen import big_files_tree, change_fraction, small_files_tree, tiny_files_tree

Tool = Callable[[str], float]
SUMMARY: list[tuple[str, str, float, float]] = []  # phase, peer, conduitd s, ratio


def default_conduitd() -> str:
    beside = Path(sys.executable).with_name("conduitd")
    if beside.exists():
        return str(beside)
    found = shutil.which("conduitd")
    if found is None:
        sys.exit("no conduitd console script: install the package into a venv")
    return found


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


def timed_conduitd(command: list[str]) -> float:
    """Time one `conduitd sync --json` and insist that it converged."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
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


def write_config(work: Path, label: str, source: Path, rounds: int) -> Path:
    """One library for every round: conduit `<label>-rN` mirrors into its own
    fresh target, so the source's marker stays that library's."""
    config = work / f"conduitd-{label}.toml"
    lines = [
        "[daemon]",
        f'state_dir = "{work}/state-{label}"',
        'log_level = "error"',
    ]
    for r in range(rounds):
        lines += [
            "",
            "[[conduit]]",
            f'name = "{label}-r{r}"',
            f'source = "{source}"',
            f'target = "{work}/{label}-conduitd-r{r}"',
            'min_free = "1%"',
        ]
    config.write_text("\n".join(lines) + "\n")
    return config


def peers(
    work: Path, source: Path, label: str, conduitd: str, config: Path
) -> dict[str, Tool]:
    """Each tool mirrors `source` into its own target named by the round tag."""

    def target(tool: str, tag: str) -> str:
        return str(work / f"{label}-{tool}-{tag}")

    tools: dict[str, Tool] = {
        "conduitd": lambda tag: timed_conduitd(
            [conduitd, "--config", str(config), "sync", f"{label}-{tag}", "--json"]
        )
    }
    if shutil.which("rsync"):
        tools["rsync -a --delete"] = lambda tag: timed(
            ["rsync", "-a", "--delete", f"{source}/", target("rsync", tag)]
        )
        tools["rsync --fsync"] = lambda tag: timed(
            [
                "rsync",
                "-a",
                "--delete",
                "--fsync",
                f"{source}/",
                target("rsyncf", tag),
            ]
        )
    else:
        print("rsync not found: its columns are skipped")
    tools["cp -a && sync -f"] = lambda tag: timed(
        f"cp -a '{source}' '{target('cps', tag)}' && sync -f '{target('cps', tag)}'"
    )
    tools["cp -a"] = lambda tag: timed(["cp", "-a", str(source), target("cp", tag)])
    return tools


def report(title: str, samples: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(times) for name, times in samples.items()}
    base = medians["conduitd"]
    print(f"\n## {title}")
    print("| tool | median s | conduitd / tool |\n| --- | ---: | ---: |")
    for name, median in medians.items():
        print(f"| {name} | {median:.3f} | {base / median:.2f}x |")
        if name != "conduitd":
            SUMMARY.append((title, name, base, base / median))
    sys.stdout.flush()


def interleaved(
    tools: dict[str, Tool], rounds: int, tag: Callable[[int], str]
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in tools}
    for r in range(rounds):
        for name, tool in tools.items():
            samples[name].append(tool(tag(r)))
    return samples


def run(work: Path, source: Path, rounds: int, label: str, conduitd: str) -> None:
    config = write_config(work, label, source, rounds)
    tools = peers(work, source, label, conduitd, config)
    report(f"{label}: initial mirror", interleaved(tools, rounds, lambda r: f"r{r}"))
    # Re-syncs of round 0's targets (cp has no incremental mode).
    resync = {k: v for k, v in tools.items() if not k.startswith("cp")}
    report(f"{label}: no-op resync", interleaved(resync, rounds, lambda r: "r0"))
    changed: dict[str, list[float]] = {name: [] for name in resync}
    for r in range(rounds):
        change_fraction(source, 0.01, seed=100 + r)
        for name, tool in resync.items():
            changed[name].append(tool("r0"))
    report(f"{label}: 1% changed resync", changed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workload", choices=["small", "tiny"], default=None)
    parser.add_argument("--big", action="store_true", help="also 50 x 10 MiB")
    parser.add_argument("--conduitd", default=None, help="the console script")
    parser.add_argument("--keep", action="store_true", help="keep the trees")
    args = parser.parse_args()
    conduitd = args.conduitd or default_conduitd()
    workload = args.workload or ("small" if args.files < 20_000 else "tiny")
    work = Path(tempfile.mkdtemp(prefix="conduitd-bench-"))
    print(f"conduitd: {conduitd}\nwork: {work}")
    try:
        source = work / "source"
        if workload == "small":
            total = small_files_tree(source, args.files, max(1, args.files // 20))
        else:
            total = tiny_files_tree(source, args.files, max(1, args.files // 100))
        print(f"tree: {args.files} {workload} files, {total / 2**20:.0f} MiB")
        run(work, source, args.rounds, f"{args.files // 1000}k", conduitd)
        if args.big:
            big = work / "bigsource"
            big_files_tree(big, 50, 10 * 2**20)
            run(work, big, args.rounds, "50x10MiB", conduitd)
        print("\n## Summary: conduitd / peer (median of whole-process times)")
        print("| phase | peer | conduitd s | ratio |\n| --- | --- | ---: | ---: |")
        for phase, peer, seconds, ratio in SUMMARY:
            print(f"| {phase} | {peer} | {seconds:.3f} | {ratio:.2f}x |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.umask(0o022)
    main()
