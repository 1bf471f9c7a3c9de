"""Mapping files: `engage mapping check`, and how a submission's fields become a profile (or are refused)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.survey.sources.mapping import Refused, SourceMapping, apply_mapping, mapping_problems, parse_mapping
from services.survey.sources.routes import verify_webhook
from shared.http import UnauthorizedError
from shared.plan import shipped_plans

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sources"
PLAN = shipped_plans()["shfa-2018"]
runner = CliRunner()

GOOD = """
submitted_at = "when"
ignore = ["name", "phone", "contact/*"]
[fields."g/region"]
question = "region"
choices = { ne = "northeast", c = "central", x = "declined" }
[fields."g/race"]
question = "race_ethnicity"
choices = { w = "white", b = "black", i = "indigenous", x = "declined" }
"""


def mapping(text: str = GOOD) -> SourceMapping:
    parsed, problems = parse_mapping(text.encode(), "m.toml")
    assert parsed is not None, problems
    return parsed


@pytest.mark.parametrize("name", ["kobo-example.toml", "redcap-example.toml"])
def test_the_shipped_examples_pass_the_check(name: str) -> None:
    result = runner.invoke(app, ["mapping", "check", str(DOCS / name)])
    assert result.exit_code == 0, result.output
    assert "checked against plan shfa-2018" in result.output


BAD = """
ignore = ["note", "note", "g/age"]
[fields."g/region"]
question = "regoin"
choices = { a = "northeast" }
[fields."g/age"]
question = "age_band"
choices = { a = "18-24", b = "teen" }
[fields."g/race"]
question = "race_ethnicity"
choices = { w = "white", b = "black", i = "indigenous", m = "multiracial", a = "asian", l = "latinx" }
[fields."g/race2"]
question = "race_ethnicity"
choices = { w = "white", b = "black", i = "indigenous", m = "multiracial", a = "asian", l = "latinx", im = "immigrant" }
"""


def test_a_bad_mapping_gets_one_line_per_problem_naming_the_field(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(BAD)
    result = runner.invoke(app, ["mapping", "check", str(file)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    expected = [
        ('fields."g/region".question', "not a profile question"),  # unknown question
        ('fields."g/age".choices."b"', "not a age_band category"),  # unknown category
        ('fields."g/age"', "also listed under ignore"),  # duplicate: mapped and ignored
        ('fields."g/race".choices', "'immigrant'"),  # a category the plan targets, unmapped
        ('fields."g/race2".question', "duplicate"),  # two fields answer one question
        ("ignore", "'note': duplicate"),
    ]
    for field, reason in expected:
        assert any(field in line and reason in line for line in lines), (field, lines)
    assert len(lines) == len(expected), lines
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("fields = {}", "fields"),
        ('[fields.a]\nquestion = "region"', "fields.a.choices"),
        ('[fields.a]\nquestion = "region"\nchoices = {}\nextra = 1', "fields.a"),
        ("[fields.a\n", "TOML"),
        ('fields.a = { question = "region", choices = { x = "central" } }\nfields.a = 1', "TOML"),  # repeated key
    ],
)
def test_a_malformed_file_names_where(text: str, where: str) -> None:
    parsed, problems = parse_mapping(text.encode(), "m.toml")
    assert parsed is None and problems and all(p.startswith("m.toml: ") for p in problems)
    assert any(where in p for p in problems), problems


def test_an_unreadable_file_is_a_line_not_a_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["mapping", "check", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "cannot read it" in result.output


def test_a_good_mapping_has_no_problems_against_the_plan_when_targets_are_reached() -> None:
    assert mapping_problems(mapping(), None) == []
    against_plan = mapping_problems(mapping(), PLAN)  # the plan targets regions and communities GOOD leaves out
    assert any("g/race" in p and "'immigrant'" in p for p in against_plan)
    assert not any("'black'" in p or "'northeast'" in p for p in against_plan)


def test_fields_become_a_profile() -> None:
    fields = {"g/region": "ne", "g/race": "b i", "name": "Jo", "phone": "612 555 0100", "contact/x": "y"}
    profile, submitted = apply_mapping(mapping(), {**fields, "when": "2018-03-01T17:30:00"}, "kobo")
    assert profile.model_dump(exclude_none=True) == {"region": "northeast", "race_ethnicity": ["black", "indigenous"]}
    assert submitted is not None and submitted.isoformat() == "2018-03-01T17:30:00+00:00"
    assert apply_mapping(mapping(), {"g/race": ["x"], "g/region": ""}, "webhook")[0].race_ethnicity == "declined"


def test_redcap_checkboxes_are_the_codes_ticked() -> None:
    fields = {"g/race___w": "1", "g/race___b": "0", "g/race___i": "1", "redcap_event_name": "", "x_complete": "2"}
    assert apply_mapping(mapping(), fields, "redcap")[0].race_ethnicity == ["white", "indigenous"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"g/region": "atlantis"}, "g/region"),  # a code the mapping does not map
        ({"g/race": "w martian"}, "g/race"),
        ({"g/race": "w x"}, "g/race"),  # declined with a category
        ({"g/region": ["ne"]}, "g/region"),  # a list for a single choice
        ({"g/region": {"a": 1}}, "g/region"),
        ({"favourite_colour": "blue"}, "favourite_colour"),  # neither mapped nor ignored
        ({"_uuid": "u"}, "_uuid"),  # Kobo's metadata is only Kobo's
        ({"when": "yesterday"}, "when"),
        ({"when": "2999-01-01T00:00:00Z"}, "when"),
    ],
)
def test_what_the_mapping_cannot_read_is_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(Refused) as refused:
        apply_mapping(mapping(), fields, "webhook")
    assert [f for f, _ in refused.value.problems] == [field]
    assert "atlantis" not in str(refused.value) and "martian" not in str(refused.value)


SECRET = base64.b64encode(b"k" * 24)


def signed(body: bytes, msg_id: str = "msg_1", stamp: int = 1_700_000_000, key: bytes = b"k" * 24) -> dict[str, str]:
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


def test_standard_webhook_signatures() -> None:
    body, key, now = b'{"a": 1}', b"k" * 24, 1_700_000_000
    headers = signed(body)
    assert verify_webhook(key, headers, body, 300, now) == "msg_1"
    several = {**headers, "webhook-signature": "v1,bm9wZQ== " + headers["webhook-signature"]}
    assert verify_webhook(key, several, body, 300, now) == "msg_1"
    for bad, moment in (
        ({**headers, "webhook-signature": "v1,bm9wZQ=="}, now),
        ({**headers, "webhook-signature": headers["webhook-signature"].replace("v1,", "v2,")}, now),
        (signed(body, key=b"x" * 24), now),
        (headers, now + 301),  # too old
        (headers, now - 301),  # from the future
        ({k: v for k, v in headers.items() if k != "webhook-id"}, now),
        ({**headers, "webhook-timestamp": "soon"}, now),
    ):
        with pytest.raises(UnauthorizedError):
            verify_webhook(key, bad, body, 300, moment)
    with pytest.raises(UnauthorizedError):
        verify_webhook(key, headers, body + b" ", 300, now)  # the body was changed
