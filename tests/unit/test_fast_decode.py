"""The decoder derived from the contract reads every event as pydantic does, or leaves it to pydantic.

Events of every type are fuzzed (a value replaced by a near miss, a key dropped or added, a
time written another way) and read both ways: the same events, fields set and serialisation
when accepted, the same reasons when not; and whatever the derived decoder accepts on its
own, pydantic accepts as the same objects.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from services.analytics.reading.decode import Unreadable, decode
from shared import fastdecode
from shared.events import (
    ENVELOPE,
    AdvisoryFeedbackLogged,
    AdvisoryMemberJoined,
    Attendee,
    DataExported,
    Envelope,
    FeedbackTopic,
    GatheringHeld,
    GatheringKind,
    InterviewCancelled,
    InterviewCompleted,
    InterviewFormat,
    InterviewNoShow,
    InterviewRescheduled,
    InterviewScheduled,
    ParticipantWithdrawn,
    SurveyCompleted,
)
from shared.profile import Profile
from tests import factories as f

RNG = random.Random(14)
SOON = datetime.now(UTC) + timedelta(days=3)


def _every_type() -> list[Envelope]:
    p = f.random_profile
    payloads: list[Any] = [
        InterviewScheduled(
            interview_id=f.agg("iv"), format=InterviewFormat.phone, scheduled_for=SOON, region="declined"
        ),
        InterviewRescheduled(interview_id=f.agg("iv"), scheduled_for=SOON),
        InterviewCancelled(interview_id=f.agg("iv"), reason="safety"),
        InterviewNoShow(interview_id=f.agg("iv")),
        InterviewCompleted(
            interview_id=f.agg("iv"),
            format=InterviewFormat.small_group,
            participants=[Attendee(participant_ref=f.ref(), profile=p(RNG)) for _ in range(3)],
        ),
        GatheringHeld(
            gathering_id=f.agg("gh"), kind=GatheringKind.small_group_meeting, attendee_count=4, profiles=[p(RNG)]
        ),
        SurveyCompleted(
            response_id=f.agg("sr"),
            profile=Profile(experience_terms=["sex_worker", "survival_sex"], professional_roles="declined", lgbq="no"),
        ),
        AdvisoryMemberJoined(participant_ref=f.ref(), profile=p(RNG)),
        AdvisoryFeedbackLogged(feedback_id=f.agg("fb"), topic=FeedbackTopic.language, member_refs=[f.ref()]),
        ParticipantWithdrawn(participant_ref=f.ref()),
        DataExported(
            export_id=f.agg("ex"),
            requested_by="analyst",
            scope="analyst:read",
            tables=["engagements", "coverage"],
            formats=["csv"],
            k_anonymity=5,
            generalised=["drop:gender"],
            rows={"engagements": 10, "coverage": 3},
            participants=9,
            reflects_sequence=12,
        ),
    ]
    events = [Envelope.wrap(pl, process_id="shfa-2018", source="intake") for pl in payloads]
    return [*events, f.survey(p(RNG)), f.interview(f.ref(), p(RNG)), f.gathering(9, [p(RNG) for _ in range(3)])]


EVENTS = _every_type()
SAMPLES: list[dict[str, Any]] = [orjson.loads(ev.model_dump_json()) for ev in EVENTS]


class RawJSON(bytes):
    """JSON text put into a document as it is (what orjson would refuse to write)."""


def dumps(doc: Any) -> bytes:
    raws: list[bytes] = []

    def hold(value: Any) -> str:
        if not isinstance(value, RawJSON):
            raise TypeError
        raws.append(bytes(value))
        return f"@@raw{len(raws) - 1}@@"

    data = orjson.dumps(doc, default=hold)
    for i, raw in enumerate(raws):
        data = data.replace(f'"@@raw{i}@@"'.encode(), raw)
    return data


# Near misses: what a careless or hostile writer might put where a value belongs.
ODD_VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            0,
            -1,
            1.0,
            "5",
            "",
            "declined",
            "central",
            "DECLINED",
            ["declined"],
            [],
            {},
            "p-abcdefghij\n",
            "p-abcdefghij",
            "sr-abcdefgh\n",
            "shfa-2018\n",
            "2018-03-01T14:00:00Z",
            "2018-03-01T14:00:00.1234567Z",
            "2018-03-01T14:00:00.9999995+01:00",
            "2018-03-01T14:00:00z",
            "2018-03-01 14:00:00Z",
            "2018-03-01T14:00:00",
            "2018-03-01T14:00Z",
            "2018-03-01T14:00:00,5Z",
            "2018-03-01T14:00:00+24:00",
            "1999-12-31T23:59:59Z",
            "2099-01-01T00:00:00Z",
            1520000000,
            RawJSON(b'"\\ud800"'),  # a lone surrogate
            RawJSON(b"1180591620717411303424"),  # past 64 bits
            RawJSON(b"1e400"),
            51,
            5001,
            "female",
            ["female", "female"],
            ["white", "black", "indigenous", "multiracial", "asian", "latinx", "immigrant", "other", "white"],
        ]
    ),
    st.text(max_size=12),
    st.integers(-3, 6000),
)


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += places(inner, (*path, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += places(inner, (*path, i))
    return found


def changed(doc: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    """``doc`` with the value at ``path`` replaced, or (in its dict) a key dropped or added."""
    if len(path) <= 1:
        if how == "replace" and path:
            return _set(doc, path[0], value)
        if how == "drop" and path and isinstance(doc, dict):
            return {k: v for k, v in doc.items() if k != path[0]}
        if how == "add" and isinstance(doc, dict):
            return {**doc, "zq_extra": value}
        return value if how == "replace" else doc
    head = path[0]
    return _set(doc, head, changed(doc[head], path[1:], how, value))


def _set(doc: Any, key: Any, value: Any) -> Any:
    if isinstance(doc, dict):
        return {**doc, key: value}
    return [value if i == key else v for i, v in enumerate(doc)]


def same(a: Any, b: Any) -> None:
    """The same pydantic objects: values, types, fields set and field order, all the way down."""
    assert type(a) is type(b)
    if isinstance(a, BaseModel):
        assert a.model_fields_set == b.model_fields_set, type(a).__name__
        fields = type(a).model_fields  # not a cached property's value, e.g. Profile.categories
        assert [k for k in a.__dict__ if k in fields] == [k for k in b.__dict__ if k in fields], type(a).__name__
        for name in type(a).model_fields:
            same(getattr(a, name), getattr(b, name))
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, datetime):
        assert a == b and a.utcoffset() == b.utcoffset() and a.isoformat() == b.isoformat()
    else:
        assert a == b, (a, b)


def assert_read_alike(data: bytes) -> None:
    fast, slow = decode(data), decode(data, fast=False)
    if isinstance(slow, Unreadable):
        assert fast == slow
    else:
        assert isinstance(fast, Envelope)
        same(fast, slow)
        assert fast.model_dump() == slow.model_dump() and fast.model_dump_json() == slow.model_dump_json()
    # On its own, the derived decoder never accepts what pydantic refuses, nor reads it otherwise.
    derived = fastdecode.FAST
    assert derived is not None
    try:
        alone = derived(data)
    except Exception:  # noqa: BLE001 - any refusal of the derived decoder is fine: pydantic then decides
        return
    try:
        expected = ENVELOPE.validate_json(data)
    except ValidationError:
        pytest.fail("the derived decoder accepted an event pydantic refuses")
    same(alone, expected)


def test_the_whole_contract_is_derived() -> None:
    """Every event type has a derived decoder: a schema change it cannot express fails here, not silently slower."""
    assert fastdecode.FastDecoder(Envelope) is not None and fastdecode.FAST is not None


def test_every_event_as_the_services_write_it_takes_the_fast_path() -> None:
    """The common case is the fast one: each event type, as written, is read by the derived decoder."""
    for event in EVENTS:
        data = event.model_dump_json().encode()
        fast = fastdecode.decode_current(data, 1)
        assert fast is not None, event.type
        same(fast, ENVELOPE.validate_json(data))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    where=st.integers(0, 10_000),
    how=st.sampled_from(["replace", "replace", "drop", "add"]),
    value=ODD_VALUES,
)
def test_the_derived_decoder_and_pydantic_accept_and_refuse_alike(
    sample: dict[str, Any], where: int, how: str, value: Any
) -> None:
    paths = places(sample)
    doc = changed(sample, paths[where % len(paths)], how, value)
    assert_read_alike(dumps(doc))


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": 1}',
        b"[]",
        b"",
        b"null",
        b"\xff",
        orjson.dumps(SAMPLES[0]).replace(b'"schema_version":1', b'"schema_version":1,"schema_version":2'),
        orjson.dumps(SAMPLES[1]).replace(b'"type":"InterviewRescheduled"}', b'"type":"InterviewNoShow"}'),
        orjson.dumps(SAMPLES[6]).replace(b'{"type":"SurveyCompleted"', b'{"type":"Zq","type":"SurveyCompleted"'),
        orjson.dumps(SAMPLES[6]).replace(b'"lgbq":"no"', b'"lgbq":"no","lgbq":"yes"'),
        orjson.dumps(SAMPLES[6]).replace(b'"lgbq":"no"', b'"lgbq" : "no" '),
        orjson.dumps(SAMPLES[6]).replace(b'"schema_version":1,', b""),
        orjson.dumps(SAMPLES[6]).replace(b'"schema_version":1', b'"schema_version":2'),
    ],
)
def test_odd_texts_are_read_alike(text: bytes) -> None:
    """Duplicate keys, a left-out default, another version, bytes that are no event: read as pydantic reads them."""
    assert_read_alike(text)


def test_a_repeated_profile_is_read_once_and_stays_the_one_pydantic_makes() -> None:
    """Profiles repeat along a log: the same text gives the same frozen profile, whose categories still work."""
    event = f.survey(region="central", gender=["female", "female"])
    data = event.model_dump_json().encode()
    first, second = fastdecode.decode_current(data, 1), fastdecode.decode_current(data, 1)
    assert first is not None and second is not None
    assert isinstance(first.payload, SurveyCompleted) and isinstance(second.payload, SurveyCompleted)
    assert first.payload.profile is second.payload.profile
    assert first.payload.profile.categories == {"region": ("central",), "gender": ("female",)}
    same(first, ENVELOPE.validate_json(data))
    merged = Profile(lgbq="yes").merged_with(first.payload.profile)
    assert merged.categories["region"] == ("central",) and merged.categories["lgbq"] == ("yes",)


def test_pydantic_reads_what_the_derived_decoder_cannot_express() -> None:
    """A contract the deriver cannot express is refused when derived, naming the part, never guessed at."""

    class Odd(BaseModel):
        when: Any

    with pytest.raises(fastdecode.NotDerivable, match=r"Odd\.when"):
        fastdecode.FastDecoder(Odd)
