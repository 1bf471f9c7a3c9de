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
from shared.plan import NO_RULES, DerivedRules
from shared.profile import DECLINED, MULTI_SELECT, Profile

ANSWERED = "__answered__"
ALONE = "alone:"  # "alone:white": chose white and nothing else (beside "white" alone or in combination)
DEFAULT_TZ = ZoneInfo("America/Chicago")
PARTICIPANTS = "participants"
ENGAGEMENTS = "engagements"
PROFILED = "profiled"  # participants who gave a profile: answered or declined any question


_NO_PROFILE = Profile()  # frozen: one empty profile serves every new participant, validated once


@dataclass(frozen=True)
class ParticipantState:
    """What the read model knows of one participant."""

    profile: Profile = _NO_PROFILE
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
    people: Counter[tuple[str, str]] = field(default_factory=Counter)  # (process, channel) -> participants who used it
    totals: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (process, day, channel) -> engagements that day, and participants first reached that day
    daily: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    firsts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    event_times: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    # Only with ``project(..., dated=True)``, for as-of answers (``store.dated``):
    # (process, UTC day of the participant's last engagement, item) -> change of their contribution
    dated: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    # engagements of participants engaged more than once: (participant, index of the event in
    # the batch, or -1 for their one engagement before it, when, channel, what they said)
    touches: list[tuple[Key, int, datetime, str, Profile | None]] = field(default_factory=list)
    forget: set[Key] = field(default_factory=set)  # withdrew in this batch: their engagements go
    moments: set[tuple[str, datetime]] = field(default_factory=set)  # (process, when) of each event


def add_contribution(
    changes: Changes,
    process_id: str,
    state: ParticipantState | None,
    sign: int = 1,
    tz: tzinfo = DEFAULT_TZ,
    derived: DerivedRules = NO_RULES,
    *,
    over_time: bool = True,
) -> None:
    """Add (sign 1) or take away (sign -1) the counts one participant makes (without
    ``over_time``, not the days: only the counts of one moment).

    Everything an answer needs is a sum of these contributions, so the read models keep it
    as running counters: totals, engagements and people per channel, those who gave a
    profile, each category (with the answered and "alone" counts), the days, and the
    plan's ``derived`` groups (:meth:`shared.plan.Plan.derived_rule_list`) the participant
    falls in. An unknown or withdrawn participant makes none. (Rebuilds run this for every
    participant of the log, so it binds what it uses to locals.)
    """
    if state is None or state.withdrawn:
        return
    totals, categories = changes.totals, changes.categories
    totals[(process_id, PARTICIPANTS)] += sign
    engagements, daily, people = changes.engagements, changes.daily, changes.people
    for channel, n in state.channels.items():
        engagements[(process_id, channel)] += sign * n
        totals[(process_id, ENGAGEMENTS)] += sign * n
        if n:
            people[(process_id, channel)] += sign
    if over_time:
        for day_channel, n in state.days.items():
            day, _, channel = day_channel.partition("/")
            daily[(process_id, day, channel)] += sign * n
        if state.first_seen is not None and state.first_channel is not None:
            changes.firsts[(process_id, day_of(state.first_seen, tz), state.first_channel)] += sign
    chosen_of = state.profile.categories
    if chosen_of:
        totals[(process_id, PROFILED)] += sign
    for dimension, chosen in chosen_of.items():
        for category in chosen:
            categories[(process_id, dimension, category)] += sign
        if chosen != _DECLINED_ONLY:
            categories[(process_id, dimension, ANSWERED)] += sign
            if len(chosen) == 1 and dimension in MULTI_SELECT:
                categories[(process_id, dimension, ALONE + chosen[0])] += sign
    if derived:
        for group in derived.groups(chosen_of):
            categories[(process_id, *group)] += sign


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


