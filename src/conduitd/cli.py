"""The command line. Heavy imports happen inside the commands that need them."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from conduitd import __version__
from conduitd.completion import complete_conduit_names
from conduitd.errors import ConduitdError

if TYPE_CHECKING:
    from conduitd.config import Config
    from conduitd.forked_workers import ForkedWorkers
    from conduitd.progress_bar import SyncProgressBar

T = TypeVar("T")

EXAMPLES = {
    "daemon": "conduitd --config ~/.config/conduitd/conduitd.toml daemon",
    "check": "conduitd --config examples/conduitd.toml check",
    "migrate": "conduitd migrate status",
    "sync": "conduitd sync photos --dry-run --json",
    "status": "conduitd status --json",
    "history": "conduitd history photos --limit 5",
    "conflicts": "conduitd conflicts notes --json",
    "resolve": "conduitd resolve 12 --keep both",
    "log": "conduitd log --since 100 --limit 20 --json",
    "reload": "conduitd reload",
    "stop": "conduitd stop",
    "unit": "conduitd unit --user > ~/.config/systemd/user/conduitd.service",
    "trash": "conduitd trash list photos 2024/ --json",
    "restore": "conduitd restore photos 2024/cat.jpg --generation 7",
    "pause": "conduitd pause photos",
    "resume": "conduitd resume --all",
    "completion": "conduitd completion bash > ~/.local/share/bash-completion/completions/conduitd",
}


def _epilog(name: str) -> str:
    return f"\b\nExample:\n  {EXAMPLES[name]}"


@dataclass(slots=True)
class CliContext:
    config_option: str | None

    def config_path(self) -> Path:
        from conduitd.config import resolve_config_path

        return resolve_config_path(self.config_option)

    def load_config(self) -> Config:
        from conduitd.config import load_config

        return load_config(self.config_path())

    def state_dir_leniently(self) -> Path:
        from conduitd.config import read_state_dir_leniently

        return read_state_dir_leniently(self.config_path())


def fail(error: ConduitdError, *, as_json: bool) -> NoReturn:
    """Report an error we raised on purpose, with its exit code, no traceback."""
    if as_json:
        document = {"error": {"kind": error.kind, "message": str(error)}}
        click.echo(json.dumps(document))
    else:
        click.echo(f"conduitd: {error}", err=True)
    sys.exit(error.exit_code)


def run_async(
    main: Callable[[], Awaitable[T]],
    *,
    as_json: bool = False,
    log_level: str = "warning",
) -> T:
    """Run one command's coroutine, mapping our errors to exit codes."""
    import gc

    import anyio

    from conduitd.logs import configure_logging

    configure_logging(log_level)
    # A one-shot run builds a few objects per indexed path (both sides and the
    # baseline): with the default threshold (700) the collector runs thousands
    # of times over a growing heap, a quarter of a 100k-file no-op sync
    # (bench/bidirectional_bench.py). Collect less often in this short process.
    gc.set_threshold(50_000, 20, 20)
    _end_import_phase()
    try:
        return anyio.run(main)
    except ConduitdError as error:
        fail(error, as_json=as_json)
    except KeyboardInterrupt:
        # click would print "Aborted!" and exit 1, the code of failed paths.
        sys.exit(130)


def print_json(document: object) -> None:
    click.echo(json.dumps(document, indent=None, sort_keys=False))


pass_ctx = click.make_pass_decorator(CliContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_option",
    metavar="PATH",
    default=None,
    help="Config file (default: $CONDUITD_CONFIG, else "
    "$XDG_CONFIG_HOME/conduitd/conduitd.toml).",
)
@click.version_option(__version__, prog_name="conduitd")
@click.pass_context
def cli(ctx: click.Context, config_option: str | None) -> None:
    """conduitd keeps directories in sync and never loses a file.

    \b
    Example:
      conduitd --config examples/conduitd.toml check
    """
    ctx.obj = CliContext(config_option)


