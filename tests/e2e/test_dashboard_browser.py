"""The coordinators' dashboard in a real headless Chromium, against engage running as processes.

Coordinators' numbers come from releases (a new one once 5 participants have changed), each
count rounded to a multiple of 5, a count rounded to 0 shown as "<5"."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from services.cli.demo import feed
from shared.settings import Settings
from tests.conftest import TOKENS
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e
K = 5

# Text colour against the background it sits on: WCAG AA wants 4.5:1 (3:1 for large text).
CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b]
    .map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.99)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  for (const node of document.querySelectorAll("body *")) {
    const own = [...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim());
    const style = getComputedStyle(node);
    if (!own || style.visibility === "hidden" || style.display === "none") continue;
    if (node.closest(".visually-hidden, svg, .skip")) continue;
    const fg = lum(rgb(style.color)), bg = lum(background(node));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const text = node.textContent.trim().slice(0, 30);
    if (ratio < needed) failures.push(`${node.tagName}.${node.className} "${text}" ${ratio.toFixed(2)}`);
  }
  return failures;
}"""


async def sign_in(page: Page, stack: Stack) -> None:
    await page.goto(stack.analytics.url + "/dashboard")
    assert "/dashboard/login" in page.url  # not signed in: sent to sign in first
    await page.fill("#token", TOKENS["coordinator"].token)
    await page.click("button[type=submit]")
    await page.wait_for_url(stack.analytics.url + "/dashboard")
    await expect(page.locator("main")).to_have_attribute("data-connection", "live")


async def number(page: Page, selector: str) -> int:
    text = await page.locator(selector).inner_text()
    return int(text.replace(",", ""))


async def release(page: Page) -> int:
    """The release the page's numbers come from (its log sequence)."""
    return int(await page.locator("main").get_attribute("data-release") or 0)


async def rounded_counts(page: Page, selector: str) -> list[str]:
    """The texts of count cells, each "<5" or a multiple of 5 (fails otherwise)."""
    texts = await page.locator(selector).all_text_contents()
    for text in texts:
        assert text == "<5" or int(text.replace(",", "")) % K == 0, (selector, texts)
    return texts


async def interview(stack: Stack, region: str, at: str, gender: list[str] | None = None) -> None:
    """Schedule and complete a phone interview through intake, as the interview line does."""
    headers = {"Authorization": f"Bearer {TOKENS['intake'].token}"}
    async with httpx.AsyncClient(base_url=stack.intake.url, headers=headers, timeout=10) as client:
        scheduled = await client.post(
            "/interviews", json={"format": "phone", "scheduled_for": at, "region": region, "occurred_at": at}
        )
        assert scheduled.status_code == 201, scheduled.text
        body = scheduled.json()
        done = await client.post(
            f"/interviews/{body['interview_id']}/complete",
            json={
                "participants": [
                    {
                        "participant_ref": body["participant_ref"],
                        "profile": {
                            "region": region,
                            "lived_experience": "yes",
                            **({"gender": gender} if gender else {}),
                        },
                    }
                ],
                "occurred_at": at,
            },
        )
        assert done.status_code == 200, done.text


async def test_a_coordinator_signs_in_and_sees_a_release_arrive_without_a_reload(
    stack: Stack, browser, screenshot_dir: Path
) -> None:
    """Sign in, open the dashboard, post interviews through intake: once five people have come, a
    new release moves the numbers live, and the feed shows each interview at once."""
    settings = Settings(tokens=TOKENS)
    await feed({"intake": stack.intake.url, "survey": stack.survey.url}, None, settings, pace=0, seed=2018)
    page = await browser.new_page(viewport={"width": 1280, "height": 1300})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    await sign_in(page, stack)
    await expect(page.locator("#rounding-note")).to_contain_text(
        "Numbers are rounded to multiples of 5 and move once at least 5 participants have changed (release at sequence",
        timeout=20_000,
    )
    await expect(page.locator("#tile-participants")).to_have_text(re.compile(r"^\d{3}$"))
    before, first = await number(page, "#tile-participants"), await release(page)
    assert before % K == 0 and 280 <= before <= 290, before  # the demo's 287 people, released and rounded
    # The busiest week of the chart: the new interviews go there.
    period = await page.evaluate("""() => [...document.querySelectorAll('g[data-period]')]
        .map((g) => [g.dataset.period, Number(g.dataset.total)]).filter(([, t]) => !isNaN(t))
        .sort((a, b) => b[1] - a[1])[0][0]""")
    await page.evaluate("window.stillTheSamePage = true")

    tuesday = date.fromisoformat(period) + timedelta(days=1)
    sent = time.monotonic()
    await interview(stack, "northeast", f"{tuesday.isoformat()}T15:00:00-05:00")
    await expect(page.locator("#feed li").first).to_contain_text("Interview completed · Northeast")
    assert await release(page) == first  # one person: the numbers hold
    for _ in range(4):
        await interview(stack, "northeast", f"{tuesday.isoformat()}T15:00:00-05:00")
    await expect(page.locator("main")).not_to_have_attribute("data-release", str(first))
    print(f"intake writes to the dashboard's new release: {time.monotonic() - sent:.3f} s")
    await expect(page.locator("#rounding-note")).to_contain_text(f"(release at sequence {await release(page):,})")
    after = await number(page, "#tile-participants")
    assert after % K == 0 and after >= before, (before, after)
    assert await page.evaluate("window.stillTheSamePage") is True  # no reload happened
    await expect(page.locator("#under-reached li").first).to_contain_text("more")
    await expect(page.locator("#channel-table tbody tr").first).to_be_visible()
    await rounded_counts(page, "#channel-table td.num")
    await page.screenshot(path=screenshot_dir / "dashboard.png")
    await page.screenshot(path=screenshot_dir / "dashboard-full.png", full_page=True)

    # Nothing came from anywhere but engage.
    assert requested and all(u.startswith(stack.analytics.url) or u.startswith("data:") for u in requested), requested
    # Counts are shown as they are: multiples of 5, and "<5" for a count rounded to 0.
    assert await page.locator("td[title^='Fewer than 5']").count() > 0
    assert set(await page.locator("td[title^='Fewer than 5']").all_text_contents()) == {"<5"}
    await rounded_counts(page, "#dimensions td.num:nth-child(2)")

    # Readable: contrast, keyboard order, and a phone-sized screen.
    assert await page.evaluate(CONTRAST) == []
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip"
    reached = []
    cards = await page.locator("#under-reached a.who").count()
    for _ in range(5 + cards):
        await page.keyboard.press("Tab")
        reached.append(await page.evaluate("document.activeElement.id || document.activeElement.textContent"))
    assert reached[:4] == ["process", "segment", "Show", "Sign out"], reached
    assert reached[4 : 4 + cards] == await page.locator("#under-reached a.who").all_text_contents(), reached
    assert reached[4 + cards] == "The chart as a table", reached
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=screenshot_dir / "dashboard-phone.png")


