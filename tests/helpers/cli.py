"""Run the real `conduitd` command line in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"


def conduitd_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_cli(
    *args: str | os.PathLike[str],
    config: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = ["--config", str(config)] if config else []
    command = [sys.executable, "-m", "conduitd", *prefix, *map(str, args)]
    return subprocess.run(
        command,
        env=conduitd_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_cli_recording_modules(
    args: Sequence[str], record: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `conduitd ARGS` through `cli.main()`; also return every module the
    process had imported when it exited (written to `record` at exit)."""
    script = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(record)!r}, 'w')"
        ".write(json.dumps(sorted(sys.modules))))\n"
        "from conduitd.cli import main\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=conduitd_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, set(json.loads(record.read_text()))


def run_json(*args: str | os.PathLike[str], config: Path | None = None) -> Any:
    result = run_cli(*args, "--json", config=config)
    return json.loads(result.stdout)


def write_config(
    path: Path, state_dir: Path, conduits: Sequence[dict[str, Any]], **daemon: Any
) -> Path:
    """Write a TOML config; values are str, int, bool or lists of str."""
    lines = ["[daemon]", f"state_dir = {_toml(str(state_dir))}"]
    lines += [f"{k} = {_toml(v)}" for k, v in daemon.items()]
    for conduit in conduits:
        lines.append("")
        lines.append("[[conduit]]")
        lines += [f"{k} = {_toml(v)}" for k, v in conduit.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
