"""The projection as plain function calls: events in, count changes out."""

from __future__ import annotations

from collections import Counter

from services.analytics.projection.engages import keys_of, person_key
from services.analytics.projection.fold import ALONE, ANSWERED, ParticipantState, project
from shared.profile import Profile
from tests import factories as f

P = "shfa-2018"


def test_a_survey_response_is_a_participant_with_its_categories() -> None:
    changes = project([f.survey(region="northeast", race_ethnicity=["white", "black"])], {})
    assert changes.totals == Counter({(P, "participants"): 1, (P, "engagements"): 1, (P, "profiled"): 1})
    assert changes.people == Counter({(P, "survey"): 1})
    assert changes.categories == Counter(
        {
            (P, "region", "northeast"): 1,
            (P, "region", ANSWERED): 1,
            (P, "race_ethnicity", "white"): 1,
            (P, "race_ethnicity", "black"): 1,
            (P, "race_ethnicity", ANSWERED): 1,
        }
    )


def test_declined_is_counted_but_not_as_an_answered_category() -> None:
    changes = project([f.survey(region="declined")], {})
    assert changes.categories == Counter({(P, "region", "declined"): 1})


def test_a_second_engagement_counts_the_person_once_and_the_engagement_twice() -> None:
    """A returning participant adds an engagement, not a participant."""
    person = f.ref()
    first = project([f.interview(person, region="central")], {})
    state = first.participants[(P, person_key(person))]
    second = project([f.interview(person, lived_experience="yes")], {(P, person_key(person)): state})
    assert second.totals == Counter({(P, "engagements"): 1})
    assert second.engagements == Counter({(P, "interview_in_person"): 1})
    assert second.categories == Counter({(P, "lived_experience", "yes"): 1, (P, "lived_experience", ANSWERED): 1})
    assert second.participants[(P, person_key(person))].profile == Profile(region="central", lived_experience="yes")


def test_a_changed_answer_moves_the_person_between_categories() -> None:
    person = f.ref()
    known = {(P, person_key(person)): ParticipantState(profile=Profile(region="central"), channels={"advisory": 1})}
    changes = project([f.interview(person, region="northwest")], known)
    assert changes.categories == Counter({(P, "region", "northwest"): 1, (P, "region", "central"): -1})


def test_withdrawal_takes_away_everything_the_person_added() -> None:
    """Withdrawn: out of participants, engagements and every category, and stays out."""
    person = f.ref()
    known = {
        (P, person_key(person)): ParticipantState(
            profile=Profile(region="central", gender=["female"]), channels={"interview_phone": 2}
        )
    }
    changes = project([f.withdrawn(person), f.interview(person, region="central")], known)
    assert changes.totals == Counter({(P, "participants"): -1, (P, "engagements"): -2, (P, "profiled"): -1})
    assert changes.engagements == Counter({(P, "interview_phone"): -2})
    assert changes.people == Counter({(P, "interview_phone"): -1})
    assert changes.categories == Counter(
        {
            (P, "region", "central"): -1,
            (P, "region", ANSWERED): -1,
            (P, "gender", "female"): -1,
            (P, "gender", ANSWERED): -1,
            (P, "gender", ALONE + "female"): -1,
        }
    )
    assert changes.participants[(P, person_key(person))].withdrawn


def test_a_gathering_counts_every_attendee_profiled_or_not() -> None:
    changes = project([f.gathering(10, [Profile(region="southeast")] * 4)], {})
    assert changes.totals[(P, "participants")] == 10
    assert changes.engagements == Counter({(P, "art_of_hosting"): 10})
    assert changes.categories[(P, "region", "southeast")] == 4


def test_scheduling_events_change_no_count() -> None:
    from shared.events import Envelope, InterviewScheduled

    ev = Envelope.wrap(
        InterviewScheduled(interview_id="iv-0123456789", format="phone", scheduled_for=f.when()),
        process_id=P,
        source="intake",
    )
    changes = project([ev], {})
    assert not changes.totals and not changes.categories and not changes.participants


def test_processes_are_counted_apart() -> None:
    changes = project([f.survey(region="central"), f.survey(region="central", process_id="other-2026")], {})
    assert changes.categories[(P, "region", "central")] == 1
    assert changes.categories[("other-2026", "region", "central")] == 1


def test_keys_of_names_every_participant_a_batch_touches() -> None:
    person = f.ref()
    gathering = f.gathering(2, [])
    keys = keys_of([f.interview(person), gathering, f.withdrawn(person)])
    assert (P, person_key(person)) in keys and len(keys) == 3


def test_multi_select_answers_count_alone_beside_alone_or_in_combination() -> None:
    """White only (the report's 37.8%) beside white alone or in combination (49.5%)."""
    changes = project([f.survey(race_ethnicity=["white"]), f.survey(race_ethnicity=["white", "indigenous"])], {})
    assert changes.categories[(P, "race_ethnicity", "white")] == 2
    assert changes.categories[(P, "race_ethnicity", ALONE + "white")] == 1
    assert (P, "race_ethnicity", ALONE + "indigenous") not in changes.categories


def test_engagements_are_counted_by_local_day_and_channel() -> None:
    """An evening interview in Minnesota belongs to its own day, not tomorrow's in UTC."""
    from datetime import UTC, datetime

    person = f.ref()
    late = f.interview(person).model_copy(update={"occurred_at": datetime(2018, 3, 6, 2, 30, tzinfo=UTC)})
    later = f.interview(person).model_copy(update={"occurred_at": datetime(2018, 3, 9, 15, 0, tzinfo=UTC)})
    changes = project([later, late], {})
    assert changes.daily == Counter(
        {(P, "2018-03-05", "interview_in_person"): 1, (P, "2018-03-09", "interview_in_person"): 1}
    )
    assert changes.firsts == Counter({(P, "2018-03-05", "interview_in_person"): 1})
    state = changes.participants[(P, person_key(person))]
    gone = project([f.withdrawn(person)], {(P, person_key(person)): state})
    assert gone.daily == Counter(
        {(P, "2018-03-05", "interview_in_person"): -1, (P, "2018-03-09", "interview_in_person"): -1}
    )
    assert gone.firsts == Counter({(P, "2018-03-05", "interview_in_person"): -1})
