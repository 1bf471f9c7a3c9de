"""The one decode: an event comes back typed, or with a reason that never repeats what it said.

Reasons go to the logs and to the dead-letter stream, and an unreadable event may hold
exactly what must never be shown (a name typed into the wrong field). So the event is
fuzzed: any one value, key or type tag replaced by a marker, and the reason must name the
field without the marker.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.reading.decode import Unreadable, decode, decode_batch
from shared.events import Envelope
from shared.upcasting import encode_event
from tests import factories as f

RNG = random.Random(3)
SAMPLES: list[dict[str, Any]] = [
    orjson.loads(orjson.dumps(ev.model_dump(mode="json")))
    for ev in (
        f.survey(f.random_profile(RNG)),
        f.interview(f.ref(), f.random_profile(RNG)),
        f.gathering(5, [f.random_profile(RNG)]),
        f.withdrawn(f.ref()),
    )
]
# A marker no schema word contains, as a name typed into the wrong field would be.
MARKERS = st.from_regex(r"Zq[a-z]{4,10} [A-Z][a-z]{3,8}", fullmatch=True)


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += places(inner, (*path, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += places(inner, (*path, i))
    return found


def replaced(doc: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: replaced(doc[head], rest, new)}
    return [replaced(v, rest, new) if i == head else v for i, v in enumerate(doc)]


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from(SAMPLES),
    where=st.integers(0, 10_000),
    marker=MARKERS,
    how=st.sampled_from(["value", "in_list", "key", "number_key"]),
)
def test_an_unreadable_event_s_reason_never_repeats_what_it_said(
    sample: dict[str, Any], where: int, marker: str, how: str
) -> None:
    paths = places(sample)
    path = paths[where % len(paths)]
    if how == "value":
        doc = replaced(sample, path, marker)
    elif how == "in_list":
        doc = replaced(sample, path, [marker, {"name": marker}])
    else:  # a field the schema does not have, named by the event
        target = next((p for p in reversed(paths[: where % len(paths) + 1]) if isinstance(_at(sample, p), dict)), ())
        doc = replaced(sample, target, {**_at(sample, target), marker: marker if how == "key" else 7})
    found = decode(orjson.dumps(doc))
    if isinstance(found, Unreadable):
        assert marker not in found.reason and marker.split()[0] not in found.reason, found.reason
        assert found.reason.strip()
    else:  # a value the schema takes as text, e.g. a correlation id: it was readable after all
        assert isinstance(found, Envelope)


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def test_reasons_name_the_field_and_the_rule() -> None:
    """The reason is still useful: it says where and what is wrong."""
    survey = SAMPLES[0]
    bad_region = replaced(survey, ("payload", "profile", "region"), "Zqmaria Lopez")
    reason = _reason(bad_region)
    assert reason.startswith("invalid event: payload.") and "region" in reason and "Zqmaria" not in reason
    assert _reason({**survey, "type": "Zqmaria Lopez"}).count("does not match the payload's type") == 1
    tag = _reason(replaced(survey, ("payload", "type"), "Zqmaria Lopez"))
    assert "payload: is not a known event type" in tag and "Zqmaria" not in tag
    extra = _reason({**survey, "Zqmaria Lopez": 1})
    assert "<a field not in the schema>" in extra and "Zqmaria" not in extra
    assert _reason({**survey, "schema_version": "Zqmaria Lopez"}) == "schema_version: is not a positive integer"


def test_bytes_that_are_not_an_event_are_unreadable_without_being_quoted() -> None:
    for data in (b"Zqmaria Lopez 612-555-0199", b'["Zqmaria Lopez"]', b"", b"\xff\xfe", b"{" * 10_000):
        found = decode(data)
        assert isinstance(found, Unreadable) and "Zqmaria" not in found.reason and "612" not in found.reason


def test_a_batch_keeps_the_readable_events_in_order_and_reports_the_rest() -> None:
    good = [f.survey(region="central") for _ in range(3)]
    raw = [
        (1, good[0].subject, good[0].model_dump_json().encode()),
        (2, "t", b"Zqmaria"),
        (3, good[1].subject, good[1].model_dump_json().encode()),
        (4, good[2].subject, good[2].model_dump_json().encode()),
    ]
    events, skipped = decode_batch(raw)
    assert [seq for seq, _ in events] == [1, 3, 4] and [ev.event_id for _, ev in events] == [g.event_id for g in good]
    assert [(s.sequence, s.subject) for s in skipped] == [(2, "t")] and skipped[0].reason == "not JSON"


def _reason(doc: Any) -> str:
    found = decode(orjson.dumps(doc))
    assert isinstance(found, Unreadable), doc
    return found.reason


def test_an_event_on_another_aggregates_subject_is_not_read() -> None:
    """Each kind of event on each other aggregate's subject (or another process's, or another id's)
    is unreadable, with a reason naming the rule and never the subject's or the event's values."""
    events = [
        f.survey(region="central"),
        f.interview(f.ref(), region="central"),
        f.withdrawn("p-zqmaria0001"),
        f.gathering(3, []),
    ]
    for event in events:
        assert decode(encode_event(event), event.subject) == event
        others = {e.subject for e in events if e.aggregate != event.aggregate}
        others |= {event.subject.replace("shfa-2018", "other-2018"), event.subject + "x"}
        for subject in others:
            found = decode(encode_event(event), subject)
            assert isinstance(found, Unreadable), (event.type, subject)
            assert f" {event.payload.type} belongs on engagement.<its process>.{event.aggregate}." in found.reason
            assert (
                "zqmaria" not in found.reason and "shfa" not in found.reason and event.aggregate_id not in found.reason
            )
    forged = f.interview(f.ref(), region="central").model_copy(update={"process_id": "shfa-2018"})
    survey_subject = f.survey().subject
    found = decode(encode_event(forged), survey_subject)  # a 1-person "interview" on a survey's subject
    assert isinstance(found, Unreadable) and "InterviewCompleted belongs on" in found.reason