def project(
    events: Iterable[Envelope],
    known: Mapping[Key, ParticipantState],
    tz: tzinfo = DEFAULT_TZ,
    derived: Mapping[str, DerivedRules] | None = None,
    *,
    dated: bool = False,
) -> Changes:
    """Apply ``events`` (in log order) to the ``known`` participants they touch; ``derived``:
    each process's plan groups to count (:func:`add_contribution`); ``dated``: also what as-of
    answers are made of (``Changes.dated``, ``touches``, ``forget``, ``moments``)."""
    before: dict[Key, ParticipantState | None] = {}
    now: dict[Key, ParticipantState] = {}
    times: dict[str, tuple[datetime, datetime]] = {}
    engaged: dict[Key, list[tuple[int, datetime, str, Profile | None]]] = {}
    moments: set[tuple[str, datetime]] = set()

    def current(key: Key) -> ParticipantState:
        if key not in before:
            before[key] = known.get(key)
        return now.get(key) or before[key] or ParticipantState()

    for i, ev in enumerate(events):
        p, proc, at = ev.payload, ev.process_id, ev.occurred_at
        if p.type in RECORDS:  # a record of ours (an export), not outreach: no part of its span
            continue
        first, last = times.get(proc, (at, at))
        times[proc] = (min(first, at), max(last, at))
        if dated:
            moments.add((proc, at))
        if p.type == "ParticipantWithdrawn":
            key = (proc, person_key(p.participant_ref))
            state = current(key)
            now[key] = replace(state, withdrawn=True, first_seen=state.first_seen or at, last_seen=at)
            continue
        for who, channel, profile in touches(ev):
            key = (proc, who)
            now[key] = _engaged(current(key), channel, profile, at, tz)
            if dated:
                engaged.setdefault(key, []).append((i, at, channel._value_, profile))

    changes = Changes(participants=now, event_times=times, moments=moments)
    rules = derived or {}
    if dated:
        _dated(changes, now, before, engaged, rules, tz)
    else:
        for key, state in now.items():
            add_contribution(changes, key[0], state, 1, tz, rules.get(key[0], NO_RULES))
            add_contribution(changes, key[0], before[key], -1, tz, rules.get(key[0], NO_RULES))
    counters = (changes.categories, changes.engagements, changes.people, changes.totals, changes.daily, changes.firsts)
    for counter in (*counters, changes.dated):
        for k in [k for k, v in counter.items() if v == 0]:
            del counter[k]
    return changes


def state_as_of(
    engagements: Iterable[tuple[datetime, str, Profile | None]], moment: datetime, tz: tzinfo = DEFAULT_TZ
) -> ParticipantState | None:
    """A participant's state as of ``moment``, from their engagements in log order (``Changes.touches``):
    the fold of those that had happened by then; None if none had."""
    state = None
    for at, channel, profile in engagements:
        if at <= moment:
            state = _engaged(state or ParticipantState(), Channel(channel), profile, at, tz)
    return state


def category_item(dimension: str, category: str = "") -> str:
    """A category's name among the dated counters (``dated_counts.item``); with no category,
    the prefix every category of ``dimension`` shares."""
    return f"category:{dimension}\x1f{category}"


def utc_day(at: datetime) -> int:
    """The UTC day of ``at``, as days since 1970-01-01: as-of answers' unit of counters."""
    return int(at.timestamp() // 86_400)


def engagements_of(state: ParticipantState) -> int:
    return sum(state.channels.values())


def _dated(
    changes: Changes,
    now: Mapping[Key, ParticipantState],
    before: Mapping[Key, ParticipantState | None],
    engaged: Mapping[Key, list[tuple[int, datetime, str, Profile | None]]],
    rules: Mapping[str, DerivedRules],
    tz: tzinfo,
) -> None:
    """The count changes of a batch, and what as-of answers need of it: each changed
    participant's contribution taken from the UTC day of their last engagement before and
    added under the day of it after (one pass: the live changes are those summed over the
    days), and the engagements of everyone engaged more than once (with the one before the
    batch rebuilt from its state: a participant engaged once has the state it made)."""
    scratch = Changes()  # keyed by "<process>\x00<day>" where the live changes have the process
    for key, state in now.items():
        was = before[key]
        proc = key[0]
        plan_rules = rules.get(proc, NO_RULES)
        if state.last_seen is not None:
            add_contribution(scratch, f"{proc}\x00{utc_day(state.last_seen)}", state, 1, tz, plan_rules)
        if was is not None and was.last_seen is not None:
            add_contribution(scratch, f"{proc}\x00{utc_day(was.last_seen)}", was, -1, tz, plan_rules)
        if state.withdrawn:
            if was is not None and not was.withdrawn:
                changes.forget.add(key)
            continue
        if engagements_of(state) < 2:
            continue
        if was is not None and engagements_of(was) == 1 and was.first_seen is not None and was.first_channel:
            changes.touches.append((key, -1, was.first_seen, was.first_channel, was.profile))
        changes.touches.extend((key, *t) for t in engaged.get(key, ()))
    dated = changes.dated
    for (where, name), n in scratch.totals.items():
        proc, _, day = where.partition("\x00")
        changes.totals[(proc, name)] += n
        dated[(proc, int(day), f"total:{name}")] += n
    for (where, channel), n in scratch.engagements.items():
        proc, _, day = where.partition("\x00")
        changes.engagements[(proc, channel)] += n
        dated[(proc, int(day), f"engagements:{channel}")] += n
    for (where, channel), n in scratch.people.items():
        proc, _, day = where.partition("\x00")
        changes.people[(proc, channel)] += n
        dated[(proc, int(day), f"people:{channel}")] += n
    for (where, dimension, category), n in scratch.categories.items():
        proc, _, day = where.partition("\x00")
        changes.categories[(proc, dimension, category)] += n
        dated[(proc, int(day), category_item(dimension, category))] += n
    for (where, local_day, channel), n in scratch.daily.items():
        changes.daily[(where.partition("\x00")[0], local_day, channel)] += n
    for (where, local_day, channel), n in scratch.firsts.items():
        changes.firsts[(where.partition("\x00")[0], local_day, channel)] += n
