"""The command line (SPEC §3). Imports textual only for the TUI, asyncssh only for remote stages."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from engine import __version__
from engine.errors import PipedeckError

if TYPE_CHECKING:
    from engine.logs import LogStore
    from engine.run import Run
    from engine.spec import Pipeline

DEFAULT_FILE = "pipedeck.yaml"
COMMANDS = (
    "ui",
    "run",
    "validate",
    "graph",
    "history",
    "logs",
    "schema",
    "show",
    "artifacts",
    "metrics",
    "shell",
)
EXIT_USAGE = 2
MAX_COUNT = 1_000_000  # a count option (--jobs, --limit, ...) above it means it


class UsageError(PipedeckError):
    """Bad command-line input: printed, exit 2."""

    exit_code = EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipedeck",
        description="Run YAML pipelines locally or over SSH, in a live terminal UI or headless.",
        epilog="`pipedeck [PIPELINE]` opens the TUI (or runs headless when stdout is no terminal).",
    )
    parser.add_argument("--version", action="version", version=f"pipedeck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def pipeline_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "pipeline",
            nargs="?",
            default=DEFAULT_FILE,
            help=f"the pipeline file (default: {DEFAULT_FILE})",
        )
        from engine.gha.options import add_arguments

        add_arguments(p)  # options of GitHub Actions workflows (SPEC §11)

    def jobs_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--jobs",
            "-j",
            type=positive,
            default=None,
            help="at most N local stages at once (default: number of CPUs)",
        )

    def force_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--force",
            action="append",
            default=[],
            metavar="S",
            help="run S whatever the cache says, without forcing what it needs (repeatable)",
        )

    def stage_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--stage",
            "-s",
            action="append",
            default=[],
            metavar="S",
            help="run S and everything it needs (repeatable)",
        )

    def no_cache_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-cache", action="store_true", help="run every stage, cached or not")

    ui = sub.add_parser("ui", help="open the terminal UI")
    pipeline_arg(ui)
    ui.add_argument("--watch", action="store_true", help="rerun what file changes affect")
    ui.add_argument("--no-start", action="store_true", help="open without starting a run")
    stage_arg(ui)
    jobs_arg(ui)
    force_arg(ui)
    no_cache_arg(ui)

    run = sub.add_parser("run", help="run headless")
    pipeline_arg(run)
    stage_arg(run)
    jobs_arg(run)
    run.add_argument("--watch", action="store_true", help="keep running on file changes")
    run.add_argument("--format", choices=("plain", "json"), default="plain")
    run.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    run.add_argument(
        "--trace", type=Path, metavar="FILE", help="write the run as Chrome Trace Event JSON"
    )
    no_cache_arg(run)
    force_arg(run)
    run.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="S",
        help="run the manual stage S (repeatable)",
    )
    run.add_argument("--color", choices=("auto", "always", "never"), default="auto")

    validate = sub.add_parser("validate", help="check a pipeline file")
    pipeline_arg(validate)

    graph = sub.add_parser("graph", help="print the stage graph")
    pipeline_arg(graph)
    graph.add_argument("--format", choices=("text", "dot", "mermaid"), default="text")

    logs = sub.add_parser("logs", help="print a stage's stored log")
    logs.add_argument("stage")
    logs.add_argument("--run", metavar="RUN_ID", help="default: the latest run of the stage")
    logs.add_argument("--attempt", type=positive, help="default: the last attempt")
    logs.add_argument(
        "--file",
        "-f",
        dest="pipeline",
        default=DEFAULT_FILE,
        help=f"the pipeline file or its directory (default: {DEFAULT_FILE})",
    )

    shell = sub.add_parser("shell", help="a shell in a stage's directory and environment")
    shell.add_argument("stage")
    shell.add_argument("--file", "-f", dest="pipeline", default=DEFAULT_FILE)

    sub.add_parser("schema", help="print the JSON Schema of the pipeline file")
    _add_history_commands(sub)
    return parser


def _add_history_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        from tui import history_cli
    except ImportError:
        return
    history_cli.add_parsers(sub)


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1; above MAX_COUNT it means MAX_COUNT (`--limit
    99999999999999999999999` is "all", never an overflow further down)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return min(value, MAX_COUNT)


def _load(path: str, args: argparse.Namespace | None = None) -> Pipeline:
    from engine.gha import options as gha
    from engine.loader import ConfigError, load

    if path == DEFAULT_FILE and not os.path.exists(path):
        found = gha.single_workflow(Path("."))
        if found is not None:  # no pipedeck.yaml, but one GitHub Actions workflow
            print(f"pipedeck: no {DEFAULT_FILE}; using {found}", file=sys.stderr)
            path = str(found)
    try:
        if gha.is_workflow(path):
            return gha.load(path, args or argparse.Namespace()).pipeline
        return load(path)
    except ValueError as err:  # a malformed --input/--runner
        raise UsageError(str(err)) from None
    except ConfigError as err:
        print(err, file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `pipedeck` script."""
    _reopen_closed_std_streams()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0] not in COMMANDS and not args[0].startswith("-")):
        args.insert(0, "ui" if sys.stdout.isatty() else "run")
    parsed = _parser().parse_args(args)
    try:
        code = _dispatch(parsed)
        sys.stdout.flush()
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # `pipedeck graph | head`: the reader left; so do we, quietly
        from tui.console import silence_stdout

        silence_stdout()
        code = 141
    except OSError as err:  # stdout on a full disk (`> /dev/full`), an unreadable file...
        from tui.console import silence_stdout

        where = f": {err.filename}" if err.filename else " (writing the output)"
        print(f"pipedeck: {err.strerror or err}{where}", file=sys.stderr)
        silence_stdout()
        code = 1
    except PipedeckError as err:  # usage, a damaged .pipedeck/history.db, ...
        print(f"pipedeck: {err}", file=sys.stderr)
        code = getattr(err, "exit_code", 1)
    sys.exit(code)


