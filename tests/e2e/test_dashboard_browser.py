"""The coordinators' dashboard in a real headless Chromium, against engage running as processes."""

from __future__ import annotations

import asyncio
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


async def interview(stack: Stack, region: str, at: str) -> None:
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
                        "profile": {"region": region, "lived_experience": "yes"},
                    }
                ],
                "occurred_at": at,
            },
        )
        assert done.status_code == 200, done.text


async def test_a_coordinator_signs_in_and_sees_an_interview_arrive_without_a_reload(
    stack: Stack, browser, screenshot_dir: Path
) -> None:
    """Sign in, open the dashboard, post an interview through intake: the count and the chart move live."""
    settings = Settings(tokens=TOKENS)
    await feed({"intake": stack.intake.url, "survey": stack.survey.url}, None, settings, pace=0, seed=2018)
    page = await browser.new_page(viewport={"width": 1280, "height": 1300})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    await sign_in(page, stack)
    await expect(page.locator("#tile-participants")).to_have_text("287", timeout=20_000)  # the demo's people
    before = await number(page, "#tile-participants")
    # The busiest week of the chart: the new interview goes there.
    period, total = await page.evaluate("""() => [...document.querySelectorAll('g[data-period]')]
        .map((g) => [g.dataset.period, Number(g.dataset.total)]).filter(([, t]) => !isNaN(t))
        .sort((a, b) => b[1] - a[1])[0]""")
    await page.evaluate("window.stillTheSamePage = true")

    tuesday = date.fromisoformat(period) + timedelta(days=1)
    sent = time.monotonic()
    await interview(stack, "northeast", f"{tuesday.isoformat()}T15:00:00-05:00")
    await expect(page.locator("#tile-participants")).to_have_text(str(before + 1))
    print(f"intake write to the dashboard's count: {time.monotonic() - sent:.3f} s")
    await expect(page.locator(f'g[data-period="{period}"]')).to_have_attribute("data-total", str(total + 1))
    await expect(page.locator("#feed li").first).to_contain_text("Interview completed · Northeast")
    assert await page.evaluate("window.stillTheSamePage") is True  # no reload happened
    await expect(page.locator("#tile-fresh")).to_contain_text("up to date")
    await expect(page.locator("#under-reached li").first).to_contain_text("more")
    await page.screenshot(path=screenshot_dir / "dashboard.png")
    await page.screenshot(path=screenshot_dir / "dashboard-full.png", full_page=True)

    # Nothing came from anywhere but engage.
    assert requested and all(u.startswith(stack.analytics.url) or u.startswith("data:") for u in requested), requested
    # Suppressed cells read "<5", never a small number.
    assert await page.locator("td[title^='Fewer than 5']").count() > 0
    assert set(await page.locator("td[title^='Fewer than 5']").all_inner_texts()) == {"<5"}

    # Readable: contrast, keyboard order, and a phone-sized screen.
    assert await page.evaluate(CONTRAST) == []
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip"
    reached = []
    for _ in range(6):
        await page.keyboard.press("Tab")
        reached.append(await page.evaluate("document.activeElement.id || document.activeElement.textContent"))
    assert reached[:5] == ["process", "segment", "Show", "Sign out", "The chart as a table"], reached
    await page.set_viewport_size({"width": 390, "height": 844})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=screenshot_dir / "dashboard-phone.png")


async def test_the_page_recovers_and_catches_up_after_analytics_restarts(
    stack: Stack, browser, screenshot_dir: Path
) -> None:
    """Analytics stops and starts again; the open page says so, reconnects by itself and shows what it missed."""
    for _ in range(6):
        await interview(stack, "central", "2018-03-06T15:00:00-06:00")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await sign_in(page, stack)
    await expect(page.locator("#tile-participants")).to_have_text("6", timeout=20_000)
    await page.evaluate("window.stillTheSamePage = true")

    stack.analytics.stop()
    await expect(page.locator("main")).to_have_attribute("data-connection", "lost")
    await expect(page.locator("#connection")).to_contain_text("reconnecting")
    for _ in range(2):  # recorded while analytics is away: it reads them from the log when it is back
        await interview(stack, "central", "2018-03-07T15:00:00-06:00")
    await asyncio.to_thread(stack.analytics.start)

    await expect(page.locator("main")).to_have_attribute("data-connection", "live", timeout=20_000)
    await expect(page.locator("#tile-participants")).to_have_text("8", timeout=20_000)
    await expect(page.locator("#tile-fresh")).to_contain_text("up to date")
    assert await page.evaluate("window.stillTheSamePage") is True
    await page.screenshot(path=screenshot_dir / "dashboard-recovered.png", full_page=True)
