"""`engage replay`: a window of the event log as typed events, one JSON object a line.

Each line is ``{"sequence": N, "event": <envelope>}``, upcast to today's schema, so a
script or a notebook reads every version ever written the same way. Events that cannot
be read are reported on stderr (sequence, subject, reason) and skipped, as the projector
parks them. Every problem with an option or a server is one line naming it; a user never
sees a traceback.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO, TypeVar

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from services.analytics.reading.replay import Window, events, last_sequence, parse_time
from services.cli.stack import local_nats_url, shown
from shared.bus import connect_options
from shared.errors import EngageError
from shared.ids import PROCESS_ID
from shared.plan import Plan, load_plans
from shared.settings import Settings

T = TypeVar("T")


def nats_url_of(given: str | None, settings: Settings) -> str:
    """--nats-url, else ENGAGE_NATS_URL, else the one a running `engage up` recorded, else its port."""
    return given or local_nats_url(settings)


def known_process(settings: Settings, process: str) -> Plan:
    """The plan of ``process`` (ENGAGE_PLANS, else the shipped ones); EngageError naming the known ones."""
    plans = load_plans(settings.plans)
    if process not in plans:
        raise EngageError(f"--process {process}: no plan for it; the known processes are {', '.join(sorted(plans))}")
    return plans[process]


async def connect(url: str, settings: Settings) -> Client:
    """Connect once (as analytics: the identity that reads the log), failing fast with a one-line error."""

    async def quiet(_: Exception) -> None:
        return None  # connection errors become the EngageError below, not a logged traceback

    servers = [part.strip() for part in url.split(",") if part.strip()]
    try:
        return await nats.connect(
            servers,
            connect_timeout=3,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            error_cb=quiet,
            **connect_options(settings, "analytics"),
        )
    except (TimeoutError, NatsError, OSError) as exc:
        raise EngageError(
            f"NATS at {shown(url)} does not answer ({type(exc).__name__}): is `engage up` running, "
            "or --nats-url / ENGAGE_NATS_URL set?"
        ) from None


async def with_stream(url: str, stream: str, work: Callable[[Client], Awaitable[T]], settings: Settings) -> T:
    """Run ``work`` on a connection to ``url`` after checking that ``stream`` exists there."""
    nc = await connect(url, settings)
    try:
        try:
            await nc.jetstream().stream_info(stream)
        except NotFoundError:
            raise EngageError(f"--stream {stream}: no such stream on {url}") from None
        return await work(nc)
    except (TimeoutError, NatsError) as exc:
        raise EngageError(f"reading stream {stream} on {url} failed ({type(exc).__name__}); try again") from None
    finally:
        await nc.close()


def window_of(
    since: str | None, until: str | None, from_seq: int | None, to_seq: int | None, process: str | None
) -> Window:
    """Check the window's options together; EngageError names the option and the reason."""
    if from_seq is not None and from_seq < 1:
        raise EngageError(f"--from-seq: {from_seq} is not a stream sequence (they start at 1)")
    if to_seq is not None and to_seq < (from_seq or 1):
        raise EngageError(f"--to-seq: {to_seq} is before --from-seq {from_seq or 1}")
    try:
        start, end = parse_time(since, "--since"), parse_time(until, "--until")
    except ValueError as exc:
        raise EngageError(str(exc)) from None
    if start is not None and end is not None and end <= start:
        raise EngageError(f"--until: {until} is not after --since {since} (since is included, until is not)")
    if process is not None and not PROCESS_ID.match(process):
        raise EngageError(f"--process: {process!r} is not a process id like shfa-2018")
    return Window(from_seq or 1, to_seq, start, end, process)


@dataclass
class Tally:
    written: int = 0
    unreadable: int = 0
    last: int = 0


async def write_events(nc: Client, stream: str, window: Window, sink: BinaryIO, report: TextIO) -> Tally:
    """Write the window's events to ``sink`` as JSON lines; report unreadable ones on ``report``."""
    tally = Tally()
    last = await last_sequence(nc, stream)  # a window past the end stops there instead of waiting
    end = last if window.to_seq is None else min(window.to_seq, last)
    tally.last = end

    def unreadable(seq: int, subject: str, reason: str) -> None:
        tally.unreadable += 1
        report.write(f"unreadable: sequence {seq} on {subject}: {reason}\n")

    fixed = Window(window.from_seq, end, window.since, window.until, window.process_id)
    # aclosing: if writing fails (a closed pipe), the reader's consumer is removed before the connection closes
    async with aclosing(events(nc, stream, fixed, unreadable)) as found:
        async for seq, event in found:
            sink.write(b'{"sequence":%d,"event":%s}\n' % (seq, event.model_dump_json().encode()))
            tally.written += 1
    sink.flush()
    return tally


def _open_out(out: Path) -> tuple[Path, BinaryIO]:
    if out.is_dir():
        raise EngageError(f"--out {out}: is a folder; give a file name")
    if not out.parent.is_dir():
        raise EngageError(f"--out {out}: folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        return tmp, tmp.open("wb")
    except OSError as exc:
        raise EngageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


def run_replay(
    settings: Settings,
    *,
    since: str | None = None,
    until: str | None = None,
    from_seq: int | None = None,
    to_seq: int | None = None,
    process: str | None = None,
    out: Path | None = None,
    nats_url: str | None = None,
    stream: str | None = None,
    report: TextIO = sys.stderr,
) -> Tally:
    """The `engage replay` command: checks, replays, writes (to a temporary file renamed at the end)."""
    window = window_of(since, until, from_seq, to_seq, process)
    url, name = nats_url_of(nats_url, settings), stream or settings.stream_name
    tmp, sink = _open_out(out) if out is not None else (None, sys.stdout.buffer)
    try:
        tally = asyncio.run(with_stream(url, name, lambda nc: write_events(nc, name, window, sink, report), settings))
        if tmp is not None and out is not None:
            sink.close()
            os.replace(tmp, out)
    except BrokenPipeError:  # `engage replay | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except OSError as exc:
        raise EngageError(f"--out {out or 'stdout'}: writing failed ({exc.strerror or exc})") from None
    finally:
        if tmp is not None:
            sink.close()
            tmp.unlink(missing_ok=True)
    if process is not None and tally.written == 0 and process not in load_plans(settings.plans):
        # The log may hold events of a process without a plan, so this is said, not refused.
        plans = ", ".join(sorted(load_plans(settings.plans)))
        report.write(f"warning: --process {process}: no plan for it and no events; the known processes are {plans}\n")
    report.write(
        f"replay: {tally.written} events written, {tally.unreadable} unreadable skipped "
        f"(stream {name}, sequences {window.from_seq}-{tally.last})\n"
    )
    return tally
