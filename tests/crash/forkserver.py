"""A fork server for the crash suite: conduitd imported once, one fork per run.

Most of a cold `python -m conduitd sync` is spent importing (about 0.5 s of
CPU against 0.1-0.2 s of syncing a small tree), which would make hundreds of
crash trials cost minutes. This server imports the command line once; each
request forks a fresh process that sets the request's environment, re-reads
the crash settings (`importlib.reload` re-runs `crashpoints` in the same
module namespace, so every `crash_point` already imported sees them) and runs
the real `conduitd` command line. The child's exit status, 137 for a crash
point, is what the caller gets. `CONDUITD_CRASH_COLD=1` makes the suite start
cold processes instead.

Protocol: one JSON request per line on stdin, `{"argv", "env", "stdout",
"stderr"}`; two reply lines on stdout, `{"pid"}` at the fork and `{"rc"}` at the exit.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any

import conduitd.cli
import conduitd.crashpoints
import conduitd.oneshot  # the heavy part of `sync`, imported before any fork
import conduitd.sync.service  # imported lazily by the CLI


def _child(request: dict[str, Any]) -> None:
    code = 1
    try:
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (null, out, err):
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        importlib.reload(conduitd.crashpoints)
        sys.argv = ["conduitd", *request["argv"]]
        try:
            conduitd.cli.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # noqa: BLE001  # the child must exit, whatever happened
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
