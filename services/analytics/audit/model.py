"""Answers in, a linear model out: what every published number counts, and how those counts relate.

Pure: plain JSON answers (as analytics' HTTP API gives them, or as a saved set holds them)
in; variables, their boxes and the relations between them out. No I/O.

**Variables.** Each number is keyed by what it counts, so the same quantity asked two ways
is one variable: a kind (``people``, ``engagements``, or ``reached``: participants first
reached) and a set of conditions. Conditions are strings:

- ``dimension:category`` (their answer includes it; a derived group's category too),
  ``dimension:answered``, ``dimension:declined``, ``dimension:not_answered``,
  ``dimension:alone:category`` (a multi-select answer of that category alone);
- ``profile:given`` (gave a profile: answered or declined some question);
- ``channel:<channel>`` (the participant took part through it at least once);
- ``via:<channel>``, ``week:<Monday>``, ``day:<date>``: the engagement (or, for ``reached``,
  the participant's first engagement) was through that channel, in that week or on that day.

A segment's terms are conditions of everything in its answer, so "central among people with
lived experience" is one variable whether read as a row of the segment ``lived_experience:yes``
or of the segment ``region:central``. Variables belong to a state of the log (a release, or
a stream sequence, of one process): answers of different states, in one snapshot or in
snapshots taken one after another, count different people, and so have variables of their own.

**Boxes.** A shown value bounds its variable (:func:`shown_range`); every publication of a
variable is intersected. **Relations** hold for the true counts: the partitions of a
question (answered + declined + not answered; a single-select answer is exactly one
category), made wherever at most one of their counts was never shown; the bounds of a
multi-select; inclusion (more conditions, fewer people); the channels (engagements add up
over channels; a person who took part by a channel has at least one engagement through it);
over time (a period adds up over channels, periods add up to the channel's engagements, a
week to its days); and from one snapshot to the next (a count of people moves by at most
the number of participants changed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

PEOPLE = "people"
ENGAGEMENTS = "engagements"
REACHED = "reached"
KINDS = (PEOPLE, ENGAGEMENTS, REACHED)

CHANNEL = "channel"
VIA = "via"
WEEK = "week"
DAY = "day"
PROFILE = "profile"
GIVEN = "profile:given"
ANSWERED = "answered"
DECLINED = "declined"
NOT_ANSWERED = "not_answered"
ALONE = "alone:"
SPECIAL = frozenset({CHANNEL, VIA, WEEK, DAY, PROFILE})  # condition prefixes that are not profile questions
PERIODS = (WEEK, DAY)

CAP = 10_000_000.0  # more than any process will count: it keeps every program bounded
DEFAULT_K = 5
SUPPRESSED = "suppressed"
_EXACT, _CELLS, _ROUNDED = "none", "cells", "rounded"
_TOLERANCE = 1e-6
MAY_MISS = 1  # a partition is made when at most this many of its counts were never shown: it pins the one left

Conditions = frozenset[str]


class BadAnswers(ValueError):
    """The answers are not what analytics gives: the message names where and why, in one line."""


@dataclass(frozen=True, order=True)
class Quantity:
    """What a number counts: a kind and the conditions every counted person (or engagement) meets."""

    kind: str
    conditions: Conditions

    def __str__(self) -> str:
        return describe(self)


@dataclass(frozen=True)
class Snapshot:
    """Answers taken together, and how many participants changed since the snapshot before (None: unknown)."""

    answers: tuple[Mapping[str, Any], ...]
    changed_since_previous: int | None = None


@dataclass(frozen=True)
class State:
    """One state of the log within a snapshot: answers that reflect the same numbers."""

    snapshot: int
    source: str  # "release 1200", "sequence 873", or "unknown"
    k: int


@dataclass
class Variable:
    """One quantity in one state: its box, its small-count threshold, and where it was shown."""

    quantity: Quantity
    state: int
    k: int
    lo: float = 0.0
    hi: float = CAP
    shown: list[str] = field(default_factory=list)

    @property
    def published(self) -> bool:
        return bool(self.shown)


@dataclass(frozen=True)
class Relation:
    """``lo <= sum(coefficient * variable) <= hi``, and the rule it comes from."""

    terms: tuple[tuple[int, float], ...]
    lo: float
    hi: float
    rule: str

    def holds(self, values: Sequence[float]) -> bool:
        total = sum(c * values[i] for i, c in self.terms)
        return self.lo - _TOLERANCE <= total <= self.hi + _TOLERANCE

    @property
    def is_equation(self) -> bool:
        return self.lo == self.hi


@dataclass
class Model:
    variables: list[Variable]
    relations: list[Relation]
    states: list[State]
    index: dict[tuple[int, Quantity], int]
    conflicts: list[str]  # variables whose publications leave no value at all

    def find(self, state: int, kind: str, *conditions: str) -> int | None:
        """The variable of a quantity in a state, if the model has it (conditions as published)."""
        return self.index.get((state, Quantity(kind, normalize(kind, frozenset(conditions)))))

    def name(self, i: int) -> str:
        v = self.variables[i]
        return f"{describe(v.quantity)} (snapshot {self.states[v.state].snapshot}, {self.states[v.state].source})"

    @property
    def equations(self) -> int:
        return sum(r.is_equation for r in self.relations)


# --- shown values --------------------------------------------------------------------------------------------------


def method_of(suppression: Mapping[str, Any]) -> str:
    """``none`` (exact), ``cells`` (the old small-cell suppression) or ``rounded``."""
    if not suppression.get("applied", True):
        return _EXACT
    method = suppression.get("method")
    return _CELLS if method is None else str(method)


def shown_range(value: Any, suppression: Mapping[str, Any]) -> tuple[float, float]:
    """The true counts a shown value allows, as a closed interval (``CAP`` for no upper bound).

    ``none``: exactly the value. ``rounded`` (to base k): ``"<k"`` is 0 to k-1 and ``p`` is
    p-k+1 to p+k-1. ``cells``: ``"<k"`` is 1 to k-1, ``"suppressed"`` is k or more, an int is exact.
    """
    k = _k_of(suppression)
    method = method_of(suppression)
    if method not in (_EXACT, _CELLS, _ROUNDED):
        raise BadAnswers(f"suppression.method {method!r} is not one of none, cells, rounded")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadAnswers(f"{value!r} is not a count (an int, '<k' or 'suppressed')")
    if isinstance(value, int):
        if value < 0:
            raise BadAnswers(f"{value} is not a count (negative)")
        if method == _ROUNDED:
            return (0.0, k - 1.0) if value == 0 else (max(value - k + 1.0, 0.0), value + k - 1.0)
        return float(value), float(value)
    if value == SUPPRESSED:
        return float(k), CAP
    if value.startswith("<") and value[1:].isdigit():
        below = int(value[1:])
        return (0.0 if method == _ROUNDED else min(1.0, below - 1.0)), max(below - 1.0, 0.0)
    raise BadAnswers(f"{value!r} is not a count (an int, '<k' or 'suppressed')")


def _k_of(suppression: Mapping[str, Any]) -> int:
    k = suppression.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadAnswers(f"suppression.k {k!r} is not a positive int")
    return k


# --- conditions ----------------------------------------------------------------------------------------------------


def monday(day: str) -> str:
    """The Monday that starts the week of an ISO date (how over-time names a week)."""
    try:
        d = date.fromisoformat(day)
    except ValueError:
        raise BadAnswers(f"period {day!r} is not an ISO date") from None
    return (d - timedelta(days=d.weekday())).isoformat()


def normalize(kind: str, conditions: Iterable[str]) -> Conditions:
    """The conditions without those others imply: the same quantity gets the same key, however asked."""
    given = frozenset(conditions)
    out = set(given)
    for cond in given:
        dim, _, value = cond.partition(":")
        if dim == DAY:
            out.discard(f"{WEEK}:{monday(value)}")
        elif dim == VIA:
            if kind != PEOPLE:  # an engagement (or first engagement) through c: its person took part through c
                out.discard(f"{CHANNEL}:{value}")
        elif dim in SPECIAL or value == NOT_ANSWERED:
            continue
        else:  # answered, declined, a category, a category alone or a derived group: they gave a profile
            out.discard(GIVEN)
            if value.startswith(ALONE):
                out.discard(f"{dim}:{value[len(ALONE) :]}")
                out.discard(f"{dim}:{ANSWERED}")
            elif value not in (ANSWERED, DECLINED):
                out.discard(f"{dim}:{ANSWERED}")
    return frozenset(out)


def _parents(kind: str, conditions: Conditions, derived: frozenset[str]) -> list[Conditions]:
    """Condition sets that count everything ``conditions`` counts, and maybe more: one step up."""
    out: list[Conditions] = []
    for cond in conditions:
        rest = conditions - {cond}
        out.append(rest)
        dim, _, value = cond.partition(":")
        wider: str | None = None
        if dim == DAY:
            wider = f"{WEEK}:{monday(value)}"
        elif dim == VIA:
            wider = f"{CHANNEL}:{value}" if kind != PEOPLE else None
        elif dim in SPECIAL or value == NOT_ANSWERED:
            wider = None
        elif value.startswith(ALONE):
            wider = f"{dim}:{value[len(ALONE) :]}"
        elif value in (ANSWERED, DECLINED) or dim in derived:
            wider = GIVEN
        else:
            wider = f"{dim}:{ANSWERED}"
        if wider is not None:
            out.append(normalize(kind, rest | {wider}))
    return out


def _ancestors(kind: str, conditions: Conditions, exists: set[Conditions], derived: frozenset[str]) -> set[Conditions]:
    """The nearest condition sets above ``conditions`` that the model has."""
    found: set[Conditions] = set()
    seen, todo = {conditions}, [conditions]
    while todo:
        for up in _parents(kind, todo.pop(), derived):
            if up in seen:
                continue
            seen.add(up)
            if up in exists:
                found.add(up)
            else:
                todo.append(up)
    return found


def segment_conditions(segment: Any) -> Conditions:
    """A segment (``{"terms": [...]}``, or an older ``{"dimension", "category"}``, or None) as conditions."""
    if segment is None:
        return frozenset()
    if not isinstance(segment, Mapping):
        raise BadAnswers(f"segment {segment!r} is not an object")
    if isinstance(segment.get("terms"), list):
        terms = segment["terms"]
        if not all(isinstance(t, Mapping) and "dimension" in t and "category" in t for t in terms):
            raise BadAnswers(f"segment {segment.get('key')!r}: each term needs a dimension and a category")
        return frozenset(f"{t['dimension']}:{t['category']}" for t in terms)
    if "dimension" in segment and "category" in segment:
        return frozenset({f"{segment['dimension']}:{segment['category']}"})
    if isinstance(segment.get("key"), str):
        return frozenset(t.strip() for t in segment["key"].split(",") if t.strip())
    raise BadAnswers("segment has neither terms nor a dimension and category")


def segment_key(segment: Any) -> str | None:
    """A segment's canonical spelling, e.g. ``lived_experience:yes,region:central`` (None: the whole process)."""
    conditions = segment_conditions(segment)
    return ",".join(sorted(conditions)) if conditions else None


