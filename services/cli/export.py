"""`engage export`: replay the log in memory and write the analyst tables and their data dictionary.

The log is read up to the last sequence it held when the export began, so the export
reflects one exact point of the log, which the data dictionary names. Everything is
built in memory before the first file is written.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import TextIO

from nats.aio.client import Client

from services.analytics.export import FORMATS, Recorder, build, write
from services.analytics.memory import MemoryProjection
from services.analytics.projection import DEFAULT_TZ
from services.analytics.replay import Window, events, last_sequence
from services.cli.replay import nats_url_of, with_stream
from shared.errors import EngageError
from shared.ids import PROCESS_ID
from shared.plan import Plan, load_plan, load_plans
from shared.settings import Settings


@dataclass(frozen=True)
class Exported:
    """What an export wrote, and the point of the log it reflects."""

    files: list[Path]
    sequence: int
    participants: int
    engagements: int
    unreadable: int


async def export_log(nc: Client, directory: Path, plan: Plan, *, stream: str = "ENGAGEMENT",
                     tz: tzinfo = DEFAULT_TZ, formats: Sequence[str] = FORMATS, k: int = 5,
                     report: TextIO | None = None) -> Exported:
    """Replay ``plan``'s process from the log on ``nc`` and write its export into ``directory``."""
    unreadable = 0

    def skipped(seq: int, subject: str, reason: str) -> None:
        nonlocal unreadable
        unreadable += 1
        if report is not None:
            report.write(f"unreadable: sequence {seq} on {subject}: {reason}\n")

    last = await last_sequence(nc, stream)
    recorder = Recorder(MemoryProjection(tz))
    async with aclosing(events(nc, stream, Window(to_seq=last, process_id=plan.process_id), skipped)) as found:
        async for seq, event in found:
            recorder.add(seq, event)
    recorder.flush(last)
    made = build(recorder, plan, tz=tz, stream=stream, formats=formats, k=k)
    files = write(directory, made, formats)
    return Exported(files, last, made.participants, made.engagements, unreadable)


def formats_of(value: str) -> tuple[str, ...]:
    """``csv,parquet`` -> the formats, in our order; EngageError for anything else."""
    given = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not given:
        raise EngageError("--format: give csv, parquet or csv,parquet")
    unknown = [f for f in given if f not in FORMATS]
    if unknown:
        raise EngageError(f"--format: {unknown[0]!r} is not one of {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in given)


def plan_of(settings: Settings, process: str | None, plan_file: Path | None) -> Plan:
    """The plan named by --plan, else the one analytics uses for the process (ENGAGE_PLANS or shipped)."""
    if process is not None and not PROCESS_ID.match(process):
        raise EngageError(f"--process: {process!r} is not a process id like shfa-2018")
    if plan_file is not None:
        plan = load_plan(plan_file)
        if process is not None and plan.process_id != process:
            raise EngageError(f"--plan {plan_file}: is for process {plan.process_id}, not --process {process}")
        return plan
    wanted = process or settings.process_id
    plans = load_plans(settings.plans)
    if wanted not in plans:
        raise EngageError(f"--process {wanted}: no plan for it (plans for: {', '.join(plans)}); "
                          "give one with --plan FILE")
    return plans[wanted]


def _directory(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise EngageError(f"--out {out}: is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngageError(f"--out {out}: cannot make the folder ({exc.strerror or exc})") from None
    return out


def run_export(settings: Settings, *, out: Path, process: str | None = None, formats: str = "csv,parquet",
               nats_url: str | None = None, stream: str | None = None, plan_file: Path | None = None,
               report: TextIO = sys.stderr) -> Exported:
    """The `engage export` command: check the options, export, and say what was written."""
    chosen = formats_of(formats)
    plan = plan_of(settings, process, plan_file)
    directory = _directory(out)
    url, name = nats_url_of(nats_url, settings), stream or settings.stream_name

    async def work(nc: Client) -> Exported:
        return await export_log(nc, directory, plan, stream=name, tz=settings.tz, formats=chosen,
                                k=settings.small_cell_k, report=report)

    try:
        done = asyncio.run(with_stream(url, name, work))
    except OSError as exc:
        raise EngageError(f"--out {out}: writing failed ({exc.strerror or exc}); no half-written file was left") \
            from None
    report.write(f"export: {plan.process_id}, {done.participants} participants, {done.engagements} engagements, "
                 f"{done.unreadable} unreadable events skipped; reflects {name} up to sequence {done.sequence}\n")
    report.write("".join(f"  {path}\n" for path in done.files))
    return done
