"""The plan: the shipped one loads, and a bad plan is refused with key, value and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.plan import Plan, check_plan_text, load_plan, load_plans, shipped_plans
from shared.profile import CATEGORIES, Profile

MANDATED = (
    "victims_survivors",
    "social_service_providers",
    "tribal_affiliation",
    "crime_victim_coalitions",
    "task_forces",
    "prosecutors_defenders",
    "police_probation",
    "intersecting_issues",
    "researchers",
)

HEAD = 'process_id = "test-process"\nname = "A test process"\n'
REGION = '[dimensions.region]\nlabel = "Region"\nmulti_select = false\n'


def write(tmp_path: Path, body: str, name: str = "test.toml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def refused(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_plan(write(tmp_path, body))
    return str(caught.value)


@pytest.fixture(scope="module")
def shfa() -> Plan:
    return shipped_plans()["shfa-2018"]


def test_shipped_plan_has_its_dimensions_and_the_nine_mandated_groups(shfa: Plan) -> None:
    assert len(shfa.dimensions) == 12
    assert tuple(shfa.dimension("mandated_group").categories) == MANDATED
    assert tuple(shfa.derived_dimensions()) == ("gender_identity_groups", "mandated_group")
    assert tuple(shfa.dimension("region").categories) == CATEGORIES["region"]
    assert load_plans(None) == shipped_plans()


def test_shipped_labels_are_the_reports_and_own_terms_are_quoted_as_theirs(shfa: Plan) -> None:
    assert shfa.label_of("region", "twin_cities_west_metro") == "Twin Cities West Metro"
    assert shfa.label_of("lived_experience", "yes") == "People with lived experience"
    assert shfa.label_of("race_ethnicity", "black") == "African/Black/African American"
    assert shfa.label_of("experience_terms", "own_term_prostitute") == '"prostitute" (their own term)'
    assert shfa.label_of("region", "declined") == "declined"  # falls back to the code
    assert shfa.label_of("nowhere", "x") == "x"


def test_every_shipped_target_says_where_its_number_comes_from(shfa: Plan) -> None:
    targets = [c.target for d in shfa.dimensions.values() for c in d.categories.values() if c.target]
    assert len(targets) >= 20
    for target in targets:
        assert target.kind in ("goal", "benchmark") and target.source.strip()
        if target.kind == "goal":
            assert "goal" in target.source  # a goal never passes for a population fact
    regions = [c.target.share for c in shfa.dimension("region").categories.values() if c.target]
    assert sum(regions) <= 1.0
    assert shfa.dimension("lived_experience").categories["yes"].target.share == 0.40
    assert shfa.dimension("mandated_group").categories["victims_survivors"].target.min_count == 60
    assert "declined" not in shfa.dimension("region").categories


def test_matches_places_participants_in_the_mandated_groups(shfa: Plan) -> None:
    assert shfa.matches("mandated_group", {"professional_roles": ("police",)}) == ("police_probation",)
    assert shfa.matches("mandated_group", Profile(lived_experience="yes").categories) == ("victims_survivors",)
    both = Profile(professional_roles=["nurse", "tribal_agency"], task_force_connection="yes").categories
    assert shfa.matches("mandated_group", both) == ("social_service_providers", "tribal_affiliation", "task_forces")
    assert shfa.matches("mandated_group", {"lived_experience": ("declined",)}) == ()


def test_check_plan_text_summarises_and_warns(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "shared" / "plans" / "shfa-2018.toml"
    text = check_plan_text(shipped)
    assert "shfa-2018" in text and "12 dimensions (2 derived)" in text and "no warnings" in text
    thin = (
        HEAD
        + REGION
        + "".join(
            f'[dimensions.region.categories.{c}]\nlabel = "{c}"\n'
            f'target = {{ share = 0.1, kind = "goal", source = "a goal" }}\n'
            for c in ("central", "southeast")
        )
    )
    assert "add up to only 0.2" in check_plan_text(write(tmp_path, thin))


def test_unknown_dimension(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        HEAD + '[dimensions.colour]\nlabel = "C"\nmulti_select = false\n'
        '[dimensions.colour.categories.red]\nlabel = "Red"\n',
    )
    assert "plan test.toml: dimensions.colour: 'colour' is not a profile dimension (allowed: region," in message


def test_unknown_category_names_the_allowed_ones(tmp_path: Path) -> None:
    message = refused(tmp_path, HEAD + REGION + '[dimensions.region.categories.nowhere]\nlabel = "Nowhere"\n')
    assert "plan test.toml: dimensions.region.categories.nowhere: 'nowhere' is not a region category" in message
    assert "(allowed: twin_cities_west_metro, twin_cities_east_metro," in message


def test_share_past_one(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        HEAD + REGION + '[dimensions.region.categories.central]\nlabel = "Central"\n'
        'target = { share = 1.5, kind = "goal", source = "s" }\n',
    )
    assert (
        "plan test.toml: dimensions.region.categories.central.target.share = 1.5: "
        "Input should be less than or equal to 1"
    ) in message


def test_both_share_and_min_count(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        HEAD + REGION + '[dimensions.region.categories.central]\nlabel = "Central"\n'
        'target = { share = 0.3, min_count = 10, kind = "goal", source = "s" }\n',
    )
    assert "dimensions.region.categories.central.target: share = 0.3, min_count = 10" in message
    assert "exactly one of share or min_count" in message


def test_when_on_a_dimension_that_is_not_derived(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        HEAD + REGION + '[dimensions.region.categories.central]\nlabel = "Central"\n'
        'when = { lived_experience = ["yes"] }\n',
    )
    assert "dimensions.region.categories.central.when = {'lived_experience': ['yes']}" in message
    assert "only categories of a derived dimension take `when`" in message


def test_derived_dimension_needs_valid_when_rules(tmp_path: Path) -> None:
    body = HEAD + (
        '[dimensions.group]\nlabel = "G"\nmulti_select = true\nderived = true\n'
        '[dimensions.group.categories.a]\nlabel = "A"\n'
        '[dimensions.group.categories.b]\nlabel = "B"\nwhen = { professional_roles = ["cop"] }\n'
    )
    message = refused(tmp_path, body)
    assert "dimensions.group.categories.a.when: missing" in message
    assert "dimensions.group.categories.b.when.professional_roles: 'cop' is not a professional_roles" in message


def test_wrong_multi_select(tmp_path: Path) -> None:
    body = HEAD + REGION.replace("false", "true") + '[dimensions.region.categories.central]\nlabel = "C"\n'
    message = refused(tmp_path, body)
    assert "dimensions.region.multi_select = true: region is single-select" in message
    assert "multi_select must be false" in message


def test_single_select_shares_past_one(tmp_path: Path) -> None:
    body = (
        HEAD
        + REGION
        + "".join(
            f'[dimensions.region.categories.{c}]\nlabel = "{c}"\n'
            f'target = {{ share = 0.6, kind = "goal", source = "s" }}\n'
            for c in ("central", "southeast")
        )
    )
    message = refused(tmp_path, body)
    assert "dimensions.region: target shares add up to 1.2 (central 0.6 + southeast 0.6)" in message
    assert "cannot pass 1.0" in message


def test_multi_select_shares_may_add_past_one(tmp_path: Path) -> None:
    body = (
        HEAD
        + '[dimensions.race_ethnicity]\nlabel = "R"\nmulti_select = true\n'
        + "".join(
            f'[dimensions.race_ethnicity.categories.{c}]\nlabel = "{c}"\n'
            f'target = {{ share = 0.6, kind = "benchmark", source = "s", vintage = "2020" }}\n'
            for c in ("black", "white")
        )
    )
    assert load_plan(write(tmp_path, body)).dimension("race_ethnicity").categories["white"].target.share == 0.6


def test_a_missing_source_is_refused(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        HEAD + REGION + '[dimensions.region.categories.central]\nlabel = "Central"\n'
        'target = { share = 0.1, kind = "goal", source = "  " }\n',
    )
    assert "dimensions.region.categories.central.target.source = '  ': String should have at least 1" in message


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    message = refused(tmp_path, HEAD + "threshold 0.8\n")
    assert message.startswith("plan test.toml: TOML syntax error at line 3, column")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_plan(tmp_path / "absent.toml")


def test_two_plans_for_one_process(tmp_path: Path) -> None:
    body = HEAD + REGION + '[dimensions.region.categories.central]\nlabel = "Central"\n'
    a, b = write(tmp_path, body, "a.toml"), write(tmp_path, body, "b.toml")
    with pytest.raises(ConfigError) as caught:
        load_plans([a, b])
    assert "b.toml: process_id = 'test-process': already planned by" in str(caught.value)
    assert "a.toml" in str(caught.value)
    other = write(tmp_path, body.replace("test-process", "other-process"), "c.toml")
    assert set(load_plans([a, other])) == {"test-process", "other-process"}


def test_toml_error_at_the_end_of_the_file_still_names_a_line(tmp_path: Path) -> None:
    message = refused(tmp_path, HEAD + "tags = [1,\n")
    assert message.startswith("plan test.toml: TOML syntax error at line 3 (end of file): ")