_PHRASES = {"lived_experience:yes": "with lived experience", "lived_experience:no": "without lived experience"}


def phrase(cond: str) -> str:
    """One condition in words."""
    if cond in _PHRASES:
        return _PHRASES[cond]
    dim, _, value = cond.partition(":")
    special = {
        CHANNEL: f"who took part by {value}",
        VIA: f"by {value}",
        WEEK: f"in the week of {value}",
        DAY: f"on {value}",
        PROFILE: "who gave a profile",
    }
    if dim in special:
        return special[dim]
    if value == ANSWERED:
        return f"who answered {dim}"
    if value == DECLINED:
        return f"who declined {dim}"
    if value == NOT_ANSWERED:
        return f"who did not answer {dim}"
    if value.startswith(ALONE):
        return f"{dim} = {value[len(ALONE) :]} alone"
    return f"{dim} = {value}"


def describe(quantity: Quantity) -> str:
    """A quantity in words, e.g. ``participants (region = central; without lived experience)``."""
    noun = {PEOPLE: "participants", ENGAGEMENTS: "engagements", REACHED: "participants first reached"}[quantity.kind]
    parts = sorted(phrase(c) for c in quantity.conditions)
    return f"{noun} ({'; '.join(parts)})" if parts else f"{noun} (all)"


