"""The command line (SPEC §3). Imports textual only for the TUI, asyncssh only for remote stages."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from engine import __version__
from engine.errors import PipedeckError
from tui import history_cli

if TYPE_CHECKING:
    from engine.logs import LogStore
    from engine.run import Run
    from engine.spec import Pipeline

DEFAULT_FILE = "pipedeck.yaml"
EXIT_USAGE = 2
MAX_COUNT = 1_000_000  # a count option (--jobs, --limit, ...) above it means it


class UsageError(PipedeckError):
    """Bad command-line input: printed, exit 2."""

    exit_code = EXIT_USAGE


def _pipeline_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "pipeline",
        nargs="?",
        default=DEFAULT_FILE,
        help=f"the pipeline file (default: {DEFAULT_FILE})",
    )
    from engine.gha.options import add_arguments

    add_arguments(p)  # options of GitHub Actions workflows (SPEC §11)


def _run_options(p: argparse.ArgumentParser) -> None:
    """The options `run` and `ui` share: which stages, how many at once, the cache."""
    _pipeline_arg(p)
    p.add_argument(
        "--stage",
        "-s",
        action="append",
        default=[],
        metavar="S",
        help="run S and everything it needs (repeatable)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=positive,
        default=None,
        help="at most N local stages at once (default: number of CPUs)",
    )
    p.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="S",
        help="run S whatever the cache says, without forcing what it needs (repeatable)",
    )
    p.add_argument("--no-cache", action="store_true", help="run every stage, cached or not")


def _ui_args(p: argparse.ArgumentParser) -> None:
    _run_options(p)  # the TUI's runs take the same options as `run` (SPEC §3)
    p.add_argument("--watch", action="store_true", help="rerun what file changes affect")
    p.add_argument("--no-start", action="store_true", help="open without starting a run")


def _run_args(p: argparse.ArgumentParser) -> None:
    _run_options(p)
    p.add_argument("--watch", action="store_true", help="keep running on file changes")
    p.add_argument("--format", choices=("plain", "json"), default="plain")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report")
    p.add_argument(
        "--trace", type=Path, metavar="FILE", help="write the run as Chrome Trace Event JSON"
    )
    p.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="S",
        help="run the manual stage S (repeatable)",
    )
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")


def _graph_args(p: argparse.ArgumentParser) -> None:
    _pipeline_arg(p)
    p.add_argument("--format", choices=("text", "dot", "mermaid"), default="text")


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage")
    p.add_argument("--run", metavar="RUN_ID", help="default: the latest run of the stage")
    p.add_argument("--attempt", type=positive, help="default: the last attempt")
    p.add_argument(
        "--file",
        "-f",
        dest="pipeline",
        default=DEFAULT_FILE,
        help=f"the pipeline file or its directory (default: {DEFAULT_FILE})",
    )


def _shell_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage")
    p.add_argument("--file", "-f", dest="pipeline", default=DEFAULT_FILE)


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "ui": ("open the terminal UI", _ui_args),
    "run": ("run headless", _run_args),
    "validate": ("check a pipeline file", _pipeline_arg),
    "graph": ("print the stage graph", _graph_args),
    "logs": ("print a stage's stored log", _logs_args),
    "shell": ("a shell in a stage's directory and environment", _shell_args),
    "schema": ("print the JSON Schema of the pipeline file", _no_args),
    **history_cli.COMMANDS,
}
"""Each command's help line and what adds its arguments."""


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line for `command`: its subparser alone when it is one of COMMANDS, else
    every command by name (for `--help` and the error naming the choices) without arguments."""
    parser = argparse.ArgumentParser(
        prog="pipedeck",
        allow_abbrev=False,  # `--job` is no `--jobs`
        description="Run YAML pipelines locally or over SSH, in a live terminal UI or headless.",
        epilog="`pipedeck [PIPELINE]` opens the TUI (or runs headless when stdout is no terminal).",
    )
    parser.add_argument("--version", action="version", version=f"pipedeck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (text, add_arguments) in COMMANDS.items():
        if command not in COMMANDS:
            sub.add_parser(name, help=text, allow_abbrev=False)
        elif name == command:
            add_arguments(sub.add_parser(name, help=text, allow_abbrev=False))
    return parser


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
    from engine.loadcache import load

    try:
        if path == DEFAULT_FILE and not os.path.exists(path):
            found = gha.single_workflow(Path("."), getattr(args, "command", None) or "run")
            if found is not None:  # no pipedeck.yaml, but one GitHub Actions workflow
                print(f"pipedeck: no {DEFAULT_FILE}; using {found}", file=sys.stderr)
                path = str(found)
                if args is not None:  # `validate` names the file it checked
                    args.pipeline = path
        if gha.is_workflow(path):
            return gha.load(path, args or argparse.Namespace()).pipeline
        return load(path)
    except ValueError as err:  # a malformed --input/--runner
        raise UsageError(str(err)) from None
    except PipedeckError as err:
        from engine.loader import ConfigError  # already imported: the loader raised `err`

        if not isinstance(err, ConfigError):
            raise
        print(err, file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the `pipedeck` script."""
    collecting = gc.isenabled()
    gc.disable()  # start-up makes many objects and frees few: no collections until it is over
    try:
        _main(argv)
    finally:
        if collecting:
            gc.enable()


