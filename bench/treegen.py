"""Generated trees for the benchmarks (deterministic, fresh directories)."""

from __future__ import annotations

import os
import random
from pathlib import Path


def small_files_tree(root: Path, files: int, dirs: int, seed: int = 1) -> int:
    """`files` files of 1-64 KiB spread over `dirs` directories; returns bytes."""
    rng = random.Random(seed)
    total = 0
    for d in range(dirs):
        (root / f"d{d:04d}").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        size = rng.randint(1024, 64 * 1024)
        path = root / f"d{i % dirs:04d}" / f"f{i:06d}.bin"
        path.write_bytes(rng.randbytes(size))
        total += size
    return total


def tiny_files_tree(root: Path, files: int, dirs: int, seed: int = 1) -> int:
    """`files` files of 1 KiB (the W3 workload)."""
    rng = random.Random(seed)
    for d in range(dirs):
        (root / f"d{d:04d}").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"d{i % dirs:04d}" / f"f{i:06d}.bin").write_bytes(rng.randbytes(1024))
    return files * 1024


def big_files_tree(root: Path, files: int, size_bytes: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    block = rng.randbytes(1 << 20)
    for i in range(files):
        with open(root / f"big{i:03d}.bin", "wb") as handle:
            written = 0
            while written < size_bytes:
                chunk = block[: size_bytes - written]
                handle.write(bytes([i % 251]) + chunk[1:])
                written += len(chunk)
    return files * size_bytes


def change_fraction(root: Path, fraction: float, seed: int = 2) -> int:
    """Rewrite `fraction` of the files under root with new content."""
    rng = random.Random(seed)
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and ".conduitd" not in p.parts
    )
    chosen = rng.sample(files, max(1, int(len(files) * fraction)))
    for path in chosen:
        data = path.read_bytes()
        path.write_bytes(rng.randbytes(len(data)))
        os.utime(path)
    return len(chosen)