# --- reading a saved set -------------------------------------------------------------------------------------------


def snapshots_from(data: Any) -> list[Snapshot]:
    """A saved set, ``{"snapshots": [{"changed_since_previous": int|null, "answers": [...]}, ...]}``, read."""
    if not isinstance(data, Mapping) or not isinstance(data.get("snapshots"), list):
        raise BadAnswers('is not a saved set of answers: expected {"snapshots": [...]}')
    out = []
    for i, snap in enumerate(data["snapshots"]):
        if not isinstance(snap, Mapping) or not isinstance(snap.get("answers"), list):
            raise BadAnswers(f"snapshots[{i}]: expected an object with a list of answers")
        changed = snap.get("changed_since_previous")
        if changed is not None and (isinstance(changed, bool) or not isinstance(changed, int) or changed < 0):
            raise BadAnswers(f"snapshots[{i}].changed_since_previous {changed!r} is not a count or null")
        for j, answer in enumerate(snap["answers"]):
            if not isinstance(answer, Mapping) or not ("periods" in answer or "participants" in answer):
                raise BadAnswers(f"snapshots[{i}].answers[{j}] is not a /coverage or /coverage/over-time answer")
        out.append(Snapshot(tuple(snap["answers"]), changed))
    return out


# --- building the model --------------------------------------------------------------------------------------------