def _reopen_closed_std_streams() -> None:
    """Give a closed stdin, stdout or stderr (`pipedeck run >&-`) /dev/null, so that nothing
    pipedeck opens lands on it and writes to it go nowhere instead of failing."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command is None:
        _parser().print_help()
        return 0
    if command == "schema":
        from engine.schema import SCHEMA

        print(json.dumps(SCHEMA, indent=2))
        return 0
    if command == "logs":
        return _logs(args)
    handler = getattr(args, "handler", None)
    if handler is not None:  # history, show, artifacts, metrics
        return int(handler(args))
    pipeline = _load(args.pipeline, args)
    if command == "validate":
        print(f"{args.pipeline}: ok, {len(pipeline.stages)} stage(s)")
        return 0
    if command == "graph":
        from engine.graph import render

        print(render(pipeline, args.format))
        return 0
    if command == "shell":
        from engine.shell import run_shell

        return run_shell(pipeline, args.stage)
    if command == "ui":
        from tui.app import run_tui

        _check_stages(pipeline, args.stage, "--stage")
        _check_stages(pipeline, args.force, "--force")
        return run_tui(
            pipeline,
            watch=args.watch,
            start=not args.no_start,
            jobs=args.jobs,
            stages=args.stage,
            no_cache=args.no_cache,
            force=args.force,
        )
    return _run(pipeline, args)


def _check_stages(pipeline: Pipeline, names: Sequence[str], option: str) -> None:
    from difflib import get_close_matches

    known = [*pipeline.groups, *pipeline.stages]
    for name in names:
        if name not in known:
            hint = get_close_matches(name, known, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise UsageError(f"{option} {name}: no such stage{extra}")


def _check_writable_file(path: Path, option: str) -> None:
    """Refuse, before anything runs, an output file that cannot be written."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory; name a file, e.g. {path / 'junit.xml'}")
    parent = path.absolute().parent
    while not parent.exists():  # the writer creates missing directories
        parent = parent.parent
    target = path if path.exists() else parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is not a directory")
    if not os.access(target, os.W_OK):
        raise UsageError(f"{option} {path}: cannot write to {target} (permission denied)")


def _run(pipeline: Pipeline, args: argparse.Namespace) -> int:
    _check_stages(pipeline, args.stage, "--stage")
    _check_stages(pipeline, args.approve, "--approve")
    _check_stages(pipeline, args.force, "--force")
    if args.junit:
        _check_writable_file(args.junit, "--junit")
    if args.trace:
        _check_writable_file(args.trace, "--trace")
    if args.trace:
        _check_writable_file(args.trace, "--trace")
    sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    import asyncio  # here, not at the top: it costs `pipedeck --help` a third of its time

    return asyncio.run(_run_async(pipeline, args))


def _reporter(args: argparse.Namespace, run: Run) -> None:
    from tui.console import GithubReporter, JsonReporter, JUnitWriter, PlainReporter

    color = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    )
    if args.format == "json":
        run.subscribe(JsonReporter(sys.stdout))
    elif os.environ.get("GITHUB_ACTIONS") == "true":
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        run.subscribe(GithubReporter(sys.stdout, run.logs, run.pipeline, color, summary))
    else:
        run.subscribe(PlainReporter(sys.stdout, color=color, logs=run.logs, pipeline=run.pipeline))
    if args.junit:
        run.subscribe(JUnitWriter(args.junit, run.pipeline.name, run.logs))
    if args.trace:
        from engine.trace import ChromeTrace

        run.subscribe(ChromeTrace(args.trace, run.pipeline.name))


