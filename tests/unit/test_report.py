"""`engage report`'s pure part: the 2018 population's answers in, the report's table out, to the decimal.

The population is the one the 2018 report's summary describes: 288 participants who gave a
profile and 6 who did not; 111 with lived experience; race/ethnicity, gender, LGBQ+ and the
terms among them as the summary gives them; and a 35-member advisory group, 22 of them with
lived experience. The integration test publishes the same people.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.analytics.answers.coverage import View, coverage
from services.analytics.answers.models import CoverageAnswer, Freshness
from services.analytics.answers.segments import in_segment, parse_segment
from services.analytics.answers.suppression import cell_keys
from services.analytics.projection.counts import counts_of
from services.analytics.projection.fold import ParticipantState
from services.analytics.report.participation import (
    ADVISORY_SEGMENT,
    LIVED_SEGMENT,
    Report,
    ReportError,
    build,
    percent,
    their_term,
)
from services.analytics.report.render import csv_text, html, markdown
from shared.plan import shipped_plans
from shared.profile import Profile
from tests.populations import keyed

PLAN = shipped_plans()["shfa-2018"]
K = 5
EXACT = View(K, suppressed=False)
ROUNDED = View(K, suppressed=True, release_every=K)
FRESH = Freshness(sequence=412, stream_sequence=412, behind=0, projected_at=None, answered_at=datetime.now(UTC))
SEEN = datetime(2018, 4, 2, 15, tzinfo=UTC)

REGIONS = [
    ("twin_cities_west_metro", 90),
    ("twin_cities_east_metro", 76),
    ("northeast", 36),
    ("southwest", 28),
    ("northwest", 19),
    ("central", 14),
    ("southeast", 13),
    ("west_central", 7),
    ("declined", 3),
    (None, 2),
]
# Among the 111 people with lived experience (108 answered race/ethnicity, 3 declined).
RACE = [
    (["white"], 42),
    (["white", "multiracial"], 13),
    (["black", "indigenous", "multiracial"], 10),
    (["black", "indigenous"], 14),
    (["black"], 11),
    (["asian"], 7),
    (["latinx", "immigrant"], 4),
    (["latinx"], 2),
    (["other"], 5),
    ("declined", 3),
]
# 110 answered gender, 1 declined: transgender is ticked 7 times and non-binary 5 times, by 10 people.
GENDER = [
    (["female"], 98),
    (["female", "transgender"], 4),
    (["female", "non_binary"], 2),
    (["transgender", "non_binary"], 2),
    (["transgender"], 1),
    (["non_binary"], 1),
    (["male"], 2),
    ("declined", 1),
]
LGBQ = [("yes", 22), ("no", 85), ("declined", 4)]
OTHER_ROLES = ["social_service_provider", "police", "advocate", "outreach_worker", "prosecutor", "researcher"]


def spread(pairs: list[tuple[object, int]]) -> list[object]:
    return [value for value, n in pairs for _ in range(n)]


def terms_of(i: int) -> list[str] | None:
    """The terms the i-th person with lived experience chose (100 of them chose any): 50 survivor of
    trafficking, 44 survivor of sexual exploitation, 28 sex worker, 21 "prostitute", 13 independent provider."""
    if i >= 100:
        return None
    chosen = [
        term
        for term, start, stop in (
            ("survivor_of_trafficking", 0, 50),
            ("survivor_of_sexual_exploitation", 30, 74),
            ("sex_worker", 72, 100),
            ("own_term_prostitute", 0, 21),
            ("independent_provider", 80, 93),
        )
        if start <= i < stop
    ]
    return chosen


def population_2018() -> list[tuple[Profile, str]]:
    """Each participant's profile and the channel they took part through (survey or advisory)."""
    lived = spread([("yes", 111), ("no", 170), ("declined", 4), (None, 3)])
    regions = spread(REGIONS)
    race, gender, lgbq = spread(RACE), spread(GENDER), spread(LGBQ)
    people: list[tuple[Profile, str]] = []
    advisory_yes = advisory_no = 0
    for i in range(288):
        fields: dict[str, object] = {"region": regions[i], "lived_experience": lived[i]}
        if i < 111:
            fields |= {
                "race_ethnicity": race[i],
                "gender": gender[i],
                "lgbq": lgbq[i],
                "experience_terms": terms_of(i),
                "professional_roles": (["advocate"] if i < 30 else ["outreach_worker", "social_worker"])
                if i < 56
                else None,
            }
        else:
            fields["professional_roles"] = [OTHER_ROLES[i % len(OTHER_ROLES)]]
        profile = Profile.model_validate({k: v for k, v in fields.items() if v is not None})
        assert profile.categories, "a participant who gave a profile answered something"
        channel = "survey"
        if lived[i] == "yes" and advisory_yes < 22 and i % 5 == 0:
            channel, advisory_yes = "advisory", advisory_yes + 1
        elif lived[i] == "no" and advisory_no < 13 and i % 7 == 0:
            channel, advisory_no = "advisory", advisory_no + 1
        people.append((profile, channel))
    assert (advisory_yes, advisory_no) == (22, 13)
    return people + [(Profile(), "survey")] * 6  # six took part without giving a profile


