"""The auditor over a sequence of coordinator views taken as events arrive one by one.

Every event is published alone, the projector catches up, and a coordinator gathers every
answer it can see (the whole process, every single-term segment, one pair, both over-time
views). The auditor then works out, from all of those snapshots together and their
relations (totals, segment complements, a release's step of exactly k participants), the
range of every count. With rounded releases no count of 1 to k-1 people is pinned; the
same arrivals seen exactly (the analyst's view, protection off) pin them at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.analytics.app import build_app
from services.analytics.audit.gather import Analytics, gather
from services.analytics.audit.model import build, snapshots_from
from services.analytics.audit.solve import audit
from shared.bus import ensure_streams, make_broker, publish_event
from shared.profile import Profile
from shared.settings import Settings
from tests import factories as f
from tests.polling import eventually

pytestmark = pytest.mark.integration

ARRIVALS = 11  # two releases and one arrival waiting, kept small: each arrival is a full gather
# A plan of three questions keeps the model (every count of every answer of every release) small
# enough to settle each small count in CI; the shipped plan's twelve make it four times the size.
PLAN = """
process_id = "shfa-2018"
name = "Three questions"
threshold = 0.8

[dimensions.region]
label = "Region"
multi_select = false
[dimensions.region.categories.northeast]
label = "Northeast"
target = { share = 0.3, kind = "goal", source = "a test's goal" }
[dimensions.region.categories.central]
label = "Central"
target = { share = 0.3, kind = "goal", source = "a test's goal" }
[dimensions.region.categories.west_central]
label = "West Central"
target = { share = 0.2, kind = "goal", source = "a test's goal" }

[dimensions.lived_experience]
label = "Lived experience"
multi_select = false
[dimensions.lived_experience.categories.yes]
label = "People with lived experience"
target = { share = 0.4, kind = "goal", source = "a test's goal" }
[dimensions.lived_experience.categories.no]
label = "No lived experience"

[dimensions.gender]
label = "Gender"
multi_select = true
[dimensions.gender.categories.female]
label = "Female"
[dimensions.gender.categories.male]
label = "Male"
[dimensions.gender.categories.non_binary]
label = "Non-binary"
target = { min_count = 5, kind = "goal", source = "a test's goal" }
"""


def arrivals(seed: int, n: int) -> list[Any]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        profile = Profile.model_validate(
            {
                "region": rng.choice(["northeast", "central", "west_central", "declined"]),
                "lived_experience": rng.choice(["yes", "no", "declined"]),
                "gender": rng.choice([["female"], ["male"], ["non_binary"], "declined"]),
            }
        )
        out.append(f.survey(profile) if rng.random() < 0.6 else f.interview(f.ref(), profile))
    return out


async def one_by_one(
    settings: Settings, token: dict[str, str], analyst: dict[str, str], n: int = ARRIVALS
) -> dict[str, Any]:
    """Publish each arrival alone and gather what ``token`` sees after each."""
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await ensure_streams(broker.connection.jetstream(), settings)
    app = build_app(settings)
    snapshots: list[dict[str, Any]] = []
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://a", headers=token) as c,
                httpx.AsyncClient(transport=transport, base_url="http://a", headers=analyst) as a,
            ):
                for event in arrivals(3, n):
                    last, _ = await publish_event(broker, event, settings)

                    async def seq() -> int:
                        body: dict[str, Any] = (await a.get("/coverage")).json()
                        return int(body["as_of"]["sequence"])

                    await eventually(seq, lambda s, last=last: s >= last, what=f"the projection to reach {last}")
                    got = await gather(Analytics(c, "http://a", None), pairs=1)
                    snapshots.extend(got.saved("http://a", None, 1)["snapshots"])
    finally:
        await broker.stop()
    for s in snapshots[1:]:  # one arrival between consecutive snapshots, as the analyst's views say
        s["changed_since_previous"] = 1
    return {"snapshots": snapshots}


def three_questions(make_settings: Callable[..., Settings], folder: Path) -> Settings:
    (folder / "plan.toml").write_text(PLAN)
    return make_settings(plans=[folder / "plan.toml"])


async def test_rounded_releases_pin_no_small_count_as_events_arrive_one_by_one(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    settings = three_questions(make_settings, tmp_path)
    started = time.monotonic()
    saved = await one_by_one(settings, auth_headers("coordinator"), auth_headers("analyst"))
    for s in saved["snapshots"]:
        s["changed_since_previous"] = None  # the rounded answers carry their release numbers
    gathered = time.monotonic() - started
    answers = sum(len(s["answers"]) for s in saved["snapshots"])
    releases = {a["suppression"]["release_number"] for s in saved["snapshots"] for a in s["answers"]}
    assert releases >= {1, 2}  # the arrivals crossed two releases
    model = build(snapshots_from(saved))
    result = audit(model, time_limit=240)
    print(
        f"rounded: {len(saved['snapshots'])} snapshots, {answers} answers gathered in {gathered:.1f} s; "
        f"{len(model.variables)} variables, {len(model.relations)} relations; {len(result.candidates)} small "
        f"counts checked, {len(result.pinned)} pinned; {result.lps} linear, {result.milps} integer programs"
    )
    assert result.feasible, result.stopped_because
    assert result.candidates, "the views had small counts to protect"
    assert result.finished and len(result.checked) == len(result.candidates), result.stopped_because
    assert [model.name(c.variable) for c in result.pinned] == []
    print(f"ranges of the small counts (possible values: how many): {result.widths()}")


async def test_the_same_arrivals_seen_exactly_are_pinned(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]], tmp_path: Path
) -> None:
    """Protection off (the analyst's exact, live numbers): the auditor finds the small counts."""
    settings = three_questions(make_settings, tmp_path)
    saved = await one_by_one(settings, auth_headers("analyst"), auth_headers("analyst"), n=4)
    model = build(snapshots_from(saved))
    result = audit(model, time_limit=90)
    assert result.feasible, result.stopped_because
    assert len(result.pinned) >= 5, len(result.pinned)