@cli.command(epilog=_epilog("daemon"))
@pass_ctx
def daemon(ctx: CliContext) -> None:
    """Run the daemon in the foreground (what the service runs)."""
    try:
        config = ctx.load_config()
    except ConduitdError as error:
        fail(error, as_json=False)
    from conduitd.daemon.supervisor import run_daemon
    from conduitd.logs import configure_logging

    configure_logging(config.daemon.log_level, config.daemon.log_format)
    import anyio

    from conduitd.daemon.sync_engine import SyncEngine
    from conduitd.forked_workers import ForkedWorkers

    _end_import_phase()
    # Before the event loop and any thread: see conduitd.forked_workers.
    workers = ForkedWorkers.fork(2)
    try:
        engine = SyncEngine(config, workers=workers)

        async def main() -> None:
            await run_daemon(
                config,
                run_factory=engine.factory(),
                conflict_resolver=engine,
                workers=workers,
            )

        anyio.run(main)
    except ConduitdError as error:
        fail(error, as_json=False)
    finally:
        if workers is not None:
            workers.close()


@cli.command(epilog=_epilog("check"))
@pass_ctx
def check(ctx: CliContext) -> None:
    """Validate the config: print `ok` and exit 0, or every error and exit 2."""
    from conduitd.errors import ConfigError

    try:
        config = ctx.load_config()
    except ConfigError as error:
        for problem in error.problems:
            click.echo(problem.render())
        sys.exit(2)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo("ok")


@cli.group(epilog=_epilog("migrate"))
def migrate() -> None:
    """Apply or list the library's database migrations."""


@migrate.command("up")
@pass_ctx
def migrate_up_command(ctx: CliContext) -> None:
    """Apply every pending migration."""
    from conduitd.maintenance import migrate_up_report

    state_dir = _state_dir(ctx)
    for line in run_async(lambda: migrate_up_report(state_dir)):
        click.echo(line)


@migrate.command("status")
@pass_ctx
def migrate_status_command(ctx: CliContext) -> None:
    """List migrations and whether each is applied."""
    from conduitd.maintenance import migrate_status_report

    state_dir = _state_dir(ctx)
    for line in run_async(lambda: migrate_status_report(state_dir)):
        click.echo(line)


@cli.command(epilog=_epilog("sync"))
@click.argument("name", shell_complete=complete_conduit_names)
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing anywhere.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--progress", is_flag=True, help="Show a progress bar.")
@click.option("--force", is_flag=True, help="Override the max-delete brake only.")
@pass_ctx
def sync(
    ctx: CliContext,
    name: str,
    dry_run: bool,
    as_json: bool,
    progress: bool,
    force: bool,
) -> None:
    """Sync one conduit now and print its generation.

    Through the running daemon when there is one (it waits for the generation);
    otherwise in this process, holding the state dir's lock (exit 3 "busy" when
    another process holds it). Exit 1 when paths failed or verification did.
    With --progress, a bar on stderr shows files, bytes, rate and time.
    """
    if dry_run:
        _print_plan(_plan(ctx, name, force=force, as_json=as_json), as_json=as_json)
        return
    # The bar starts before run_async configures logging: on a terminal, the
    # logger then writes through the bar's stderr proxy, above the bar.
    with _progress_bar(name, enabled=progress) as bar:
        document = _ask_daemon_first(
            ctx,
            "sync",
            {"name": name, "force": force},
            as_json=as_json,
            timeout_s=None,
            on_event=None if bar is None else bar.on_event,
        )
        if document is None:
            document = _sync_in_this_process(
                ctx, name, force=force, as_json=as_json, bar=bar
            )
        if bar is not None:
            assert isinstance(document, dict)  # a generation object
            bar.finish(document)
    _print_generation(document, as_json=as_json)


def _sync_in_this_process(
    ctx: CliContext,
    name: str,
    *,
    force: bool,
    as_json: bool,
    bar: SyncProgressBar | None,
) -> dict[str, object]:
    from conduitd.storage.database import SHORT_LIVED, tuned_connections

    # Before the fork: the workers' connections are tuned alike.
    with tuned_connections(SHORT_LIVED):
        with nullcontext() if bar is None else bar.without_thread():
            workers = _fork_workers()
        try:
            return _sync_here(
                ctx, name, force=force, as_json=as_json, bar=bar, workers=workers
            )
        finally:
            if workers is not None:
                workers.close()


