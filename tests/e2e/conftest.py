"""The browser tests' set-up: Debian's Chromium (installed here if missing), and engage as processes.

Chromium comes from Debian's package (playwright's own browser download cannot be used
here); the tests install it with apt-get when they run as root and it is missing, or
use the one named by ``ENGAGE_CHROMIUM``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.conftest import TOKENS
from tests.servers import Service

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("ENGAGE_SCREENSHOTS", Path(__file__).parent / "screenshots"))


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a Chromium to drive, installing Debian's package if need be."""
    named = os.environ.get("ENGAGE_CHROMIUM")
    if named:
        return named
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("the browser tests need Chromium: install Debian's `chromium` or set ENGAGE_CHROMIUM")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        check=True,
        env=env,
        timeout=900,
        stdout=subprocess.DEVNULL,
    )
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@dataclass
class Stack:
    """intake, survey and analytics as processes, on this test's nats-server and database."""

    intake: Service
    survey: Service
    analytics: Service

    def token(self, name: str) -> str:
        return TOKENS[name].token


@pytest.fixture
def stack_env() -> dict[str, str]:
    """More settings for the stack's services; a test module overrides this fixture to add its own."""
    return {}


@pytest.fixture
def stack(tmp_path: Path, nats_url: str, database_url: str, stack_env: dict[str, str]) -> Iterator[Stack]:
    env = {
        "ENGAGE_NATS_URL": nats_url,
        "ENGAGE_DATABASE_URL": database_url,
        "ENGAGE_TOKENS": orjson.dumps({n: t.model_dump() for n, t in TOKENS.items()}).decode(),
        **stack_env,
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    services = {name: Service(name, env, logs) for name in ("intake", "survey", "analytics")}
    try:
        for service in services.values():
            service.start()
        yield Stack(**services)
    finally:
        for service in services.values():
            service.stop()