async def _run_async(pipeline: Pipeline, args: argparse.Namespace) -> int:
    from engine.session import Session

    session = Session(
        pipeline,
        jobs=args.jobs,
        targets=args.stage,
        approve=args.approve,
        no_cache=args.no_cache,
        force=args.force,
        keep_services=args.watch,  # SPEC §10: services outlive a watched run
        on_run=lambda run: _reporter(args, run),
        trigger="cli",
    )
    try:
        if args.watch:
            return await _watch(pipeline, args, session.new_run)
        run = session.new_run()
        _install_signals(lambda code: run.cancel_all(code), lambda: run.run_id)
        return await run.execute()
    finally:
        await session.close()


async def _watch(pipeline: Pipeline, args: argparse.Namespace, make_run: Callable[..., Run]) -> int:
    """`run --watch`: rerun what changes affect until Ctrl-C or SIGTERM."""
    import asyncio

    from engine.watch import WatchError, WatchSession, describe

    def separator(paths: set[str]) -> None:
        if args.format == "plain":
            print(f"──── changed: {describe(paths)} — rerunning affected stages ────", flush=True)

    try:
        session = WatchSession(pipeline, make_run, on_change=separator)
    except WatchError as err:
        raise UsageError(str(err)) from None
    task = asyncio.create_task(session.run())

    def stop(code: int) -> None:
        session.interrupt_code = code
        task.cancel()

    _install_signals(stop, lambda: session.current.run_id if session.current else "")
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return session.interrupt_code


def _install_signals(cancel: Callable[[int], None], run_id: Callable[[], str]) -> None:
    """Ctrl-C / SIGTERM cancel in order (`cancel(exit_code)`); a second Ctrl-C kills at once."""
    import asyncio

    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_signal(signum: int) -> None:
        nonlocal interrupts
        if signum == signal.SIGINT:
            interrupts += 1
        if interrupts > 1:
            print("pipedeck: killing every stage now", file=sys.stderr)
            _kill_now(run_id())
            return
        print("pipedeck: cancelling the run (Ctrl-C again to kill at once)", file=sys.stderr)
        cancel(130 if signum == signal.SIGINT else 143)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)


def _kill_now(run_id: str) -> None:
    from engine.procs import kill_marked

    kill_marked({"PIPEDECK_RUN_ID": run_id})


def _logs(args: argparse.Namespace) -> int:
    from engine.logs import LogStore
    from tui.history_cli import state_dir

    state = state_dir(args)
    store = LogStore(state / "logs")
    runs = [args.run] if args.run else _runs_newest_first(state / "logs")
    for run_id in runs:
        if store.attempts(run_id, args.stage):
            _print_log(store, run_id, args.stage, args.attempt)
            return 0
        instances = _instances(state / "logs" / run_id, args.stage)
        for sid in instances:  # a matrix stage: each instance's log under a header
            attempt = args.attempt or store.attempts(run_id, sid)[-1]
            sys.stdout.write(f"==> {sid} (run {run_id}, attempt {attempt}) <==\n")
            sys.stdout.flush()
            _print_log(store, run_id, sid, attempt)
        if instances:
            return 0
    where = f"run {args.run}" if args.run else "any recorded run"
    raise UsageError(f"no log of stage {args.stage!r} in {where}")


def _print_log(store: LogStore, run_id: str, sid: str, attempt: int | None) -> None:
    """Write an attempt's stored log (default: the last) to stdout."""
    attempts = store.attempts(run_id, sid)
    attempt = attempt or attempts[-1]
    if attempt not in attempts:
        raise UsageError(
            f"{sid}: run {run_id} has no attempt {attempt} "
            f"(attempts: {', '.join(map(str, attempts))})"
        )
    sys.stdout.buffer.write(store.reader(run_id, sid, attempt).read_bytes())
    sys.stdout.buffer.flush()


def _instances(run_dir: Path, name: str) -> list[str]:
    """The matrix instances of stage `name` with a log in a run's log folder (one folder per
    stage id, percent-encoded: engine.logs)."""
    from urllib.parse import unquote

    if not run_dir.is_dir():
        return []
    ids = (unquote(entry.name) for entry in run_dir.iterdir() if entry.is_dir())
    return sorted(sid for sid in ids if sid.startswith(f"{name}["))


def _runs_newest_first(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted((p.name for p in root.iterdir() if p.is_dir()), reverse=True)