async def test_a_hidden_under_reached_group_is_flagged_and_its_card_opens_its_drilldown_by_keyboard(
    stack: Stack, browser, screenshot_dir: Path
) -> None:
    """One non-binary participant among 29 others (the plan's floor is 5): the page flags the group
    as possibly below target, never on track; Tab and Enter open its drill-down, which shows the
    channels, regions and weeks that reached it, every count "<5" or a multiple of 5."""
    await interview(stack, "northeast", "2018-03-13T15:00:00-05:00", ["non_binary"])
    for i in range(29):
        week = "2018-03-06" if i % 2 else "2018-03-13"
        await interview(stack, "central" if i % 3 else "southwest", f"{week}T15:00:00-06:00", ["female"])
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    await sign_in(page, stack)
    await expect(page.locator("#tile-participants")).to_have_text("30", timeout=20_000)
    await expect(page.locator("#tile-fresh")).to_contain_text("up to date")

    card = page.locator('#under-reached li[data-group="gender:non_binary"]')
    await expect(card).to_have_attribute("data-status", "attention")
    await expect(card).to_contain_text("May be below target — small numbers; needs at least 1 more person")
    row = page.locator("#dimensions tr", has=page.locator("th", has_text=re.compile(r"^Gender non-binary$")))
    await expect(row).to_contain_text("May be below target")
    await expect(row).not_to_contain_text("On track")

    # By keyboard: Tab to the card's link, Enter opens the drill-down.
    for _ in range(60):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.closest('li')?.dataset.group") == "gender:non_binary":
            break
    else:
        raise AssertionError("Tab never reached the non-binary card")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/dashboard/group?**group=gender%3Anon_binary**")

    await expect(page.locator("#group-title")).to_have_text("Gender non-binary")
    await expect(page.locator("#group-status")).to_have_text(
        "May be below target — small numbers; needs at least 1 more person"
    )
    assert await page.locator("#group-participants").inner_text() in ("<5", "5")
    channels = await page.locator("#group-channels tbody th").all_inner_texts()
    assert len(channels) == 7 and "Interview by phone" in channels, channels  # every channel, used or not
    await rounded_counts(page, "#group-channels td.num")
    regions = await page.locator("#group-regions tbody th").all_inner_texts()
    assert "Northeast" in regions and "Central" in regions
    await rounded_counts(page, "#group-regions td.num:nth-child(2)")
    weeks = await page.locator("#group-weeks tbody th").all_inner_texts()
    assert weeks == ["2018-03-05", "2018-03-12"], weeks  # every week of the process, not only the group's
    await rounded_counts(page, "#group-weeks td.num")
    assert await page.evaluate(CONTRAST) == []
    assert all(u.startswith(stack.analytics.url) or u.startswith("data:") for u in requested), requested
    await page.screenshot(path=screenshot_dir / "dashboard-group.png", full_page=True)
    await page.locator("#back").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/dashboard?**")
    await expect(page.locator("main")).to_have_attribute("data-connection", "live")


async def test_the_page_recovers_and_catches_up_after_analytics_restarts(
    stack: Stack, browser, screenshot_dir: Path
) -> None:
    """Analytics stops and starts again; the open page says so, reconnects by itself and shows what it missed."""
    for _ in range(5):
        await interview(stack, "central", "2018-03-06T15:00:00-06:00")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await sign_in(page, stack)
    await expect(page.locator("#tile-participants")).to_have_text("5", timeout=20_000)
    await page.evaluate("window.stillTheSamePage = true")

    stack.analytics.stop()
    await expect(page.locator("main")).to_have_attribute("data-connection", "lost")
    await expect(page.locator("#connection")).to_contain_text("reconnecting")
    for _ in range(5):  # recorded while analytics is away: it reads them from the log when it is back
        await interview(stack, "central", "2018-03-07T15:00:00-06:00")
    await asyncio.to_thread(stack.analytics.start)

    await expect(page.locator("main")).to_have_attribute("data-connection", "live", timeout=20_000)
    await expect(page.locator("#tile-participants")).to_have_text("10", timeout=20_000)
    await expect(page.locator("#tile-fresh")).to_contain_text("up to date")
    assert await page.evaluate("window.stillTheSamePage") is True
    await page.screenshot(path=screenshot_dir / "dashboard-recovered.png", full_page=True)
