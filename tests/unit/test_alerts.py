"""Alerts without servers: the plan's hysteresis fields, the rule, the words and the settings."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.analytics.alerts.delivery import Email, Webhook, destinations
from services.analytics.alerts.message import alert_text, group_link, shown_needed
from services.analytics.answers.models import CategoryRow
from services.analytics.engine.announce import Pending, changes, decide
from shared.errors import ConfigError
from shared.plan import Announce, check_plan_text, load_plan, shipped_plans
from shared.settings import Settings
from shared.status_events import TYPE_OF_STATUS, CommunityStatusChanged, Status

U, W, R = Status.UNDER_REACHED, Status.WATCH, Status.ON_TRACK
KEY = ("gender", "non_binary")

PLAN = """
process_id = "test-alerts"
name = "Test"
{announce}
[dimensions.region]
label = "Region"
multi_select = false
[dimensions.region.categories.northeast]
label = "Northeast"
target = {{ share = 0.5, kind = "goal", source = "test goal" }}
"""


@pytest.mark.parametrize(
    ("announce", "field"),
    [
        ("announce = { min_participants = -1, hold_participants = 5 }", "announce.min_participants = -1"),
        ("announce = { min_participants = 10, hold_participants = -3 }", "announce.hold_participants = -3"),
        ('announce = { min_participants = "many" }', "announce.min_participants = 'many'"),
        ("announce = { min_participants = 10, hold_for = 3 }", "announce.hold_for"),
    ],
)
def test_plan_check_names_a_bad_hysteresis_field(tmp_path: Path, announce: str, field: str) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(announce=announce))
    with pytest.raises(ConfigError) as err:
        check_plan_text(plan)
    assert f"plan plan.toml: {field}" in str(err.value)


def test_hysteresis_fields_have_defaults_and_the_shipped_plan_sets_them(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(announce=""))
    assert load_plan(plan).announce == Announce(min_participants=0, hold_participants=0)
    assert "announce.hold_participants = 0" in check_plan_text(plan)
    shipped = shipped_plans()["shfa-2018"].announce
    assert shipped.min_participants >= 20 and shipped.hold_participants >= 5


RULE = Announce(min_participants=30, hold_participants=10)


def run(steps: list[tuple[Status, int]], rule: Announce = RULE) -> list[tuple[int, Status]]:
    """Feed one category's (status, base) judgements through ``decide``; (base, status) announced."""
    before: dict[tuple[str, str], str] = {}
    pending: dict[tuple[str, str], Pending] = {}
    said = []
    for i, (status, base) in enumerate(steps):
        d = decide({KEY: (status, base)}, before, pending, rule, sequence=i)
        for st in d.announce.values():
            said.append((base, st))
        before.update({**d.baseline, **d.announce})
        for key in d.cleared:
            pending.pop(key, None)
        pending.update(d.pending)
    return said


def test_nothing_is_judged_below_the_minimum_base() -> None:
    assert run([(U, 5), (R, 12), (U, 29)]) == []
    assert run([(U, 5), (U, 30)]) == [(30, U)]  # the first judgement at the minimum: the baseline rule


def test_a_first_judgement_is_a_baseline_announced_only_when_under_reached() -> None:
    assert run([(R, 30), (W, 31)]) == []
    assert run([(U, 30)]) == [(30, U)]


def test_a_change_is_announced_once_it_held_while_the_base_grew_by_hold() -> None:
    assert run([(R, 30), (U, 35), (U, 40), (U, 44)]) == []
    assert run([(R, 30), (U, 35), (U, 40), (U, 45)]) == [(45, U)]


def test_a_flicker_is_not_announced_and_starts_the_wait_again() -> None:
    steps = [(R, 30), (U, 35), (R, 40), (U, 41), (W, 45), (U, 50), (U, 59), (U, 60)]
    assert run(steps) == [(60, U)]


def test_without_hysteresis_every_change_is_announced_as_before() -> None:
    announce, baseline = changes({KEY: R}, {})
    assert announce == {} and baseline == {KEY: R}
    assert changes({KEY: U}, {KEY: "on-track"}) == ({KEY: U}, {})
    assert run([(R, 1), (U, 2), (R, 3)], Announce()) == [(2, U), (3, R)]


