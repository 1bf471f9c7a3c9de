"""Random populations of participant states, for tests of what coordinators may see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from services.analytics.projection.fold import ParticipantState
from shared.profile import Profile

REGIONS = ["twin_cities_west_metro", "northeast", "central", "west_central", "declined", None]
YES_NO = ["yes", "no", "declined", None]
GENDERS = [["female"], ["male"], ["non_binary"], ["female", "transgender"], "declined", None]
CHANNELS = ["survey", "interview_phone", "art_of_hosting", "advisory"]
START = datetime(2018, 3, 5, 15, tzinfo=UTC)


def person(region: object, lived: object, gender: object, channels: dict[str, int], day: int) -> ParticipantState:
    """One participant: a profile, engagements per channel, all on one day (``day`` after the start)."""
    profile = Profile.model_validate(
        {k: v for k, v in {"region": region, "lived_experience": lived, "gender": gender}.items() if v is not None}
    )
    seen = START + timedelta(days=day)
    used = {c: n for c, n in channels.items() if n}
    first = min(used) if used else None
    return ParticipantState(
        profile=profile,
        channels=used,
        days={f"{seen.date().isoformat()}/{c}": n for c, n in used.items()},
        first_channel=first,
        first_seen=seen if used else None,
        last_seen=seen if used else None,
    )


people = st.builds(
    person,
    st.sampled_from(REGIONS),
    st.sampled_from(YES_NO),
    st.sampled_from(GENDERS),
    st.dictionaries(st.sampled_from(CHANNELS), st.integers(1, 3), min_size=1, max_size=2),
    st.integers(0, 20),
)
populations = st.lists(people, max_size=60)


def keyed(states: list[ParticipantState]) -> list[tuple[int, ParticipantState]]:
    """States with distinct record keys (as a release gives them)."""
    return [((i + 1) * 0x9E3779B97F4A7C15 % (1 << 64), s) for i, s in enumerate(states)]
