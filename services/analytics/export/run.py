"""The export use case: make an export in memory, record it on the log, then package it.

Microdata (analysts) come from the log replayed in memory up to the last sequence it held
when the export began, through the same projection as the live counts, so the export
reflects one exact point of the log, which the data dictionary names. The coordinators'
aggregate tables come from their own coverage answer (see ``routes``).

Nothing leaves before the log holds the export's record: a ``DataExported`` event naming
who asked (the token's name), the scope, the tables, formats, the k-anonymity target and
what was generalised, the rows and participants, the risk figures and the sequence the
export reflects. A log that does not store it is a :class:`PublishError` (503), and the
export is thrown away.
"""

from __future__ import annotations

import io
import secrets
import time
import zipfile
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal, cast

import nats.errors
from nats.aio.client import Client

from services.analytics.export.tables import TABLES, Export, Recorder, Release, build
from services.analytics.projection.fold import DEFAULT_TZ
from services.analytics.projection.memory import BATCH, MemoryProjection
from services.analytics.reading.replay import Window, events, last_sequence
from shared import metrics
from shared.errors import PublishError
from shared.events import DataExported, Envelope, ExportFormat, ExportTable
from shared.plan import Plan
from shared.settings import Settings
from shared.upcasting import encode_event

AUDIT = "DataExported"
Scope = Literal["analyst:read", "coverage:read", "admin"]


@dataclass(frozen=True)
class Replayed:
    """An analyst export and what reading the log met on the way."""

    export: Export
    unreadable: int


async def replayed(
    nc: Client,
    plan: Plan,
    *,
    stream: str = "ENGAGEMENT",
    tz: tzinfo = DEFAULT_TZ,
    formats: Sequence[str] = ("csv", "parquet"),
    k: int = 5,
    tables: Sequence[str] = TABLES,
    release: Release = Release(),
    secret: bytes | None = None,
) -> Replayed:
    """Replay ``plan``'s process from the log on ``nc`` into an analyst export, in memory.

    Unreadable events are skipped (the projector parks them too) and counted. Earlier
    exports' records are not outreach, so they are left out of the replay.
    """
    unreadable = 0

    def skipped(_seq: int, _subject: str, _reason: str) -> None:
        nonlocal unreadable
        unreadable += 1

    last = await last_sequence(nc, stream)
    recorder = Recorder(MemoryProjection(tz))
    pending: list[tuple[int, Envelope]] = []
    async with aclosing(events(nc, stream, Window(to_seq=last, process_id=plan.process_id), skipped)) as found:
        async for seq, event in found:
            if event.type == AUDIT:
                continue
            pending.append((seq, event))
            if len(pending) >= BATCH:
                recorder.feed(pending)
                pending = []
    recorder.feed(pending, reflects=last)
    made = build(
        recorder, plan, tz=tz, stream=stream, formats=formats, k=k, tables=tables, release=release, secret=secret
    )
    return Replayed(made, unreadable)


def new_export_id() -> str:
    return "ex-" + secrets.token_hex(8)


def audit_event(
    export: Export,
    *,
    export_id: str,
    process_id: str,
    requested_by: str,
    scope: Scope,
    tables: Sequence[ExportTable],
    formats: Sequence[ExportFormat],
    k_anonymity: int | None,
    participants: int,
) -> Envelope:
    """The record of one export: who, under which scope, what, and the point of the log it reflects."""
    risk = export.risk
    return Envelope.wrap(
        DataExported(
            export_id=export_id,
            requested_by=requested_by,
            scope=scope,
            tables=list(tables),
            formats=list(formats),
            k_anonymity=k_anonymity,
            generalised=list(risk.generalised) if risk else [],
            rows=cast(dict[ExportTable, int], export.rows),  # the tables are named by TABLES
            participants=participants,
            sample_uniques=risk.after.sample_uniques if risk else None,
            smallest_class=risk.after.smallest_class if risk else None,
            suppressed_values=risk.suppressed_values if risk else None,
            reflects_sequence=export.sequence,
        ),
        process_id=process_id,
        source="analytics",
    )


async def record(nc: Client, event: Envelope, settings: Settings) -> int:
    """Store the export's record on the log and wait for the PubAck: its stream sequence.

    Any failure (NATS down or disconnected, no PubAck in time, a full or refusing log) is a
    PublishError: the caller answers 503 and sends nothing.
    """
    started = time.perf_counter()
    try:
        if not nc.is_connected:
            raise nats.errors.ConnectionClosedError
        ack = await nc.jetstream().publish(
            event.subject,
            encode_event(event),
            timeout=settings.publish_timeout_seconds,
            stream=settings.stream_name,
            headers={"Nats-Msg-Id": event.event_id, "Engage-Type": event.type},
        )
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        metrics.PUBLISH_FAILURES.labels("unavailable").inc()
        raise PublishError(
            "the event log did not store the export's record, so nothing was exported; try again"
        ) from exc
    metrics.WRITE_SECONDS.labels(event.type).observe(time.perf_counter() - started)
    metrics.WRITES.labels(event.type, "duplicate" if ack.duplicate else "stored").inc()
    return ack.seq


def manifest(export: Export, event: Envelope, audit_sequence: int, unreadable: int = 0) -> dict[str, Any]:
    """What the package holds and how it came to be: the audit record, the rows, the risk figures."""
    payload = event.payload
    assert isinstance(payload, DataExported)
    return {
        "export_id": payload.export_id,
        "process_id": event.process_id,
        "made_at": event.occurred_at.isoformat(),
        "requested_by": payload.requested_by,
        "scope": payload.scope,
        "reflects_sequence": export.sequence,
        "audit": {"event_id": event.event_id, "sequence": audit_sequence, "subject": event.subject},
        "tables": {name: {"rows": n} for name, n in export.rows.items()},
        "formats": payload.formats,
        "participants": payload.participants,
        "unreadable_events_skipped": unreadable,
        "reidentification": export.reidentification,
    }


def package(files: Mapping[str, bytes], made_at: datetime | None = None) -> bytes:
    """The files as one zip archive (deflated), each dated ``made_at``."""
    when = (made_at or datetime.now(UTC)).astimezone(UTC)
    stamp = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16  # readable by its owner only, once unpacked
            archive.writestr(info, data)
    return out.getvalue()


def unpack(data: bytes) -> dict[str, bytes]:
    """The files of a package; ValueError if it is not a zip archive, or a file in it is damaged."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()
            if damaged is not None:
                raise ValueError(f"{damaged} is damaged")
            return {info.filename: archive.read(info) for info in archive.infolist()}
    except zipfile.BadZipFile as exc:
        raise ValueError(f"not a zip archive ({exc})") from None
