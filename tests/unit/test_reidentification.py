"""Re-identification risk and k-anonymity as plain function calls: the figures against counts made by
hand and by brute force, and k-anonymity as a property of any population."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.export.risk import (
    AGE_TOP_CODE,
    AGE_WIDE,
    MORE_THAN_ONE,
    REGION_METRO,
    SUPPRESSED,
    Generalisation,
    TooFew,
    anonymise,
    dropped,
    generalise,
    measure,
    multi_select,
    quasi_identifiers,
    steps_for,
)
from services.analytics.export.tables import Release, build
from shared.events import Attendee, Envelope, InterviewCompleted, InterviewFormat, InterviewScheduled
from shared.plan import shipped_plans
from shared.profile import DIMENSIONS, Profile
from tests import factories as f
from tests.unit.test_architecture import IO_LIBRARIES, ROOT, import_graph, reach, within
from tests.unit.test_export import recorded

PLAN = shipped_plans()["shfa-2018"]
QIS = ("region", "age_band", "race_ethnicity", "gender")
Rec = dict[str, str | None]


def same(a: str | None, b: str | None) -> bool:
    """Two released values are the same answer (a multi-select answer as a set)."""
    if a is None or b is None:
        return a is b
    return set(a.split(";")) == set(b.split(";"))


def class_sizes(records: Sequence[Mapping[str, str | None]], qis: Sequence[str]) -> list[int]:
    """For each record, how many records (itself included) share all its values: by brute force."""
    return [sum(all(same(r[q], o[q]) for q in qis) for o in records) for r in records]


values = st.sampled_from([None, "declined", "a", "b", "c", "a;b", "b;a", "a;b;c"])
ages = st.sampled_from([None, "declined", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"])
regions = st.sampled_from(
    [None, "declined", "central", "northeast", "twin_cities_east_metro", "twin_cities_west_metro"]
)
record = st.fixed_dictionaries({"region": regions, "age_band": ages, "race_ethnicity": values, "gender": values})
populations = st.lists(record, max_size=60)
recodings = st.lists(
    st.sampled_from(
        [multi_select(["race_ethnicity", "gender"]), AGE_TOP_CODE, AGE_WIDE, REGION_METRO, dropped("gender")]
    ),
    max_size=3,
    unique_by=lambda g: g.name,
)


@settings(max_examples=300, deadline=None)
@given(populations)
def test_the_risk_figures_equal_a_brute_force_count(people: list[Rec]) -> None:
    risk = measure(people, QIS, 3)
    sizes = class_sizes(people, QIS)
    assert risk.sample_uniques == sizes.count(1)
    assert risk.smallest_class == (min(sizes) if sizes else None)
    assert risk.below_k == sum(1 for n in sizes if n < 3)
    assert risk.participants == len(people)


@settings(max_examples=300, deadline=None)
@given(populations, st.integers(min_value=2, max_value=8), recodings)
def test_after_generalising_to_k_every_class_holds_at_least_k(
    people: list[Rec], k: int, steps: list[Generalisation]
) -> None:
    """Every released record shares its answers with k-1 others; only quasi-identifiers change, each
    either generalised or suppressed, and the counts of what was done are right."""
    tagged = [{**p, "row": str(i)} for i, p in enumerate(people)]
    if 0 < len(people) < k:
        with pytest.raises(TooFew):
            anonymise(tagged, QIS, k, steps, report_k=5)
        return
    done = anonymise(tagged, QIS, k, steps, report_k=5)
    assert all(n >= k for n in class_sizes(done.records, QIS))
    assert done.after.smallest_class is None or done.after.smallest_class >= k
    assert done.after.sample_uniques == 0 and done.after.below_k == 0
    assert [r["row"] for r in done.records] == [str(i) for i in range(len(people))]
    general, _ = generalise(tagged, steps)
    changed = 0
    for was, now in zip(general, done.records, strict=True):
        for q in QIS:
            assert now[q] in (was[q], SUPPRESSED)
            changed += now[q] != was[q]
    assert changed == done.suppressed_values
    if measure(general, QIS, k).below_k == 0:
        assert done.suppressed == {}  # already k-anonymous: nothing is suppressed


def test_the_risk_of_a_population_built_with_known_uniques() -> None:
    """Five alike, three alike, a pair who ticked the same answers in another order, and two people
    unique on their answers: 2 sample uniques, the smallest class 1, 7 people in classes below 5."""
    alike = {"region": "central", "age_band": "25-34", "race_ethnicity": ["white"], "gender": ["female"]}
    events = [f.survey(**alike) for _ in range(5)]
    events += [f.survey(**{**alike, "region": "northeast"}) for _ in range(3)]
    events += [
        f.survey(**{**alike, "race_ethnicity": ["white", "asian"]}),
        f.survey(**{**alike, "race_ethnicity": ["asian", "white"]}),
    ]
    events += [f.survey(**{**alike, "gender": "declined"}), f.survey(**{**alike, "gender": None})]
    made = build(recorded(events), PLAN, tables=("participants",))
    assert made.risk is not None
    before = made.risk.before
    assert (before.participants, before.classes, before.sample_uniques) == (12, 5, 2)
    assert (before.smallest_class, before.below_k, before.k) == (1, 7, 5)
    assert made.risk.after == before and made.risk.suppressed == {}  # no target: released as recorded
    about = made.dictionary["reidentification"]
    assert about["as_recorded"]["sample_uniques"] == 2 and about["k_anonymity"] is None
    assert about["quasi_identifiers"] == [*DIMENSIONS, *PLAN.derived_dimensions()]
    assert "mandated_group" in about["quasi_identifiers"]


def scheduled_in(place: str, person: str, **answers: object) -> list[Envelope]:
    """An interview scheduled in ``place``, then completed with ``person``'s answers."""
    iv = f.agg("iv")
    at = datetime(2018, 3, 5, 15, tzinfo=UTC)
    return [
        Envelope.wrap(
            InterviewScheduled(interview_id=iv, format=InterviewFormat.phone, scheduled_for=at, region=place),
            process_id="shfa-2018",
            source="intake",
        ),
        Envelope.wrap(
            InterviewCompleted(
                interview_id=iv,
                format=InterviewFormat.phone,
                participants=[Attendee(participant_ref=person, profile=Profile(**answers))],
            ),
            process_id="shfa-2018",
            source="intake",
        ),
    ]


