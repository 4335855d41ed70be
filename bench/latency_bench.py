"""Daemon benchmark: save-to-target latency, idle CPU, RSS, daemon-mode no-op.

Run:  .venv/bin/python bench/latency_bench.py [--writes 200] [--idle 60] [--files 100000]

A real daemon with an instant mirror conduit: files are written one at a time
into the source and the delay until each appears complete at the target is
measured. Then idle CPU over `--idle` seconds, RSS with `--files` indexed
files, and `conduitd sync` through the running daemon on that unchanged tree
next to `rsync -a --delete` (whole process, CLI client included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from treegen import tiny_files_tree

CONDUITD = [sys.executable, "-m", "conduitd"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_daemon(
    work: Path, source: Path, target: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    config = work / "conduitd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{work}/state"\nlog_level = "info"\n\n'
        f'[[conduit]]\nname = "bench"\nsource = "{source}"\ntarget = "{target}"\n'
        'schedule = "instant"\nmax_delete_percent = 100\nmin_free = "1%"\n'
    )
    log = open(work / "daemon.log", "wb")  # noqa: SIM115 - lives as long as the daemon
    daemon = subprocess.Popen(
        [*CONDUITD, "--config", str(config), "daemon"], stderr=log
    )
    deadline = time.monotonic() + 600
    while b"daemon_ready" not in (work / "daemon.log").read_bytes():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((work / "daemon.log").read_text()[-2000:])
        time.sleep(0.05)
    return daemon, config


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def latency(source: Path, target: Path, writes: int) -> list[float]:
    delays = []
    for i in range(writes):
        name = f"save{i:04d}.txt"
        body = os.urandom(4096)
        start = time.perf_counter()
        (source / name).write_bytes(body)
        dest = target / name
        while True:
            try:
                if dest.read_bytes() == body:
                    break
            except OSError:
                pass
            time.sleep(0.002)
        delays.append(time.perf_counter() - start)
    return delays


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="conduitd-latency-"))
    try:
        source, target = work / "source", work / "target"
        source.mkdir()
        target.mkdir()
        daemon, _ = start_daemon(work, source, target)
        try:
            delays = latency(source, target, args.writes)
            print(f"## latency over {args.writes} saves (instant mirror, defaults)")
            print(
                f"p50 {percentile(delays, 0.5) * 1000:.0f} ms, "
                f"p95 {percentile(delays, 0.95) * 1000:.0f} ms, "
                f"max {max(delays) * 1000:.0f} ms"
            )
            before = cpu_seconds(daemon.pid)
            time.sleep(args.idle)
            idle = (cpu_seconds(daemon.pid) - before) / args.idle * 100
            print(f"idle CPU over {args.idle:.0f} s: {idle:.2f} % of a core")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
        big = work / "big"
        tiny_files_tree(big, args.files, max(1, args.files // 100))
        big_target = work / "big-target"
        subprocess.run(["rsync", "-a", f"{big}/", str(big_target)], check=True)
        shutil.rmtree(work / "state")
        daemon, config = start_daemon(work, big, big_target)
        try:
            print(f"\n## {args.files} indexed files")
            print(f"daemon RSS: {rss_mb(daemon.pid):.0f} MB")
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(
                    timed([*CONDUITD, "--config", str(config), "sync", "bench"])
                )
                theirs.append(
                    timed(["rsync", "-a", "--delete", f"{big}/", str(big_target)])
                )
            a, b = statistics.median(ours), statistics.median(theirs)
            print("| no-op run | median s |\n| --- | ---: |")
            print(
                f"| conduitd sync via daemon | {a:.3f} |\n| rsync -a --delete | {b:.3f} |"
            )
            print(f"ratio conduitd / rsync: {a / b:.2f}x")
            print(f"daemon RSS after runs: {rss_mb(daemon.pid):.0f} MB")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