def _fork_workers() -> ForkedWorkers | None:
    """Two processes for a one-shot run's scans (one per side) and copies, so
    that they do not share a GIL; forked while this process has no other
    thread."""
    # The run's modules (jobs included) before the fork: a worker importing
    # them on its first job did so while the command waited (~40 ms a run).
    import conduitd.oneshot  # noqa: F401
    from conduitd.forked_workers import ForkedWorkers

    _end_import_phase()  # frozen first: the workers share those pages
    return ForkedWorkers.fork(2)


def _plan(
    ctx: CliContext, name: str, *, force: bool, as_json: bool
) -> dict[str, object]:
    """`sync --dry-run`, always in this process: it writes nothing anywhere."""
    try:
        config = ctx.load_config()
    except ConduitdError as error:
        fail(error, as_json=as_json)
    from conduitd.oneshot import dry_run as plan_run

    return run_async(lambda: plan_run(config, name, force=force), as_json=as_json)


def _sync_here(
    ctx: CliContext,
    name: str,
    *,
    force: bool,
    as_json: bool,
    bar: SyncProgressBar | None,
    workers: ForkedWorkers | None,
) -> dict[str, object]:
    """The run in this process, when no daemon answered."""
    try:
        config = ctx.load_config()
    except ConduitdError as error:
        fail(error, as_json=as_json)
    from conduitd.oneshot import sync_once

    report = None if bar is None else bar.on_run
    level = "warning" if as_json or bar is None else "error"
    return run_async(
        lambda: sync_once(
            config, name, force=force, report_progress=report, workers=workers
        ),
        as_json=as_json,
        log_level=level,
    )


def _progress_bar(
    name: str, *, enabled: bool
) -> AbstractContextManager[SyncProgressBar | None]:
    """`--progress`: a bar on stderr; rich is imported only then."""
    if not enabled:
        return nullcontext()
    from conduitd.progress_bar import SyncProgressBar

    return SyncProgressBar(name)


def _print_generation(document: object, *, as_json: bool) -> None:
    assert isinstance(document, dict)  # a generation object
    if as_json:
        print_json(document)
    else:
        from conduitd.render import history_lines

        for line in history_lines([document]):
            click.echo(line)
    failed = str(document.get("verification_status", "")).startswith("failed:")
    if document.get("errors_encountered") or failed:
        sys.exit(1)


def _print_plan(plan: dict[str, object], *, as_json: bool) -> None:
    if as_json:
        print_json(plan)
    else:
        operations = plan["operations"]
        assert isinstance(operations, list)
        for op in operations:
            click.echo(f"{op['op']:<8} {op['direction']:<17} {op['path']}")
        if not operations:
            click.echo("nothing to do")
        if plan["refused"]:
            click.echo(f"refused: {plan['refused']}")
    if plan["refused"]:
        sys.exit(3)


@cli.command(epilog=_epilog("status"))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--check", "health", is_flag=True, help="Exit 1 when unhealthy.")
@pass_ctx
def status(ctx: CliContext, as_json: bool, health: bool) -> None:
    """Show conduits, endpoints, runs and the daemon.

    With --check: print one line per unhealthy enabled, unpaused conduit (its
    last run failed or was refused, or an interval/cron conduit has not
    checked for twice its period) and exit 1, else print `ok` and exit 0.
    """
    document = _ask_daemon_first(ctx, "status", as_json=as_json)
    if document is None:  # no daemon: read the library in-process
        from conduitd.reports import status_document

        try:
            config = ctx.load_config()
        except ConduitdError as error:
            fail(error, as_json=as_json)
        document = run_async(lambda: status_document(config), as_json=as_json)
    if health:
        _check_health(document, as_json=as_json)
    if as_json:
        print_json(document)
    else:
        from conduitd.render import status_lines

        assert isinstance(document, dict)  # both paths answer a JSON object
        for line in status_lines(document):
            click.echo(line)


