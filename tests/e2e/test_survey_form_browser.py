"""The participants' survey form in a real headless Chromium, by keyboard only, against the survey service as a process.

axe-core (from the npm registry, installed at test time) checks each page at WCAG 2.2 AA; the
quick exit leaves for a local stand-in of a neutral site (the test network is closed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import Browser, Page, Route

from shared.events import SurveyCompleted
from tests.conftest import TOKENS
from tests.e2e.conftest import Stack
from tests.integration.test_survey_api import stored_events
from tests.polling import eventually
from tests.servers import Service

pytestmark = pytest.mark.e2e
NEUTRAL = "http://neutral.test/weather"  # where the quick exit goes; answered by the test, below
PHONE = {"width": 360, "height": 640}
WCAG_22_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@pytest.fixture(scope="session")
def axe_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """axe-core, installed from the npm registry for this run (nothing vendored)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: axe-core cannot be installed for the accessibility checks")
    prefix = tmp_path_factory.mktemp("axe")
    done = subprocess.run(
        [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent", "axe-core@4"],
        capture_output=True,
        timeout=180,
        check=False,
    )
    script = prefix / "node_modules" / "axe-core" / "axe.min.js"
    if done.returncode != 0 or not script.exists():
        pytest.skip(f"npm could not install axe-core (no registry?): {done.stderr.decode()[-300:]}")
    return script


FORM_ENV = {"ENGAGE_SURVEY_FORM_EXIT_URL": NEUTRAL, "ENGAGE_SURVEY_FORM_MIN_SECONDS": "0.5"}


@pytest.fixture
def stack_env() -> dict[str, str]:
    """The survey form's settings for conftest's ``stack`` (intake, survey and analytics as processes)."""
    return FORM_ENV


@pytest.fixture
def survey(tmp_path: Path, nats_url: str) -> Iterator[Service]:
    env = {
        "ENGAGE_NATS_URL": nats_url,
        "ENGAGE_TOKENS": orjson.dumps({n: t.model_dump() for n, t in TOKENS.items()}).decode(),
        **FORM_ENV,
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    service = Service("survey", env, logs)
    try:
        yield service.start()
    finally:
        service.stop()


async def neutral_site(route: Route) -> None:
    await route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>Weather</title><p>Sunny")


async def axe(page: Page, script: Path) -> None:
    await page.add_script_tag(path=str(script))
    result: dict[str, Any] = await page.evaluate(
        "(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_22_AA
    )
    violations = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]} for v in result["violations"]
    ]
    if violations:
        print(json.dumps(violations, indent=1))
    assert violations == [], f"axe-core found WCAG 2.2 AA violations on {page.url}"


async def focused(page: Page) -> str:
    return str(await page.evaluate("document.activeElement && document.activeElement.id"))


async def tab_to(page: Page, element_id: str, limit: int = 80) -> None:
    """Press Tab until the element has the focus (fails if it never does)."""
    for _ in range(limit):
        if await focused(page) == element_id:
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached #{element_id}")


async def fill_by_keyboard(page: Page) -> None:
    await tab_to(page, "region-0")
    await page.keyboard.press("ArrowDown")  # a radio group is one Tab stop; arrows choose in it
    await page.keyboard.press("ArrowDown")  # the third region: northeast
    await tab_to(page, "race_ethnicity-2")
    await page.keyboard.press("Space")  # indigenous
    await tab_to(page, "race_ethnicity-3")
    await page.keyboard.press("Space")  # multiracial
    await tab_to(page, "gender-6")
    await page.keyboard.press("Space")  # prefer not to say
    await tab_to(page, "submit")
    await page.keyboard.press("Enter")


async def participants(stack: Stack, sequence: int) -> int:
    """The participants analytics' coverage answer counts (analyst token: exact) once it has
    projected the log up to ``sequence``."""
    headers = {"Authorization": f"Bearer {TOKENS['analyst'].token}"}
    async with httpx.AsyncClient(base_url=stack.analytics.url, headers=headers, timeout=5) as client:

        async def answer() -> dict[str, Any]:
            got = await client.get("/coverage")
            assert got.status_code == 200, got.text
            body: dict[str, Any] = got.json()
            return body

        body = await eventually(
            answer,
            lambda b: b["as_of"]["sequence"] >= sequence,
            what=f"analytics to project up to sequence {sequence}",
            timeout=20,
        )
    return int(body["participants"])


async def test_a_participant_fills_the_form_by_keyboard_in_english_and_spanish(
    browser: Browser, stack: Stack, axe_script: Path, nats_url: str, screenshot_dir: Path
) -> None:
    """Both responses reach the log once each and analytics counts each one (coverage moves by one)."""
    survey = stack.survey
    context = await browser.new_context(viewport=PHONE, bypass_csp=True)  # axe is injected into the page
    await context.route(NEUTRAL, neutral_site)
    page = await context.new_page()
    counted = [await participants(stack, 0)]
    for lang, thanks in (("en", "Thank you"), ("es", "Gracias")):
        await page.goto(f"{survey.url}/form" + ("" if lang == "en" else "?lang=es"))
        assert await page.get_attribute("html", "lang") == lang
        await axe(page, axe_script)
        if lang == "es":
            await page.screenshot(path=str(screenshot_dir / "survey-form-phone.png"))
        await page.wait_for_timeout(600)  # a person takes longer than the form's minimum
        await fill_by_keyboard(page)
        await page.wait_for_selector(f"h1:text('{thanks}')")
        await axe(page, axe_script)
        counted.append(await participants(stack, len(await stored_events(nats_url))))
    stored = [e.payload for _, e in await stored_events(nats_url) if isinstance(e.payload, SurveyCompleted)]
    assert len(stored) == 2  # both responses are on the log, each once
    assert counted == [counted[0], counted[0] + 1, counted[0] + 2], counted  # and each one counted, once
    for payload in stored:
        assert payload.profile.categories == {
            "region": ("northeast",),
            "race_ethnicity": ("indigenous", "multiracial"),
            "gender": ("declined",),
        }
    await context.close()


async def test_quick_exit_leaves_at_once_and_back_does_not_return(browser: Browser, survey: Service) -> None:
    context = await browser.new_context(viewport=PHONE)
    await context.route(NEUTRAL, neutral_site)
    page = await context.new_page()
    await page.goto(f"{survey.url}/form?lang=es")
    await page.keyboard.press("Tab")
    assert await focused(page) == "quick-exit"  # the first thing a keyboard reaches
    assert (await page.inner_text("#quick-exit")) == "Salir del sitio"
    await page.keyboard.press("Enter")
    await page.wait_for_url(NEUTRAL)
    await page.go_back()
    assert "/form" not in page.url  # location.replace: the form is not in the history
    await context.close()


async def test_quick_exit_works_without_javascript(browser: Browser, survey: Service) -> None:
    context = await browser.new_context(viewport=PHONE, java_script_enabled=False)
    await context.route(NEUTRAL, neutral_site)
    page = await context.new_page()
    await page.goto(f"{survey.url}/form")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_url(NEUTRAL)
    assert await context.cookies() == []
    await context.close()
