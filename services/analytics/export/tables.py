"""Exports as tables a notebook or a spreadsheet can read: microdata, coverage and totals.

Microdata rows are made from the very projection the live counts use
(:class:`MemoryProjection`), so a count made from the exported rows equals the analyst's
``/coverage``. A participant appears under a pseudonym: a keyed hash of their key with a
random key made for this export and never stored, so the rows cannot be joined back to
intake's references, nor two exports to each other. Withdrawn participants are in no row.
Every microdata export measures its re-identification risk, and with a k-anonymity target
releases generalised and suppressed profiles instead of the recorded ones (``risk``).

The coordinators' aggregate tables are made from their own coverage answer, so they carry
exactly the protected numbers ``/coverage`` shows them. Files are made in memory
(:func:`files_of`); :func:`write_files` writes each under a temporary name and renames it,
so a failed write leaves no half-written file.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
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
    as_shown,
    dictionary,
    engagement_columns,
    markdown,
    participant_columns,
    reidentification,
)
from services.analytics.export.risk import (
    SEPARATOR,
    SUPPRESSED,
    Anonymised,
    Generalisation,
    anonymise,
    quasi_identifiers,
)
from services.analytics.projection.activity import place_of, regions_scheduled
from services.analytics.projection.engages import Key, touches
from services.analytics.projection.fold import DEFAULT_TZ, day_of
from services.analytics.projection.memory import MemoryProjection
from shared.events import Envelope, ExportTable, GatheringHeld, InterviewCompleted
from shared.plan import Plan
from shared.profile import CATEGORIES, DIMENSIONS

FORMATS = ("csv", "parquet")
TABLES: tuple[ExportTable, ...] = ("engagements", "participants", "coverage", "totals")
MICRODATA: frozenset[str] = frozenset({"engagements", "participants"})  # a row per engagement, per participant
AGGREGATES: tuple[ExportTable, ...] = ("coverage", "totals")
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


def _in_order(dim: str, codes: tuple[str, ...]) -> str:
    """A multi-select answer's codes in the question's order, so the same answers read the same."""
    order = {code: i for i, code in enumerate(CATEGORIES.get(dim, ()))}
    return SEPARATOR.join(sorted(codes, key=lambda c: order.get(c, len(order))))


def profile_values(categories: dict[str, tuple[str, ...]], plan: Plan) -> Row:
    """One value per profile dimension (codes joined by ';', ``declined``, or None) and per derived one."""
    row: Row = {dim: _in_order(dim, categories[dim]) if dim in categories else None for dim in DIMENSIONS}
    for dim in plan.derived_dimensions():
        row[dim] = SEPARATOR.join(plan.matches(dim, categories)) or None
    return row


def counted(recorder: Recorder, plan: Plan) -> dict[Key, Row]:
    """Each counted (not withdrawn) participant of the plan's process, in the order they first took
    part: their profile as projected (merged over their engagements), one value per quasi-identifier."""
    states = recorder.projection.states
    found: dict[Key, Row] = {}
    for e in recorder.engagements:
        if e.key in found or e.key[0] != plan.process_id:
            continue
        state = states.get(e.key)
        if state is not None and not state.withdrawn:
            found[e.key] = profile_values(state.profile.categories, plan)
    return found


@dataclass(frozen=True)
class Release:
    """How microdata are released: as recorded, or generalised by ``steps`` and then suppressed to ``k``."""

    k: int | None = None
    steps: tuple[Generalisation, ...] = ()


def released(recorder: Recorder, plan: Plan, release: Release, report_k: int) -> tuple[dict[Key, Row], Anonymised]:
    """Every counted participant's quasi-identifiers as released, and the risk before and after."""
    people = counted(recorder, plan)
    keys = list(people)
    qis = quasi_identifiers(plan)
    done = anonymise([people[key] for key in keys], qis, release.k, release.steps, report_k=report_k)
    return dict(zip(keys, done.records, strict=True)), done


def _event_region(region: str | None, recorded: Row, shown: Row, steps: Sequence[Generalisation]) -> str | None:
    """The event's region, recoded as the participant's own region is, and suppressed where theirs is."""
    if region is None:
        return None
    if shown.get("region") == SUPPRESSED and recorded.get("region") != SUPPRESSED:
        return SUPPRESSED
    for step in steps:
        if "region" in step.columns:
            region = step.recode("region", region)
    return region


