"""Filesystem semantics (issue 8, point 6; DESIGN.md Jobs and durability).

- mtimes compared at the target's granularity: the probe reads back an odd
  mtime; a coarse target (FAT: 2 s) never loops on metadata updates nor fails
  verification forever. Tested on a real vfat image where the kernel and
  mkfs.vfat allow it, else with the probe's answer injected and the target's
  mtimes rounded as FAT would round them;
- names that collide on a case-insensitive or normalising target are refused
  per path, never overwritten (simulated probe: this kernel offers no
  case-folding filesystem to an unprivileged namespace);
- a mount point inside a root is not crossed (tmpfs in `unshare -Urm`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduitd.index import probes
from conduitd.index.probes import FsTraits, granularity_for, probe_traits
from conduitd.sync import service as service_module
from conduitd.sync.collisions import colliding_paths, name_folder
from helpers.cli import conduitd_env
from helpers.mirror import Mirror, listing, make_mirror, sync_api, trash_files, write

TWO_S = 2_000_000_000
ODD_NS = 1_700_000_001_987_654_321


def test_granularity_is_the_smallest_that_explains_the_loss() -> None:
    t = probes.PROBE_MTIME_NS
    assert granularity_for(t, t) == 1
    assert granularity_for(t, t - t % 1_000) == 1_000
    assert granularity_for(t, t - t % 1_000_000_000) == 1_000_000_000
    assert granularity_for(t, t - t % TWO_S) == TWO_S  # FAT: even seconds


def test_probe_of_this_filesystem_finds_nanoseconds_and_distinct_names(
    tmp_path: Path,
) -> None:
    (tmp_path / ".conduitd").mkdir()
    traits = probe_traits(os.fsencode(tmp_path))
    assert traits == FsTraits(1, case_insensitive=False, normalising=False)
    assert os.listdir(tmp_path / ".conduitd") == []  # probes cleaned up
    # Without `.conduitd/` (read-only root, dry run) nothing is written.
    bare = tmp_path / "bare"
    bare.mkdir()
    assert probe_traits(os.fsencode(bare)).mtime_granularity_ns >= 1
    assert os.listdir(bare) == []


def fat_rounding(root: Path) -> None:
    """Round every mtime under `root` down to even seconds, as FAT stores them."""
    for dirpath, _dirs, files in os.walk(root):
        if "/.conduitd" in dirpath + "/":
            continue
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rounded = st.st_mtime_ns - st.st_mtime_ns % TWO_S
            os.utime(path, ns=(rounded, rounded), follow_symlinks=False)


@pytest.mark.parametrize("mode", ["mirror", "bidirectional"])
async def test_coarse_target_never_loops_on_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    def coarse_target(root: bytes) -> FsTraits:
        if root == os.fsencode(m.target):
            return FsTraits(mtime_granularity_ns=TWO_S)
        return FsTraits()

    monkeypatch.setattr(service_module, "probe_traits", coarse_target)
    m = make_mirror(tmp_path, create_target=True, mode=mode)
    for i in range(5):
        write(m.source / f"f{i}.txt", b"x", mtime_ns=ODD_NS + i)
    first = await sync_api(m)
    fat_rounding(m.target)  # what a FAT target would have kept
    assert first.counts.files_copied == 5
    for _ in range(2):
        again = await sync_api(m)
        fat_rounding(m.target)
        assert again.counts.metadata_updated == 0
        assert again.counts.files_copied == 0
        assert again.verification_status == "verified"
    assert (m.source / "f0.txt").stat().st_mtime_ns == ODD_NS  # source untouched


async def test_without_the_granularity_the_same_target_would_loop(
    tmp_path: Path,
) -> None:
    """The control experiment: nanosecond comparison keeps finding work."""
    m = make_mirror(tmp_path, create_target=True)
    write(m.source / "f.txt", b"x", mtime_ns=ODD_NS)
    await sync_api(m)
    fat_rounding(m.target)
    again = await sync_api(m)
    assert again.counts.metadata_updated == 1


def vfat_available() -> str | None:
    if os.geteuid() != 0:
        return "mounting a vfat image needs root"
    if shutil.which("mkfs.vfat") is None:
        return "mkfs.vfat is not installed"
    with open("/proc/filesystems") as known:
        if "vfat" not in known.read().split():
            return "the kernel has no vfat"
    return None


@pytest.fixture
def vfat_target(tmp_path: Path) -> Iterator[Path]:
    reason = vfat_available()
    if reason:
        pytest.skip(reason)
    image, target = tmp_path / "fat.img", tmp_path / "target"
    target.mkdir()
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.vfat", str(image)], check=True, capture_output=True)
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(target)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount: {mounted.stderr!r}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


@pytest.mark.slow
async def test_real_vfat_target_probes_two_seconds_and_converges(
    tmp_path: Path, vfat_target: Path
) -> None:
    m = make_mirror(tmp_path)
    (vfat_target / ".conduitd").mkdir()
    assert probe_traits(os.fsencode(vfat_target)).mtime_granularity_ns == TWO_S
    write(m.source / "f.txt", b"x", mtime_ns=ODD_NS)
    await sync_api(m)
    again = await sync_api(m)
    assert again.counts.metadata_updated == 0
    assert again.verification_status == "verified"


# ------------------------------------------------------------ name folding


def test_colliding_paths_per_directory() -> None:
    fold = name_folder(case_insensitive=True, normalising=True)
    assert fold is not None
    nfd = unicodedata.normalize("NFD", "caf\u00e9").encode()
    nfc = unicodedata.normalize("NFC", "caf\u00e9").encode()
    existing = {b"d", b"d/Photo.jpg", nfc}
    created = [b"d/photo.JPG", b"d/other", nfd, b"e/x", b"e/X", b"f"]
    assert colliding_paths(existing, created, fold) == {
        b"d/photo.JPG",
        nfd,
        b"e/x",
        b"e/X",
    }
    assert name_folder(case_insensitive=False, normalising=False) is None
    keeps_case = name_folder(case_insensitive=False, normalising=True)
    assert keeps_case is not None
    assert colliding_paths(existing, created, keeps_case) == {nfd}


async def test_collisions_on_a_case_insensitive_target_are_refused_per_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def folding_target(root: bytes) -> FsTraits:
        if root == os.fsencode(m.target):
            return FsTraits(case_insensitive=True, normalising=True)
        return FsTraits()

    monkeypatch.setattr(service_module, "probe_traits", folding_target)
    m: Mirror = make_mirror(tmp_path, create_target=True, max_delete_percent=100)
    write(m.target / "Report.txt", b"the target's own report")
    write(m.source / "report.txt", b"source report")  # collides with the above
    write(m.source / "Notes" / "a.txt", b"a")
    write(m.source / "notes" / "b.txt", b"b")  # Notes vs notes: both refused
    write(m.source / "fine.txt", b"fine")

    generation = await sync_api(m)

    # Report.txt is target-only: the mirror trashes it, never overwrites it.
    assert trash_files(m.target, 1) == {"Report.txt": b"the target's own report"}
    assert not (m.target / "report.txt").exists()
    assert not (m.target / "Notes").exists()
    assert not (m.target / "notes").exists()
    assert (m.target / "fine.txt").read_bytes() == b"fine"
    # report.txt, Notes, Notes/a.txt, notes, notes/b.txt
    assert generation.counts.errors_encountered == 5
    assert generation.verification_status == "verified"  # refused, not looping
    again = await sync_api(m)  # Report.txt is gone: report.txt may land now
    assert (m.target / "report.txt").read_bytes() == b"source report"
    assert again.counts.errors_encountered == 4  # Notes and notes still collide


# ------------------------------------------------------- mount points

_SYNC_AND_LIST = textwrap.dedent(
    """
    import json, os, subprocess, sys
    config, target = sys.argv[1:3]
    done = subprocess.run([sys.executable, "-m", "conduitd", "--config", config,
                           "sync", "m", "--json"], capture_output=True, text=True)
    found = sorted(os.path.relpath(os.path.join(d, n), target)
                   for d, ds, fs in os.walk(target) for n in ds + fs
                   if ".conduitd" not in d and n != ".conduitd")
    print(json.dumps({"code": done.returncode, "stderr": done.stderr[-2000:],
                      "found": found}))
    """
)


def test_mount_point_inside_a_root_is_not_crossed(tmp_path: Path) -> None:
    probe = subprocess.run(
        ["unshare", "-Urm", "true"], capture_output=True, check=False
    )
    if shutil.which("unshare") is None or probe.returncode != 0:
        pytest.skip("unshare -Urm is not permitted here")
    m = make_mirror(tmp_path, max_delete_percent=100)
    write(m.source / "top.txt", b"top")
    (m.source / "mnt").mkdir()
    write(m.source / "mnt" / "hidden-by-mount.txt", b"under the mount")
    mnt = m.source / "mnt"
    script = (
        f"mount -t tmpfs tmpfs {mnt} && echo other-fs > {mnt}/foreign.txt"
        ' && exec "$0" -c "$1" "$2" "$3"'
    )
    done = subprocess.run(
        ["unshare", "-Urm", "sh", "-ec", script, sys.executable, _SYNC_AND_LIST,
         str(m.config), str(m.target)],
        capture_output=True, text=True, env=conduitd_env(), timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "mnt/foreign.txt" not in report["found"], report
    assert "top.txt" in report["found"], report
    assert "Traceback" not in report["stderr"]
    # Outside the namespace the directory is plain again; nothing was lost.
    assert listing(m.source)["mnt/hidden-by-mount.txt"][3] == b"under the mount"