@dataclass
class _Dimension:
    multi: bool
    derived: bool
    categories: set[str] = field(default_factory=set)


@dataclass
class _StateInfo:
    """What one state's answers tell beyond their numbers: the questions, the channels, the answers fetched."""

    dims: dict[str, _Dimension] = field(default_factory=dict)
    channels: set[str] = field(default_factory=set)
    own: set[Conditions] = field(default_factory=set)  # segments with an answer of their own
    people_by_channel: set[Conditions] = field(default_factory=set)  # ... whose answer has people_by_channel
    whole: bool = False  # the whole process's answer is there: every category and channel with anyone is listed
    over_time: dict[tuple[Conditions, str], dict[str, set[str]]] = field(default_factory=dict)
    release_every: int | None = None
    release_number: int | None = None


class _Builder:
    def __init__(self) -> None:
        self.variables: list[Variable] = []
        self.index: dict[tuple[int, Quantity], int] = {}
        self.relations: list[Relation] = []
        self.states: list[State] = []
        self.conflicts: list[str] = []
        self.implied: set[tuple[int, int]] = set()  # (smaller, larger) pairs other relations already bound
        self._made: set[tuple[tuple[tuple[int, float], ...], float, float]] = set()

    def var(self, state: int, kind: str, conditions: Iterable[str]) -> int:
        quantity = Quantity(kind, normalize(kind, conditions))
        key = (state, quantity)
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.variables)
            self.variables.append(Variable(quantity, state, self.states[state].k))
        return i

    def has(self, state: int, kind: str, conditions: Iterable[str]) -> int | None:
        return self.index.get((state, Quantity(kind, normalize(kind, conditions))))

    def publish(
        self, state: int, kind: str, conditions: Iterable[str], value: Any, suppression: Mapping[str, Any], where: str
    ) -> int:
        try:
            lo, hi = shown_range(value, suppression)
        except BadAnswers as exc:
            raise BadAnswers(f"{where}: {exc}") from None
        i = self.var(state, kind, conditions)
        v = self.variables[i]
        was = (v.lo, v.hi)
        v.lo, v.hi = max(v.lo, lo), min(v.hi, hi)
        v.k = max(v.k, _k_of(suppression)) if v.shown else _k_of(suppression)
        v.shown.append(f"{where}: {value}")
        if v.lo > v.hi:
            self.conflicts.append(
                f"{describe(v.quantity)} shown as {value} ({where}) but earlier as allowing {_span(*was)}"
            )
        return i

    def relate(self, terms: Mapping[int, float], lo: float, hi: float, rule: str) -> None:
        kept = tuple((i, c) for i, c in sorted(terms.items()) if c != 0)
        if kept and (kept, lo, hi) not in self._made:  # the same relation from another answer adds nothing
            self._made.add((kept, lo, hi))
            self.relations.append(Relation(kept, lo, hi, rule))


def _span(lo: float, hi: float) -> str:
    return f"{lo:g}" if lo == hi else f"{lo:g} to {'any' if hi >= CAP else f'{hi:g}'}"


def _add(terms: dict[int, float], i: int, c: float) -> None:
    terms[i] = terms.get(i, 0.0) + c


def _source(answer: Mapping[str, Any]) -> str:
    suppression = answer.get("suppression") or {}
    release = suppression.get("release") if isinstance(suppression, Mapping) else None
    if release is not None:
        return f"release {release}"
    as_of = answer.get("as_of")
    sequence = as_of.get("sequence") if isinstance(as_of, Mapping) else None
    return f"sequence {sequence}" if sequence is not None else "unknown"


