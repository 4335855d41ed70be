"""Shared by the mirror and bidirectional benchmarks: fair timing of whole processes.

- `Hygiene` runs (untimed) before every timed run: bytecode for conduitd is
  compiled, dirty pages are written back (`os.sync()`), then the machine
  settles for `--settle` seconds, so one tool's writeback never lands in the
  next tool's time.
- `interleaved` runs the tools round by round, round r starting with tool
  r mod n, so no tool always runs first (or right after the same neighbour).
- `Reporter` prints a table per phase (medians, every sample, ratios of each
  conduitd variant to each tool) and a summary at the end. The summary also
  gives the median of the per-round ratios ("paired"): a tool and conduitd
  timed in the same round shared the disk's mood, so on a phase bound by
  writeback (the initial copies) the paired ratio moves less from run to
  run than the ratio of the medians.
- `Daemon` runs `conduitd daemon` on a config of its own, answers `status`
  over the control socket and times `conduitd sync NAME --json` whole-process.

Timed conduitd processes run with PYTHONDONTWRITEBYTECODE removed from the
environment and the package compiled beforehand: otherwise every start
recompiles every module (~100+ ms) that no user pays.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
# Every process the benchmarks start gets this environment.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
Document = dict[str, Any]  # a JSON object as conduitd prints it


def default_conduitd() -> str:
    """The console script beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name("conduitd")
    if beside.exists():
        return str(beside)
    found = shutil.which("conduitd")
    if found is None:
        sys.exit("no conduitd console script: install the package into a venv")
    return found


def interpreter_of(script: str) -> str:
    """The Python a console script runs (from its shebang), else this one."""
    try:
        with open(script, "rb") as handle:
            first = handle.readline().decode(errors="replace")
    except OSError:
        return sys.executable
    words = first[2:].split() if first.startswith("#!") else []
    if words and Path(words[0]).name == "env":
        words = words[1:]
    return words[0] if words and "python" in Path(words[0]).name else sys.executable


def source_revision() -> str:
    """`git log --oneline -1` of the repository, and how dirty src/ is."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "log", "--oneline", "-1"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--short", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return f"{head or 'unknown commit'} ({len(dirty)} uncommitted paths under src/)"


@dataclass(frozen=True, slots=True)
class Hygiene:
    """Untimed, before every timed run: bytecode, writeback, a settle."""

    settle_s: float
    python: str
    package: Path

    @classmethod
    def for_conduitd(cls, conduitd: str, settle_s: float) -> Hygiene:
        python = interpreter_of(conduitd)
        code = (
            "import importlib.util as u;"
            "print(u.find_spec('conduitd').submodule_search_locations[0])"
        )
        found = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, env=ENV, check=True
        )
        return cls(settle_s, python, Path(found.stdout.strip()))

    def compile(self) -> None:
        # Not checked: a module that fails to compile (someone mid-edit) is
        # left to the timed run, which then fails loudly.
        subprocess.run(
            [self.python, "-m", "compileall", "-q", str(self.package)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            check=False,
        )

    def __call__(self) -> None:
        self.compile()
        os.sync()
        time.sleep(self.settle_s)


def timed(command: list[str] | str, env: Mapping[str, str] | None = None) -> float:
    """Seconds of one whole process; the benchmark stops if it fails."""
    start = time.perf_counter()
    done = subprocess.run(
        command,
        shell=isinstance(command, str),
        capture_output=True,
        text=True,
        env=ENV if env is None else env,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        sys.exit(f"{command} failed (exit {done.returncode}):\n{output}")
    return elapsed


def check_generation(document: object, context: str) -> Document:
    """A generation document that is verified with no errors, or stop."""
    if (
        not isinstance(document, dict)
        or document.get("errors_encountered")
        or document.get("verification_status") != "verified"
    ):
        sys.exit(f"{context}: conduitd did not converge: {document}")
    return document


def timed_conduitd(command: list[str]) -> tuple[float, Document]:
    """Time one `conduitd sync --json`; insist on `verified` and no errors."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, check=False)
    elapsed = time.perf_counter() - start
    try:
        document = json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"conduitd printed no JSON (exit {done.returncode}):\n{done.stderr}")
    if done.returncode != 0:
        sys.exit(f"conduitd exited {done.returncode}: {document}\n{done.stderr}")
    return elapsed, check_generation(document, " ".join(command))


