"""The event contract: one envelope, a discriminated union of past-tense payloads.

Events are dumb, frozen data. They name what happened, never a person: participants are
known by an opaque reference issued by intake, and an anonymous survey response is its
own participant. ``SCHEMA_VERSION`` is the version written today; older versions are
brought forward by the upcasters in :mod:`shared.upcasting` before validation.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from shared.ids import PROCESS_ID_PATTERN
from shared.profile import Declined, Profile, Region

SCHEMA_VERSION = 1


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("needs a time zone, e.g. 2018-03-01T14:00:00Z")
    return value


# Every time an event carries lies in a sane window: nothing engage records happened before
# 2000, and nothing is planned more than five years ahead. Outside it, a local calendar day
# cannot always be computed (year 1 in Minnesota is before the first day Python knows), so a
# time outside the window would stop the projection: requests are refused with 422, and an
# event on the log that carries one is unreadable (parked, never counted).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FURTHEST_AHEAD = timedelta(days=5 * 366)
# Coordinators record after the fact, but nothing can have happened in the future;
# a minute of slack absorbs clock skew between their device and ours.
CLOCK_SLACK = timedelta(minutes=1)


def _in_window(value: datetime) -> datetime:
    if value < EARLIEST:
        raise ValueError("must not be before 2000-01-01")
    if value > datetime.now(UTC) + FURTHEST_AHEAD:
        raise ValueError("must not be more than 5 years ahead")
    return value


def _not_in_future(value: datetime) -> datetime:
    if value > datetime.now(UTC) + CLOCK_SLACK:
        raise ValueError("must not be in the future")
    return value


# A timestamp with a time zone, in the window. (pydantic's Timestamp does the zone check about
# ten times slower, and every event carries two: this is on the replay's hot path.)
Timestamp = Annotated[datetime, AfterValidator(_aware), AfterValidator(_in_window)]
# When something happened, as a request states it: with a time zone, in the window, not in the future.
PastTimestamp = Annotated[datetime, AfterValidator(_aware), AfterValidator(_in_window), AfterValidator(_not_in_future)]
EventId = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="Unique id (a UUID); also the `Nats-Msg-Id`, so a retried publish is stored once.",
    ),
]

# Opaque references only: a lower-case prefix and random characters. The pattern keeps
# names, phone numbers and e-mail addresses out of identifiers by construction.
ParticipantRef = Annotated[
    str,
    Field(
        pattern=r"^p-[0-9a-z]{10,32}$",
        description="Opaque participant reference issued by intake (e.g. `p-7k2m9q4x1b`); never a name.",
    ),
]
AggregateId = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-z][0-9a-z-]{5,63}$",
        description="Identifier of the interview, gathering, response or feedback this event is about.",
    ),
]
ProcessId = Annotated[
    str,
    Field(pattern=PROCESS_ID_PATTERN, description="The engagement process, e.g. `shfa-2018`."),
]


# Sizes: every list an event carries is bounded, so that the largest event the contract allows
# stays well under MAX_EVENT_BYTES, NATS's default max payload (1 MiB); a test builds that event.
MAX_EVENT_BYTES = 1024 * 1024
MAX_PROFILES_PER_GATHERING = 500


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InterviewFormat(StrEnum):
    in_person = "in_person"
    phone = "phone"
    small_group = "small_group"


class GatheringKind(StrEnum):
    art_of_hosting = "art_of_hosting"
    small_group_meeting = "small_group_meeting"


class Channel(StrEnum):
    """How a participant took part; engagements are counted per channel."""

    interview_in_person = "interview_in_person"
    interview_phone = "interview_phone"
    small_group_interview = "small_group_interview"
    art_of_hosting = "art_of_hosting"
    small_group_meeting = "small_group_meeting"
    survey = "survey"
    advisory = "advisory"


INTERVIEW_CHANNEL = {
    InterviewFormat.in_person: Channel.interview_in_person,
    InterviewFormat.phone: Channel.interview_phone,
    InterviewFormat.small_group: Channel.small_group_interview,
}


class CancelReason(StrEnum):
    participant_request = "participant_request"
    safety = "safety"
    scheduling = "scheduling"
    staff_unavailable = "staff_unavailable"
    other = "other"


class FeedbackTopic(StrEnum):
    engagement_plan = "engagement_plan"
    protocols = "protocols"
    safety_and_confidentiality = "safety_and_confidentiality"
    language = "language"
    outreach_gaps = "outreach_gaps"
    recommendations = "recommendations"
    other = "other"


class Attendee(BaseModel):
    """One person who took part in an interview, by reference, with their own profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    participant_ref: ParticipantRef
    profile: Profile = Field(default_factory=Profile, description="What this participant chose to say.")


