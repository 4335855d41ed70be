"""Hostile config files (issue 8, point 7): exit 2 with a message, never a
traceback, never a change on disk.

A corpus of broken documents (syntax, types, values, semantics, sizes) goes
through the real command line in-process (click's runner) as `check`, `sync`
and `status`; hypothesis then splices TOML-ish fragments into documents of
its own. Every run must end with exit 2 (0 is allowed only for a generated
document that happens to be valid) and leave the directory as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conduitd.cli import cli

GOOD = '[[conduit]]\nname = "c"\nsource = "src"\ntarget = "dst"\n'

CORPUS: dict[str, bytes] = {
    # --- syntax
    "unterminated string": b'[daemon]\nstate_dir = "abc\n',
    "unterminated table": b"[daemon\n",
    "unterminated array": b'[[conduit]]\nname = "c"\nignore = ["a",\n',
    "duplicate key": b'[daemon]\nlog_level = "info"\nlog_level = "debug"\n',
    "duplicate table": b"[daemon]\n[daemon]\n",
    "table then array": b'[conduit]\nname = "a"\n[[conduit]]\nname = "b"\n',
    "bad escape": b'[daemon]\nstate_dir = "\\q"\n',
    "bad unicode escape": b'[daemon]\nstate_dir = "\\uD800"\n',
    "NUL byte": b'[daemon]\nstate_dir = "a\x00b"\n',
    "raw NUL in file": b"[daemon]\x00\n",
    "invalid UTF-8": b'[daemon]\nstate_dir = "\xff\xfe"\n',
    "UTF-16 BOM": "[daemon]\n".encode("utf-16"),
    "binary garbage": bytes(range(256)) * 4,
    "bare key only": b"conduit\n",
    "empty key": b'= "x"\n',
    "dotted conflict": b'daemon = 1\ndaemon.state_dir = "x"\n',
    "deep array": b"x = " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
    "deep inline table": b"x = " + b"{a = " * 20_000 + b"1" + b"}" * 20_000 + b"\n",
    "huge line": b"# " + b"x" * 2_000_000 + b"\n[daemon\n",
    # --- types
    "daemon is a number": b"daemon = 1\n",
    "daemon is an array": b"daemon = []\n",
    "conduit is a string": b'conduit = "x"\n',
    "conduit is a table": b'[conduit]\nname = "c"\nsource = "s"\ntarget = "t"\n',
    "state_dir is a number": b"[daemon]\nstate_dir = 1\n",
    "log_level is a bool": b"[daemon]\nlog_level = true\n",
    "transfers negative": b"[daemon]\nmax_parallel_transfers = -1\n",
    "transfers huge": b"[daemon]\nmax_parallel_transfers = 9223372036854775807\n",
    "transfers inf": b"[daemon]\nmax_parallel_transfers = inf\n",
    "transfers nan": b"[daemon]\nmax_parallel_transfers = nan\n",
    "transfers float": b"[daemon]\nmax_parallel_transfers = 1.5\n",
    "rescan is a date": b"[daemon]\nrescan_interval = 1979-05-27\n",
    "name is a number": b'[[conduit]]\nname = 1\nsource = "s"\ntarget = "t"\n',
    "ignore is a string": GOOD.encode() + b'ignore = "*.tmp"\n',
    "ignore holds a table": GOOD.encode() + b"ignore = [{a = 1}]\n",
    "on_error mixed": GOOD.encode() + b'on_error = ["x", 1]\n',
    # --- values
    "unknown top key": b"surprise = 1\n",
    "unknown daemon key": b"[daemon]\nsurprise = 1\n",
    "unknown conduit key": GOOD.encode() + b"surprise = 1\n",
    "missing name": b'[[conduit]]\nsource = "s"\ntarget = "t"\n',
    "missing target": b'[[conduit]]\nname = "c"\nsource = "s"\n',
    "name with slash": GOOD.replace('"c"', '"a/b"').encode(),
    "name too long": GOOD.replace('"c"', '"' + "n" * 65 + '"').encode(),
    "name empty": GOOD.replace('"c"', '""').encode(),
    "mode typo": GOOD.encode() + b'mode = "mirrror"\n',
    "schedule junk": GOOD.encode() + b'schedule = "sometimes"\n',
    "interval zero": GOOD.encode() + b'schedule = "interval:0s"\n',
    "interval fraction": GOOD.encode() + b'schedule = "interval:1.5s"\n',
    "cron six fields": GOOD.encode() + b'schedule = "cron:* * * * * *"\n',
    "cron out of range": GOOD.encode() + b'schedule = "cron:61 25 32 13 8"\n',
    "duration negative": GOOD.encode() + b'debounce = "-1s"\n',
    "duration unit": GOOD.encode() + b'debounce = "5 fortnights"\n',
    "delete percent": GOOD.encode() + b"max_delete_percent = 101\n",
    "parallel zero": GOOD.encode() + b"parallel_transfers = 0\n",
    "bandwidth negative": GOOD.encode() + b"bandwidth_limit_mbps = -5\n",
    "min_free percent": GOOD.encode() + b'min_free = "200%"\n',
    "trash size unit": GOOD.encode() + b'trash_max_bytes = "20X"\n',
    "conflict typo": GOOD.encode() + b'conflict = "coin_flip"\n',
    "delete typo": GOOD.encode() + b'delete = "shred"\n',
    "selective without selection": GOOD.encode() + b'mode = "selective"\n',
    # --- semantics
    "duplicate names": (GOOD + GOOD.replace('"dst"', '"dst2"')).encode(),
    "equal endpoints": GOOD.replace('"dst"', '"src"').encode(),
    "nested endpoints": GOOD.replace('"dst"', '"src/inner"').encode(),
    "target written twice": (GOOD + GOOD.replace('"c"', '"d"').replace('"src"', '"s2"')).encode(),
    "state dir inside a root": b'[daemon]\nstate_dir = "src/state"\n' + GOOD.encode(),
}  # fmt: skip

COMMANDS = (["check"], ["sync", "c", "--json"], ["status", "--json"])


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    seen: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            seen[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return seen


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    return tmp_path


def invoke(config: Path, argv: list[str]) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *argv])


def assert_refused_cleanly(result: Result, *, allow_ok: bool = False) -> None:
    allowed = {0, 2} if allow_ok else {2}
    assert result.exit_code in allowed, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.output.strip()  # a message, never silence


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_config_exits_2_with_a_message_and_changes_nothing(
    place: Path, name: str
) -> None:
    config = place / "conduitd.toml"
    config.write_bytes(CORPUS[name])
    before = snapshot(place)
    for argv in COMMANDS:
        result = invoke(config, argv)
        assert_refused_cleanly(result)
        if "--json" in argv and result.output.strip():
            assert '"error"' in result.output
    assert snapshot(place) == before


FRAGMENTS = [
    "[daemon]",
    "[[conduit]]",
    "[conduit]",
    'name = "c"',
    'source = "src"',
    'target = "dst"',
    'target = "src"',
    'state_dir = "st"',
    'mode = "bidirectional"',
    'schedule = "cron:0 3 * * *"',
    "max_delete_percent = 50",
    'ignore = ["*.tmp"]',
    "enabled = false",
    '"',
    "[",
    "]",
    "=",
    "{",
    "}",
    ",",
    "\\",
    "\x00",
    "\ufeff",
    "1e999",
    "nan",
    "0x",
    "'''",
    '"""',
    "#",
]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)),
        max_size=14,
    )
)
def test_generated_documents_never_crash_check(place: Path, parts: list[str]) -> None:
    config = place / "conduitd.toml"
    config.write_text("\n".join(parts), encoding="utf-8", errors="surrogatepass")
    before = snapshot(place)
    assert_refused_cleanly(invoke(config, ["check"]), allow_ok=True)
    assert snapshot(place) == before


def test_corpus_size_for_the_note() -> None:
    """The note reports bad inputs per category; keep the corpus honest."""
    assert len(CORPUS) >= 60