def state(profile: Profile, channel: str) -> ParticipantState:
    times = 3 if channel == "advisory" else 1  # the advisory group met more than once
    return ParticipantState(
        profile=profile,
        channels={channel: times},
        days={f"{SEEN.date().isoformat()}/{channel}": times},
        first_channel=channel,
        first_seen=SEEN,
        last_seen=SEEN,
    )


def answers(view: View, people: list[tuple[Profile, str]] | None = None) -> list[CoverageAnswer]:
    """Everyone's answer and the two segments' (the three `engage report` asks for)."""
    members = keyed([state(p, c) for p, c in people or population_2018()])
    made = []
    for key in (None, LIVED_SEGMENT, ADVISORY_SEGMENT):
        segment = parse_segment(PLAN, key)
        chosen = [(k, s) for k, s in members if segment is None or in_segment(s, segment, PLAN)]
        counts = counts_of([s for _, s in chosen], PLAN, sequence=FRESH.sequence)
        keys = cell_keys(chosen, PLAN) if view.suppressed else None
        made.append(coverage(counts, "shfa-2018", PLAN, view, FRESH, segment, keys))
    return made


@pytest.fixture(scope="module")
def exact() -> list[CoverageAnswer]:
    return answers(EXACT)


def figures(report: Report, section: str) -> dict[str, tuple[object, str | None]]:
    """label -> (people, share as text) of one section."""
    return {
        line.label: (line.people, None if line.percent is None else str(line.percent))
        for line in report.section(section).lines
    }


def test_percent_rounds_half_up_to_the_places_asked() -> None:
    assert percent(90, 288, 1) == Decimal("31.3")
    assert percent(1, 16, 1) == Decimal("6.3")  # 6.25: half up, not to even
    assert percent(1, 8, 0) == Decimal("13")  # 12.5
    assert percent(5, 8, 0) == Decimal("63")  # 62.5
    assert percent(3, 0, 1) is None


def test_the_profiled_base_gives_the_report_figures(exact: list[CoverageAnswer]) -> None:
    report = build(*exact)
    assert figures(report, "participants") == {"Participants": (294, None), "Gave a profile": (288, None)}
    assert figures(report, "region") == {
        "Twin Cities West Metro": (90, "31.3"),
        "Twin Cities East Metro": (76, "26.4"),
        "Northeast": (36, "12.5"),
        "Southwest": (28, "9.7"),
        "Northwest": (19, "6.6"),
        "Central": (14, "4.9"),
        "Southeast": (13, "4.5"),
        "West Central": (7, "2.4"),
        "Did not provide a location": (5, "1.7"),
    }
    assert figures(report, "lived_experience") == {
        "People with lived experience": (111, "38.5"),
        "Did not identify any lived experience": (177, "61.5"),
    }
    assert figures(report, "race_ethnicity") == {
        "White/European American": (55, "49.5"),
        "Identified only as white": (42, "37.8"),
        "African/Black/African American": (35, "31.5"),
        "Indigenous/Native American": (24, "21.6"),
        "Multi-racial": (23, "20.7"),
        "Asian/Asian American": (7, "6.3"),
        "Latinx": (6, "5.4"),
        "Immigrant/Foreign born": (4, "3.6"),
        "Another race/ethnicity": (5, "4.5"),
    }
    # the people who chose either (10), not the two rows added up (7 + 5 = 12, which would be 11%)
    assert figures(report, "gender") == {
        "Female": (104, "94"),
        "Male": (2, "2"),
        "Transgender or gender non-binary": (10, "9"),
        "Two-Spirit": (0, "0"),
        "Another gender": (0, "0"),
    }
    assert figures(report, "lgbq")["Lesbian, gay, bisexual, queer or pansexual"] == (22, "20")
    terms = figures(report, "experience_terms")
    assert terms["“survivor of trafficking”"] == (50, "45")
    assert terms["“survivor of sexual exploitation”"] == (44, "40")
    assert terms["“sex worker”"] == (28, "25")
    assert terms["“prostitute”"] == (21, "19")
    assert terms["“independent provider”"] == (13, "12")
    roles = figures(report, "professional_roles")
    assert roles["Identified a professional role"] == (56, "50")
    assert roles["Advocates"] == (30, "27") and roles["Social workers"] == (26, "23")
    assert figures(report, "advisory") == {"Members": (35, None), "People with lived experience": (22, "63")}


