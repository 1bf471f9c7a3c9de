"""Recent activity for the coordinators' feed: what happened, where and when, never who.

Pure: events in, feed items out. An item carries the kind of event, its channel, the
region the event itself names (an interview's region from its scheduling, a gathering's
region) and a feedback topic; never a participant reference, a profile, an attendee
count or an id, so the feed cannot single anyone out beyond what coordinators schedule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.events import (
    INTERVIEW_CHANNEL,
    AdvisoryFeedbackLogged,
    AdvisoryMemberJoined,
    Channel,
    Envelope,
    GatheringHeld,
    InterviewCancelled,
    InterviewCompleted,
    InterviewNoShow,
    InterviewRescheduled,
    InterviewScheduled,
    ParticipantWithdrawn,
    SurveyCompleted,
)
from shared.profile import Declined, Region

# Feed items kept per process. A batch adds only its own latest KEEP, and older ones are
# trimmed, so the table always holds exactly the latest KEEP items, however the log was
# cut into batches: a rebuild's feed equals the live one.
KEEP = 50
PER_BATCH = KEEP

LABELS = {
    "interview_scheduled": "Interview scheduled",
    "interview_rescheduled": "Interview rescheduled",
    "interview_cancelled": "Interview cancelled",
    "interview_no_show": "Interview missed",
    "interview_completed": "Interview completed",
    "gathering_held": "Gathering held",
    "survey_completed": "Survey response received",
    "advisory_member_joined": "Advisory member joined",
    "advisory_feedback_logged": "Advisory feedback logged",
    "participant_withdrawn": "A participant withdrew",
}


@dataclass(frozen=True)
class Item:
    """One line of the feed."""

    process_id: str
    sequence: int
    kind: str
    channel: str | None
    region: str | None
    topic: str | None
    occurred_at: datetime
    recorded_at: datetime
    interview_id: str | None = None  # to look up the region; never stored or shown


def place_of(region: Region | Declined | None) -> str | None:
    """Where an event took place, as a region code; a declined or unknown place is no place."""
    return region.value if isinstance(region, Region) else None


def regions_scheduled(events: Iterable[Envelope]) -> dict[tuple[str, str], str]:
    """(process, interview) -> region, from the scheduling events that name one."""
    found: dict[tuple[str, str], str] = {}
    for ev in events:
        if isinstance(ev.payload, InterviewScheduled) and (place := place_of(ev.payload.region)) is not None:
            found[(ev.process_id, ev.payload.interview_id)] = place
    return found


def items(events: Sequence[tuple[int, Envelope]], regions: Mapping[tuple[str, str], str]) -> list[Item]:
    """The feed items of a batch, its latest ``PER_BATCH`` per process at most."""
    out: list[Item] = []
    per_process: dict[str, int] = {}
    for seq, ev in reversed(events):
        if per_process.get(ev.process_id, 0) >= PER_BATCH:
            continue
        item = _item(seq, ev, regions)
        if item is not None:
            per_process[ev.process_id] = per_process.get(ev.process_id, 0) + 1
            out.append(item)
    out.reverse()
    return out


def _item(seq: int, ev: Envelope, regions: Mapping[tuple[str, str], str]) -> Item | None:
    p = ev.payload
    channel: str | None = None
    region: str | None = None
    topic: str | None = None
    interview_id: str | None = None
    if isinstance(p, InterviewScheduled):
        kind, channel, interview_id = "interview_scheduled", INTERVIEW_CHANNEL[p.format].value, p.interview_id
        region = place_of(p.region)
    elif isinstance(p, (InterviewRescheduled, InterviewCancelled, InterviewNoShow, InterviewCompleted)):
        kind = {
            InterviewRescheduled: "interview_rescheduled",
            InterviewCancelled: "interview_cancelled",
            InterviewNoShow: "interview_no_show",
            InterviewCompleted: "interview_completed",
        }[type(p)]
        interview_id = p.interview_id
        region = regions.get((ev.process_id, p.interview_id))
        if isinstance(p, InterviewCompleted):
            channel = INTERVIEW_CHANNEL[p.format].value
    elif isinstance(p, GatheringHeld):
        kind, channel, region = "gathering_held", Channel(p.kind.value).value, place_of(p.region)
    elif isinstance(p, SurveyCompleted):
        kind, channel = "survey_completed", Channel.survey.value
    elif isinstance(p, AdvisoryMemberJoined):
        kind, channel = "advisory_member_joined", Channel.advisory.value
    elif isinstance(p, AdvisoryFeedbackLogged):
        kind, channel, topic = "advisory_feedback_logged", Channel.advisory.value, p.topic.value
    elif isinstance(p, ParticipantWithdrawn):
        kind = "participant_withdrawn"
    else:  # a payload type this feed does not know yet says nothing
        return None
    return Item(ev.process_id, seq, kind, channel, region, topic, ev.occurred_at, ev.recorded_at, interview_id)
