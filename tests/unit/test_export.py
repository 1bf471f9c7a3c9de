"""The analyst export from hand-made events, without servers: rows, pseudonyms, withdrawals, files, dictionary."""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from services.analytics.export.tables import Recorder, build, pseudonymiser, write
from services.analytics.projection.memory import MemoryProjection
from services.analytics.reading.decode import reason_of
from services.cli.export import formats_of
from services.cli.replay import window_of
from shared.errors import EngageError
from shared.events import (
    AdvisoryFeedbackLogged,
    AdvisoryMemberJoined,
    Attendee,
    Envelope,
    FeedbackTopic,
    GatheringHeld,
    GatheringKind,
    InterviewCompleted,
    InterviewFormat,
    InterviewScheduled,
)
from shared.plan import shipped_plans
from shared.profile import Profile
from tests import factories as f

PLAN = shipped_plans()["shfa-2018"]
MARCH_5_EVENING = datetime(2018, 3, 6, 3, 0, tzinfo=UTC)  # 9 pm on 5 March in Minnesota


def wrap(payload: object, at: datetime = MARCH_5_EVENING) -> Envelope:
    return Envelope.wrap(payload, process_id="shfa-2018", source="intake", occurred_at=at)


def recorded(events: list[Envelope]) -> Recorder:
    return Recorder(MemoryProjection()).feed(enumerate(events, start=1))


def rows_of(events: list[Envelope], secret: bytes = b"k" * 32) -> list[dict]:
    return build(recorded(events), PLAN, secret=secret).tables["engagements"][1]


def test_a_returning_participant_keeps_one_pseudonym_and_every_row_shows_the_merged_profile() -> None:
    """Two interviews: two rows, one pseudonym, both with the profile merged over both answers."""
    person = f.ref()
    rows = rows_of([f.interview(person, region="central"), f.interview(person, lived_experience="yes")])
    assert len(rows) == 2 and rows[0]["participant"] == rows[1]["participant"]
    assert [(r["region"], r["lived_experience"]) for r in rows] == [("central", "yes")] * 2
    assert [r["sequence"] for r in rows] == [1, 2]


def test_pseudonyms_hide_the_reference_and_change_with_each_exports_key() -> None:
    """A pseudonym is not the reference, and another export (another key) gives another pseudonym."""
    person = f.ref()
    events = [f.interview(person, region="central")]
    first, second = rows_of(events, b"a" * 32)[0]["participant"], rows_of(events, b"b" * 32)[0]["participant"]
    assert first != second and person not in first and person[2:] not in first
    assert pseudonymiser()(("shfa-2018", "ref:" + person)) != pseudonymiser()(("shfa-2018", "ref:" + person))


def test_a_withdrawn_participant_is_in_no_row_and_the_rows_still_match_the_counts() -> None:
    """Withdrawal removes every row of that person; rows and distinct pseudonyms equal the projection's totals."""
    leaving, staying = f.ref(), f.ref()
    events = [
        f.interview(leaving, region="northeast"),
        f.interview(staying, region="central"),
        f.interview(leaving, region="northeast"),
        f.withdrawn(leaving),
        f.survey(region="southwest"),
    ]
    recorder = recorded(events)
    rows = build(recorder, PLAN, secret=b"k" * 32).tables["engagements"][1]
    counts = recorder.projection.counts("shfa-2018", PLAN)
    assert [r["region"] for r in rows] == ["central", "southwest"]
    assert len(rows) == counts.engagements == 2
    assert len({r["participant"] for r in rows}) == counts.participants == 2


def test_multi_select_answers_are_joined_by_semicolons_and_declined_stays_declined() -> None:
    rows = rows_of(
        [
            f.survey(race_ethnicity=["white", "black"], gender="declined", region="declined"),
            f.survey(experience_terms=["own_term_prostitute", "survivor_of_trafficking"]),
        ]
    )
    assert (rows[0]["race_ethnicity"], rows[0]["gender"], rows[0]["region"]) == ("white;black", "declined", "declined")
    assert rows[1]["experience_terms"] == "survivor_of_trafficking;own_term_prostitute"  # the question's order
    assert rows[1]["race_ethnicity"] is None and rows[1]["lived_experience"] is None