def test_the_answered_base_gives_shares_of_those_who_answered(exact: list[CoverageAnswer]) -> None:
    report = build(*exact, base="answered")
    region = figures(report, "region")
    assert region["Twin Cities West Metro"] == (90, "31.8")  # of the 283 who answered
    assert region["Twin Cities East Metro"] == (76, "26.9")
    assert region["West Central"] == (7, "2.5")
    assert region["Did not provide a location"] == (5, None)  # outside the base: a count, no share
    assert figures(report, "lived_experience") == {
        "People with lived experience": (111, "39.5"),  # of the 281 who answered yes or no
        "No lived experience identified": (170, "60.5"),
        "Declined or did not answer": (7, None),
    }
    race = figures(report, "race_ethnicity")
    assert race["White/European American"] == (55, "50.9") and race["Identified only as white"] == (42, "38.9")
    gender = figures(report, "gender")
    assert gender["Female"] == (104, "95") and gender["Transgender or gender non-binary"] == (10, "9")
    assert figures(report, "lgbq")["Lesbian, gay, bisexual, queer or pansexual"] == (22, "21")
    assert figures(report, "experience_terms")["“survivor of trafficking”"] == (50, "50")
    assert figures(report, "professional_roles")["Identified a professional role"] == (56, None)
    assert figures(report, "advisory")["People with lived experience"] == (22, "63")  # all 35 answered


def test_markdown_has_a_table_per_section_with_the_figures(exact: list[CoverageAnswer]) -> None:
    text = markdown(build(*exact))
    assert text.startswith("# Who participated: Safe Harbor for All strategic planning (Minnesota, 2018)\n")
    assert "As of sequence 412 (up to date)." in text and "Exact numbers (analyst view)." in text
    assert "| Twin Cities West Metro | 90 | 31.3% |" in text
    assert "| Did not provide a location | 5 | 1.7% |" in text
    assert "| People with lived experience | 111 | 38.5% |" in text
    assert "| Did not identify any lived experience | 177 | 61.5% |" in text
    assert "| Identified only as white | 42 | 37.8% |" in text
    assert "| Transgender or gender non-binary | 10 | 9% |" in text
    assert "| “prostitute” | 21 | 19% |" in text
    assert "| Participants | 294 |" in text
    assert "Shares of the 288 participants who gave a profile (one decimal)." in text
    answered = markdown(build(*exact, base="answered"))
    assert "| Twin Cities West Metro | 90 | 31.8% |" in answered
    assert "| Did not provide a location | 5 |  |" in answered
    assert "Shares of the 283 participants who answered the question (one decimal)." in answered


def test_csv_has_one_row_a_line_with_the_share_and_its_base(exact: list[CoverageAnswer]) -> None:
    for base, west, of, label in (("profiled", "31.3", "288", "gave a profile"), ("answered", "31.8", "283", None)):
        rows = list(csv.DictReader(io.StringIO(csv_text(build(*exact, base=base)))))
        by_item = {(r["section"], r["item"]): r for r in rows}
        row = by_item[("Region", "Twin Cities West Metro")]
        assert (row["people"], row["percent"], row["of_people"], row["rounded_to"]) == ("90", west, of, "")
        assert row["percent_of"] == (label or "answered the question")
    rows = list(csv.DictReader(io.StringIO(csv_text(build(*exact)))))
    lived = next(r for r in rows if r["item"] == "Did not identify any lived experience")
    assert (lived["people"], lived["percent"]) == ("177", "61.5")
    assert any(r["item"] == "“survivor of trafficking”" and r["percent"] == "45" for r in rows)


def test_html_is_one_page_with_nothing_from_elsewhere(exact: list[CoverageAnswer]) -> None:
    page = html(build(*exact))
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert '<th scope="row">Twin Cities West Metro</th><td>90</td><td>31.3%</td>' in page
    assert '<th scope="row">“prostitute”</th><td>21</td><td>19%</td>' in page
    for outside in ("<script", "<link", "<img", "src=", "href=", "@import", "url("):
        assert outside not in page