def trees_equal(a: Path, b: Path) -> bool:
    """Same names and contents, `.conduitd/` aside."""
    done = subprocess.run(
        ["diff", "-r", "-q", "--exclude=.conduitd", str(a), str(b)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def conduit_config(path: Path, state_dir: Path, conduits: Sequence[Document]) -> Path:
    """Write a config: `[daemon]` with `state_dir`, then one table per conduit."""
    lines = ["[daemon]", f'state_dir = "{state_dir}"', 'log_level = "error"']
    for conduit in conduits:
        lines += ["", "[[conduit]]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in conduit.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True, slots=True)
class Tool:
    """One column: `run(tag)` returns the timed seconds.

    `before(tag, round)` runs untimed ahead of the hygiene (e.g. the change a
    re-sync then picks up).
    """

    name: str
    run: Callable[[str], float]
    before: Callable[[str, int], None] | None = None


def interleaved(
    tools: Sequence[Tool],
    rounds: int,
    tag: Callable[[int], str],
    hygiene: Hygiene,
    round_start: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Every tool once per round, round r starting with tool r mod n."""
    samples: dict[str, list[float]] = {tool.name: [] for tool in tools}
    for r in range(rounds):
        if round_start is not None:
            round_start(r)
        for i in range(len(tools)):
            tool = tools[(r + i) % len(tools)]
            if tool.before is not None:
                tool.before(tag(r), r)
            hygiene()
            samples[tool.name].append(tool.run(tag(r)))
    return samples


@dataclass(slots=True)
class Reporter:
    """Per-phase tables and the summary; conduitd variants are named `conduitd*`."""

    rows: list[tuple[str, str, str, list[float], list[float]]] = field(
        default_factory=list
    )

    def phase(
        self, title: str, samples: dict[str, list[float]], notes: Sequence[str] = ()
    ) -> None:
        medians = {name: statistics.median(times) for name, times in samples.items()}
        ours = [name for name in medians if name.startswith("conduitd")]
        print(f"\n## {title}")
        heads = "".join(f" {name} / tool |" for name in ours)
        print(f"| tool | median s | samples s |{heads}")
        print("| --- | ---: | --- |" + " ---: |" * len(ours))
        for name, median in medians.items():
            times = " ".join(f"{t:.3f}" for t in samples[name])
            ratios = "".join(f" {medians[v] / median:.2f}x |" for v in ours)
            print(f"| {name} | {median:.3f} | {times} |{ratios}")
        theirs = {n: m for n, m in medians.items() if not n.startswith("conduitd")}
        self.rows += [
            (title, variant, peer, samples[variant], samples[peer])
            for variant in ours
            for peer in theirs
        ]
        for note in notes:
            print(f"- {note}")
        sys.stdout.flush()

    def summary(self) -> None:
        print("\n## Summary: conduitd / peer (medians)")
        print("| phase | conduitd | s | peer | s | ratio | paired |")
        print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
        for title, variant, peer, ours, theirs in self.rows:
            mine, peers = statistics.median(ours), statistics.median(theirs)
            print(
                f"| {title} | {variant} | {mine:.3f} | {peer} | {peers:.3f} "
                f"| {mine / peers:.2f}x | {paired_ratio(ours, theirs)} |"
            )


def paired_ratio(ours: Sequence[float], theirs: Sequence[float]) -> str:
    """The median of round-by-round ratios, or "-" when the samples do not
    pair up (a phase timed a different number of rounds per tool)."""
    if len(ours) != len(theirs) or not ours:
        return "-"
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return f"{statistics.median(ratios):.2f}x"


class Daemon:
    """`conduitd --config CONFIG daemon` in the background, for the daemon columns."""

    def __init__(self, conduitd: str, config: Path, state_dir: Path, log: Path):
        self.conduitd, self.config, self.log = conduitd, config, log
        self.socket_path = state_dir / "conduitd.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    def start(self, instant: Sequence[str] = (), timeout_s: float = 3600) -> None:
        """Start and wait (untimed) until every endpoint is ready, nothing runs,
        and each `instant` conduit has finished its start-up catch-up run."""
        self._log_handle = open(self.log, "ab")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [self.conduitd, "--config", str(self.config), "daemon"],
            stdout=subprocess.DEVNULL,
            stderr=self._log_handle,
            env=ENV,
        )
        deadline = time.monotonic() + timeout_s
        while not self._ready(instant):
            if time.monotonic() > deadline:
                self._die(f"not ready within {timeout_s:.0f} s: {self.status()}")
            time.sleep(0.2)

    def _ready(self, instant: Sequence[str]) -> bool:
        try:
            status = self.status()
        except (OSError, RuntimeError):
            return False
        if status["daemon"]["state"] != "started":
            return False
        for conduit in status["conduits"]:
            states = {e["state"] for e in conduit["endpoints"].values()}
            if states != {"ready"} or conduit["active"] is not None:
                return False
            if conduit["name"] in instant and conduit["last_generation"] is None:
                return False
        return True

    def request(self, method: str, params: Document | None = None) -> object:
        """One request over the control socket; progress events are skipped."""
        if self.process is not None and self.process.poll() is not None:
            self._die(f"exited {self.process.returncode}")
        line = {"v": 1, "id": 1, "method": method, "params": params or {}}
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket_path))
            sock.sendall(json.dumps(line).encode() + b"\n")
            with sock.makefile("rb") as replies:
                for raw in replies:
                    reply = json.loads(raw)
                    if "ok" not in reply:
                        continue
                    if not reply["ok"]:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
        raise RuntimeError(f"{method}: the daemon closed the connection")

    def status(self) -> Document:
        result = self.request("status")
        assert isinstance(result, dict)
        return result

    def conduit(self, name: str) -> Document:
        for conduit in self.status()["conduits"]:
            if conduit["name"] == name:
                return conduit
        raise KeyError(name)

    def last_generation(self, name: str) -> int:
        last = self.conduit(name)["last_generation"]
        return 0 if last is None else int(last["generation"])

    def sync(self, name: str) -> tuple[float, Document]:
        """`conduitd --config CONFIG sync NAME --json`, timed as a user runs it."""
        return timed_conduitd(
            [self.conduitd, "--config", str(self.config), "sync", name, "--json"]
        )

    def wait_converged(
        self,
        name: str,
        after: int,
        converged: Callable[[], bool],
        timeout_s: float = 600,
    ) -> Document:
        """The first generation past `after`, done, that leaves `converged()`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            conduit = self.conduit(name)
            last = conduit["last_generation"]
            if (
                last is not None
                and last["generation"] > after
                and last["completed_at"] is not None
                and conduit["active"] is None
            ):
                check_generation(last, f"daemon run of {name}")
                if converged():
                    return last
                after = last["generation"]  # more changes: wait for the next
            time.sleep(0.02)
        sys.exit(f"{name}: the daemon did not converge within {timeout_s:.0f} s")

    def change_to_synced(
        self, name: str, change: Callable[[], object], converged: Callable[[], bool]
    ) -> float:
        """Seconds from the end of `change()` to the end of the daemon's own run
        (its `completed_at`) that leaves `converged()`: no CLI call."""
        after = self.last_generation(name)
        change()
        changed_at = time.time()
        done = self.wait_converged(name, after, converged)
        completed = datetime.fromisoformat(str(done["completed_at"])).timestamp()
        return completed - changed_at

    def stop(self) -> None:
        if self.process is None:
            return
        subprocess.run(
            [self.conduitd, "--config", str(self.config), "stop"],
            capture_output=True,
            env=ENV,
            check=False,
        )
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait()
        if self._log_handle is not None:
            self._log_handle.close()
        self.process = None

    def _die(self, problem: str) -> None:
        tail = self.log.read_text(errors="replace")[-3000:]
        sys.exit(f"daemon ({self.config}) {problem}:\n{tail}")


def race_probe(
    daemon: Daemon,
    name: str,
    change: Callable[[int], object],
    converged: Callable[[], bool],
    tries: int,
    hygiene: Hygiene,
) -> str:
    """`sync` right after a change, as a user types it after saving a file:
    does the run include the change? Untimed check; converges afterwards."""
    outcomes = []
    for i in range(tries):
        hygiene()
        change(i)
        seconds, document = daemon.sync(name)
        ok = converged()
        outcomes.append(
            f"{seconds:.3f} s, {document['files_copied']} copied, "
            + ("converged" if ok else "NOT converged")
        )
        if not ok:
            hygiene()
            daemon.sync(name)
            if not converged():
                sys.exit(f"{name}: still not converged after a second sync")
    held = sum("NOT" not in outcome for outcome in outcomes)
    return (
        f"`sync {name}` right after a change (no settle): the trees were equal "
        f"after {held} of {tries} calls ({'; '.join(outcomes)})"
    )
