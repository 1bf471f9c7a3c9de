"""`engage`: the command line.

engage up [--demo]          everything on this machine (embedded servers + services)
engage serve SERVICE        one service (intake, survey, analytics), as deployed
engage demo                 feed a synthetic outreach into running services
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shared.errors import EngageError
from shared.logging import configure_logging, get_logger
from shared.settings import Settings, load_settings

if TYPE_CHECKING:
    import uvicorn

    from services.cli.stack import Stack

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="engage: who has the process heard from?",
)
console = Console(stderr=True)
SERVICE_NAMES = ("intake", "survey", "analytics")
STARTING_GRACE = 3.0  # seconds a stop waits for an app that is still starting

# Options several commands take, declared once.
NatsUrlOption = Annotated[
    str | None,
    typer.Option(
        help="NATS (default ENGAGE_NATS_URL, else the one servers.json in the data dir names, else `engage up`'s port)."
    ),
]
StreamOption = Annotated[str | None, typer.Option(help="The log's stream (default ENGAGE_STREAM_NAME).")]
TokensFileOption = Annotated[
    Path | None, typer.Option(help="Tokens file written by `engage up` (default: tokens.json in ENGAGE_DATA_DIR).")
]
DataDirOption = Annotated[
    Path | None, typer.Option(help="The folder of `engage up` (default ENGAGE_DATA_DIR, else .engage/).")
]


def _settings(**overrides: object) -> Settings:
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _tool_settings(**overrides: object) -> Settings:
    """Settings for a command that is not a service: it logs only warnings and worse."""
    settings = _settings(**overrides)
    configure_logging(settings.log_format, "warning")
    return settings


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Folder for all local data (default .engage/).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Feed a synthetic outreach once the services are up.")] = False,
) -> None:
    """Start nats-server, PostgreSQL and the three services; Ctrl-C stops them all."""
    from services.cli.stack import Stack

    settings = _tool_settings(data_dir=data_dir)
    stack = Stack(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with console.status("starting nats-server and PostgreSQL…"):
            stack.start_servers()
        with console.status("starting intake, survey and analytics…"):
            stack.start_services()
        _print_urls(stack)
        if demo:
            from services.cli.demo import feed

            token_file = stack.env.get("ENGAGE_TOKENS_FILE")
            asyncio.run(feed(stack.urls, Path(token_file) if token_file else None, settings, stop=stop))
        while not stop.wait(0.5):
            if (gone := stack.exited()) is not None:
                console.print(f"[red]{gone} stopped unexpectedly; see {settings.data_dir / 'logs' / gone}.log[/]")
                break
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("stopped; data kept in " + str(settings.data_dir))


def _print_urls(stack: Stack) -> None:
    table = Table(title="engage is up", show_header=True)
    table.add_column("service")
    table.add_column("url")
    for name, url in stack.urls.items():
        table.add_row(name, url)
    table.add_row("dashboard", stack.urls["analytics"] + "/dashboard  (sign in with the coordinator token)")
    Console().print(table)
    tokens = stack.env.get("ENGAGE_TOKENS_FILE")
    if tokens:
        Console().print(f"local tokens: {tokens}")
    Console().print(f"NATS: {stack.env['ENGAGE_NATS_URL']}   Ctrl-C stops everything")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="intake, survey or analytics")],
    port: Annotated[int | None, typer.Option(help="Port (default ENGAGE_<SERVICE>_PORT).")] = None,
) -> None:
    """Run one service under uvicorn, reading ENGAGE_* settings; waits for NATS and PostgreSQL to answer first."""
    import uvicorn

    if service not in SERVICE_NAMES:
        raise EngageError(f"service: {service!r} is not one of {', '.join(SERVICE_NAMES)}")
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    build_app = importlib.import_module(f"services.{service}.app").build_app
    config = uvicorn.Config(
        build_app(settings),
        host=settings.host,
        port=port or getattr(settings, f"{service}_port"),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,  # open dashboard streams must not hold a stop up
    )
    asyncio.run(_serve_when_answering(uvicorn.Server(config), settings, service))


async def _serve_when_answering(server: uvicorn.Server, settings: Settings, service: str) -> None:
    """Wait (with backoff, a log line a try) until the service's servers answer, then serve.

    SIGTERM and SIGINT stop the wait at once. Once uvicorn runs, its own handlers take over;
    should a stop come while the app is still starting (a server gone between the check and
    the app's connect), the start is given a few seconds and then abandoned.
    """
    from services.cli.stack import NEEDS, wait_until_answering

    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        servers = {key: getattr(settings, key) for key in NEEDS[service]}
        ready = await wait_until_answering(servers, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if not ready:
        get_logger("engage.serve").info("stopped_before_start", service=service)
        return
    serving = asyncio.create_task(server.serve())
    stopping_since: float | None = None
    while not serving.done():
        await asyncio.wait({serving}, timeout=0.2)
        if server.should_exit and not server.started:
            stopping_since = stopping_since or loop.time()
            if loop.time() - stopping_since > STARTING_GRACE:
                get_logger("engage.serve").warning("start_abandoned", service=service, reason="stopped while starting")
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
                return
    serving.result()


@app.command()
def demo(
    intake_url: Annotated[
        str | None, typer.Option(help="Intake's URL (default: ENGAGE_HOST and ENGAGE_INTAKE_PORT).")
    ] = None,
    survey_url: Annotated[
        str | None, typer.Option(help="Survey's URL (default: ENGAGE_HOST and ENGAGE_SURVEY_PORT).")
    ] = None,
    tokens_file: TokensFileOption = None,
    pace: Annotated[float, typer.Option(help="Seconds between requests.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed, for a repeatable outreach.")] = 2018,
    data_dir: DataDirOption = None,
) -> None:
    """Feed a realistic synthetic outreach (interviews, gatherings, surveys, advisory group)."""
    from services.cli.demo import feed

    settings = _tool_settings(data_dir=data_dir)
    urls = {
        "intake": intake_url or _url(settings, settings.intake_port),
        "survey": survey_url or _url(settings, settings.survey_port),
    }
    asyncio.run(feed(urls, _tokens_file(settings, tokens_file), settings, pace=pace, seed=seed))


def _url(settings: Settings, port: int) -> str:
    return f"http://{settings.host}:{port}"


def _tokens_file(settings: Settings, given: Path | None) -> Path:
    return given or settings.tokens_file or settings.data_dir / "tokens.json"


@app.command("coverage")
def coverage_command(
    url: Annotated[
        str | None, typer.Option(help="Analytics' URL (default: ENGAGE_HOST and ENGAGE_ANALYTICS_PORT).")
    ] = None,
    tokens_file: TokensFileOption = None,
    as_: Annotated[str, typer.Option("--as", help="Whose token: coordinator (suppressed) or analyst.")] = "coordinator",
    process: Annotated[str | None, typer.Option(help="Process id (default: analytics' default).")] = None,
    segment: Annotated[
        str | None, typer.Option(help="Only one category of another dimension, e.g. lived_experience:yes.")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Also list categories without a target.")] = False,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="The numbers as they stood then, e.g. 2018-04-01T00:00Z.")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Coverage against the plan in the terminal: under-reached communities first, with how many more it takes."""
    from services.cli.coverage import fetch, render, token_from
    from services.cli.replay import known_process

    settings = _tool_settings(data_dir=data_dir)
    if process is not None:
        known_process(settings, process)
    token = token_from(_tokens_file(settings, tokens_file), as_)
    body = fetch(url or _url(settings, settings.analytics_port), token, process, segment, as_of)
    out = Console()
    render(body, out if out.is_terminal else Console(width=150), show_all)


@app.command()
def rebuild(data_dir: DataDirOption = None) -> None:
    """Replay the whole log into fresh read models beside the live ones, check them, and swap them in."""
    from services.cli.rebuild import run
    from services.cli.stack import with_local_servers

    run(with_local_servers(_tool_settings(data_dir=data_dir)))


@app.command("replay")
def replay_command(
    since: Annotated[str | None, typer.Option(help="From this time, included (ISO with zone, on occurred_at).")] = None,
    until: Annotated[
        str | None, typer.Option(help="Up to this time, excluded (ISO with zone, on occurred_at).")
    ] = None,
    from_seq: Annotated[int | None, typer.Option("--from-seq", help="First stream sequence (default 1).")] = None,
    to_seq: Annotated[
        int | None, typer.Option("--to-seq", help="Last stream sequence, included (default: the last).")
    ] = None,
    process: Annotated[str | None, typer.Option(help="Only this process's events (default: all).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
    nats_url: NatsUrlOption = None,
    stream: StreamOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write a window of the log as typed events, one JSON object a line; unreadable ones are reported on stderr."""
    from services.cli.replay import run_replay

    settings = _tool_settings(data_dir=data_dir)
    run_replay(
        settings,
        since=since,
        until=until,
        from_seq=from_seq,
        to_seq=to_seq,
        process=process,
        out=out,
        nats_url=nats_url,
        stream=stream,
    )


@app.command("export")
def export_command(
    out: Annotated[Path, typer.Option(help="Folder to write the tables and the data dictionary into.")],
    process: Annotated[str | None, typer.Option(help="Process id (default ENGAGE_PROCESS_ID).")] = None,
    formats: Annotated[str, typer.Option("--format", help="csv, parquet, or csv,parquet.")] = "csv,parquet",
    nats_url: NatsUrlOption = None,
    stream: StreamOption = None,
    plan: Annotated[Path | None, typer.Option(help="Plan file (default: the process's plan).")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Replay the log in memory and write pseudonymised engagement rows, coverage and a data dictionary."""
    from services.cli.export import run_export

    settings = _tool_settings(data_dir=data_dir)
    run_export(settings, out=out, process=process, formats=formats, nats_url=nats_url, stream=stream, plan_file=plan)


plan_app = typer.Typer(help="Plans: the dimensions, categories and targets of a process.")
app.add_typer(plan_app, name="plan")


@plan_app.command("check")
def plan_check(file: Annotated[Path, typer.Argument(help="A plan file (TOML).")]) -> None:
    """Validate a plan file; print a summary, or the key, value and reason of each problem."""
    from shared.plan import check_plan_text

    Console().print(check_plan_text(file))


def _fail(message: str, code: int) -> NoReturn:
    # One line, never wrapped, never read as markup: a message may hold [brackets] or a long path.
    console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True, highlight=False)
    sys.exit(code)


def main() -> None:
    try:
        app(standalone_mode=True)
    except EngageError as exc:
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # no traceback reaches a user; ENGAGE_LOG_LEVEL=debug shows it
        if os.environ.get("ENGAGE_LOG_LEVEL", "").lower() == "debug":
            raise
        _fail(f"{type(exc).__name__}: {' '.join(str(exc).split())} (ENGAGE_LOG_LEVEL=debug shows where)", 1)


if __name__ == "__main__":
    main()
