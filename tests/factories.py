"""Factories for events with random ids, so tests never share state by accident."""

from __future__ import annotations

import random
import secrets
from datetime import UTC, datetime, timedelta

from shared.events import (
    Attendee,
    Envelope,
    GatheringHeld,
    GatheringKind,
    InterviewCompleted,
    InterviewFormat,
    ParticipantWithdrawn,
    SurveyCompleted,
)
from shared.profile import Profile


def ref() -> str:
    return "p-" + secrets.token_hex(6)


def agg(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def when(days_ago: float = 0) -> datetime:
    return datetime.now(UTC) - timedelta(days=days_ago)


def survey(profile: Profile | None = None, process_id: str = "shfa-2018", **fields: object) -> Envelope:
    prof = profile or Profile(**fields)
    return Envelope.wrap(SurveyCompleted(response_id=agg("sr"), profile=prof), process_id=process_id, source="survey")


def interview(participant: str | None = None, profile: Profile | None = None, **fields: object) -> Envelope:
    attendee = Attendee(participant_ref=participant or ref(), profile=profile or Profile(**fields))
    return Envelope.wrap(
        InterviewCompleted(interview_id=agg("iv"), format=InterviewFormat.in_person, participants=[attendee]),
        process_id="shfa-2018",
        source="intake",
    )


def gathering(attendees: int, profiles: list[Profile]) -> Envelope:
    return Envelope.wrap(
        GatheringHeld(
            gathering_id=agg("gh"), kind=GatheringKind.art_of_hosting, attendee_count=attendees, profiles=profiles
        ),
        process_id="shfa-2018",
        source="intake",
    )


def withdrawn(participant: str) -> Envelope:
    return Envelope.wrap(ParticipantWithdrawn(participant_ref=participant), process_id="shfa-2018", source="intake")


REGIONS = [
    "twin_cities_west_metro",
    "twin_cities_east_metro",
    "northeast",
    "southwest",
    "northwest",
    "central",
    "southeast",
    "west_central",
]


def random_profile(rng: random.Random) -> Profile:
    """A plausible self-identified profile; some questions unanswered or declined."""

    def maybe(value: object) -> object:
        r = rng.random()
        return None if r < 0.1 else "declined" if r < 0.15 else value

    return Profile(
        region=maybe(rng.choice(REGIONS)),
        lived_experience=maybe(rng.choice(["yes", "no"])),
        race_ethnicity=maybe(
            rng.sample(["white", "black", "indigenous", "asian", "latinx", "immigrant"], rng.choice([1, 1, 1, 2]))
        ),
        gender=maybe(rng.sample(["female", "male", "transgender", "non_binary"], 1)),
        age_band=maybe(rng.choice(["18-24", "25-34", "35-44", "45-54", "55-64", "65+"])),
    )
