"""The event contract: validation, frozen models, the discriminated union, subjects."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
from pydantic import ValidationError

from shared.events import (
    ENVELOPE,
    Attendee,
    Envelope,
    GatheringHeld,
    InterviewCompleted,
    SurveyCompleted,
)
from shared.profile import Profile
from shared.upcasting import UPCASTERS, decode_event, encode_event, upcast, upcaster
from tests import factories as f


def test_an_event_round_trips_through_its_bytes() -> None:
    """Encoding then decoding gives back the same typed event."""
    ev = f.interview(region="northeast", race_ethnicity=["black", "indigenous"])
    assert decode_event(encode_event(ev)) == ev
    assert isinstance(decode_event(encode_event(ev)).payload, InterviewCompleted)


def test_the_subject_names_process_aggregate_and_id() -> None:
    """One subject per aggregate: engagement.<process>.<aggregate>.<id>."""
    ev = f.survey()
    assert ev.subject == f"engagement.shfa-2018.survey-response.{ev.payload.response_id}"


def test_events_are_frozen() -> None:
    """Events are facts: they cannot be changed after the fact."""
    ev = f.survey()
    with pytest.raises(ValidationError):
        ev.process_id = "other"


def test_declined_is_an_answer_and_a_category_list_must_not_be_empty() -> None:
    """ "declined" is accepted for every question; an empty list is not an answer."""
    assert Profile(region="declined", race_ethnicity="declined").categories == {
        "region": ("declined",),
        "race_ethnicity": ("declined",),
    }
    with pytest.raises(ValidationError, match="race_ethnicity"):
        Profile(race_ethnicity=[])


def test_a_repeated_tick_counts_once() -> None:
    """Choosing a category twice is the same as choosing it once."""
    assert Profile(gender=["female", "female", "transgender"]).categories["gender"] == ("female", "transgender")


@pytest.mark.parametrize("field", ["name", "phone", "email", "address", "notes"])
def test_a_profile_has_no_place_for_contact_details(field: str) -> None:
    """Unknown fields are refused, so a name cannot ride along in a profile."""
    with pytest.raises(ValidationError, match=field):
        Profile.model_validate({field: "Jane Q. Example"})


@pytest.mark.parametrize("ref", ["Jane Example", "jane@example.org", "612-555-0142", "p-short", "P-ABCDEFGHIJK"])
def test_participant_refs_are_opaque(ref: str) -> None:
    """A participant reference cannot be a name, an address or a phone number."""
    with pytest.raises(ValidationError, match="participant_ref"):
        Attendee(participant_ref=ref)


def test_a_one_on_one_interview_has_exactly_one_participant() -> None:
    with pytest.raises(ValidationError, match="exactly one participant"):
        InterviewCompleted(
            interview_id="iv-0123456789",
            format="phone",
            participants=[Attendee(participant_ref=f.ref()), Attendee(participant_ref=f.ref())],
        )


def test_a_gathering_cannot_have_more_profiles_than_attendees() -> None:
    with pytest.raises(ValidationError, match="more profiles than attendees"):
        GatheringHeld(
            gathering_id="gh-0123456789", kind="art_of_hosting", attendee_count=1, profiles=[Profile(), Profile()]
        )


def test_timestamps_need_a_time_zone() -> None:
    """A naive time is ambiguous across the state's records; it is refused."""
    raw = f.survey().model_dump(mode="json")
    raw["occurred_at"] = "2018-03-01T14:00:00"
    with pytest.raises(ValidationError, match="time zone"):
        ENVELOPE.validate_python(raw)


def test_the_envelope_type_must_match_the_payload() -> None:
    raw = f.survey().model_dump(mode="json")
    raw["type"] = "InterviewCompleted"
    with pytest.raises(ValidationError, match="does not match"):
        ENVELOPE.validate_python(raw)


def test_an_unknown_event_type_is_refused() -> None:
    raw = f.survey().model_dump(mode="json")
    raw["type"] = raw["payload"]["type"] = "SomethingElse"
    with pytest.raises(ValidationError):
        ENVELOPE.validate_python(raw)


def test_an_older_schema_version_is_upcast_before_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A v1 event whose field was renamed in v2 is read through the registered upcaster."""
    monkeypatch.setattr("shared.upcasting.UPCASTERS", dict(UPCASTERS))

    @upcaster("SurveyCompleted", 1)
    def rename(raw: dict) -> dict:
        payload = dict(raw["payload"])
        payload["response_id"] = payload.pop("survey_id")
        return {**raw, "payload": payload}

    old = f.survey().model_dump(mode="json")
    old["payload"]["survey_id"] = old["payload"].pop("response_id")
    lifted = upcast(old, target=2)
    assert lifted["schema_version"] == 2 and "response_id" in lifted["payload"]


def test_a_newer_schema_version_than_the_reader_is_refused() -> None:
    raw = f.survey().model_dump(mode="json")
    raw["schema_version"] = 99
    with pytest.raises(ValueError, match="newer than this reader"):
        decode_event(orjson.dumps(raw))


def test_wrap_stamps_both_times_with_a_time_zone() -> None:
    ev = Envelope.wrap(SurveyCompleted(response_id="sr-0123456789"), process_id="shfa-2018", source="survey")
    assert isinstance(ev.recorded_at, datetime) and ev.recorded_at.tzinfo is not None
    assert ev.occurred_at == ev.recorded_at
