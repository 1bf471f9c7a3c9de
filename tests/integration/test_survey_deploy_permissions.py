"""deploy/nats/accounts.conf, loaded into a real nats-server: the survey service works
with its own least-privilege user, and that user cannot write anyone else's events."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from services.cli.embedded import _wait_for_port, free_port, nats_server_binary
from services.survey.app import build_app
from shared.bus import ensure_streams
from shared.errors import ConfigError
from shared.settings import Settings

pytestmark = pytest.mark.integration

ACCOUNTS = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "accounts.conf"
PASSWORDS = {
    "ADMIN_NATS_PASSWORD": "admin-pw",
    "INTAKE_NATS_PASSWORD": "intake-pw",
    "SURVEY_NATS_PASSWORD": "survey-pw",
    "ANALYTICS_NATS_PASSWORD": "analytics-pw",
}


@pytest.fixture
def deployed_nats(tmp_path: Path) -> Iterator[int]:
    """A single nats-server with JetStream and the deploy users (no cluster)."""
    shutil.copy(ACCOUNTS, tmp_path / "accounts.conf")
    port = free_port()
    conf = tmp_path / "single.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {tmp_path / 'js'} }}\ninclude ./accounts.conf\n"
    )
    log = tmp_path / "nats.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)], stdout=out, stderr=out, env={"PATH": "/usr/bin:/bin", **PASSWORDS}
        )
    try:
        _wait_for_port(port, proc, log)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def url(user: str, port: int) -> str:
    return f"nats://{user}:{user}-pw@127.0.0.1:{port}"


@pytest.fixture
async def streams(deployed_nats: int, make_settings: Callable[..., Settings]) -> AsyncIterator[None]:
    """The streams, created as at deploy time by the admin user."""
    nc = await nats.connect(url("admin", deployed_nats))
    await ensure_streams(nc.jetstream(), make_settings())
    await nc.close()
    yield


async def test_survey_records_with_its_own_user(
    deployed_nats: int,
    streams: None,
    make_settings: Callable[..., Settings],
    auth_headers: Callable[[str], dict[str, str]],
) -> None:
    app = build_app(make_settings(nats_url=url("survey", deployed_nats)))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://survey") as client:
            headers = {**auth_headers("survey"), "Idempotency-Key": "deploy-1"}
            first = await client.post("/responses", json={"profile": {"region": "central"}}, headers=headers)
            # The retry path reads the last message on the subject: allowed, too.
            again = await client.post("/responses", json={"profile": {"region": "central"}}, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == {**first.json(), "duplicate": True}


async def test_survey_user_cannot_write_an_interview_or_change_the_log(deployed_nats: int, streams: None) -> None:
    nc = await nats.connect(url("survey", deployed_nats))
    js = nc.jetstream(timeout=1.0)
    with pytest.raises(NatsTimeout):  # denied: the server drops it and says so on the error callback
        await js.publish("engagement.shfa-2018.interview.iv-0123456789", b"{}", stream="ENGAGEMENT")
    with pytest.raises(NatsTimeout):
        await js.purge_stream("ENGAGEMENT")
    await nc.close()
    admin = await nats.connect(url("admin", deployed_nats))
    assert (await admin.jetstream().stream_info("ENGAGEMENT")).state.messages == 0
    await admin.close()


async def test_survey_refuses_to_start_without_the_event_log(
    deployed_nats: int, make_settings: Callable[..., Settings]
) -> None:
    app = build_app(make_settings(nats_url=url("survey", deployed_nats)))
    with pytest.raises(ConfigError, match="does not exist"):
        async with app.router.lifespan_context(app):
            pass