def started() -> None:
    """Start-up is over (the run or the TUI is about to start): what it made stays, so the
    collector need not scan it again; collections resume."""
    gc.freeze()
    gc.enable()


def _main(argv: Sequence[str] | None) -> NoReturn:
    _reopen_closed_std_streams()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0] not in COMMANDS and not args[0].startswith("-")):
        args.insert(0, "ui" if sys.stdout.isatty() else "run")
    command = next((arg for arg in args if not arg.startswith("-")), None)
    parsed = _parser(command).parse_args(args)
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
        import json

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

        started()
        return run_shell(pipeline, args.stage)
    if command == "ui":
        from tui.app import run_tui

        _check_stages(pipeline, args.stage, "--stage")
        _check_stages(pipeline, args.force, "--force")
        _preload()
        started()
        return run_tui(pipeline, watch=args.watch, start=not args.no_start, **ui_options(args))
    return _run(pipeline, args)


def ui_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `tui.app.tui_session` from `ui`'s options: the run options it
    shares with `run` (--stage, --jobs, --force, --no-cache)."""
    return {"jobs": args.jobs, "stages": args.stage, "no_cache": args.no_cache, "force": args.force}


def _check_stages(pipeline: Pipeline, names: Sequence[str], option: str) -> None:
    known = [*pipeline.groups, *pipeline.stages]
    for name in names:
        if name not in known:
            from difflib import get_close_matches

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
    sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    import asyncio  # here, not at the top: it costs `pipedeck --help` a third of its time

    _preload("engine.session", "tui.console", *["engine.watch"] * args.watch)
    return asyncio.run(_run_async(pipeline, args))


def _preload(*modules: str) -> None:
    """Import what a run loads lazily (`_run_async`, `_reporter`, `_watch`, the first local
    stage) before its event loop starts: imported on the loop, they hold it (130 ms where their
    .pyc must be compiled)."""
    import importlib

    for module in (*modules, "engine.executors.local"):
        importlib.import_module(module)


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
        strip = args.color == "never"
        run.subscribe(PlainReporter(sys.stdout, color, run.logs, run.pipeline, strip=strip))
    if args.junit:
        run.subscribe(JUnitWriter(args.junit, run.pipeline, run.logs))
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
            started()
            return await _watch(pipeline, args, session.new_run)
        run = session.new_run()
        _install_signals(lambda code: run.cancel_all(code), lambda: run.run_id)
        started()
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
    """Ctrl-C, SIGTERM and SIGHUP (the terminal closed) cancel in order (`cancel(exit_code)`,
    128 + the signal); a second Ctrl-C kills at once."""
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
        if signum == signal.SIGINT:
            notice = "cancelling the run (Ctrl-C again to kill at once)"
        else:
            notice = f"{signal.Signals(signum).name}: cancelling the run in order"
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(f"pipedeck: {notice}", file=sys.stderr)
        cancel(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal, signum)


def _kill_now(run_id: str) -> None:
    from engine.procs import kill_marked

    kill_marked({"PIPEDECK_RUN_ID": run_id})


def _logs(args: argparse.Namespace) -> int:
    from engine.logs import LogStore
    from tui.history_cli import pipeline_key, run_ids, state_dir

    store = LogStore(state_dir(args) / "logs")
    runs = [args.run] if args.run else run_ids(args)  # this pipeline's, not its neighbours
    for run_id in runs:
        if store.attempts(run_id, args.stage):
            _print_log(store, run_id, args.stage, args.attempt)
            return 0
        instances = _instances(store, run_id, args.stage)
        for sid in instances:  # a matrix stage: each instance's log under a header
            attempt = args.attempt or store.attempts(run_id, sid)[-1]
            sys.stdout.write(f"==> {sid} (run {run_id}, attempt {attempt}) <==\n")
            sys.stdout.flush()
            _print_log(store, run_id, sid, attempt)
        if instances:
            return 0
    where = f"run {args.run}" if args.run else f"any recorded run of {pipeline_key(args)}"
    raise UsageError(f"no log of stage {args.stage!r} in {where}")


def _print_log(store: LogStore, run_id: str, sid: str, attempt: int | None) -> None:
    """Write an attempt's stored log (default: the last) to stdout."""
    from engine.gha.commands import STEP_MARKER, readable

    attempts = store.attempts(run_id, sid)
    attempt = attempt or attempts[-1]
    if attempt not in attempts:
        raise UsageError(
            f"{sid}: run {run_id} has no attempt {attempt} "
            f"(attempts: {', '.join(map(str, attempts))})"
        )
    data = store.reader(run_id, sid, attempt).read_bytes()
    if STEP_MARKER.encode() in data:  # a workflow job's: step markers as the console's step lines
        text = data.decode("utf-8", "replace")
        body, end = (text[:-1], "\n") if text.endswith("\n") else (text, "")
        data = ("\n".join(readable(body.split("\n"))) + end).encode()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _instances(store: LogStore, run_id: str, name: str) -> list[str]:
    """The matrix instances of stage `name` with a log in a run (a silent one's included)."""
    return [sid for sid in store.stage_ids(run_id) if sid.startswith(f"{name}[")]