class InterviewScheduled(_Payload):
    type: Literal["InterviewScheduled"] = "InterviewScheduled"
    interview_id: AggregateId
    format: InterviewFormat = Field(description="One-on-one in person, by phone, or a small group.")
    scheduled_for: Timestamp = Field(description="When the interview is to take place.")
    region: Region | Declined | None = Field(  # the profile's own answer type
        None, description="Region where the interview takes place, if known."
    )
    expected_participants: int = Field(1, ge=1, le=50, description="How many people are expected.")


class InterviewRescheduled(_Payload):
    type: Literal["InterviewRescheduled"] = "InterviewRescheduled"
    interview_id: AggregateId
    scheduled_for: Timestamp = Field(description="The new time.")


class InterviewCancelled(_Payload):
    type: Literal["InterviewCancelled"] = "InterviewCancelled"
    interview_id: AggregateId
    reason: CancelReason = Field(description="Why it was cancelled (a category, never free text).")


class InterviewNoShow(_Payload):
    type: Literal["InterviewNoShow"] = "InterviewNoShow"
    interview_id: AggregateId


class InterviewCompleted(_Payload):
    type: Literal["InterviewCompleted"] = "InterviewCompleted"
    interview_id: AggregateId
    format: InterviewFormat = Field(description="One-on-one in person, by phone, or a small group.")
    participants: list[Attendee] = Field(
        min_length=1, max_length=50, description="Everyone who took part, each with their own profile."
    )

    @model_validator(mode="after")
    def _one_on_one_has_one(self) -> InterviewCompleted:
        if self.format is not InterviewFormat.small_group and len(self.participants) != 1:
            raise ValueError("a one-on-one interview has exactly one participant")
        if len({a.participant_ref for a in self.participants}) != len(self.participants):
            raise ValueError("a participant is listed twice")
        return self


class GatheringHeld(_Payload):
    type: Literal["GatheringHeld"] = "GatheringHeld"
    gathering_id: AggregateId
    kind: GatheringKind = Field(description="Art-of-Hosting event or small-group meeting.")
    region: Region | Declined | None = Field(  # the profile's own answer type
        None, description="Region where the gathering was held."
    )
    attendee_count: int = Field(ge=1, le=5000, description="Everyone who attended, profiled or not.")
    profiles: list[Profile] = Field(
        default_factory=list,
        max_length=MAX_PROFILES_PER_GATHERING,
        description="Self-identified profiles of the attendees who chose to give one "
        f"(at most {MAX_PROFILES_PER_GATHERING}).",
    )

    @model_validator(mode="after")
    def _no_more_profiles_than_people(self) -> GatheringHeld:
        if len(self.profiles) > self.attendee_count:
            raise ValueError("more profiles than attendees")
        return self


class SurveyCompleted(_Payload):
    type: Literal["SurveyCompleted"] = "SurveyCompleted"
    response_id: AggregateId
    profile: Profile = Field(default_factory=Profile, description="What the respondent chose to say.")


class AdvisoryMemberJoined(_Payload):
    type: Literal["AdvisoryMemberJoined"] = "AdvisoryMemberJoined"
    participant_ref: ParticipantRef
    profile: Profile = Field(default_factory=Profile, description="What the member chose to say.")


class AdvisoryFeedbackLogged(_Payload):
    type: Literal["AdvisoryFeedbackLogged"] = "AdvisoryFeedbackLogged"
    feedback_id: AggregateId
    topic: FeedbackTopic = Field(description="What the feedback was about (a category, never free text).")
    member_refs: list[ParticipantRef] = Field(
        default_factory=list, max_length=100, description="Members who gave the feedback, if recorded."
    )


class ParticipantWithdrawn(_Payload):
    type: Literal["ParticipantWithdrawn"] = "ParticipantWithdrawn"
    participant_ref: ParticipantRef


# What an export may hold: microdata (a row per engagement, a row per participant) and aggregate tables.
ExportTable = Literal["engagements", "participants", "coverage", "totals"]
ExportFormat = Literal["csv", "parquet"]


