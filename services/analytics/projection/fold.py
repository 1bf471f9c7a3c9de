"""The fold: events into participant states, and states into count changes. No I/O, no awaits.

A participant's contribution to the counts is a function of their state alone (profile,
engagements per channel, withdrawn or not). Projecting a batch touches some
participants; the count changes are "contribution after" minus "contribution before"
for each of them. That one rule covers new people, a second engagement that adds to a
profile, and a withdrawal (whose contribution after is nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from services.analytics.projection.engages import Key, person_key, touches
from shared.events import Channel, Envelope
from shared.profile import DECLINED, MULTI_SELECT, Profile

ANSWERED = "__answered__"
ALONE = "alone:"  # "alone:white": chose white and nothing else (beside "white" alone or in combination)
DEFAULT_TZ = ZoneInfo("America/Chicago")
PARTICIPANTS = "participants"
ENGAGEMENTS = "engagements"


@dataclass(frozen=True)
class ParticipantState:
    """What the read model knows of one participant."""

    profile: Profile = field(default_factory=Profile)
    channels: Mapping[str, int] = field(default_factory=dict)
    days: Mapping[str, int] = field(default_factory=dict)  # "2018-03-05/interview_phone" -> engagements
    first_channel: str | None = None
    withdrawn: bool = False
    first_seen: datetime | None = None
    last_seen: datetime | None = None


@dataclass
class Changes:
    """The effect of a batch: new participant states and count deltas (zeros dropped)."""

    participants: dict[Key, ParticipantState] = field(default_factory=dict)
    categories: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    engagements: Counter[tuple[str, str]] = field(default_factory=Counter)
    totals: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (process, day, channel) -> engagements that day, and participants first reached that day
    daily: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    firsts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    event_times: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)


def add_contribution(
    changes: Changes, process_id: str, state: ParticipantState | None, sign: int = 1, tz: tzinfo = DEFAULT_TZ
) -> None:
    """Add (sign 1) or take away (sign -1) the counts one participant makes.

    An unknown or withdrawn participant makes none. (Rebuilds run this for every
    participant of the log, so it binds what it uses to locals.)
    """
    if state is None or state.withdrawn:
        return
    totals, categories = changes.totals, changes.categories
    totals[(process_id, PARTICIPANTS)] += sign
    engagements, daily = changes.engagements, changes.daily
    for channel, n in state.channels.items():
        engagements[(process_id, channel)] += sign * n
        totals[(process_id, ENGAGEMENTS)] += sign * n
    for day_channel, n in state.days.items():
        day, _, channel = day_channel.partition("/")
        daily[(process_id, day, channel)] += sign * n
    if state.first_seen is not None and state.first_channel is not None:
        changes.firsts[(process_id, day_of(state.first_seen, tz), state.first_channel)] += sign
    for dimension, chosen in state.profile.categories.items():
        for category in chosen:
            categories[(process_id, dimension, category)] += sign
        if chosen != _DECLINED_ONLY:
            categories[(process_id, dimension, ANSWERED)] += sign
            if len(chosen) == 1 and dimension in MULTI_SELECT:
                categories[(process_id, dimension, ALONE + chosen[0])] += sign


_DECLINED_ONLY = (DECLINED,)
RECORDS = frozenset({"DataExported"})  # events on the log that record what engage did, engaging no one
_EPOCH = date(1970, 1, 1)
_BUCKET = 900  # seconds: every zone's offset changes only on a quarter hour
_OFFSETS: dict[tuple[tzinfo, int], float] = {}
_DAYS: dict[int, str] = {}


def day_of(at: datetime, tz: tzinfo) -> str:
    """The local calendar day of ``at``: Minnesota's evening events belong to their own day.

    The zone's offset is looked up once per quarter hour of time (a rebuild asks millions of times).
    """
    ts = at.timestamp()
    key = (tz, int(ts // _BUCKET))
    offset = _OFFSETS.get(key)
    if offset is None:
        if len(_OFFSETS) > 100_000:
            _OFFSETS.clear()
        delta = at.astimezone(tz).utcoffset()  # never None: an aware time in a zone
        offset = _OFFSETS[key] = delta.total_seconds() if delta is not None else 0.0
    day = int((ts + offset) // 86_400)
    text = _DAYS.get(day)
    if text is None:
        text = _DAYS[day] = (_EPOCH + timedelta(days=day)).isoformat()
    return text


def _engaged(
    state: ParticipantState, channel: Channel, profile: Profile | None, at: datetime, tz: tzinfo
) -> ParticipantState:
    if state.withdrawn:
        return state  # a withdrawn person stays out of every count
    code = channel._value_  # not .value: the enum property is slow on this path
    channels = dict(state.channels)
    channels[code] = channels.get(code, 0) + 1
    days = dict(state.days)
    day_channel = f"{day_of(at, tz)}/{code}"
    days[day_channel] = days.get(day_channel, 0) + 1
    first = state.first_seen is None or at < state.first_seen
    return ParticipantState(
        profile=state.profile.merged_with(profile) if profile is not None else state.profile,
        channels=channels,
        days=days,
        first_channel=code if first else state.first_channel,
        withdrawn=False,
        first_seen=at if first else state.first_seen,
        last_seen=max(state.last_seen, at) if state.last_seen else at,
    )


def project(events: Iterable[Envelope], known: Mapping[Key, ParticipantState], tz: tzinfo = DEFAULT_TZ) -> Changes:
    """Apply ``events`` (in log order) to the ``known`` participants they touch."""
    before: dict[Key, ParticipantState | None] = {}
    now: dict[Key, ParticipantState] = {}
    times: dict[str, tuple[datetime, datetime]] = {}

    def current(key: Key) -> ParticipantState:
        if key not in before:
            before[key] = known.get(key)
        return now.get(key) or before[key] or ParticipantState()

    def engage(key: Key, channel: Channel, profile: Profile | None, at: datetime) -> None:
        now[key] = _engaged(current(key), channel, profile, at, tz)

    for ev in events:
        p, proc, at = ev.payload, ev.process_id, ev.occurred_at
        if p.type in RECORDS:  # a record of ours (an export), not outreach: no part of its span
            continue
        first, last = times.get(proc, (at, at))
        times[proc] = (min(first, at), max(last, at))
        if p.type == "ParticipantWithdrawn":
            key = (proc, person_key(p.participant_ref))
            state = current(key)
            now[key] = replace(state, withdrawn=True, first_seen=state.first_seen or at, last_seen=at)
            continue
        for who, channel, profile in touches(ev):
            engage((proc, who), channel, profile, at)

    changes = Changes(participants=now, event_times=times)
    for key, state in now.items():
        add_contribution(changes, key[0], state, 1, tz)
        add_contribution(changes, key[0], before[key], -1, tz)
    for counter in (changes.categories, changes.engagements, changes.totals, changes.daily, changes.firsts):
        for k in [k for k, v in counter.items() if v == 0]:
            del counter[k]
    return changes
