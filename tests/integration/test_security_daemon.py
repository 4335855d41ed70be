"""The daemon's attack surface (issue 8, point 5): its control socket and its
systemd units.

One real daemon answers a hostile client: another uid (a tiny Python client
run as `nobody` through setpriv, after the test opened the socket's modes so
that only SO_PEERCRED stands in the way), oversized frames, lines that are not
JSON (or are Python's extensions to it), and hostile paths in parameters.
After all of it the daemon still serves and nothing outside a root changed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conduitd.daemon.control import MAX_LINE_BYTES
from helpers.cli import run_cli, write_config
from helpers.daemon import DaemonProcess, request_lines, running_daemon
from helpers.unprivileged import drop_privileges_prefix, make_traversable

STATUS = b'{"v": 1, "id": 1, "method": "status"}\n'

_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connect_error": exc.errno})); sys.exit(0)
try:
    s.sendall(b'{"v": 1, "id": 1, "method": "stop"}\\n')
except OSError:
    pass  # refused at once: the reply is already waiting
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode() or "{}")
"""


@pytest.fixture
def daemon() -> Iterator[tuple[DaemonProcess, Path, Path]]:
    base = Path(tempfile.mkdtemp(prefix="conduitd-sec-"))
    try:
        make_traversable(base)
        for side in ("src", "dst"):
            (base / side).mkdir()
        (base / "src" / "a.txt").write_text("a")
        state = base / "state"
        config = write_config(
            base / "conduitd.toml",
            state,
            [{"name": "m", "source": str(base / "src"), "target": str(base / "dst")}],
            shutdown_timeout="5s",
        )
        with running_daemon(config, base) as process:
            yield process, state, base
    finally:
        shutil.rmtree(base)


def exchange(socket_path: Path, payload: bytes) -> list[dict[str, object]]:
    """Send `payload`, close our side, and read every reply line until EOF."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(os.fspath(socket_path))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon may answer and close before reading it all
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def as_nobody(socket_path: Path) -> dict[str, object]:
    done = subprocess.run(
        [*drop_privileges_prefix(), sys.executable, "-c", _CLIENT, str(socket_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reply: dict[str, object] = json.loads(done.stdout)
    return reply


def test_control_socket_refuses_other_uids_bad_frames_and_hostile_params(
    daemon: tuple[DaemonProcess, Path, Path],
) -> None:
    process, state, base = daemon
    sock = state / "conduitd.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700

    # Another uid cannot even reach the socket through the 0700 directory...
    assert as_nobody(sock)["connect_error"] in (13, 1)  # EACCES / EPERM
    # ...and with the modes opened up, SO_PEERCRED still refuses it.
    os.chmod(state, 0o711)
    os.chmod(sock, 0o666)
    try:
        refused = as_nobody(sock)
    finally:
        os.chmod(sock, 0o600)
        os.chmod(state, 0o700)
    assert refused.get("ok") is False, refused
    assert process.process is not None
    assert process.process.poll() is None

    bad_frames = [
        b"x" * (MAX_LINE_BYTES + 1) + b"\n",
        b"[" * 300_000 + b"]" * 300_000 + b"\n",  # deep, within 1 MiB
        b"\xff\xfe\xfd\n",
        b"{not json\n",
        b"null\n",
        b'"status"\n',
        b"[]\n",
        b'{"v": 1, "id": NaN, "method": "status"}\n',
        b'{"v": 1, "id": 1, "method": "status", "params": {"x": Infinity}}\n',
        b'{"v": 1, "id": 1, "method": "status", "params": []}\n',
        b'{"v": 1, "id": 1, "method": "__init__"}\n',
        b'{"v": 1, "id": 1, "method": "status"',  # no newline, then EOF
    ]
    for frame in bad_frames:
        replies = exchange(sock, frame)
        assert all(r.get("ok") is False for r in replies), (frame[:60], replies)

    hostile_params = [
        ("trash_list", {"name": "m", "path": "../../etc"}),
        ("trash_list", {"name": "m", "path": "a\u0000b"}),
        ("restore", {"name": "m", "path": "../outside.txt"}),
        ("restore", {"name": "m", "path": "a/./b"}),
        ("restore", {"name": "m", "path": "a.txt", "to": "relative/dest"}),
        ("sync", {"name": "../m"}),
        ("sync", {"name": {"$ne": 1}}),
        ("history", {"name": "m", "limit": -1}),
    ]
    before = sorted(os.listdir(base))
    for method, params in hostile_params:
        line = json.dumps({"v": 1, "id": 5, "method": method, "params": params})
        [reply] = request_lines(sock, line.encode() + b"\n")
        assert reply["ok"] is False, (method, params, reply)
    assert sorted(os.listdir(base)) == before

    [after] = request_lines(sock, STATUS)
    assert after["ok"] is True  # still serving


# --------------------------------------------------------------- the units

SYSTEM_CAPS = {"CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"}
HARDENING = {
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_UNIX",
    "SystemCallFilter": "@system-service",
    "UMask": "0077",
}


def rendered(tmp_path: Path, scope: str) -> tuple[str, dict[str, list[str]]]:
    for side in ("src", "dst"):
        (tmp_path / side).mkdir(exist_ok=True)
    config = write_config(
        tmp_path / "c.toml",
        tmp_path / "state",
        [
            {
                "name": "m",
                "source": str(tmp_path / "src"),
                "target": str(tmp_path / "dst"),
            }
        ],
    )
    done = run_cli("unit", scope, config=config)
    assert done.returncode == 0, done.stderr
    settings: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key, []).append(value)
    return done.stdout, settings


@pytest.mark.parametrize("scope", ["--system", "--user"])
def test_rendered_units_are_hardened_and_verify(tmp_path: Path, scope: str) -> None:
    text, settings = rendered(tmp_path, scope)
    for key, value in HARDENING.items():
        assert settings.get(key) == [value], key
    writable = {v.lstrip("-") for v in settings.get("ReadWritePaths", [])}
    assert {str(tmp_path / "src"), str(tmp_path / "dst")} <= writable
    caps = settings.get("CapabilityBoundingSet", [])
    if scope == "--system":
        assert len(caps) == 1
        assert set(caps[0].split()) == SYSTEM_CAPS
    else:
        assert caps == []  # a user manager grants none in the first place
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "conduitd.service"
    unit.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{unit}:" not in done.stderr