def test_k_anonymised_rows_show_each_participant_as_released_and_the_event_region_with_them() -> None:
    """With a target, every row of a participant carries their released answers; where their region is
    suppressed, so is the region of the events they took part in, and a merged region is merged there too."""
    people = [f.ref() for _ in range(7)]
    events = [ev for p in people[:6] for ev in scheduled_in("central", p, region="central", age_band="25-34")]
    events += scheduled_in("northeast", people[6], region="northeast", age_band="65+")
    events += scheduled_in("northeast", people[6], region="northeast")  # returning
    made = build(recorded(events), PLAN, release=Release(3, steps_for(PLAN, multi=True, region="metro")))
    assert made.risk is not None and made.risk.after.smallest_class is not None
    assert made.risk.after.smallest_class >= 3
    rows = made.tables["engagements"][1]
    by_person: dict[str, set[tuple[object, ...]]] = {}
    for row in rows:
        by_person.setdefault(row["participant"], set()).add(tuple(row[q] for q in quasi_identifiers(PLAN)))
    assert all(len(shown) == 1 for shown in by_person.values())
    alone = [r for r in rows if r["participant"] == rows[-1]["participant"]]
    assert len(alone) == 2 and {r["region"] for r in alone} == {SUPPRESSED}
    assert {r["event_region"] for r in alone} == {SUPPRESSED}  # the interview's place would tell theirs
    # Two others were suppressed in full to keep them company; everyone else's event region is merged.
    assert [r["event_region"] == SUPPRESSED for r in rows] == [r["region"] == SUPPRESSED for r in rows]
    assert [r["event_region"] for r in rows].count("greater_minnesota") == 4
    participants = made.tables["participants"][1]
    assert {r["region"] for r in participants} == {"greater_minnesota", SUPPRESSED}
    assert [r["engagements"] for r in participants] == [1, 1, 1, 1, 1, 1, 2]


def test_each_generalisation_recodes_what_it_says() -> None:
    people: list[Rec] = [
        {"region": "twin_cities_west_metro", "age_band": "65+", "race_ethnicity": "white;black", "gender": "male"},
        {"region": "southwest", "age_band": "18-24", "race_ethnicity": "white", "gender": None},
    ]
    out, changed = generalise(people, [multi_select(["race_ethnicity"]), AGE_WIDE, REGION_METRO, dropped("gender")])
    assert out == [
        {"region": "twin_cities_metro", "age_band": "55+", "race_ethnicity": MORE_THAN_ONE, "gender": SUPPRESSED},
        {"region": "greater_minnesota", "age_band": "18-34", "race_ethnicity": "white", "gender": SUPPRESSED},
    ]
    assert changed == {"multi_select": 1, "age_wide": 2, "region_metro": 2, "drop:gender": 2}
    assert generalise(people, [AGE_TOP_CODE])[0][0]["age_band"] == "55+"
    assert people[0]["age_band"] == "65+"  # the input is left as it was


def test_the_generalisations_asked_for_are_checked_against_the_plan() -> None:
    steps = steps_for(PLAN, multi=True, age_band="top_code", region="metro", drop=["experience_terms"])
    assert [s.name for s in steps] == ["multi_select", "age_top_code", "region_metro", "drop:experience_terms"]
    assert "mandated_group" in steps[0].columns and "region" not in steps[0].columns
    assert steps_for(PLAN) == ()
    with pytest.raises(ValueError, match="'favourite_colour' is not a quasi-identifier"):
        steps_for(PLAN, drop=["favourite_colour"])


def test_fewer_people_than_k_cannot_be_k_anonymous() -> None:
    with pytest.raises(TooFew, match="holds 2 participants, fewer than k = 5"):
        anonymise([{"region": "central"}, {"region": "central"}], ("region",), 5, [], report_k=5)
    assert anonymise([], ("region",), 5, [], report_k=5).after.participants == 0


def test_the_risk_module_is_pure() -> None:
    """No network, database or HTTP library, even indirectly: it can be trusted as plain arithmetic."""
    graph = import_graph(ROOT, ("services", "shared"))
    reached = reach(graph, "services.analytics.export.risk")
    assert not [lib for lib in IO_LIBRARIES if any(within(m, (lib,)) for m in reached)]
    assert "services.analytics.export.risk" in graph