def build(snapshots: Sequence[Snapshot]) -> Model:
    """The model of every number in ``snapshots`` and every relation between them.

    Answers that reflect the same state of the log (the same release, or the same stream sequence, of the
    same process) share their variables, whichever snapshot they were taken in.
    """
    b = _Builder()
    groups: dict[tuple[str, ...], list[tuple[int, Mapping[str, Any]]]] = {}
    by_snapshot: list[list[int]] = []
    for s, snap in enumerate(snapshots):
        by_snapshot.append([])
        for answer in snap.answers:
            key = _state_key(answer, s)
            if key not in groups:
                groups[key] = []
            groups[key].append((s, answer))
            st = list(groups).index(key)
            if st not in by_snapshot[-1]:
                by_snapshot[-1].append(st)
    releases: dict[int, tuple[int | None, int | None]] = {}  # state -> (release number, release every)
    for st, items in enumerate(groups.values()):
        k = max((_k_of(a.get("suppression") or {}) for _, a in items), default=DEFAULT_K)
        b.states.append(State(items[0][0], _source(items[0][1]), k))
        info = _StateInfo()
        for s, answer in (item for item in items if "periods" not in item[1]):
            _coverage(b, st, info, answer, f"snapshot {s}, /coverage{_where(answer)}")
        for s, answer in (item for item in items if "periods" in item[1]):
            _over_time(b, st, info, answer, f"snapshot {s}, /coverage/over-time{_where(answer)}")
        _partitions(b, st, info)
        _channels(b, st, info)
        _weeks_and_days(b, st, info)
        _inclusion(b, st, info)
        releases[st] = (info.release_number, info.release_every)
    _snapshot_links(b, snapshots, by_snapshot, releases)
    return Model(b.variables, b.relations, b.states, b.index, b.conflicts)


def _state_key(answer: Mapping[str, Any], snapshot: int) -> tuple[str, ...]:
    """Which state of the log an answer reflects: answers with the same key count the same people."""
    source = _source(answer)
    as_of = answer.get("as_of")
    moment = as_of.get("as_of") if isinstance(as_of, Mapping) else None
    process = str(answer.get("process_id"))
    return (process, source, str(moment)) if source != "unknown" else (process, source, str(snapshot))


def _where(answer: Mapping[str, Any]) -> str:
    key = segment_key(answer.get("segment"))
    by = answer.get("by")
    query = [f"by={by}"] if by else []
    query += [f"segment={key}"] if key else []
    return "?" + "&".join(query) if query else ""


