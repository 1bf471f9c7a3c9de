"""Analyst exports: the log replayed in memory, as tables a notebook or a spreadsheet can read.

Rows are made from the very projection the live counts use (:class:`MemoryProjection`),
so a count made from the exported rows equals the analyst's ``/coverage``. A participant
appears under a pseudonym: a keyed hash of their key with a random key made for this
export and never stored, so the rows cannot be joined back to intake's references, nor
two exports to each other. Withdrawn participants are in no row. Every file is written
under a temporary name and renamed, so a failed export leaves no half-written file.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Any

from services.analytics.answers.coverage import View, coverage
from services.analytics.answers.models import CoverageAnswer, Freshness
from services.analytics.export.dictionary import (
    COVERAGE_COLUMNS,
    TOTALS_COLUMNS,
    Column,
    dictionary,
    engagement_columns,
    markdown,
)
from services.analytics.projection.activity import place_of, regions_scheduled
from services.analytics.projection.engages import Key, touches
from services.analytics.projection.fold import DEFAULT_TZ, day_of
from services.analytics.projection.memory import MemoryProjection
from shared.events import Envelope, GatheringHeld, InterviewCompleted
from shared.plan import Plan
from shared.profile import DIMENSIONS

FORMATS = ("csv", "parquet")
Row = dict[str, Any]


@dataclass(frozen=True)
class Engagement:
    """One participant taking part once, before the participant is pseudonymised."""

    key: Key
    sequence: int
    event_type: str
    channel: str
    occurred_at: datetime
    region: str | None = None
    interview_id: str | None = None  # its region comes from the interview's scheduling


def engagements_of(seq: int, ev: Envelope) -> list[Engagement]:
    """The participant-engagements one event makes: those ``projection.touches`` counts."""
    p, proc = ev.payload, ev.process_id
    region = place_of(p.region) if isinstance(p, GatheringHeld) else None
    interview = p.interview_id if isinstance(p, InterviewCompleted) else None
    return [
        Engagement((proc, key), seq, ev.type, channel.value, ev.occurred_at, region, interview)
        for key, channel, _ in touches(ev)
    ]


@dataclass
class Recorder:
    """Remembers every participant-engagement of the events the in-memory projection counts."""

    projection: MemoryProjection
    engagements: list[Engagement] = field(default_factory=list)
    regions: dict[tuple[str, str], str] = field(default_factory=dict)

    def record(self, pairs: Iterable[tuple[int, Envelope]]) -> Iterator[tuple[int, Envelope]]:
        """Pass (sequence, event) pairs on to the projection, remembering what each one engaged."""
        for seq, ev in pairs:
            self.engagements.extend(engagements_of(seq, ev))
            self.regions.update(regions_scheduled([ev]))
            yield seq, ev

    def feed(self, pairs: Iterable[tuple[int, Envelope]], reflects: int | None = None) -> Recorder:
        """Project ``pairs``; ``reflects``: the stream sequence the export reflects, if later than the last."""
        self.projection.feed(self.record(pairs))
        if reflects is not None:
            self.projection.apply([], reflects)
        return self


def pseudonymiser(secret: bytes | None = None) -> Callable[[Key], str]:
    """A keyed hash of participant keys; the key is random unless a test gives one, and never stored."""
    key = secret if secret is not None else secrets.token_bytes(32)

    def pseudonym(participant: Key) -> str:
        digest = hmac.new(key, "\x1f".join(participant).encode(), hashlib.sha256).hexdigest()
        return "x" + digest[:19]

    return pseudonym


def profile_values(categories: dict[str, tuple[str, ...]], plan: Plan) -> Row:
    """One value per profile dimension (codes joined by ';', ``declined``, or None) and per derived one."""
    row: Row = {dim: ";".join(categories[dim]) if dim in categories else None for dim in DIMENSIONS}
    for dim in plan.derived_dimensions():
        row[dim] = ";".join(plan.matches(dim, categories)) or None
    return row


def engagement_rows(recorder: Recorder, plan: Plan, tz: tzinfo, pseudonym: Callable[[Key], str]) -> list[Row]:
    """One row per participant-engagement of counted (not withdrawn) participants, in log order."""
    states = recorder.projection.states
    profiles: dict[Key, Row] = {}
    rows: list[Row] = []
    for e in recorder.engagements:
        state = states.get(e.key)
        if state is None or state.withdrawn or e.key[0] != plan.process_id:
            continue
        if e.key not in profiles:  # one hash and one profile per participant, however often they took part
            profiles[e.key] = {"participant": pseudonym(e.key), **profile_values(state.profile.categories, plan)}
        region = e.region if e.interview_id is None else recorder.regions.get((e.key[0], e.interview_id))
        rows.append(
            {
                "sequence": e.sequence,
                "event_type": e.event_type,
                "channel": e.channel,
                "occurred_at": e.occurred_at.astimezone(UTC),
                "local_date": date.fromisoformat(day_of(e.occurred_at, tz)),
                "event_region": region,
                **profiles[e.key],
            }
        )
    return rows


def coverage_rows(answer: CoverageAnswer) -> list[Row]:
    """One row per dimension x category of the analyst coverage answer."""
    rows = []
    for d in answer.dimensions:
        for c in d.categories:
            target, interval = c.target, c.interval or (None, None)
            rows.append(
                {
                    "dimension": d.dimension,
                    "dimension_label": d.label,
                    "category": c.category,
                    "label": c.label,
                    "count": c.count,
                    "alone": c.alone,
                    "share": c.share,
                    "interval_low": interval[0],
                    "interval_high": interval[1],
                    "target_share": target.share if target else None,
                    "target_min_count": target.min_count if target else None,
                    "target_kind": target.kind if target else None,
                    "target_source": target.source if target else None,
                    "target_vintage": target.vintage if target else None,
                    "ratio": c.ratio,
                    "status": c.status.value,
                    "needed": c.needed,
                }
            )
    return rows


def totals_rows(answer: CoverageAnswer) -> list[Row]:
    """Participants, engagements (all and per channel), and each dimension's answered/declined/not answered."""
    rows: list[Row] = [
        {"measure": "participants", "dimension": None, "channel": None, "count": answer.participants},
        {"measure": "engagements", "dimension": None, "channel": None, "count": answer.engagements},
    ]
    rows += [
        {"measure": "engagements", "dimension": None, "channel": c, "count": n}
        for c, n in answer.engagements_by_channel.items()
    ]
    rows += [
        {"measure": m, "dimension": d.dimension, "channel": None, "count": getattr(d, m)}
        for d in answer.dimensions
        for m in ("answered", "declined", "not_answered")
    ]
    return rows