def test_the_same_answers_read_the_same_whatever_order_they_were_ticked_in() -> None:
    """A multi-select answer is written in the question's order, so the order of ticking singles no one out."""
    rows = rows_of([f.survey(race_ethnicity=["asian", "white"]), f.survey(race_ethnicity=["white", "asian"])])
    assert [r["race_ethnicity"] for r in rows] == ["white;asian", "white;asian"]


def test_every_attendee_of_a_gathering_is_a_row_with_the_gatherings_region() -> None:
    """Three attendees, one profile: three people, three pseudonyms, the event's region on each."""
    held = wrap(
        GatheringHeld(
            gathering_id=f.agg("gh"),
            kind=GatheringKind.art_of_hosting,
            region="northwest",
            attendee_count=3,
            profiles=[Profile(lived_experience="yes")],
        )
    )
    rows = rows_of([held])
    assert len({r["participant"] for r in rows}) == 3
    assert {(r["channel"], r["event_region"]) for r in rows} == {("art_of_hosting", "northwest")}
    assert [r["lived_experience"] for r in rows] == ["yes", None, None]


def test_an_interviews_region_comes_from_its_scheduling_and_days_are_local() -> None:
    """The completed interview carries the scheduled region; 03:00 UTC is the evening before in Minnesota."""
    iv = f.agg("iv")
    scheduled = wrap(
        InterviewScheduled(
            interview_id=iv, format=InterviewFormat.phone, scheduled_for=MARCH_5_EVENING, region="southeast"
        )
    )
    done = wrap(
        InterviewCompleted(
            interview_id=iv, format=InterviewFormat.phone, participants=[Attendee(participant_ref=f.ref())]
        )
    )
    (row,) = rows_of([scheduled, done])
    assert (row["event_region"], row["channel"], row["event_type"]) == (
        "southeast",
        "interview_phone",
        "InterviewCompleted",
    )
    assert row["occurred_at"] == MARCH_5_EVENING and row["local_date"] == date(2018, 3, 5)


def test_advisory_members_count_when_they_join_and_for_each_feedback_that_names_them() -> None:
    member = f.ref()
    rows = rows_of(
        [
            wrap(AdvisoryMemberJoined(participant_ref=member, profile=Profile(professional_roles=["police"]))),
            wrap(AdvisoryFeedbackLogged(feedback_id=f.agg("fb"), topic=FeedbackTopic.protocols, member_refs=[member])),
        ]
    )
    assert [(r["event_type"], r["channel"]) for r in rows] == [
        ("AdvisoryMemberJoined", "advisory"),
        ("AdvisoryFeedbackLogged", "advisory"),
    ]
    assert rows[0]["mandated_group"] == "police_probation" and rows[0]["professional_roles"] == "police"


def test_the_coverage_table_is_the_analyst_answer_row_for_row() -> None:
    """Counts, shares, targets and status of the coverage table equal the rows' own counts."""
    rng = __import__("random").Random(7)
    events = [f.survey(f.random_profile(rng)) for _ in range(60)]
    made = build(recorded(events), PLAN)
    rows, table = made.tables["engagements"][1], made.tables["coverage"][1]
    region = {r["category"]: r["count"] for r in table if r["dimension"] == "region"}
    assert {k: v for k, v in region.items() if v} == dict(
        Counter(r["region"] for r in rows if r["region"] not in (None, "declined"))
    )
    yes = next(r for r in table if (r["dimension"], r["category"]) == ("lived_experience", "yes"))
    assert (yes["target_share"], yes["target_kind"], yes["target_vintage"]) == (40.0, "goal", "2018")


