"""`engage`: the command line.

engage up [--demo]          everything on this machine (embedded servers + services)
engage serve SERVICE        one service (intake, survey, analytics), as deployed
engage demo                 feed a synthetic outreach into running services
engage nkey / streams       deploy time: a NATS identity; the streams, as the admin identity
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

from services.cli.options import AnalyticsUrlOption, DataDirOption, NatsUrlOption, StreamOption, TokensFileOption
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
    # uvicorn picks httptools and uvloop when they are installed (they are dependencies): the event
    # loop has to be made by uvicorn's factory, since the wait below runs before uvicorn does.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(_serve_when_answering(uvicorn.Server(config), settings, service))


async def _serve_when_answering(server: uvicorn.Server, settings: Settings, service: str) -> None:
    """Wait (with backoff, a log line a try) until the service's servers answer, then serve.

    SIGTERM and SIGINT stop the wait at once. Once uvicorn runs, its own handlers take over;
    should a stop come while the app is still starting (a server gone between the check and
    the app's connect), the start is given a few seconds and then abandoned.
    """
    from services.cli.stack import NEEDS, wait_until_answering
    from shared.bus import connect_options

    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        servers = {key: getattr(settings, key) for key in NEEDS[service]}
        ready = await wait_until_answering(servers, stop, connect_options(settings, service))
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
    url: AnalyticsUrlOption = None,
    tokens_file: TokensFileOption = None,
    as_: Annotated[str, typer.Option("--as", help="Whose token: coordinator (suppressed) or analyst.")] = "coordinator",
    process: Annotated[str | None, typer.Option(help="Process id (default: analytics' default).")] = None,
    segment: Annotated[
        str | None,
        typer.Option(
            help="Only participants who meet every term, comma-separated: dimension:category, dimension:declined, "
            "dimension:not_answered, group:category or channel:CHANNEL, e.g. lived_experience:yes,channel:advisory."
        ),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Also list categories without a target.")] = False,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="The numbers as they stood then, e.g. 2018-04-01T00:00Z (with --as analyst)."),
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


@app.command("audit-suppression")
def audit_suppression_command(
    from_: Annotated[
        list[Path] | None,
        typer.Option(
            "--from", help="Audit a saved set instead of asking analytics; give it again for the next snapshots."
        ),
    ] = None,
    save: Annotated[
        Path | None, typer.Option(help="Gather and save the answers to this file, without auditing (unless --audit).")
    ] = None,
    audit_saved: Annotated[bool, typer.Option("--audit", help="With --save: audit the answers too.")] = False,
    url: AnalyticsUrlOption = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="ENGAGE_TOKEN",
            show_default=False,
            help="The bearer token whose view to audit (default: the coordinator token in the tokens file).",
        ),
    ] = None,
    tokens_file: TokensFileOption = None,
    process: Annotated[str | None, typer.Option(help="Process id (default: analytics' default).")] = None,
    pairs: Annotated[int, typer.Option(help="Also ask this many two-term segments (the same ones every time).")] = 0,
    width: Annotated[
        int, typer.Option(help="The protection promised: a small count keeps at least this many possible values.")
    ] = 2,
    time_limit: Annotated[
        float, typer.Option(help="Seconds the solving may take; then it says how far it got.")
    ] = 120.0,
    snapshots: Annotated[int, typer.Option(help="Gather this many snapshots, --every seconds apart.")] = 1,
    every: Annotated[float, typer.Option(help="Seconds between snapshots.")] = 60.0,
    data_dir: DataDirOption = None,
) -> None:
    """Try to break small-count protection: gather every answer the token sees, work out the range of every
    small count from all of them together, and list those pinned narrower than promised (exit code 1;
    3 if --time-limit ran out before every small count was checked)."""
    from services.cli.audit import run
    from services.cli.replay import known_process

    settings = _tool_settings(data_dir=data_dir)
    if process is not None:
        known_process(settings, process)
    code = run(
        url=url or _url(settings, settings.analytics_port),
        token=token,
        tokens_file=_tokens_file(settings, tokens_file),
        process=process,
        sources=from_ or [],
        save=save,
        audit_saved=audit_saved,
        pairs=pairs,
        width=width,
        time_limit=time_limit,
        snapshots=snapshots,
        every=every,
        out=Console(),
        status=console,
    )
    raise typer.Exit(code)


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
    out: Annotated[Path, typer.Option(help="Folder to write the export's files into.")],
    process: Annotated[str | None, typer.Option(help="Process id (default ENGAGE_PROCESS_ID).")] = None,
    formats: Annotated[str, typer.Option("--format", help="csv, parquet, or csv,parquet.")] = "csv,parquet",
    tables: Annotated[
        str,
        typer.Option(
            help="engagements and participants are microdata (the analyst role); coverage and totals are "
            "aggregate tables (a coordinator gets them protected as /coverage shows them)."
        ),
    ] = "engagements,participants,coverage,totals",
    k_anonymity: Annotated[
        int | None,
        typer.Option(
            "--k-anonymity",
            help="Release the microdata k-anonymous (2 to 100): generalised, then values suppressed until every "
            "participant shares their answers with at least k-1 others.",
        ),
    ] = None,
    generalise: Annotated[
        str | None,
        typer.Option(
            help="Generalisations, comma-separated: multi_select, age_top_code, age_wide, region_metro, "
            "drop:COLUMN, or none (default with --k-anonymity: multi_select,age_top_code).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="ENGAGE_TOKEN",
            show_default=False,
            help="The bearer token to export with (default: the analyst token in the tokens file).",
        ),
    ] = None,
    url: AnalyticsUrlOption = None,
    tokens_file: TokensFileOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Export through analytics: pseudonymised microdata with their re-identification risk, or the aggregate
    tables, and a data dictionary; analytics records every export on the log."""
    from services.cli.coverage import token_from
    from services.cli.export import run_export
    from services.cli.replay import known_process

    settings = _tool_settings(data_dir=data_dir)
    known_process(settings, process or settings.process_id)
    run_export(
        out=out,
        url=url or _url(settings, settings.analytics_port),
        token=token or token_from(_tokens_file(settings, tokens_file), "analyst"),
        process=process,
        formats=formats,
        tables=tables,
        k_anonymity=k_anonymity,
        generalise=generalise,
    )


from services.cli import backup as backup_commands  # noqa: E402 - registered here, after the commands above

app.command("backup")(backup_commands.backup)
app.command("restore")(backup_commands.restore)
app.command("backup-key")(backup_commands.backup_key)

plan_app = typer.Typer(help="Plans: the dimensions, categories and targets of a process.")
app.add_typer(plan_app, name="plan")


@plan_app.command("check")
def plan_check(file: Annotated[Path, typer.Argument(help="A plan file (TOML).")]) -> None:
    """Validate a plan file; print a summary, or the key, value and reason of each problem."""
    from shared.plan import check_plan_text

    Console().print(check_plan_text(file))


@app.command("report")
def report_command(
    fmt: Annotated[str, typer.Option("--format", help="markdown, html (a self-contained page) or csv.")] = "markdown",
    base: Annotated[
        str | None,
        typer.Option(
            help="Shares of whom: profiled (everyone who gave a profile, the report's base; the default) "
            "or answered (those who answered each question)."
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="The numbers as they stood then, e.g. 2018-04-01T00:00Z (analyst token only)."),
    ] = None,
    scope: Annotated[
        str, typer.Option(help="Whose token from the tokens file: analyst (exact) or coordinator (rounded).")
    ] = "analyst",
    token: Annotated[
        str | None,
        typer.Option(
            envvar="ENGAGE_TOKEN", show_default=False, help="A bearer token to use instead of the tokens file's."
        ),
    ] = None,
    url: AnalyticsUrlOption = None,
    process: Annotated[str | None, typer.Option(help="Process id (default: analytics' default).")] = None,
    tokens_file: TokensFileOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Who participated, in the layout of the 2018 report's summary: counts and shares, printed to stdout."""
    from services.cli.replay import known_process
    from services.cli.report import check_choices, choose_token, make_report

    check_choices(fmt, base, scope)
    settings = _tool_settings(data_dir=data_dir)
    if process is not None:
        known_process(settings, process)
    chosen = choose_token(token, _tokens_file(settings, tokens_file), scope)
    text = make_report(
        url or _url(settings, settings.analytics_port), chosen, process=process, as_of=as_of, base=base, fmt=fmt
    )
    sys.stdout.write(text)


def _fail(message: str, code: int) -> NoReturn:
    # One line, never wrapped, never read as markup: a message may hold [brackets] or a long path.
    console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True, highlight=False)
    sys.exit(code)


@app.command("nkey")
def nkey(
    out: Annotated[Path, typer.Option(help="Where to write the new seed (mode 0600; never overwritten).")],
) -> None:
    """Make a NATS identity: write a new user NKey seed for a service, print its public key.

    The seed goes to the service only (ENGAGE_NATS_NKEY_SEED_FILE); the public key goes into
    the NATS servers' environment (e.g. INTAKE_NKEY), see deploy/README.md.
    """
    from services.cli.deploy import new_nkey

    print(new_nkey(out))


@app.command("streams")
def streams(
    nats_url: NatsUrlOption = None,
    replicas: Annotated[
        int | None, typer.Option(min=1, max=5, help="Replicas of each stream (default ENGAGE_STREAM_REPLICAS).")
    ] = None,
) -> None:
    """As the admin identity: create the streams that are missing and bring the others to engage's configuration.

    Services never change a stream; they refuse to start on one that differs. Nothing stored is
    dropped: a stream that could lose events is refused, and deny delete/purge stay on.
    """
    from services.cli.deploy import streams as apply

    settings = _tool_settings(nats_url=nats_url, stream_replicas=replicas)
    if not settings.nats_url:
        raise EngageError("--nats-url: not set (nor ENGAGE_NATS_URL): name the NATS server(s) of the event log")
    for line in asyncio.run(apply(settings)):
        console.print(line)


mapping_app = typer.Typer(help="Mapping files: how a survey platform's fields become profile answers.")
app.add_typer(mapping_app, name="mapping")


@mapping_app.command("check")
def mapping_check(
    file: Annotated[Path, typer.Argument(help="A source's mapping file (TOML).")],
    plan: Annotated[Path | None, typer.Option(help="Check against this plan (default: the mapping's process).")] = None,
) -> None:
    """Validate a mapping file against the profile and the plan: one line per problem, exit 2 if any."""
    from services.cli.mapping import check_mapping

    problems, summary = check_mapping(file, _tool_settings(), plan)
    for line in problems:
        print(line)
    if problems:
        sys.exit(2)
    print(summary)


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