def _check_health(document: object, *, as_json: bool) -> None:
    """`status --check`: one line per unhealthy conduit, exit 1 if any (issue 9)."""
    from conduitd.health import check_status
    from conduitd.timeutil import utc_now

    assert isinstance(document, dict)  # both paths answer a JSON object
    problems = check_status(document, utc_now())
    if as_json:
        document["unhealthy"] = [
            {"conduit": p.conduit, "reason": p.reason} for p in problems
        ]
        print_json(document)
    else:
        for problem in problems:
            click.echo(problem.line())
        if not problems:
            click.echo("ok")
    sys.exit(1 if problems else 0)


def _ask_daemon_first(
    ctx: CliContext,
    method: str,
    params: dict[str, object] | None = None,
    *,
    as_json: bool = False,
    timeout_s: float | None = 60.0,
    on_event: Callable[[dict[str, object]], None] | None = None,
) -> object:
    """The running daemon's answer to `method`, or None when no daemon runs.

    Light on purpose (only the state dir is read from the config, leniently;
    the client imports json and socket): commands answered by the daemon
    skip pydantic, aiosqlite and structlog. A daemon's error reply exits
    with its code. For `sync`: `timeout_s=None` and `on_event` for progress.
    """
    from conduitd.client import ask_daemon

    try:
        reply = ask_daemon(
            ctx.state_dir_leniently(),
            method,
            params,
            timeout_s=timeout_s,
            on_event=on_event,
        )
    except ConduitdError as error:
        fail(error, as_json=as_json)
    return None if reply is None else reply.result


@cli.command(epilog=_epilog("history"))
@click.argument("name", shell_complete=complete_conduit_names)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_ctx
def history(ctx: CliContext, name: str, limit: int, as_json: bool) -> None:
    """List a conduit's generations, newest first."""
    from conduitd.render import history_lines
    from conduitd.reports import history_document

    try:
        config = ctx.load_config()
    except ConduitdError as error:
        fail(error, as_json=as_json)
    document = run_async(lambda: history_document(config, name, limit), as_json=as_json)
    if as_json:
        print_json(document)
    else:
        for line in history_lines(document):
            click.echo(line)


@cli.command(epilog=_epilog("conflicts"))
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_ctx
def conflicts(ctx: CliContext, name: str | None, as_json: bool) -> None:
    """List pending and resolved conflicts (of one conduit with NAME)."""
    params: dict[str, object] = {} if name is None else {"name": name}
    document = _ask_daemon_first(ctx, "conflicts", params, as_json=as_json)
    if document is None:  # no daemon: read the library in-process
        from conduitd.oneshot_conflicts import conflicts_once

        try:
            config = ctx.load_config()
        except ConduitdError as error:
            fail(error, as_json=as_json)
        document = run_async(lambda: conflicts_once(config, name), as_json=as_json)
    assert isinstance(document, list)  # both paths answer a list of conflicts
    if as_json:
        print_json(document)
        return
    from conduitd.render import conflict_lines

    for line in conflict_lines(document):
        click.echo(line)


@cli.command(epilog=_epilog("resolve"))
@click.argument("conflict_id", type=int)
@click.option("--keep", type=click.Choice(["source", "target", "both"]), required=True)
@pass_ctx
def resolve(ctx: CliContext, conflict_id: int, keep: str) -> None:
    """Settle one conflict in a generation of its own (exit 3 if a side changed).

    `source` or `target` copies that version over the other (the overwritten
    one goes to trash); `both` keeps both, the older under a conflict name.
    Through the running daemon when there is one, else in this process.
    """
    params: dict[str, object] = {"id": conflict_id, "keep": keep}
    document = _ask_daemon_first(ctx, "resolve", params, timeout_s=None)
    if document is None:
        from conduitd.oneshot_conflicts import resolve_once
        from conduitd.storage.conflicts import Resolution

        try:
            config = ctx.load_config()
        except ConduitdError as error:
            fail(error, as_json=False)
        document = run_async(
            lambda: resolve_once(config, conflict_id, Resolution(keep))
        )
    assert isinstance(document, dict)  # a resolve outcome
    generation = document["generation"]
    number = generation["generation"]
    if document["resolved"]:
        click.echo(
            f"conflict {conflict_id} resolved: kept {keep} (generation {number})"
        )
    else:
        click.echo(
            f"conduitd: conflict {conflict_id} is still pending: generation {number}"
            f" skipped {generation['files_skipped']} and failed"
            f" {generation['errors_encountered']} path(s); see the logs",
            err=True,
        )
        sys.exit(1)