def event(status: Status, needed: int | None, ratio: float | None = 0.43) -> CommunityStatusChanged:
    return CommunityStatusChanged(
        type=TYPE_OF_STATUS[status],  # type: ignore[arg-type]  # a Literal chosen by the table
        event_id=f"shfa-2018.gender.non_binary.{status}.77",
        process_id="shfa-2018",
        dimension="gender",
        category="non_binary",
        label="Gender non-binary",
        status=status,
        previous=None,
        ratio=ratio,
        needed=needed,
        sequence=77,
        judged_at=datetime.now(UTC),
    )


def coordinators_row(count: int | str, ratio: float | None) -> CategoryRow:
    return CategoryRow(
        category="non_binary",
        label="Gender non-binary",
        count=count,
        alone=None,
        share=None,
        interval=None,
        target=None,
        ratio=ratio,
        status=U,
        needed=None,
        needed_is_lower_bound=False,
    )


INTEGER = re.compile(r"(?<![\d.])\d+(?![\d.])")


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_no_alert_carries_a_count_from_1_to_k_minus_1(k: int) -> None:
    """Every number in an alert's words is a ratio, a multiple of k, k itself, or the year in a link."""
    for needed in [None, *range(1, 4 * k + 2)]:
        for status in (U, W, R):
            for row in (None, coordinators_row(f"<{k}", None), coordinators_row(2 * k, 0.6)):
                text = alert_text(event(status, needed), row, k, "https://engage.example.org")
                small = [n for n in map(int, INTEGER.findall(text)) if 1 <= n < k]
                assert small == [], (text, small)
                assert "Gender non-binary" in text and "/dashboard/group?" in text


def test_an_alert_names_group_status_ratio_needed_and_its_drill_down() -> None:
    text = alert_text(event(U, 7), coordinators_row(10, 0.45), 5, "https://engage.example.org/")
    assert text.splitlines()[0] == "Gender non-binary is under-reached."
    assert "0.45" in text and "0.43" not in text  # the coordinators' ratio, not the exact one
    assert "About 10 more participants" in text and "7" not in text
    link = "https://engage.example.org/dashboard/group?group=gender:non_binary&process_id=shfa-2018"
    assert group_link("https://engage.example.org", event(U, 7)) == link and link in text
    assert shown_needed(0, 5) is None and shown_needed(1, 5) == 5 and shown_needed(11, 5) == 15


def test_alert_settings_are_checked_and_secrets_never_shown() -> None:
    hook = "https://hooks.slack.example/services/T000/B000/SECRETSECRET"
    got = destinations(
        Settings(
            alert_webhooks=hook,
            smtp_url="smtp://alerts:hunter2-password@mail.example.org:2525?starttls=true",
            alert_email_from="engage@example.org",
            alert_email_to="a@example.org, b@example.org",
        )
    )
    assert [type(d) for d in got] == [Webhook, Email]
    for d in got:
        assert "SECRET" not in d.key + d.shown and "hunter2" not in d.key + d.shown
    assert got[0].shown == "hooks.slack.example"
    for bad, name in [
        ({"alert_webhooks": "ftp://x/SECRETSECRET"}, "ENGAGE_ALERT_WEBHOOKS"),
        ({"smtp_url": "http://u:hunter2@x", "alert_email_to": "a@b.org", "alert_email_from": "e@b.org"}, "SMTP_URL"),
        ({"smtp_url": "smtp://x", "alert_email_from": "e@b.org"}, "ENGAGE_ALERT_EMAIL_TO"),
        ({"smtp_url": "smtp://x", "alert_email_to": "a@b.org"}, "ENGAGE_ALERT_EMAIL_FROM"),
        ({"alert_email_to": "a@b.org"}, "ENGAGE_SMTP_URL"),
    ]:
        with pytest.raises(ConfigError) as err:
            destinations(Settings(**bad))  # type: ignore[arg-type]  # strings, as the environment gives them
        assert name in str(err.value) and "SECRET" not in str(err.value) and "hunter2" not in str(err.value)
    assert Settings(public_url="https://engage.example.org/").public_url == "https://engage.example.org"