def engagement_rows(
    recorder: Recorder,
    plan: Plan,
    tz: tzinfo,
    pseudonym: Callable[[Key], str],
    people: Mapping[Key, Row] | None = None,
    steps: Sequence[Generalisation] = (),
) -> list[Row]:
    """One row per participant-engagement of counted (not withdrawn) participants, in log order.

    ``people``: each participant's quasi-identifiers as released (default: as recorded).
    """
    recorded = counted(recorder, plan)
    shown = recorded if people is None else people
    names: dict[Key, str] = {}
    rows: list[Row] = []
    for e in recorder.engagements:
        if e.key not in shown:
            continue
        if e.key not in names:  # one hash per participant, however often they took part
            names[e.key] = pseudonym(e.key)
        region = e.region if e.interview_id is None else recorder.regions.get((e.key[0], e.interview_id))
        rows.append(
            {
                "sequence": e.sequence,
                "event_type": e.event_type,
                "channel": e.channel,
                "occurred_at": e.occurred_at.astimezone(UTC),
                "local_date": date.fromisoformat(day_of(e.occurred_at, tz)),
                "event_region": _event_region(region, recorded[e.key], shown[e.key], steps),
                "participant": names[e.key],
                **shown[e.key],
            }
        )
    return rows


def participant_rows(
    engagements: Sequence[Row], people: Mapping[Key, Row], pseudonym: Callable[[Key], str]
) -> list[Row]:
    """One row per participant: their pseudonym (as in the engagement rows), how often they took part,
    and their answers as released."""
    taken: dict[str, int] = {}
    for row in engagements:
        taken[row["participant"]] = taken.get(row["participant"], 0) + 1
    return [
        {"participant": name, "engagements": taken.get(name, 0), **answers}
        for name, answers in ((pseudonym(key), answers) for key, answers in people.items())
    ]


def coverage_rows(answer: CoverageAnswer) -> list[Row]:
    """One row per dimension x category of a coverage answer, as the answer shows them."""
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
                    "share_of_profiled": c.share_of_profiled,
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
    """Participants (all, those who gave a profile, and per channel), engagements (all and per channel),
    and each dimension's answered/declined/not answered."""
    rows: list[Row] = [
        {"measure": "participants", "dimension": None, "channel": None, "count": answer.participants},
        {"measure": "profiled", "dimension": None, "channel": None, "count": answer.profiled},
        {"measure": "engagements", "dimension": None, "channel": None, "count": answer.engagements},
    ]
    rows += [
        {"measure": "engagements", "dimension": None, "channel": c, "count": n}
        for c, n in answer.engagements_by_channel.items()
    ]
    rows += [
        {"measure": "participants", "dimension": None, "channel": c, "count": n}
        for c, n in answer.people_by_channel.items()
    ]
    rows += [
        {"measure": m, "dimension": d.dimension, "channel": None, "count": getattr(d, m)}
        for d in answer.dimensions
        for m in ("answered", "declined", "not_answered")
    ]
    return rows


@dataclass(frozen=True)
class Export:
    """Everything one export holds, built in memory first."""

    tables: Mapping[str, tuple[Sequence[Column], list[Row]]]
    dictionary: dict[str, Any]
    participants: int
    engagements: int
    sequence: int = 0
    risk: Anonymised | None = None  # microdata only: the risk before and after, what was done
    reidentification: dict[str, Any] | None = None  # the same, JSON-ready, as the dictionary says it

    @property
    def rows(self) -> dict[str, int]:
        return {name: len(rows) for name, (_, rows) in self.tables.items()}


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
    tables: Sequence[str] = TABLES,
    release: Release = Release(),
) -> Export:
    """The analyst's tables and data dictionary of one process, from a recorder that has seen the log.

    ``k``: the class size the risk figures count against when the release sets no target
    (the coordinators' small-cell k).
    """
    counts = recorder.projection.counts(plan.process_id, plan)
    made = made_at or datetime.now(UTC)
    fresh = Freshness(
        sequence=counts.sequence, stream_sequence=counts.sequence, behind=0, projected_at=made, answered_at=made
    )
    answer = coverage(counts, plan.process_id, plan, View(k, suppressed=False), fresh)
    micro = [t for t in tables if t in MICRODATA]
    made_tables: dict[str, tuple[Sequence[Column], list[Row]]] = {}
    risk = None
    if micro:
        people, risk = released(recorder, plan, release, k)
        pseudonym = pseudonymiser(secret)
        rows = engagement_rows(recorder, plan, tz, pseudonym, people, release.steps)
        if "engagements" in tables:
            made_tables["engagements"] = (engagement_columns(plan), rows)
        if "participants" in tables:
            made_tables["participants"] = (participant_columns(plan), participant_rows(rows, people, pseudonym))
    if "coverage" in tables:
        made_tables["coverage"] = (COVERAGE_COLUMNS, coverage_rows(answer))
    if "totals" in tables:
        made_tables["totals"] = (TOTALS_COLUMNS, totals_rows(answer))
    made_tables = {name: made_tables[name] for name in TABLES if name in made_tables}
    risk_words = reidentification(risk, release.steps, quasi_identifiers(plan)) if risk else None
    about = dictionary(
        plan,
        {name: cols for name, (cols, _) in made_tables.items()},
        formats=formats,
        stream=stream,
        sequence=counts.sequence,
        made_at=made,
        tz=tz,
        first_event=counts.first_event,
        last_event=counts.last_event,
        suppressed=False,
        risk=risk_words,
    )
    return Export(made_tables, about, counts.participants, counts.engagements, counts.sequence, risk, risk_words)


