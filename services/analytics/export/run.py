"""The export use case: replay one process from the log into memory and write its tables.

The log is read up to the last sequence it held when the export began, so the export
reflects one exact point of the log, which the data dictionary names. Everything is
built in memory before the first file is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import TextIO

from nats.aio.client import Client

from services.analytics.export.tables import FORMATS, Recorder, build, write
from services.analytics.projection.fold import DEFAULT_TZ
from services.analytics.projection.memory import BATCH, MemoryProjection
from services.analytics.reading.replay import Window, events, last_sequence
from shared.events import Envelope
from shared.plan import Plan


@dataclass(frozen=True)
class Exported:
    """What an export wrote, and the point of the log it reflects."""

    files: list[Path]
    sequence: int
    participants: int
    engagements: int
    unreadable: int


async def export_log(
    nc: Client,
    directory: Path,
    plan: Plan,
    *,
    stream: str = "ENGAGEMENT",
    tz: tzinfo = DEFAULT_TZ,
    formats: Sequence[str] = FORMATS,
    k: int = 5,
    report: TextIO | None = None,
) -> Exported:
    """Replay ``plan``'s process from the log on ``nc`` and write its export into ``directory``."""
    unreadable = 0

    def skipped(seq: int, subject: str, reason: str) -> None:
        nonlocal unreadable
        unreadable += 1
        if report is not None:
            report.write(f"unreadable: sequence {seq} on {subject}: {reason}\n")

    last = await last_sequence(nc, stream)
    recorder = Recorder(MemoryProjection(tz))
    pending: list[tuple[int, Envelope]] = []
    async with aclosing(events(nc, stream, Window(to_seq=last, process_id=plan.process_id), skipped)) as found:
        async for pair in found:
            pending.append(pair)
            if len(pending) >= BATCH:
                recorder.feed(pending)
                pending = []
    recorder.feed(pending, reflects=last)
    made = build(recorder, plan, tz=tz, stream=stream, formats=formats, k=k)
    files = write(directory, made, formats)
    return Exported(files, last, made.participants, made.engagements, unreadable)
