"""`engage export`: check the options, run the export (``services.analytics.export.run``), say what it wrote."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from nats.aio.client import Client

from services.analytics.export.run import Exported, export_log
from services.analytics.export.tables import FORMATS
from services.cli.replay import known_process, nats_url_of, with_stream
from shared.errors import EngageError
from shared.plan import Plan, load_plan
from shared.settings import Settings


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
    if plan_file is not None:
        plan = load_plan(plan_file)
        if process is not None and plan.process_id != process:
            raise EngageError(f"--plan {plan_file}: is for process {plan.process_id}, not --process {process}")
        return plan
    try:
        return known_process(settings, process or settings.process_id)
    except EngageError as exc:
        raise EngageError(f"{exc}; or give a plan with --plan FILE") from None


def _directory(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise EngageError(f"--out {out}: is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngageError(f"--out {out}: cannot make the folder ({exc.strerror or exc})") from None
    return out


def run_export(
    settings: Settings,
    *,
    out: Path,
    process: str | None = None,
    formats: str = "csv,parquet",
    nats_url: str | None = None,
    stream: str | None = None,
    plan_file: Path | None = None,
    report: TextIO = sys.stderr,
) -> Exported:
    """The `engage export` command: check the options, export, and say what was written."""
    chosen = formats_of(formats)
    plan = plan_of(settings, process, plan_file)
    directory = _directory(out)
    url, name = nats_url_of(nats_url, settings), stream or settings.stream_name

    async def work(nc: Client) -> Exported:
        return await export_log(
            nc, directory, plan, stream=name, tz=settings.tz, formats=chosen, k=settings.small_cell_k, report=report
        )

    try:
        done = asyncio.run(with_stream(url, name, work))
    except OSError as exc:
        raise EngageError(
            f"--out {out}: writing failed ({exc.strerror or exc}); no half-written file was left"
        ) from None
    report.write(
        f"export: {plan.process_id}, {done.participants} participants, {done.engagements} engagements, "
        f"{done.unreadable} unreadable events skipped; reflects {name} up to sequence {done.sequence}\n"
    )
    report.write("".join(f"  {path}\n" for path in done.files))
    return done
