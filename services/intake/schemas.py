"""What coordinators send and get back: imperative request bodies and their answers.

Bodies are strict (unknown fields are refused) and every field is described, since this
file is the HTTP contract as OpenAPI shows it. There is no free-text field anywhere: a
profile is categories, a cancellation reason is a category. The only personal details
intake accepts are contact details for scheduling, and they stay in intake's table.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.events import (
    MAX_PROFILES_PER_GATHERING,
    AggregateId,
    CancelReason,
    FeedbackTopic,
    GatheringKind,
    InterviewFormat,
    ParticipantRef,
    PastTimestamp,
    ProcessId,
    Timestamp,
)
from shared.profile import Profile, Region, StatedProfile


class _Body(BaseModel):
    """A request body or a part of one: unknown fields are refused, and it is frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Command(_Body):
    """What every write carries besides its own fields: when it happened and in which process."""

    occurred_at: PastTimestamp | None = Field(
        None,
        description="When this happened, with a time zone, if it is being recorded after the fact. "
        "Defaults to now; may not be before 2000-01-01 or in the future.",
    )
    process_id: ProcessId | None = Field(
        None, description="The engagement process this belongs to; defaults to the service's process."
    )


class ContactDetails(_Body):
    """How to reach the person to arrange the interview. Kept only in intake's own table,
    deleted when the interview ends; never written to the event log."""

    name: str | None = Field(None, min_length=1, max_length=200, description="Name to ask for.")
    phone: str | None = Field(None, min_length=1, max_length=50, description="Phone number to call or text.")
    email: str | None = Field(None, min_length=3, max_length=254, description="E-mail address.")


class ScheduleInterview(Command):
    """Schedule an interview with one participant or a small group."""

    format: InterviewFormat = Field(description="One-on-one in person, by phone, or a small group.")
    scheduled_for: Timestamp = Field(
        description="When the interview is to take place, with a time zone; from 2000-01-01 to 5 years ahead."
    )
    region: Region | None = Field(None, description="Region where the interview takes place, if known.")
    expected_participants: int = Field(1, ge=1, le=50, description="How many people are expected.")
    participant_ref: ParticipantRef | None = Field(
        None, description="Reference of a participant intake already knows; omit to issue a new one."
    )
    contact: ContactDetails | None = Field(
        None, description="Contact details for scheduling only; deleted when the interview ends."
    )


class RescheduleInterview(Command):
    """Move an open interview to a new time."""

    scheduled_for: Timestamp = Field(description="The new time, with a time zone; from 2000-01-01 to 5 years ahead.")


class CancelInterview(Command):
    """Cancel an open interview."""

    reason: CancelReason = Field(description="Why it was cancelled (a category, never free text).")


class MarkNoShow(Command):
    """Record that nobody came to an open interview."""


class CompletedParticipant(_Body):
    """One person who took part, with what they chose to say about themselves."""

    participant_ref: ParticipantRef | None = Field(
        None,
        description="Their reference. Omit for the person the interview was scheduled with; "
        "in a small group, others without one are issued a new reference.",
    )
    profile: StatedProfile = Field(default_factory=Profile, description="What this participant chose to say.")


class CompleteInterview(Command):
    """Record that an open interview took place, and who took part."""

    participants: list[CompletedParticipant] = Field(
        min_length=1, max_length=50, description="Everyone who took part (exactly one for a one-on-one)."
    )


class RecordGathering(Command):
    """Record an Art-of-Hosting event or small-group meeting that was held."""

    kind: GatheringKind = Field(description="Art-of-Hosting event or small-group meeting.")
    region: Region | None = Field(None, description="Region where the gathering was held.")
    attendee_count: int = Field(ge=1, le=5000, description="Everyone who attended, profiled or not.")
    profiles: list[StatedProfile] = Field(
        default_factory=list,
        max_length=MAX_PROFILES_PER_GATHERING,
        description="Self-identified profiles of the attendees who chose to give one "
        f"(at most {MAX_PROFILES_PER_GATHERING}).",
    )


class AddAdvisoryMember(Command):
    """Record that someone joined the advisory group."""

    participant_ref: ParticipantRef | None = Field(
        None, description="Their reference if intake already knows them; omit to issue a new one."
    )
    profile: StatedProfile = Field(default_factory=Profile, description="What the member chose to say.")


class LogAdvisoryFeedback(Command):
    """Record that the advisory group gave feedback on a topic."""

    topic: FeedbackTopic = Field(description="What the feedback was about (a category, never free text).")
    member_refs: list[ParticipantRef] = Field(
        default_factory=list, max_length=100, description="Members who gave the feedback, if recorded."
    )


class WithdrawParticipant(Command):
    """A participant asked to be withdrawn: they leave every count, live and on replay."""


# Answers ------------------------------------------------------------------------------

Sequence = Annotated[int, Field(ge=1, description="Where the event sits on the event log.")]
EventId = Annotated[str, Field(description="Id of the stored event (the same on a retried request).")]


class InterviewAnswer(BaseModel):
    """An interview after the request: its id, status, and the event that recorded it."""

    interview_id: AggregateId
    participant_ref: ParticipantRef | None = Field(
        None, description="The participant the interview was scheduled with (on scheduling)."
    )
    participant_refs: list[str] | None = Field(
        None, description="Everyone who took part, in the order given (on completion)."
    )
    status: str = Field(description="scheduled, cancelled, no_show or completed.")
    event_id: EventId
    sequence: Sequence


class GatheringAnswer(BaseModel):
    gathering_id: AggregateId
    event_id: EventId
    sequence: Sequence


class AdvisoryMemberAnswer(BaseModel):
    participant_ref: ParticipantRef
    event_id: EventId
    sequence: Sequence


class FeedbackAnswer(BaseModel):
    feedback_id: AggregateId
    event_id: EventId
    sequence: Sequence


class WithdrawalAnswer(BaseModel):
    participant_ref: ParticipantRef
    status: str = Field("withdrawn", description="Always `withdrawn`.")
    event_id: EventId
    sequence: Sequence