def aggregates(
    answer: CoverageAnswer,
    plan: Plan,
    *,
    tz: tzinfo = DEFAULT_TZ,
    stream: str = "ENGAGEMENT",
    made_at: datetime | None = None,
    formats: Sequence[str] = FORMATS,
    tables: Sequence[str] = AGGREGATES,
) -> Export:
    """The aggregate tables of a coverage answer exactly as it shows its numbers (e.g. the coordinators')."""
    protected = answer.suppression.applied
    made_tables: dict[str, tuple[Sequence[Column], list[Row]]] = {}
    if "coverage" in tables:
        made_tables["coverage"] = (as_shown(COVERAGE_COLUMNS, protected), coverage_rows(answer))
    if "totals" in tables:
        made_tables["totals"] = (as_shown(TOTALS_COLUMNS, protected), totals_rows(answer))
    about = dictionary(
        plan,
        {name: cols for name, (cols, _) in made_tables.items()},
        formats=formats,
        stream=stream,
        sequence=answer.as_of.sequence,
        made_at=made_at or datetime.now(UTC),
        tz=tz,
        first_event=answer.first_event,
        last_event=answer.last_event,
        suppressed=protected,
        k=answer.suppression.k,
    )
    return Export(made_tables, about, 0, 0, answer.as_of.sequence)


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


def csv_bytes(columns: Sequence[Column], rows: list[Row]) -> bytes:
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow([c.name for c in columns])
    w.writerows([_csv_text(row[c.name]) for c in columns] for row in rows)
    return out.getvalue().encode("utf-8")


def parquet_bytes(columns: Sequence[Column], rows: list[Row]) -> bytes:
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
    strings = [c.name for c in columns if c.type == "string"]
    as_text = [{**row, **{n: None if row[n] is None else str(row[n]) for n in strings}} for row in rows]
    table = pa.Table.from_pylist(as_text, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def files_of(
    export: Export, formats: Sequence[str] = FORMATS, extra: Mapping[str, Any] | None = None
) -> dict[str, bytes]:
    """Every file of the export, by name: each table in ``formats``, the data dictionary (JSON and
    Markdown), and ``extra`` JSON documents (e.g. the manifest), all in memory."""
    import orjson

    files: dict[str, bytes] = {}
    for name, (columns, rows) in export.tables.items():
        if "csv" in formats:
            files[f"{name}.csv"] = csv_bytes(columns, rows)
        if "parquet" in formats:
            files[f"{name}.parquet"] = parquet_bytes(columns, rows)
    files["data_dictionary.json"] = orjson.dumps(export.dictionary, option=orjson.OPT_INDENT_2) + b"\n"
    files["data_dictionary.md"] = markdown(export.dictionary).encode("utf-8")
    for name, document in (extra or {}).items():
        files[name] = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    return files


def _atomically(path: Path, write: Callable[[Path], object]) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def safe_name(name: str) -> bool:
    """A plain file name: no folder, no way out of the export's folder, nothing hidden."""
    return bool(name) and name == Path(name).name and not name.startswith(".") and "\\" not in name


def write_files(directory: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write each file into ``directory`` under a temporary name, then rename it into place."""
    bad = [name for name in files if not safe_name(name)]
    if bad:
        raise ValueError(f"not a plain file name: {bad[0]!r}")
    directory.mkdir(parents=True, exist_ok=True)

    def writer(data: bytes) -> Callable[[Path], object]:
        return lambda tmp: tmp.write_bytes(data)

    return [_atomically(directory / name, writer(data)) for name, data in files.items()]


def write(directory: Path, export: Export, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write the tables in ``formats`` and the data dictionary (JSON and Markdown) into ``directory``."""
    return write_files(directory, files_of(export, formats))