@dataclass(frozen=True)
class Export:
    """Everything one export writes, built in memory first."""

    tables: Mapping[str, tuple[Sequence[Column], list[Row]]]
    dictionary: dict[str, Any]
    participants: int
    engagements: int


def build(
    recorder: Recorder,
    plan: Plan,
    *,
    tz: tzinfo = DEFAULT_TZ,
    stream: str = "ENGAGEMENT",
    made_at: datetime | None = None,
    formats: Sequence[str] = FORMATS,
    secret: bytes | None = None,
    k: int = 5,
) -> Export:
    """The tables and the data dictionary of one process, from a recorder that has seen the log."""
    counts = recorder.projection.counts(plan.process_id, plan)
    made = made_at or datetime.now(UTC)
    fresh = Freshness(
        sequence=counts.sequence, stream_sequence=counts.sequence, behind=0, projected_at=made, answered_at=made
    )
    answer = coverage(counts, plan.process_id, plan, View(k, suppressed=False), fresh)
    tables = {
        "engagements": (engagement_columns(plan), engagement_rows(recorder, plan, tz, pseudonymiser(secret))),
        "coverage": (COVERAGE_COLUMNS, coverage_rows(answer)),
        "totals": (TOTALS_COLUMNS, totals_rows(answer)),
    }
    about = dictionary(
        plan,
        {name: cols for name, (cols, _) in tables.items()},
        formats=formats,
        stream=stream,
        sequence=counts.sequence,
        made_at=made,
        tz=tz,
        first_event=counts.first_event,
        last_event=counts.last_event,
    )
    return Export(tables, about, counts.participants, counts.engagements)


def _atomically(path: Path, write: Callable[[Path], object]) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_csv(path: Path, columns: Sequence[Column], rows: list[Row]) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as out:
            w = csv.writer(out)
            w.writerow([c.name for c in columns])
            w.writerows([_csv_text(row[c.name]) for c in columns] for row in rows)

    return _atomically(path, write)


def write_parquet(path: Path, columns: Sequence[Column], rows: list[Row]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "string": pa.string(),
        "integer": pa.int64(),
        "number": pa.float64(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "boolean": pa.bool_(),
    }
    schema = pa.schema([pa.field(c.name, types[c.type], metadata={"meaning": c.meaning}) for c in columns])
    table = pa.Table.from_pylist(rows, schema=schema)
    return _atomically(path, lambda tmp: pq.write_table(table, tmp))


def write(directory: Path, export: Export, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the tables in ``formats`` and the data dictionary (JSON and Markdown) into ``directory``."""
    import orjson

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (columns, rows) in export.tables.items():
        if "csv" in formats:
            written.append(write_csv(directory / f"{name}.csv", columns, rows))
        if "parquet" in formats:
            written.append(write_parquet(directory / f"{name}.parquet", columns, rows))
    body = orjson.dumps(export.dictionary, option=orjson.OPT_INDENT_2)
    written.append(_atomically(directory / "data_dictionary.json", lambda tmp: tmp.write_bytes(body + b"\n")))
    text = markdown(export.dictionary)
    written.append(_atomically(directory / "data_dictionary.md", lambda tmp: tmp.write_text(text, encoding="utf-8")))
    return written