def test_a_hostile_label_is_escaped_in_html_and_markdown(exact: list[CoverageAnswer]) -> None:
    everyone, lived, advisory = exact
    hostile = '<script>alert("x")</script> | & more\n| 9 |'
    region = next(d for d in everyone.dimensions if d.dimension == "region")
    rows = [r.model_copy(update={"label": hostile}) if r.category == "northeast" else r for r in region.categories]
    changed = everyone.model_copy(
        update={
            "dimensions": [
                d.model_copy(update={"categories": rows}) if d.dimension == "region" else d for d in everyone.dimensions
            ]
        }
    )
    report = build(changed, lived, advisory)
    page = html(report)
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; | &amp; more" in page
    text = markdown(report)
    assert '| &lt;script>alert("x")&lt;/script> \\| & more \\| 9 \\| | 36 | 12.5% |' in text
    assert "“<5” means fewer than 5" in markdown(build(*answers(ROUNDED)))  # a shown <5 is no tag


def test_the_terms_are_the_participants_own_in_quotes(exact: list[CoverageAnswer]) -> None:
    assert their_term('"prostitute" (their own term)') == "“prostitute”"
    assert their_term("Survivor of trafficking") == "“survivor of trafficking”"
    lines = build(*exact).section("experience_terms").lines
    quoted = [line for line in lines if line.own_term]
    assert len(quoted) == 6 and all(line.label.startswith("“") and line.label.endswith("”") for line in quoted)
    assert [line.label for line in lines if not line.own_term] == ["Another term of their own"]


def test_rounded_answers_give_rounded_people_and_say_so() -> None:
    everyone, lived, advisory = answers(ROUNDED)
    report = build(everyone, lived, advisory)
    assert report.rounded_to == K
    assert any("Numbers rounded to multiples of 5 (coordinator view, base k = 5)" in note for note in report.notes)
    for section in report.sections:
        for line in section.lines:
            assert (
                line.people is None
                or line.people == "<5"
                or (isinstance(line.people, int) and line.people % K == 0 and line.people >= K)
            ), (section.key, line)
            if line.people == "<5" and line.base is not None:
                assert line.percent is None  # no share of a count shown only as <5
    west = figures(report, "region")["Twin Cities West Metro"]
    assert west[0] == 90  # 90 is a multiple of 5: rounding keeps it
    profiled = everyone.profiled
    assert isinstance(profiled, int) and west[1] == str(percent(90, profiled, 1))
    rows = list(csv.DictReader(io.StringIO(csv_text(report))))
    assert {r["rounded_to"] for r in rows} == {"5"}
    assert "coordinator view" in markdown(report)


def test_answers_that_do_not_fit_are_refused(exact: list[CoverageAnswer]) -> None:
    everyone, lived, advisory = exact
    with pytest.raises(ReportError, match="channel:advisory"):
        build(everyone, lived, lived)
    with pytest.raises(ReportError, match="base"):
        build(everyone, lived, advisory, base="everyone")
    with pytest.raises(ReportError, match="rounded and exact"):
        build(everyone, lived, answers(ROUNDED)[2])


def test_a_difference_of_rounded_numbers_never_shows_a_small_count_nor_a_bare_zero() -> None:
    """Everyone gave a location: no one "did not provide" one. Exact, that is 0; rounded, it is <k
    (rounded numbers cannot vouch for a zero)."""
    people = [(Profile(region="central", lived_experience="yes"), "survey")] * 12
    for view, expected in ((EXACT, 0), (ROUNDED, "<5")):
        report = build(*answers(view, people))
        assert figures(report, "region")["Did not provide a location"][0] == expected


@pytest.mark.parametrize(
    ("fmt", "base", "scope", "said"),
    [
        ("pdf", None, "analyst", "--format pdf: not one of markdown, html, csv"),
        ("csv", "everyone", "analyst", "--base everyone: not one of profiled, answered"),
        ("html", "answered", "admin", "--scope admin: not one of analyst, coordinator"),
    ],
)
def test_the_command_refuses_an_unknown_choice_naming_the_option(
    fmt: str, base: str | None, scope: str, said: str
) -> None:
    from services.cli.report import check_choices
    from shared.errors import EngageError

    with pytest.raises(EngageError) as refused:
        check_choices(fmt, base, scope)
    assert str(refused.value) == said
    check_choices("markdown", None, "coordinator")  # the defaults' neighbours pass