@cli.command(epilog=_epilog("log"))
@click.option("--since", type=click.IntRange(min=0), default=0, help="After SEQ.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_ctx
def log(ctx: CliContext, since: int, limit: int, as_json: bool) -> None:
    """Print the library's sync log (entries after SEQ, oldest first)."""
    try:
        config = ctx.load_config()
    except ConduitdError as error:
        fail(error, as_json=as_json)
    from conduitd.storage.log_view import log_lines, read_log

    state_dir = config.daemon.state_dir
    entries = run_async(lambda: read_log(state_dir, since, limit), as_json=as_json)
    if as_json:
        print_json(entries)
        return
    for line in log_lines(entries) or ["no sync log entries"]:
        click.echo(line)


@cli.command(epilog=_epilog("reload"))
@pass_ctx
def reload(ctx: CliContext) -> None:
    """Ask the running daemon to reload its config (exit 2 if it kept the old one).

    Reads only `daemon.state_dir` from the config, leniently, so it works
    while the config is broken: the daemon validates, and its errors are
    printed here.
    """
    from conduitd.client import call
    from conduitd.errors import ConfigError

    try:
        result = call(ctx.state_dir_leniently(), "reload")
    except ConfigError as error:
        click.echo(
            "conduitd: the daemon kept its old config; the new one has:", err=True
        )
        for problem in error.problems:
            click.echo(problem.render())
        sys.exit(error.exit_code)
    except ConduitdError as error:
        fail(error, as_json=False)
    changes = result if isinstance(result, dict) else {}
    parts = [
        f"{what} {', '.join(map(str, names))}"
        for what in ("added", "removed", "changed")
        if (names := changes.get(what))
    ]
    click.echo(
        "reloaded" + (f": {'; '.join(parts)}" if parts else ": no conduit changed")
    )


@cli.command(epilog=_epilog("stop"))
@pass_ctx
def stop(ctx: CliContext) -> None:
    """Ask the running daemon to stop, and wait until it is gone."""
    from conduitd.client import stop_daemon

    try:
        pid = stop_daemon(ctx.state_dir_leniently())
    except ConduitdError as error:
        fail(error, as_json=False)
    click.echo(f"stopped (pid {pid})" if pid else "stopped")


@cli.command(epilog=_epilog("unit"))
@click.option("--system", "scope", flag_value="system", help="A system unit.")
@click.option("--user", "scope", flag_value="user", help="A per-user unit.")
@pass_ctx
def unit(ctx: CliContext, scope: str | None) -> None:
    """Print a systemd unit (or launchd plist) for this config.

    The unit runs this conduitd on this config, sandboxed: only the state dir
    and the conduits' roots are writable. Regenerate it after adding a root.
    """
    from conduitd.daemon.units import render_unit, unit_spec
    from conduitd.errors import UsageError

    try:
        if scope is None:
            raise UsageError("name the kind of unit: --system or --user")
        config = ctx.load_config()
        spec = unit_spec(
            config.path,
            config.daemon.state_dir,
            (root for conduit in config.conduits for root in conduit.roots),
            config.daemon.shutdown_timeout_s,
            system=scope == "system",
        )
    except ConduitdError as error:
        fail(error, as_json=False)
    for warning in spec.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(render_unit(spec, system=scope == "system"), nl=False)


@cli.group(epilog=_epilog("trash"))
def trash() -> None:
    """List or prune trashed versions."""


@trash.command("list", epilog=_epilog("trash"))
@click.argument("name", shell_complete=complete_conduit_names)
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_ctx
def trash_list(ctx: CliContext, name: str, path: str | None, as_json: bool) -> None:
    """List a conduit's trashed versions (under PATH), newest first."""
    from conduitd.wire import path_from_user

    params: dict[str, object] = {"name": name, "path": path}
    document = _ask_daemon_first(ctx, "trash_list", params, as_json=as_json)
    if document is None:
        from conduitd.oneshot_ops import trash_list_once

        config = _config_or_fail(ctx, as_json=as_json)
        document = run_async(  # a refused path maps to exit 2, no traceback
            lambda: trash_list_once(
                config, name, path_from_user(path) if path else None
            ),
            as_json=as_json,
        )
    if as_json:
        print_json(document)
        return
    from conduitd.sync.restore import trash_list_lines

    assert isinstance(document, list)  # both paths answer a JSON list
    for line in trash_list_lines(document):
        click.echo(line)


@trash.command(
    "purge", epilog="\b\nExample:\n  conduitd trash purge photos --older-than 7d"
)
@click.argument("name", shell_complete=complete_conduit_names)
@click.option(
    "--older-than",
    metavar="DURATION",
    default=None,
    help="Prune versions older than this (e.g. 7d) instead of trash_retention.",
)
@pass_ctx
def trash_purge(ctx: CliContext, name: str, older_than: str | None) -> None:
    """Prune a conduit's trash now (retention, size cap; last copies are kept)."""
    from conduitd.errors import UsageError

    older_than_s = None
    if older_than is not None:
        from conduitd.config.units import parse_duration

        try:
            older_than_s = parse_duration(older_than)
        except ValueError as error:
            fail(UsageError(f"--older-than: {error}"), as_json=False)
    params: dict[str, object] = {"name": name, "older_than_s": older_than_s}
    document = _ask_daemon_first(ctx, "trash_purge", params)
    if document is None:
        from conduitd.oneshot_ops import purge_once

        config = _config_or_fail(ctx, as_json=False)
        document = run_async(lambda: purge_once(config, name, older_than_s))
    assert isinstance(document, dict)  # a prune summary
    click.echo(
        f"{name}: pruned {document['pruned']} version(s), {document['pruned_bytes']}"
        f" bytes; kept {document['kept']}, {document['kept_bytes']} bytes"
        + (f"; {document['failed']} could not be removed" if document["failed"] else "")
    )


@cli.command(epilog=_epilog("restore"))
@click.argument("name", shell_complete=complete_conduit_names)
@click.argument("path")
@click.option(
    "--generation", type=int, default=None, help="The version trashed in generation N."
)
@click.option(
    "--to", "dest", metavar="DEST", default=None, help="Restore here instead."
)
@pass_ctx
def restore(
    ctx: CliContext, name: str, path: str, generation: int | None, dest: str | None
) -> None:
    """Put a trashed version back (the newest one unless --generation).

    Mirror and selective conduits restore onto the source (the next run copies
    it to the target); bidirectional ones onto the side it was removed from.
    A file standing there goes to trash first. Outside the conduit's roots,
    --to never replaces anything.
    """
    import os

    from conduitd.wire import path_from_user

    where = os.path.abspath(os.path.expanduser(dest)) if dest else None
    params: dict[str, object] = {
        "name": name,
        "path": path,
        "generation": generation,
        "to": where,
    }
    document = _ask_daemon_first(ctx, "restore", params, timeout_s=None)
    if document is None:
        from conduitd.oneshot_ops import restore_once

        config = _config_or_fail(ctx, as_json=False)
        document = run_async(
            lambda: restore_once(
                config,
                name,
                path_from_user(path),
                generation=generation,
                dest=Path(where) if where else None,
            )
        )
    assert isinstance(document, dict)  # what restore did
    click.echo(
        f"restored {document['path']} (generation {document['generation']})"
        f" to {document['restored_to']}"
    )
    displaced = document.get("displaced")
    if isinstance(displaced, dict):
        click.echo(
            f"the version that stood there went to the {displaced['root']}'s trash"
            f" (generation {displaced['generation']})"
        )


@cli.command(epilog=_epilog("pause"))
@click.argument("name", required=False, shell_complete=complete_conduit_names)
@click.option("--all", "every", is_flag=True, help="Every conduit.")
@pass_ctx
def pause(ctx: CliContext, name: str | None, every: bool) -> None:
    """Pause a conduit: its index keeps up, its runs do not happen.

    Persisted: a paused conduit stays paused across daemon restarts until
    `conduitd resume`. `sync` on a paused conduit exits 3.
    """
    _set_paused(ctx, name, every, paused=True)


@cli.command(epilog=_epilog("resume"))
@click.argument("name", required=False, shell_complete=complete_conduit_names)
@click.option("--all", "every", is_flag=True, help="Every conduit.")
@pass_ctx
def resume(ctx: CliContext, name: str | None, every: bool) -> None:
    """Resume a paused conduit; a running daemon catches it up with one run."""
    _set_paused(ctx, name, every, paused=False)


def _set_paused(
    ctx: CliContext, name: str | None, every: bool, *, paused: bool
) -> None:
    from conduitd.errors import UsageError

    if every == (name is not None):
        fail(UsageError("name one conduit, or pass --all"), as_json=False)
    method = "pause" if paused else "resume"
    params: dict[str, object] = {"all": True} if every else {"name": name}
    document = _ask_daemon_first(ctx, method, params)
    if document is None:  # no daemon: set the flag under the state dir's lock
        from conduitd.oneshot_ops import set_paused_once

        config = _config_or_fail(ctx, as_json=False)
        names = list(config.names) if every else [str(name)]
        document = run_async(lambda: set_paused_once(config, names, paused))
    assert isinstance(document, dict)  # {"paused"|"resumed": [names]}
    done = document.get("paused" if paused else "resumed") or []
    click.echo(
        f"{'paused' if paused else 'resumed'}: {', '.join(map(str, done)) or 'none'}"
    )


def _config_or_fail(ctx: CliContext, *, as_json: bool) -> Config:
    try:
        return ctx.load_config()
    except ConduitdError as error:
        fail(error, as_json=as_json)


@cli.command(epilog=_epilog("completion"))
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script."""
    from click.shell_completion import get_completion_class

    completion_class = get_completion_class(shell)
    assert completion_class is not None  # click ships all three
    script = completion_class(cli, {}, "conduitd", "_CONDUITD_COMPLETE").source()
    click.echo(script)


def _state_dir(ctx: CliContext) -> Path:
    try:
        return ctx.load_config().daemon.state_dir
    except ConduitdError as error:
        fail(error, as_json=False)


def main() -> None:
    import atexit
    import gc

    from conduitd.logs import keep_rich_out_of_structlog

    # Imports create a few hundred thousand objects that live as long as the
    # process; collecting every 700 allocations walks them some hundred times
    # (~12 ms of a one-shot `sync`). Commands that run long (run_async,
    # daemon) call _end_import_phase; the others are over before it matters.
    gc.disable()
    keep_rich_out_of_structlog()
    # Registered first, so it runs last at exit.
    atexit.register(_collect_then_freeze)
    try:
        cli.main(prog_name="conduitd")
    except KeyboardInterrupt:
        sys.exit(130)


def _end_import_phase() -> None:
    """Freeze what the imports made, then turn the collector back on.

    Only in conduitd's own process, where main() turned it off: an in-process
    caller (tests invoke `cli` directly) keeps its collector as it was.
    """
    import gc

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _collect_then_freeze() -> None:
    """Collect garbage once, then keep the interpreter's final passes off the rest.

    At exit the interpreter runs full collections over every object still
    alive: ~35 ms of a one-shot `sync`, which benchmarks time as a whole
    process. One collection here still finalizes all garbage; the frozen
    survivors are freed by reference counting as modules are torn down, and
    those left in cycles are not finalized, which Python never promised.
    """
    import gc

    gc.collect()
    gc.freeze()