def test_files_round_trip_and_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CSV and Parquet hold the same rows; when Parquet writing fails, no parquet file or temp file remains."""
    events = [f.survey(region="central", race_ethnicity=["asian", "white"]), f.interview(region="northeast")]
    made = build(recorded(events), PLAN)
    write(tmp_path, made)
    with (tmp_path / "engagements.csv").open(newline="") as fh:
        from_csv = list(csv.DictReader(fh))
    from_parquet = pq.read_table(tmp_path / "engagements.parquet").to_pylist()
    assert [r["race_ethnicity"] for r in from_csv] == ["white;asian", ""]
    assert [r["race_ethnicity"] for r in from_parquet] == ["white;asian", None]
    assert [r["participant"] for r in from_csv] == [r["participant"] for r in from_parquet]
    assert from_csv[0]["occurred_at"].endswith("Z") and from_parquet[0]["occurred_at"].tzinfo is not None

    broken = tmp_path / "broken"
    broken.mkdir()

    def fail(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", fail)
    with pytest.raises(OSError):
        write(broken, made)
    assert sorted(p.name for p in broken.iterdir()) == []  # every file is made in memory before any is written

    real_write = Path.write_bytes

    def disk_full(path: Path, data: bytes) -> int:
        real_write(path, data[: len(data) // 2])  # half of it reaches the disk, then the disk is full
        raise OSError("disk full")

    monkeypatch.undo()
    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError):
        write(broken, made)
    assert sorted(p.name for p in broken.iterdir()) == []  # no half-written file, and no temporary one


def test_the_dictionary_documents_every_column_and_quotes_their_own_term_as_theirs(tmp_path: Path) -> None:
    """Each table's columns, labels from the plan, targets with kind/source/vintage, and the privacy note."""
    made = build(recorded([f.survey(region="central")]), PLAN, formats=("csv",))
    write(tmp_path, made, ("csv",))
    about = orjson.loads((tmp_path / "data_dictionary.json").read_bytes())
    for name, (columns, _) in made.tables.items():
        assert [c["name"] for c in about["tables"][name]["columns"]] == [c.name for c in columns]
        assert about["tables"][name]["files"] == [f"{name}.csv"]
    terms = next(d for d in about["dimensions"] if d["dimension"] == "experience_terms")
    own = next(c for c in terms["categories"] if c["code"] == "own_term_prostitute")
    assert own["label"] == PLAN.label_of("experience_terms", "own_term_prostitute") and "their term" in own["note"]
    assert all(t["kind"] and t["source"] and "vintage" in t for t in about["targets"])
    assert about["stream_sequence"] == 1 and about["process_id"] == "shfa-2018"
    assert any("pseudonym" in p for p in about["privacy"]) and any("withdrew" in p for p in about["privacy"])
    text = (tmp_path / "data_dictionary.md").read_text()
    ours = text.replace("own_term_prostitute", "").replace(own["label"], "")
    assert not re.search(r"prostitut|solicit|offender|john\b", ours, re.IGNORECASE)


def test_replay_options_are_checked_with_the_option_named() -> None:
    """Each bad option is one EngageError naming it; good ones make the window."""
    for kwargs, named in [
        ({"from_seq": 0}, "--from-seq"),
        ({"from_seq": 5, "to_seq": 2}, "--to-seq"),
        ({"since": "yesterday"}, "--since"),
        ({"until": "2018-04-01T00:00"}, "--until"),
        ({"since": "2018-04-02", "until": "2018-04-01T00:00Z"}, "--until"),
        ({"process": "Not A Process"}, "--process"),
    ]:
        args = {"since": None, "until": None, "from_seq": None, "to_seq": None, "process": None, **kwargs}
        with pytest.raises(EngageError, match=f"^{named}"):
            window_of(**args)
    window = window_of("2018-04-01", "2018-05-01T00:00-05:00", 3, 9, "shfa-2018")
    assert (window.from_seq, window.to_seq, window.since) == (3, 9, datetime(2018, 4, 1, tzinfo=UTC))
    with pytest.raises(EngageError, match=r"^--format"):
        formats_of("csv,xlsx")
    assert formats_of("parquet, CSV") == ("csv", "parquet")


def test_an_unreadable_events_reason_never_shows_the_rejected_value() -> None:
    """pydantic quotes the input; the report keeps the field and the reason only."""
    try:
        Profile(region="Jane Doe 555-0100")
    except ValueError as exc:
        reason = reason_of(exc)
    assert "region" in reason and "Jane" not in reason and "555" not in reason
