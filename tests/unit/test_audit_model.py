"""The suppression auditor's model and solver, without servers.

Hand-made answer sets in the old "cells" method hold known pins, and the auditor must find
each. Then random small populations: a reference implementation here computes the true
value of every variable the model makes, and every box and relation must hold for the truth
(a false relation would report false pins); published exactly, small counts are pinned;
rounded to base k, pins become rare.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.analytics.audit.model import (
    CAP,
    ENGAGEMENTS,
    PEOPLE,
    REACHED,
    Model,
    Quantity,
    Snapshot,
    build,
    describe,
    monday,
    normalize,
    shown_range,
    snapshots_from,
    truth_holds,
)
from services.analytics.audit.solve import _Programs, audit
from services.cli.audit import exit_code

K = 5
CELLS = {"k": K, "applied": True}  # the old method: no "method" field
EXACT = {"k": K, "applied": False, "method": "none"}
ROUNDED = {"k": K, "applied": True, "method": "rounded", "release": 7, "release_every": K}


# --- hand-made answers (the old "cells" method) --------------------------------------------------------------------


def dim(name: str, answered: Any, declined: Any, not_answered: Any, categories: dict[str, Any]) -> dict[str, Any]:
    return {
        "dimension": name,
        "label": name,
        "multi_select": False,
        "derived": False,
        "answered": answered,
        "declined": declined,
        "not_answered": not_answered,
        "categories": [{"category": c, "label": c, "count": v, "alone": None} for c, v in categories.items()],
    }


def cov(participants: Any, dims: list[dict[str, Any]], segment: str | None = None, sequence: int = 10) -> dict:
    """A /coverage answer of the old shape (one-term segment as dimension and category)."""
    d, _, c = (segment or "").partition(":")
    return {
        "process_id": "shfa-2018",
        "segment": {"dimension": d, "category": c, "label": c} if segment else None,
        "as_of": {"sequence": sequence, "stream_sequence": sequence, "behind": 0},
        "suppression": CELLS,
        "participants": participants,
        "engagements": "suppressed",
        "engagements_by_channel": {"survey": "suppressed"},
        "dimensions": dims,
    }


def pins(model: Model) -> dict[str, tuple[int, int]]:
    result = audit(model, time_limit=30)
    assert result.feasible and result.finished
    return {describe(model.variables[c.variable].quantity): (c.lo, c.hi) for c in result.pinned}


def test_a_hidden_cell_is_the_rest_of_a_row() -> None:
    """20 + 12 + (at least 5) + (1 to 4) = 38: southeast is 1 (and west central 5, which is not small)."""
    region = dim("region", 38, 0, 0, {"northeast": 20, "central": 12, "west_central": "suppressed", "southeast": "<5"})
    found = pins(build([Snapshot((cov(38, [region]),))]))
    assert found == {"participants (region = southeast)": (1, 1)}


def test_views_of_one_count_subtract() -> None:
    """Central is 12 in all, 9 among people with lived experience, none among those who declined or did
    not answer: central among those without lived experience is 3, though shown as <5."""
    lived = dim("lived_experience", 35, 5, 0, {"yes": 20, "no": 15})
    whole = cov(40, [dim("region", 40, 0, 0, {"northeast": 28, "central": 12}), lived])
    yes = cov(20, [dim("region", 20, 0, 0, {"northeast": 11, "central": 9})], "lived_experience:yes")
    no = cov(15, [dim("region", 15, 0, 0, {"northeast": "suppressed", "central": "<5"})], "lived_experience:no")
    declined = cov(5, [dim("region", 5, 0, 0, {"northeast": 5, "central": 0})], "lived_experience:declined")
    missing = cov(0, [dim("region", 0, 0, 0, {"northeast": 0, "central": 0})], "lived_experience:not_answered")
    found = pins(build([Snapshot((whole, yes, no, declined, missing))]))
    assert found == {"participants (region = central; without lived experience)": (3, 3)}
    # Without the segment of those who declined, central among them is unknown and nothing is pinned.
    assert pins(build([Snapshot((whole, yes, no, missing))])) == {}


def test_a_count_that_crosses_k_between_snapshots() -> None:
    """One participant more, and a cell shown <5 becomes 5: it was 4."""
    before = cov(40, [dim("region", 40, 0, 0, {"northeast": 28, "central": "suppressed", "southeast": "<5"})], None, 10)
    after = cov(41, [dim("region", 41, 0, 0, {"northeast": 28, "central": 8, "southeast": 5})], None, 11)
    model = build([Snapshot((before,)), Snapshot((after,), changed_since_previous=1)])
    result = audit(model, time_limit=30)
    found = {(model.states[model.variables[c.variable].state].snapshot, describe(model.variables[c.variable].quantity))
             for c in result.pinned}  # fmt: skip
    assert found == {(0, "participants (region = southeast)")}
    assert [(c.lo, c.hi) for c in result.pinned] == [(4, 4)]
    # How many participants changed is what pins it: with two, southeast was 3 or 4.
    loose = build([Snapshot((before,)), Snapshot((after,), changed_since_previous=2)])
    assert pins(loose) == {}
    assert pins(build([Snapshot((before,)), Snapshot((after,))])) == {}  # unknown: unbounded
    # A promise of three possible values is broken all the same: 3 or 4 is two.
    wide = audit(loose, width=3, time_limit=30)
    assert [(describe(loose.variables[c.variable].quantity), c.lo, c.hi) for c in wide.pinned] == [
        ("participants (region = southeast)", 3, 4)
    ]


@pytest.mark.parametrize(
    ("shown", "suppression", "expected"),
    [
        (12, CELLS, (12, 12)),
        ("<5", CELLS, (1, 4)),
        ("suppressed", CELLS, (5, CAP)),
        (0, CELLS, (0, 0)),
        (7, EXACT, (7, 7)),
        ("<5", ROUNDED, (0, 4)),
        (5, ROUNDED, (1, 9)),
        (20, ROUNDED, (16, 24)),
        (3, {"k": 5}, (3, 3)),  # no method and applied by default: the old method
        ("<11", {"k": 11, "applied": True, "method": "cells"}, (1, 10)),
    ],
)
def test_what_a_shown_value_allows(shown: Any, suppression: dict, expected: tuple[float, float]) -> None:
    assert shown_range(shown, suppression) == expected


@pytest.mark.parametrize(
    ("kind", "conditions", "expected"),
    [
        (PEOPLE, {"region:central", "region:answered"}, {"region:central"}),
        (PEOPLE, {"gender:alone:female", "gender:female", "profile:given"}, {"gender:alone:female"}),
        (PEOPLE, {"region:not_answered", "profile:given"}, {"region:not_answered", "profile:given"}),
        (ENGAGEMENTS, {"channel:survey", "via:survey"}, {"via:survey"}),
        (PEOPLE, {"channel:survey", "via:survey"}, {"channel:survey", "via:survey"}),
        (REACHED, {"week:2018-03-05", "day:2018-03-07"}, {"day:2018-03-07"}),
    ],
)
def test_one_quantity_one_key(kind: str, conditions: set[str], expected: set[str]) -> None:
    assert normalize(kind, conditions) == frozenset(expected)


# --- a reference population ----------------------------------------------------------------------------------------

REGIONS = ("north", "central", "south")
GENDERS = ("female", "male", "transgender")
CHANNELS = ("survey", "interview_phone", "art_of_hosting")
START = date(2018, 3, 5)  # a Monday
GROUPS = {
    "lived": lambda p: p.lived == "yes",
    "trans": lambda p: isinstance(p.gender, tuple) and "transgender" in p.gender,
}


@dataclass(frozen=True)
class Person:
    region: str | None  # a region, "declined" or None
    lived: str | None
    gender: tuple[str, ...] | str | None  # chosen, "declined" or None
    engagements: tuple[tuple[date, str], ...]  # (day, channel), oldest first

    @property
    def profiled(self) -> bool:
        return any(v is not None for v in (self.region, self.lived, self.gender))

    def answer(self, d: str) -> tuple[str, ...] | None:
        value = {"region": self.region, "lived_experience": self.lived, "gender": self.gender}[d]
        return None if value is None else value if isinstance(value, tuple) else (value,)


def meets(p: Person, cond: str) -> bool:
    d, _, value = cond.partition(":")
    if d == "profile":
        return p.profiled
    if d == "channel":
        return any(c == value for _, c in p.engagements)
    if d == "group":
        return GROUPS[value](p)
    chosen = p.answer(d)
    if value == "not_answered":
        return chosen is None
    if value == "declined":
        return chosen == ("declined",)
    if value == "answered":
        return chosen is not None and chosen != ("declined",)
    if value.startswith("alone:"):
        return chosen == (value[len("alone:") :],)
    return chosen is not None and value in chosen


def happened(day: date, channel: str, cond: str) -> bool:
    d, _, value = cond.partition(":")
    return {"via": channel == value, "day": day.isoformat() == value, "week": monday(day.isoformat()) == value}[d]


def truth(people: list[Person], q: Quantity) -> int:
    """The true value of any quantity the model can make, counted directly."""
    events = {c for c in q.conditions if c.partition(":")[0] in ("via", "day", "week")}
    who = [p for p in people if all(meets(p, c) for c in q.conditions - events)]
    if q.kind == PEOPLE:
        assert not events, q
        return len(who)
    if q.kind == ENGAGEMENTS:
        return sum(all(happened(day, ch, c) for c in events) for p in who for day, ch in p.engagements)
    return sum(all(happened(*p.engagements[0], c) for c in events) for p in who)


Publish = Any  # (kind, conditions, value) -> shown


def exact(_kind: str, _conditions: frozenset[str], value: int) -> Any:
    return value


def rounded(kind: str, conditions: frozenset[str], value: int) -> Any:
    """Unbiased random rounding to base K, the same for the same quantity however asked."""
    key = f"{kind}|{','.join(sorted(normalize(kind, conditions)))}|{value}"
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    r = value % K
    shown = value - r + (K if u < r / K else 0)
    return shown if shown else f"<{K}"


def coverage(people: list[Person], terms: tuple[str, ...], publish: Publish, suppression: dict, seq: int) -> dict:
    """/coverage as analytics answers it, for the participants who meet every term."""
    who = [p for p in people if all(meets(p, t) for t in terms)]
    seg = frozenset(terms)

    def n(kind: str, *conds: str) -> Any:
        q = Quantity(kind, seg | frozenset(conds))
        return publish(kind, q.conditions, truth(people, q))

    def question(d: str, cats: tuple[str, ...], multi: bool) -> dict:
        return {
            "dimension": d,
            "label": d,
            "multi_select": multi,
            "derived": False,
            "answered": n(PEOPLE, f"{d}:answered"),
            "declined": n(PEOPLE, f"{d}:declined"),
            "not_answered": n(PEOPLE, f"{d}:not_answered"),
            "categories": [
                {
                    "category": c,
                    "label": c,
                    "count": n(PEOPLE, f"{d}:{c}"),
                    "alone": n(PEOPLE, f"{d}:alone:{c}") if multi else None,
                }
                for c in cats
            ],
        }  # fmt: skip

    channels = sorted({c for p in who for _, c in p.engagements})
    return {
        "process_id": "test",
        "segment": {
            "key": ",".join(sorted(terms)),
            "label": " and ".join(sorted(terms)),
            "terms": [
                {"dimension": t.split(":")[0], "category": t.split(":", 1)[1], "label": t} for t in sorted(terms)
            ],
        }
        if terms
        else None,
        "as_of": {"sequence": seq},
        "suppression": suppression,
        "participants": n(PEOPLE),
        "profiled": n(PEOPLE, "profile:given"),
        "engagements": n(ENGAGEMENTS),
        "engagements_by_channel": {c: n(ENGAGEMENTS, f"via:{c}") for c in channels},
        "people_by_channel": {c: n(PEOPLE, f"channel:{c}") for c in channels},
        "dimensions": [
            question("region", REGIONS, False),
            question("lived_experience", ("yes", "no"), False),
            question("gender", GENDERS, True),
            {
                "dimension": "group",
                "label": "groups",
                "multi_select": True,
                "derived": True,
                "answered": n(PEOPLE),
                "declined": 0,
                "not_answered": 0,
                "categories": [
                    {"category": g, "label": g, "count": n(PEOPLE, f"group:{g}"), "alone": None} for g in GROUPS
                ],
            },
        ],
    }


def over_time(people: list[Person], by: str, publish: Publish, suppression: dict, seq: int) -> dict:
    def period(day: date) -> str:
        return monday(day.isoformat()) if by == "week" else day.isoformat()

    active = sorted({period(day) for p in people for day, _ in p.engagements})
    periods = []
    for name in active:
        cond = f"{by}:{name}"
        channels = sorted(
            {c for p in people for day, c in p.engagements if period(day) == name}
            | {p.engagements[0][1] for p in people if period(p.engagements[0][0]) == name}
        )

        def n(kind: str, *conds: str, cond: str = cond) -> Any:
            q = Quantity(kind, frozenset({cond, *conds}))
            return publish(kind, q.conditions, truth(people, q))

        periods.append(
            {
                "period": name,
                "engagements": {c: n(ENGAGEMENTS, f"via:{c}") for c in channels},
                "participants_reached": {c: n(REACHED, f"via:{c}") for c in channels},
                "total_engagements": n(ENGAGEMENTS),
                "total_participants_reached": n(REACHED),
            }
        )
    return {"process_id": "test", "by": by, "as_of": {"sequence": seq}, "suppression": suppression, "periods": periods}


def single_terms() -> list[tuple[str, ...]]:
    terms = [f"region:{r}" for r in (*REGIONS, "declined", "not_answered")]
    terms += [f"lived_experience:{v}" for v in ("yes", "no", "declined", "not_answered")]
    terms += [f"gender:{g}" for g in (*GENDERS, "declined", "not_answered")]
    terms += [f"group:{g}" for g in GROUPS] + [f"channel:{c}" for c in CHANNELS]
    return [(t,) for t in terms]


PAIRS = [
    ("lived_experience:yes", "region:central"),
    ("channel:survey", "gender:female"),
    ("group:trans", "region:north"),
]


def answers(people: list[Person], publish: Publish, suppression: dict, seq: int = 1) -> tuple[dict, ...]:
    segments = [(), *single_terms(), *PAIRS]
    return (
        *(coverage(people, s, publish, suppression, seq) for s in segments),
        over_time(people, "week", publish, suppression, seq),
        over_time(people, "day", publish, suppression, seq),
    )


def truths(model: Model, populations: list[list[Person]]) -> list[float]:
    return [float(truth(populations[model.states[v.state].snapshot], v.quantity)) for v in model.variables]


answer_st = st.one_of(st.none(), st.just("declined"))
person_st = st.builds(
    Person,
    region=st.one_of(answer_st, st.sampled_from(REGIONS)),
    lived=st.one_of(answer_st, st.sampled_from(("yes", "no"))),
    gender=st.one_of(answer_st, st.lists(st.sampled_from(GENDERS), min_size=1, max_size=3, unique=True).map(tuple)),
    engagements=st.lists(
        st.tuples(st.integers(0, 13).map(lambda d: START + timedelta(days=d)), st.sampled_from(CHANNELS)),
        min_size=1,
        max_size=3,
    ).map(lambda e: tuple(sorted(e, key=lambda x: x[0]))),
)
population_st = st.lists(person_st, min_size=2, max_size=24)
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(people=population_st)
def test_every_relation_holds_for_the_true_counts(people: list[Person]) -> None:
    """Exact and rounded: every box holds the true count and every relation holds among true counts."""
    for publish, suppression in ((exact, EXACT), (rounded, ROUNDED)):
        model = build([Snapshot(answers(people, publish, suppression))])
        assert model.relations and not model.conflicts
        assert truth_holds(model, truths(model, [people])) == []


@PROPERTY
@given(people=population_st, later=st.lists(person_st, min_size=0, max_size=3), data=st.data())
def test_snapshots_one_after_another_hold_for_the_true_counts(
    people: list[Person], later: list[Person], data: st.DataObject
) -> None:
    """New participants, and one who says more about themselves: counts move by at most those changed."""
    after = [*people, *later]
    who = data.draw(st.integers(0, len(people) - 1))
    after[who] = replace(after[who], lived=data.draw(st.sampled_from(("yes", "no"))))
    changed = len(later) + 1
    model = build(
        [
            Snapshot(answers(people, exact, EXACT, seq=1)),
            Snapshot(answers(after, exact, EXACT, seq=2), changed_since_previous=changed),
        ]
    )
    assert any(r.rule == "snapshots move by little" for r in model.relations)
    assert truth_holds(model, truths(model, [people, after])) == []


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people=st.lists(person_st, min_size=2, max_size=12))
def test_exact_numbers_pin_every_small_count(people: list[Person]) -> None:
    """Published exactly, every small count shown is pinned to its true value."""
    model = build([Snapshot(answers(people, exact, EXACT))])
    values = truths(model, [people])
    result = audit(model, time_limit=30)
    assert result.feasible and result.finished
    small = {i for i, v in enumerate(model.variables) if v.published and 1 <= values[i] <= K - 1}
    assert small  # two to 24 people always make some small count
    pinned = {c.variable: (c.lo, c.hi) for c in result.pinned}
    assert small <= set(pinned)
    assert all(values[i] == lo == hi for i, (lo, hi) in pinned.items())


def test_rounded_numbers_pin_far_less() -> None:
    """The same populations rounded to base k: far fewer pins than exact (how many is printed)."""
    import random

    exact_pins = rounded_pins = small = 0
    for seed in range(2):
        rng = random.Random(seed)
        people = [
            Person(
                rng.choice((*REGIONS, None, "declined")),
                rng.choice(("yes", "no", None, "declined")),
                rng.choice((None, "declined", *[(g,) for g in GENDERS], ("female", "transgender"))),
                tuple(sorted((START + timedelta(days=rng.randrange(14)), rng.choice(CHANNELS)) for _ in range(2))),
            )
            for _ in range(rng.randrange(12, 24))
        ]
        for publish, suppression in ((exact, EXACT), (rounded, ROUNDED)):
            model = build([Snapshot(answers(people, publish, suppression))])
            result = audit(model, time_limit=60)
            assert result.feasible and result.finished
            if publish is exact:
                exact_pins += len(result.pinned)
                small += len(result.candidates)
            else:
                rounded_pins += len(result.pinned)
    print(f"pins over 2 populations: exact {exact_pins} (of {small} small), rounded to base {K}: {rounded_pins}")
    assert exact_pins > 0 and rounded_pins * 5 < exact_pins


def test_both_ways_of_running_highs_agree() -> None:
    """One HiGHS model with the objective changed, and linprog and milp anew each time, find the same ranges."""
    lived = dim("lived_experience", 35, 5, 0, {"yes": 20, "no": 15})
    whole = cov(40, [dim("region", 40, 0, 0, {"northeast": 26, "central": 12, "south": "<5"}), lived])
    yes = dim("region", 20, 0, 0, {"northeast": "suppressed", "central": 9, "south": "<5"})
    no = dim("region", 15, 0, 0, {"northeast": "suppressed", "central": "<5", "south": "<5"})
    model = build([Snapshot((whole, cov(20, [yes], "lived_experience:yes"), cov(15, [no], "lived_experience:no")))])
    reused, anew = audit(model, time_limit=60), audit(model, time_limit=60, use_highs=False)
    assert reused.feasible and anew.feasible and reused.engine != anew.engine
    ranges = [(c.variable, c.lo, c.hi) for c in reused.checked if c.exact]
    assert ranges and ranges == [(c.variable, c.lo, c.hi) for c in anew.checked if c.exact]
    one, other = _Programs(model), _Programs(model, use_highs=False)
    for i in reused.candidates:
        for up in (False, True):
            a, b = one.milp(i, up, 10), other.milp(i, up, 10)
            assert a is not None and b is not None and a[i] == pytest.approx(b[i])


def test_contradicting_answers_are_said_so() -> None:
    """A count shown as 3 in one answer and 4 in another of the same state: no audit, and why."""
    one = cov(3, [dim("region", 3, 0, 0, {"central": 3})])
    two = cov(4, [dim("region", 4, 0, 0, {"central": 4})], "region:central")
    model = build([Snapshot((one, two))])
    assert model.conflicts and "participants (region = central)" in model.conflicts[0]
    assert not audit(model).feasible
    # No count is shown two ways, but 5 answered the question of 3 participants: no counts fit.
    model = build([Snapshot((cov(3, [dim("region", 5, 0, 0, {"central": 5})]),))])
    assert not model.conflicts
    result = audit(model)
    assert not result.feasible and result.stopped_because == "no counts satisfy every published number"


def test_a_saved_set_with_a_bad_value_is_named() -> None:
    data = {"snapshots": [{"changed_since_previous": None, "answers": [cov("many", [])]}]}
    with pytest.raises(ValueError, match=r"snapshot 0, /coverage, participants: 'many' is not a count"):
        build(snapshots_from(data))
    with pytest.raises(ValueError, match=r"snapshots\[0\].changed_since_previous"):
        snapshots_from({"snapshots": [{"changed_since_previous": -1, "answers": []}]})


# --- the command ---------------------------------------------------------------------------------------------------


def engage(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "audit-suppression", *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "200"},
        timeout=120,
    )


def test_the_command_reports_pins_and_exits_1(tmp_path: Path) -> None:
    lived = dim("lived_experience", 35, 5, 0, {"yes": 20, "no": 15})
    whole = cov(40, [dim("region", 40, 0, 0, {"northeast": 28, "central": 12}), lived])
    yes = cov(20, [dim("region", 20, 0, 0, {"northeast": 11, "central": 9})], "lived_experience:yes")
    no = cov(15, [dim("region", 15, 0, 0, {"northeast": "suppressed", "central": "<5"})], "lived_experience:no")
    declined = cov(5, [dim("region", 5, 0, 0, {"northeast": 5, "central": 0})], "lived_experience:declined")
    missing = cov(0, [dim("region", 0, 0, 0, {"northeast": 0, "central": 0})], "lived_experience:not_answered")
    saved = tmp_path / "set.json"
    saved.write_text(json.dumps({"snapshots": [{"answers": [whole, yes, no, declined, missing]}]}))
    run = engage("--from", str(saved))
    assert run.returncode == 1, run.stderr
    assert (
        "participants (region = central; without lived experience), snapshot 0 (sequence 10): exactly 3" in run.stdout
    )
    assert "PINNED (1)" in run.stdout and "small variables checked" in run.stdout
    saved.write_text(json.dumps({"snapshots": [{"answers": [whole, yes, missing]}]}))
    calm = engage("--from", str(saved))
    assert calm.returncode == 0, calm.stderr
    assert "Nothing pinned" in calm.stdout


def test_an_audit_out_of_time_is_not_a_pass() -> None:
    """Exit code 3 when the time limit stopped it before every small count was checked."""
    model = build(snapshots_from({"snapshots": [{"answers": [cov(3, [dim("region", 3, 0, 0, {"central": 3})])]}]}))
    done = audit(model)
    assert exit_code(done) == 1 and done.finished  # exact: the 3 is pinned
    assert exit_code(replace(done, checked=[], finished=False)) == 3
    assert exit_code(replace(done, checked=[c for c in done.checked if not c.pinned], finished=True)) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "{tmp}/missing.json"], "--from {tmp}/missing.json: cannot be read (FileNotFoundError)"),
        (["--from", "{tmp}/bad.json"], "--from {tmp}/bad.json: is not JSON"),
        (["--from", "{tmp}/other.json"], "--from {tmp}/other.json: is not a saved set of answers"),
        (["--width", "0", "--from", "{tmp}/other.json"], "--width 0: must be at least 1"),
        (["--time-limit", "0", "--from", "{tmp}/other.json"], "--time-limit 0: must be more than 0 seconds"),
        (["--from", "{tmp}/empty.json"], "--from: no answers to audit"),
        (["--from", "{tmp}/contradicting.json"], "answers: no counts satisfy every published number and relation;"),
        (["--token", "t", "--url", "http://127.0.0.1:9"], "analytics is not reachable at http://127.0.0.1:9"),
    ],
)  # fmt: skip
def test_the_command_says_what_is_wrong_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "other.json").write_text("[1, 2]")
    (tmp_path / "empty.json").write_text('{"snapshots": [{"answers": []}]}')
    contradicting = cov(3, [dim("region", 5, 0, 0, {"central": 5})])
    (tmp_path / "contradicting.json").write_text(json.dumps({"snapshots": [{"answers": [contradicting]}]}))
    run = engage(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith("error: " + message.replace("{tmp}", str(tmp_path))), lines[0]


# --- the gather, against a stand-in for analytics ------------------------------------------------------------------


def test_the_gather_asks_every_single_term_segment_and_lists_what_is_refused() -> None:
    """Every category with declined and not answered, every group and channel, the pairs (the same ones every
    time), over time by week and day; a segment analytics refuses is listed, a bad token is one line."""
    import asyncio

    import httpx

    from services.analytics.audit.gather import Analytics, gather, pair_segments
    from shared.errors import EngageError

    people = [
        Person("central", "yes", ("female",), ((START, "survey"),)),
        Person(None, "no", None, ((START, "advisory"),)),
    ]
    whole = coverage(people, (), exact, EXACT, 1)
    asked: list[str] = []
    sequence = iter([1, *[3] * 100])  # the first snapshot's answers straddle an arrival: it is fetched again

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] != "Bearer right":
            return httpx.Response(401, json={"reason": "unknown token"})
        segment = request.url.params.get("segment")
        by = request.url.params.get("by")
        asked.append(segment or (f"by={by}" if by else "whole"))
        if segment == "channel:advisory":
            return httpx.Response(422, json={"problems": [{"field": "segment", "reason": "no such channel"}]})
        body = (
            over_time(people, by, exact, EXACT, 1)
            if by
            else (coverage(people, tuple(segment.split(",")), exact, EXACT, 1) if segment else whole)
        )
        return httpx.Response(
            200, json={**body, "as_of": {"sequence": next(sequence) if not segment and not by else 3}}
        )

    async def run(token: str, pairs: int) -> Any:
        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://a", headers={"Authorization": f"Bearer {token}"}
        ) as c:
            return await gather(Analytics(c, "http://a", None), pairs=pairs, snapshots=2, every=0)

    got = asyncio.run(run("right", 3))
    assert len(got.snapshots) == 2
    first = got.snapshots[0]
    assert first["refused"] == [{"segment": "channel:advisory", "reason": "no such channel"}]
    keys = {a["segment"]["key"] for a in first["answers"] if a.get("segment")}
    assert {"region:central", "region:declined", "region:not_answered", "group:trans", "channel:survey"} <= keys
    assert len([k for k in keys if "," in k]) == 3 and pair_segments(whole, 3) == pair_segments(whole, 3)
    assert sorted(a["by"] for a in first["answers"] if "periods" in a) == ["day", "week"]
    assert asked.count("whole") == 3  # the first snapshot twice (its whole process moved), the second once
    with pytest.raises(EngageError, match=r"^--token: analytics answered 401 \(unknown token\)$"):
        asyncio.run(run("wrong", 0))