def _get(answer: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in answer:
        raise BadAnswers(f"{where}: {name} is missing")
    return answer[name]


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadAnswers(f"{where}: expected an object")
    return value


def _coverage(b: _Builder, st: int, info: _StateInfo, answer: Mapping[str, Any], where: str) -> None:
    suppression = _mapping(_get(answer, "suppression", where), f"{where}: suppression")
    _note_release_every(info, suppression)
    seg = segment_conditions(answer.get("segment"))
    info.own.add(normalize(PEOPLE, seg))
    info.whole = info.whole or not seg

    def pub(kind: str, extra: Iterable[str], value: Any, what: str) -> None:
        b.publish(st, kind, seg | frozenset(extra), value, suppression, f"{where}, {what}")

    pub(PEOPLE, (), _get(answer, "participants", where), "participants")
    if "profiled" in answer:
        pub(PEOPLE, (GIVEN,), answer["profiled"], "profiled")
    pub(ENGAGEMENTS, (), _get(answer, "engagements", where), "engagements")
    for channel, value in _mapping(_get(answer, "engagements_by_channel", where), where).items():
        info.channels.add(channel)
        pub(ENGAGEMENTS, (f"{VIA}:{channel}",), value, f"engagements_by_channel {channel}")
    if answer.get("people_by_channel") is not None:
        info.people_by_channel.add(normalize(PEOPLE, seg))
        for channel, value in _mapping(answer["people_by_channel"], where).items():
            info.channels.add(channel)
            pub(PEOPLE, (f"{CHANNEL}:{channel}",), value, f"people_by_channel {channel}")
    dimensions = _get(answer, "dimensions", where)
    if not isinstance(dimensions, list):
        raise BadAnswers(f"{where}: dimensions is not a list")
    for entry in dimensions:
        dim = _mapping(entry, f"{where}: dimensions")
        d = str(_get(dim, "dimension", f"{where}: dimensions"))
        here = f"{where}, {d}"
        derived, multi = bool(dim.get("derived", False)), bool(dim.get("multi_select", False))
        known = info.dims.setdefault(d, _Dimension(multi, derived))
        if (known.multi, known.derived) != (multi, derived):
            raise BadAnswers(f"{here}: is multi-select or derived in one answer and not in another")
        if derived:
            pub(PEOPLE, (), _get(dim, "answered", here), f"{d} answered (all participants)")
        else:
            for part in (ANSWERED, DECLINED, NOT_ANSWERED):
                pub(PEOPLE, (f"{d}:{part}",), _get(dim, part, here), f"{d} {part}")
        categories = _get(dim, "categories", here)
        if not isinstance(categories, list):
            raise BadAnswers(f"{here}: categories is not a list")
        for item in categories:
            row = _mapping(item, f"{here}: categories")
            c = str(_get(row, "category", here))
            known.categories.add(c)
            pub(PEOPLE, (f"{d}:{c}",), _get(row, "count", f"{here} {c}"), f"{d} {c}")
            if row.get("alone") is not None and not derived:
                pub(PEOPLE, (f"{d}:{ALONE}{c}",), row["alone"], f"{d} {c} alone")


def _note_release_every(info: _StateInfo, suppression: Mapping[str, Any]) -> None:
    every, number = suppression.get("release_every"), suppression.get("release_number")
    if isinstance(every, int) and not isinstance(every, bool) and every >= 0:
        info.release_every = every if info.release_every is None else max(info.release_every, every)
    if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
        info.release_number = number


def _over_time(b: _Builder, st: int, info: _StateInfo, answer: Mapping[str, Any], where: str) -> None:
    suppression = _mapping(_get(answer, "suppression", where), f"{where}: suppression")
    _note_release_every(info, suppression)
    by = _get(answer, "by", where)
    if by not in PERIODS:
        raise BadAnswers(f"{where}: by {by!r} is not week or day")
    seg = segment_conditions(answer.get("segment"))
    periods = _get(answer, "periods", where)
    if not isinstance(periods, list):
        raise BadAnswers(f"{where}: periods is not a list")
    listed: dict[str, set[str]] = {}
    totals: dict[str, dict[int, float]] = {ENGAGEMENTS: {}, REACHED: {}}
    per_channel: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for entry in periods:
        period = _mapping(entry, f"{where}: periods")
        name = str(_get(period, "period", where))
        if by == WEEK and monday(name) != name:
            raise BadAnswers(f"{where}: week {name} does not start on a Monday")
        cond = f"{by}:{name}"
        here = f"{where}, {by} {name}"
        listed[name] = set()
        for kind, field_name, total_name in (
            (ENGAGEMENTS, "engagements", "total_engagements"),
            (REACHED, "participants_reached", "total_participants_reached"),
        ):
            total = b.publish(st, kind, seg | {cond}, _get(period, total_name, here), suppression, f"{here} total")
            sums: dict[int, float] = {total: 1.0}
            for channel, value in _mapping(_get(period, field_name, here), here).items():
                listed[name].add(channel)
                info.channels.add(channel)
                i = b.publish(
                    st, kind, seg | {cond, f"{VIA}:{channel}"}, value, suppression, f"{here} {field_name} {channel}"
                )
                _add(sums, i, -1.0)
                _add(per_channel[(kind, channel)], i, 1.0)
            b.relate(sums, 0.0, 0.0, "a period adds up over channels")
            _add(totals[kind], total, 1.0)
    info.over_time[(normalize(PEOPLE, seg), by)] = listed
    # Periods add up: to the engagements of each channel and in all, and to no more people than there are.
    everyone = b.var(st, ENGAGEMENTS, seg)
    b.relate({**totals[ENGAGEMENTS], everyone: -1.0}, 0.0, 0.0, "periods add up to the engagements")
    for channel in sorted(info.channels):
        terms = dict(per_channel.get((ENGAGEMENTS, channel), {}))
        _add(terms, b.var(st, ENGAGEMENTS, seg | {f"{VIA}:{channel}"}), -1.0)
        b.relate(terms, 0.0, 0.0, "periods add up to the channel's engagements")
    people = b.var(st, PEOPLE, seg)
    b.relate({**totals[REACHED], people: -1.0}, -CAP, 0.0, "people first reached are participants")
    for channel in sorted(info.channels):
        by_channel = b.has(st, PEOPLE, seg | {f"{CHANNEL}:{channel}"})
        if by_channel is not None and (REACHED, channel) in per_channel:
            terms = dict(per_channel[(REACHED, channel)])
            _add(terms, by_channel, -1.0)
            b.relate(terms, -CAP, 0.0, "people first reached by a channel took part by it")


def _partitions(b: _Builder, st: int, info: _StateInfo) -> None:
    """Each question partitions any set of people: answered, declined, not answered; a single-select
    answer is one category; a multi-select's categories cover those who answered."""
    seen = [q.conditions for (s, q) in list(b.index) if s == st and q.kind == PEOPLE]
    pairs: set[tuple[Conditions, str]] = set()
    for conditions in seen:
        for cond in conditions:
            name = cond.partition(":")[0]
            if name in SPECIAL:
                continue
            rest = conditions - {cond}
            if any(c.partition(":")[0] == name for c in rest):
                continue
            pairs.add((rest, name))
    for rest, d in sorted(pairs, key=lambda p: (sorted(p[0]), p[1])):
        dim = info.dims.get(d)
        if dim is None or dim.derived:
            continue
        head = [rest, *(rest | {f"{d}:{part}"} for part in (ANSWERED, DECLINED, NOT_ANSWERED))]
        if sum(b.has(st, PEOPLE, c) is None for c in head) <= MAY_MISS:
            total, answered, declined, unanswered = (b.var(st, PEOPLE, c) for c in head)
            terms = {total: 1.0, answered: -1.0, declined: -1.0, unanswered: -1.0}
            b.relate(terms, 0.0, 0.0, "a question's partition")
            b.implied.update((part, total) for part in (answered, declined, unanswered))
        total_i, answered_i = b.has(st, PEOPLE, rest), b.has(st, PEOPLE, head[1])
        found = {c: b.has(st, PEOPLE, rest | {f"{d}:{c}"}) for c in sorted(dim.categories)}
        rows = {c: i for c, i in found.items() if i is not None}
        missing = sum(i is None for i in found.values()) + (answered_i is None)
        if (info.whole or normalize(PEOPLE, rest) in info.own) and missing <= MAY_MISS:
            answered = b.var(st, PEOPLE, head[1])
            rows = {c: b.var(st, PEOPLE, rest | {f"{d}:{c}"}) for c in found}
            terms = {answered: -1.0}
            for i in rows.values():
                _add(terms, i, 1.0)
            if dim.multi:
                b.relate(terms, 0.0, CAP, "a multi-select's categories cover who answered")
            else:
                b.relate(terms, 0.0, 0.0, "a single-select answer is one category")
                b.implied.update((i, up) for i in rows.values() for up in (answered, total_i) if up is not None)
            answered_i = answered
        if not dim.multi or answered_i is None:
            continue
        for i in rows.values():
            b.relate({i: 1.0, answered_i: -1.0}, -CAP, 0.0, "a multi-select category is within who answered")
            b.implied.update((i, up) for up in (answered_i, total_i) if up is not None)
        alone_sum: dict[int, float] = {answered_i: -1.0}
        for c, row in rows.items():
            alone = b.has(st, PEOPLE, rest | {f"{d}:{ALONE}{c}"})
            if alone is None:
                continue
            b.relate({alone: 1.0, row: -1.0}, -CAP, 0.0, "a category alone is within the category")
            b.implied.update((alone, up) for up in (row, answered_i, total_i) if up is not None)
            _add(alone_sum, alone, 1.0)
        if len(alone_sum) > 1:
            b.relate(alone_sum, -CAP, 0.0, "those who chose one category alone are within who answered")


def _channels(b: _Builder, st: int, info: _StateInfo) -> None:
    """Engagements add up over channels; a participant took part by some channel, at least once by each of theirs."""
    channels = sorted(info.channels)
    quantities = [q for (s, q) in list(b.index) if s == st]
    for q in quantities:
        if q.kind != ENGAGEMENTS or any(c.partition(":")[0] in (VIA, *PERIODS) for c in q.conditions):
            continue
        seg = normalize(PEOPLE, q.conditions)
        if not (info.whole or seg in info.own):
            continue
        terms = {b.var(st, ENGAGEMENTS, q.conditions): 1.0}
        for channel in channels:
            _add(terms, b.var(st, ENGAGEMENTS, q.conditions | {f"{VIA}:{channel}"}), -1.0)
        b.relate(terms, 0.0, 0.0, "engagements add up over channels")
    for q in quantities:
        if q.kind != PEOPLE:
            continue
        me = b.var(st, PEOPLE, q.conditions)
        if q.conditions in info.people_by_channel:  # its own answer shows people by channel
            terms = {me: 1.0}
            for channel in channels:
                _add(terms, b.var(st, PEOPLE, q.conditions | {f"{CHANNEL}:{channel}"}), -1.0)
            b.relate(terms, -CAP, 0.0, "a participant took part by some channel")
        engagements = b.has(st, ENGAGEMENTS, q.conditions)
        if engagements is not None:
            b.relate({me: 1.0, engagements: -1.0}, -CAP, 0.0, "a participant has an engagement")
        for cond in q.conditions:
            dim, _, channel = cond.partition(":")
            if dim != CHANNEL:
                continue
            through = b.has(st, ENGAGEMENTS, (q.conditions - {cond}) | {f"{VIA}:{channel}"})
            if through is not None:
                b.relate({me: 1.0, through: -1.0}, -CAP, 0.0, "who took part by a channel has an engagement by it")


def _weeks_and_days(b: _Builder, st: int, info: _StateInfo) -> None:
    """A week adds up its days, when both were asked for the same participants."""
    for (seg, by), days in sorted(info.over_time.items(), key=lambda kv: (sorted(kv[0][0]), kv[0][1])):
        if by != DAY or (seg, WEEK) not in info.over_time:
            continue
        weeks = info.over_time[(seg, WEEK)]
        for week in sorted(set(weeks) | {monday(d) for d in days}):
            in_week = [d for d in sorted(days) if monday(d) == week]
            channels = set(weeks.get(week, set())).union(*(days[d] for d in in_week))
            for kind in (ENGAGEMENTS, REACHED):
                for extra in [None, *(f"{VIA}:{c}" for c in sorted(channels))]:
                    more = {extra} if extra else set()
                    terms: dict[int, float] = {}
                    whole = b.has(st, kind, seg | {f"{WEEK}:{week}"} | more)
                    if whole is not None:
                        terms[whole] = -1.0
                    for d in in_week:
                        part = b.has(st, kind, seg | {f"{DAY}:{d}"} | more)
                        if part is not None:
                            _add(terms, part, 1.0)
                    b.relate(terms, 0.0, 0.0, "a week adds up its days")


def _inclusion(b: _Builder, st: int, info: _StateInfo) -> None:
    """More conditions, no more people (or engagements)."""
    derived = frozenset(d for d, dim in info.dims.items() if dim.derived)
    for kind in KINDS:
        exists = {q.conditions for (s, q) in b.index if s == st and q.kind == kind}
        for conditions in sorted(exists, key=sorted):
            me = b.var(st, kind, conditions)
            for up in sorted(_ancestors(kind, conditions, exists, derived), key=sorted):
                larger = b.var(st, kind, up)
                if (me, larger) not in b.implied:
                    b.relate({me: 1.0, larger: -1.0}, -CAP, 0.0, "more conditions, no more counted")


def _snapshot_links(
    b: _Builder,
    snapshots: Sequence[Snapshot],
    by_snapshot: list[list[int]],
    releases: Mapping[int, tuple[int | None, int | None]],
) -> None:
    """From one snapshot to the next, a count of people moves by at most the participants changed."""
    for s in range(1, len(snapshots)):
        before, after = by_snapshot[s - 1], by_snapshot[s]
        if len(before) != 1 or len(after) != 1:
            continue  # answers from several states of the log within a snapshot: which moved when is unknown
        a, z = before[0], after[0]
        if a == z:
            continue  # the same state of the log: the same variables
        step = snapshots[s].changed_since_previous
        if step is None:
            (first, _), (last, every) = releases.get(a, (None, None)), releases.get(z, (None, None))
            # between releases n and n+j exactly j x release_every participants changed
            if every is not None and first is not None and last is not None:
                step = (last - first) * every if last >= first else None
            else:
                step = every
        if step is None:
            continue
        quantities = {q for (st, q) in b.index if st == a and q.kind in (PEOPLE, REACHED)}
        for q in sorted(quantities):
            later = b.index.get((z, q))
            if later is not None:
                b.relate({later: 1.0, b.index[(a, q)]: -1.0}, -float(step), float(step), "snapshots move by little")


def truth_holds(model: Model, values: Sequence[float]) -> list[str]:
    """Every box and relation that ``values`` (one per variable) break, in words: for tests of the model."""
    broken = [
        f"{model.name(i)} = {values[i]:g} outside {_span(v.lo, v.hi)} (shown: {'; '.join(v.shown)})"
        for i, v in enumerate(model.variables)
        if not (v.lo - _TOLERANCE <= values[i] <= v.hi + _TOLERANCE)
    ]
    for r in model.relations:
        if not r.holds(values):
            terms = " + ".join(f"{c:g}*[{model.name(i)} = {values[i]:g}]" for i, c in r.terms)
            broken.append(f"{r.rule}: {r.lo:g} <= {terms} <= {r.hi:g}")
    return broken


def is_small(lo: float, hi: float, k: int) -> bool:
    """Whether a range of counts meets 1..k-1."""
    return math.floor(hi + _TOLERANCE) >= 1 and math.ceil(lo - _TOLERANCE) <= k - 1