class DataExported(_Payload):
    """Data left analytics as an export: who asked (by their token's name, never the token), under
    which scope, what the export held and which point of the log it reflects. The audit trail of
    exports; it engages no one and counts no one."""

    type: Literal["DataExported"] = "DataExported"
    export_id: AggregateId = Field(description="The export's id (`ex-` and random characters); one subject each.")
    requested_by: str = Field(
        min_length=1,
        max_length=100,
        description="The name the settings give the token that asked for the export; never the token itself.",
    )
    scope: Literal["analyst:read", "coverage:read", "admin"] = Field(
        description="The scope the export was made under: `analyst:read` (microdata, exact counts) or "
        "`coverage:read` (the coordinators' aggregate tables, small counts protected)."
    )
    tables: list[ExportTable] = Field(min_length=1, max_length=4, description="The tables exported.")
    formats: list[ExportFormat] = Field(min_length=1, max_length=2, description="The file formats written.")
    k_anonymity: int | None = Field(
        None, ge=2, le=100, description="The k-anonymity target the microdata were generalised to, if one was set."
    )
    generalised: list[Annotated[str, Field(pattern=r"^[a-z_]{1,40}(:[a-z_]{1,40})?$")]] = Field(
        default_factory=list,
        max_length=20,
        description="The generalisations applied to the microdata, by name (e.g. `multi_select`, `drop:gender`).",
    )
    rows: dict[ExportTable, Annotated[int, Field(ge=0)]] = Field(description="Rows in each exported table.")
    participants: int = Field(ge=0, description="Participants in the microdata (0 when only aggregates left).")
    sample_uniques: int | None = Field(
        None, ge=0, description="Microdata: participants alone in their quasi-identifier class, as released."
    )
    smallest_class: int | None = Field(
        None, ge=0, description="Microdata: the size of the smallest quasi-identifier class, as released."
    )
    suppressed_values: int | None = Field(
        None, ge=0, description="Microdata: quasi-identifier values suppressed to reach the k-anonymity target."
    )
    reflects_sequence: int = Field(ge=0, description="The event log's stream sequence the export reflects.")


Payload = Annotated[
    InterviewScheduled
    | InterviewRescheduled
    | InterviewCancelled
    | InterviewNoShow
    | InterviewCompleted
    | GatheringHeld
    | SurveyCompleted
    | AdvisoryMemberJoined
    | AdvisoryFeedbackLogged
    | ParticipantWithdrawn
    | DataExported,
    Field(discriminator="type"),
]

# The aggregate each event belongs to, and the payload field that names its id:
# one subject per aggregate, so JetStream can check concurrency per aggregate.
AGGREGATE_OF: dict[str, tuple[str, str]] = {
    "InterviewScheduled": ("interview", "interview_id"),
    "InterviewRescheduled": ("interview", "interview_id"),
    "InterviewCancelled": ("interview", "interview_id"),
    "InterviewNoShow": ("interview", "interview_id"),
    "InterviewCompleted": ("interview", "interview_id"),
    "GatheringHeld": ("gathering", "gathering_id"),
    "SurveyCompleted": ("survey-response", "response_id"),
    "AdvisoryMemberJoined": ("advisory-member", "participant_ref"),
    "AdvisoryFeedbackLogged": ("advisory-feedback", "feedback_id"),
    "ParticipantWithdrawn": ("participant", "participant_ref"),
    "DataExported": ("export", "export_id"),
}


def subject_for(process_id: str, aggregate: str, aggregate_id: str) -> str:
    """``engagement.<process>.<aggregate>.<id>``: one subject per aggregate."""
    return f"engagement.{process_id}.{aggregate}.{aggregate_id}"


def _now() -> datetime:
    return datetime.now(UTC)


Source = Literal["intake", "survey", "advisory", "demo", "analytics"]


class Envelope(BaseModel):
    """One event on the log: metadata around exactly one payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: EventId
    type: str = Field(description="The payload's type, repeated for routing and filtering.")
    schema_version: int = Field(SCHEMA_VERSION, ge=1, description="Version of this event type's schema.")
    process_id: ProcessId
    occurred_at: Timestamp = Field(description="When it happened in the world.")
    recorded_at: Timestamp = Field(description="When a service recorded it.")
    source: Source = Field(description="The service that recorded it.")
    correlation_id: str = Field(max_length=64, pattern=r"^[0-9A-Za-z._-]+$", description="Ties related events.")
    payload: Payload

    @model_validator(mode="after")
    def _type_matches_payload(self) -> Envelope:
        if self.type != self.payload.type:
            raise ValueError(f"does not match the payload's type ({self.payload.type})")
        return self

    @classmethod
    def wrap(
        cls,
        payload: Payload,
        *,
        process_id: str,
        source: Source,
        event_id: uuid.UUID | str | None = None,
        occurred_at: datetime | None = None,
        correlation_id: str | None = None,
    ) -> Envelope:
        """Put ``payload`` in a new envelope stamped now."""
        now = _now()
        event_id = str(event_id or uuid.uuid4())
        return cls(
            event_id=event_id,
            type=payload.type,
            process_id=process_id,
            occurred_at=occurred_at or now,
            recorded_at=now,
            source=source,
            correlation_id=correlation_id or event_id.replace("-", ""),
            payload=payload,
        )

    @property
    def aggregate(self) -> str:
        return AGGREGATE_OF[self.type][0]

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self.payload, AGGREGATE_OF[self.type][1]))

    @property
    def subject(self) -> str:
        return subject_for(self.process_id, self.aggregate, self.aggregate_id)


ENVELOPE = TypeAdapter(Envelope)
