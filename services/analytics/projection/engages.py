"""Who an event engages: the one mapping from an event to the participants it counts.

The projection, its look-up of known participants, the feed and the export all use it,
so they can never disagree on who took part. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.events import INTERVIEW_CHANNEL, Channel, Envelope
from shared.profile import Profile

Key = tuple[str, str]  # (process id, participant key)


def person_key(ref: str) -> str:
    return f"ref:{ref}"


def survey_key(response_id: str) -> str:
    return f"survey:{response_id}"


def attendee_key(gathering_id: str, index: int) -> str:
    return f"gathering:{gathering_id}:{index}"


Touch = tuple[str, Channel, Profile | None]  # (participant key, channel, what they said this time)


def touches(ev: Envelope) -> list[Touch]:
    """The participants one event engages, each with its channel and profile: the one place
    that says who an event counts (the projection, its key look-up and exports use it)."""
    p = ev.payload
    # Dispatch on the type tag, a plain string: isinstance against model classes goes through ABCMeta, slowly.
    if p.type == "SurveyCompleted":
        return [(survey_key(p.response_id), Channel.survey, p.profile)]
    if p.type == "InterviewCompleted":
        channel = INTERVIEW_CHANNEL[p.format]
        return [(person_key(a.participant_ref), channel, a.profile) for a in p.participants]
    if p.type == "GatheringHeld":
        channel, profiles = Channel(p.kind._value_), p.profiles
        return [
            (attendee_key(p.gathering_id, i), channel, profiles[i] if i < len(profiles) else None)
            for i in range(p.attendee_count)
        ]
    if p.type == "AdvisoryMemberJoined":
        return [(person_key(p.participant_ref), Channel.advisory, p.profile)]
    if p.type == "AdvisoryFeedbackLogged":
        return [(person_key(ref), Channel.advisory, None) for ref in p.member_refs]
    return []  # interview scheduling changes no participation count; a withdrawal engages no one


def keys_of(events: Iterable[Envelope]) -> set[Key]:
    """Participants already known to the read model that a batch may touch."""
    keys: set[Key] = set()
    for ev in events:
        p = ev.payload
        if p.type == "ParticipantWithdrawn":
            keys.add((ev.process_id, person_key(p.participant_ref)))
        else:
            keys.update((ev.process_id, key) for key, _, _ in touches(ev))
    return keys
