"""Index benchmark (issue 4): scans against a bare walk, `find` and BLAKE3.

Run:  /work/venv/bin/python bench/index_bench.py [--sizes 10000,100000] [--rounds 3]

For each tree (10k files of 1-64 KiB in 500 directories; 100k files of 1 KiB in
1,000 directories), interleaved per round (BENCHMARKING.md):
- bare walk: Python os.scandir + lstat of every entry, in-process;
- `find ROOT -printf ...` (stats every entry);
- bare hashing: open + read + BLAKE3 of every file, one thread, in-process;
- conduitd first scan (fresh library) and unchanged rescan, in a child process
  that also reports its peak RSS; once without and once with bulk logging
  through the TransactionManager (if it is in the tree).
Then hashing throughput on large files against BLAKE3 over the same bytes in
memory, and watcher latency and idle CPU for two `step` values.
Trees are generated under a fresh /tmp directory and deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(SRC))
from treegen import big_files_tree, small_files_tree, tiny_files_tree


def bare_walk(root: bytes) -> int:
    count = 0
    stack = [root]
    while stack:
        top = stack.pop()
        with os.scandir(top) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                count += 1
                if entry.is_dir(follow_symlinks=False) and st.st_dev:
                    stack.append(entry.path)
    return count


def bare_hash(root: bytes) -> int:
    total = 0
    stack = [root]
    while stack:
        top = stack.pop()
        with os.scandir(top) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    with open(entry.path, "rb") as handle:
                        data = handle.read()
                    blake3.blake3(data).hexdigest()
                    total += len(data)
    return total


def timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def find_time(root: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["find", str(root), "-printf", "%s %T@ %i\\n"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def child_scan(state: str, root: str, with_log: bool) -> None:
    """In a child process: first scan, unchanged rescan, peak RSS (as JSON)."""
    import anyio

    from conduitd.index import Indexer
    from conduitd.logs import configure_logging
    from conduitd.storage.library import open_library
    from conduitd.storage.locations import ensure_location

    configure_logging("error")

    async def main() -> dict[str, float]:
        lib = await open_library(Path(state))
        tm = None
        if with_log:
            from conduitd.storage.transactions import open_transaction_manager

            tm = await open_transaction_manager(lib)
        async with lib.db.transaction() as tx:
            record, _ = await ensure_location(tx, str(lib.device_id), Path(root))
        indexer = Indexer.for_library(lib, tm=tm)
        start = time.perf_counter()
        first = await indexer.scan(record)
        first_s = time.perf_counter() - start
        # Rescans interleaved with bare walks in this same process, so that
        # both see the same machine (others' load drifts).
        rescans, walks = [], []
        for _ in range(3):
            walks.append(timed(bare_walk, os.fsencode(root)))
            start = time.perf_counter()
            again = await indexer.scan(record)
            rescans.append(time.perf_counter() - start)
            assert again.hashed_files == 0
            assert again.updated == 0
        outbox = await lib.db.fetch_one("SELECT COUNT(*) FROM sync_outbox")
        await lib.close()
        return {
            "first_s": first_s,
            "rescan_s": med(rescans),
            "rescan_walk_s": med(walks),
            "files": first.hashed_files,
            "outbox_rows": int(outbox[0]) if outbox else 0,
        }

    result = anyio.run(main)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(state: Path, root: Path, with_log: bool) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(state),
            str(root),
            str(int(with_log)),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    doc: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def has_transaction_manager() -> bool:
    try:
        import conduitd.storage.transactions  # noqa: F401
    except ImportError:
        return False
    return True


def med(values: list[float]) -> float:
    return statistics.median(values)


def bench_tree(work: Path, label: str, root: Path, rounds: int) -> None:
    raw = os.fsencode(root)
    bare_walk(raw)  # warm the cache
    bare_hash(raw)
    log = has_transaction_manager()
    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "walk",
            "find",
            "hash",
            "scan",
            "rescan",
            "rescan_walk",
            "scan_log",
            "rss",
        )
    }
    entries = bare_walk(raw)
    files = 0
    outbox = 0.0
    for r in range(rounds):
        samples["walk"].append(timed(bare_walk, raw))
        samples["find"].append(find_time(root))
        samples["hash"].append(timed(bare_hash, raw))
        plain = run_child(work / f"state-{label}-{r}", root, False)
        samples["scan"].append(plain["first_s"])
        samples["rescan"].append(plain["rescan_s"])
        samples["rescan_walk"].append(plain["rescan_walk_s"])
        samples["rss"].append(plain["maxrss_mb"])
        files = int(plain["files"])
        if log:
            logged = run_child(work / f"state-{label}-log-{r}", root, True)
            samples["scan_log"].append(logged["first_s"])
            outbox = logged["outbox_rows"]
    walk, find, hashing = (
        med(samples["walk"]),
        med(samples["find"]),
        med(samples["hash"]),
    )
    scan, rescan = med(samples["scan"]), med(samples["rescan"])
    print(f"\n## {label}: {files} files, {entries} entries (medians of {rounds})")
    print("| measure | median | rate | ratio |\n| --- | ---: | ---: | ---: |")
    print(
        f"| bare walk (scandir+lstat) | {walk * 1000:.0f} ms | {entries / walk:,.0f} entries/s | |"
    )
    print(
        f"| find -printf | {find * 1000:.0f} ms | {entries / find:,.0f} entries/s | |"
    )
    print(
        f"| bare hashing, 1 thread | {hashing * 1000:.0f} ms | {files / hashing:,.0f} files/s | |"
    )
    print(
        f"| first scan | {scan * 1000:.0f} ms | {files / scan:,.0f} files/s |"
        f" {scan / walk:.2f}x walk, {scan / (walk + hashing):.2f}x (walk + hashing),"
        f" {scan / find:.2f}x find |"
    )
    rescan_walk = med(samples["rescan_walk"])
    print(
        f"| unchanged rescan | {rescan * 1000:.0f} ms | |"
        f" {rescan / rescan_walk:.2f}x walk (walk {rescan_walk * 1000:.0f} ms,"
        " interleaved in the scan process) |"
    )
    if samples["scan_log"]:
        logged = med(samples["scan_log"])
        print(
            f"| first scan, bulk-logged | {logged * 1000:.0f} ms | |"
            f" {100 * (logged / scan - 1):+.1f}% ({outbox:.0f} outbox rows) |"
        )
    else:
        print(
            "| first scan, bulk-logged | skipped: no TransactionManager in the tree | | |"
        )
    print(f"| peak RSS (scan process) | {max(samples['rss']):.0f} MB | | |")


def bench_hashing(work: Path, rounds: int) -> None:
    from conduitd.index.hashing import hash_file

    big = work / "big"
    count, size = 8, 64 << 20
    big_files_tree(big, count, size)
    raw = os.fsencode(big)
    dev = os.stat(raw).st_dev
    names = sorted(os.listdir(raw))
    data = [(big / os.fsdecode(n)).read_bytes() for n in names]
    total = count * size / 2**30
    ours, mem1, mem_auto = [], [], []
    for _ in range(rounds):
        ours.append(timed(lambda: [hash_file(raw, n, dev) for n in names]))
        mem1.append(timed(lambda: [blake3.blake3(d).digest() for d in data]))
        mem_auto.append(
            timed(
                lambda: [
                    blake3.blake3(d, max_threads=blake3.blake3.AUTO).digest()
                    for d in data
                ]
            )
        )
    o, m1, ma = total / med(ours), total / med(mem1), total / med(mem_auto)
    print(f"\n## hashing {count} x {size >> 20} MiB (warm cache)")
    print("| measure | GiB/s | conduitd / it |\n| --- | ---: | ---: |")
    print(f"| conduitd hash_file (read + BLAKE3) | {o:.2f} | |")
    print(f"| BLAKE3 in memory, 1 thread | {m1:.2f} | {o / m1:.0%} |")
    print(f"| BLAKE3 in memory, AUTO threads | {ma:.2f} | {o / ma:.0%} |")


def bench_watcher(work: Path) -> None:
    import anyio
    from watchfiles import awatch

    async def measure(step: int) -> tuple[float, float]:
        root = work / f"watch-{step}"
        root.mkdir()
        stop = anyio.Event()
        latencies: list[float] = []
        written: dict[str, float] = {}
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                async for changes in awatch(
                    root, watch_filter=None, stop_event=stop, step=step
                ):
                    now = time.perf_counter()
                    for _change, path in changes:
                        name = os.path.basename(path)
                        if name in written:
                            latencies.append(now - written.pop(name))

            tg.start_soon(consume)
            await anyio.sleep(0.5)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await anyio.sleep(3)
            idle_cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
            for i in range(20):
                written[f"f{i}"] = time.perf_counter()
                (root / f"f{i}").write_bytes(b"x")
                await anyio.sleep(0.3)
            stop.set()
        return statistics.median(latencies) if latencies else float("nan"), idle_cpu

    print("\n## watcher (watchfiles awatch)")
    print("| step | median event latency | idle CPU |\n| ---: | ---: | ---: |")
    for step in (50, 5):
        latency, idle = anyio.run(measure, step)
        print(f"| {step} ms | {latency * 1000:.0f} ms | {idle:.2%} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_scan(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-hashing", action="store_true")
    parser.add_argument("--skip-watcher", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="conduitd-index-bench-", dir="/tmp"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            root = work / f"tree-{size}"
            if size <= 20_000:
                total = small_files_tree(root, size, max(1, size // 20))
            else:
                total = tiny_files_tree(root, size, max(1, size // 100))
            label = f"{size} files, {total / 2**20:.0f} MiB"
            bench_tree(work, label, root, args.rounds)
        if not args.skip_hashing:
            bench_hashing(work, args.rounds)
        if not args.skip_watcher:
            bench_watcher(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
