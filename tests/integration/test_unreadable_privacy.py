"""An unreadable event is parked, skipped or reported with its reason, and no reason, log line
or dead-letter header repeats what the event said: the live projector, a rebuild and a replay
all decode the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
import pytest
from structlog.testing import capture_logs

from services.analytics.engine import rebuild as rebuilding
from services.analytics.engine.projector import Projector
from services.analytics.reading.replay import Window, events
from services.analytics.store import schema
from shared.bus import DEADLETTER_STREAM, attach_streams, make_broker, publish_event
from shared.settings import Settings
from tests import factories as f
from tests.projecting import project_until

pytestmark = pytest.mark.integration

NAME, PHONE, EMAIL = "Zqmaria Lopez-Quintana", "612-555-0199", "zqmaria@example.org"
SECRETS = (NAME, "Zqmaria", PHONE, "5550199", EMAIL)


def hostile() -> list[bytes]:
    """Events a careless or hostile writer could put on the log, each carrying someone's details."""
    survey = orjson.loads(f.survey(region="central").model_dump_json())
    interview = orjson.loads(f.interview(f.ref(), region="central").model_dump_json())
    return [
        orjson.dumps({**survey, "payload": {**survey["payload"], "profile": {"region": NAME}}}),
        orjson.dumps(
            {
                **interview,
                "payload": {**interview["payload"], "participants": [{"participant_ref": EMAIL, "profile": {}}]},
            }
        ),
        orjson.dumps({**survey, "type": NAME}),
        orjson.dumps({**survey, "payload": {**survey["payload"], "type": NAME}}),
        orjson.dumps({**survey, NAME: PHONE}),
        orjson.dumps({**survey, "schema_version": EMAIL}),
        f"{NAME} {PHONE}".encode(),
        orjson.dumps([NAME, PHONE, EMAIL]),
    ]


def carries_a_secret(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


async def test_no_reason_log_line_or_dead_letter_repeats_an_unreadable_event(
    make_settings: Callable[..., Settings], another_database: Callable[[], Awaitable[str]]
) -> None:
    settings = make_settings()
    broker = make_broker(settings.nats_url or "", settings, "admin")
    await broker.connect()
    js = await attach_streams(broker.connection, settings)
    bad = hostile()
    for i, data in enumerate(bad):
        await js.publish(f"engagement.shfa-2018.survey-response.sr-hostile{i:04d}", data)
        await publish_event(broker, f.survey(region="central"), settings)
    last = 2 * len(bad)

    pool = await schema.open_pool(settings.database_url or "")
    await schema.migrate(pool)
    projector = Projector(settings, broker.connection, pool, {})
    with capture_logs() as live_logs:  # what our code hands to the logger, before any redaction
        await project_until(projector, last, timeout=30)
    assert projector.progress.parked == len(bad) and projector.progress.projected == len(bad)
    parked_lines = [e for e in live_logs if e["event"] == "event_parked"]
    assert len(parked_lines) == len(bad)
    assert carries_a_secret(repr(live_logs)) == []
    parked = [await js.get_msg(DEADLETTER_STREAM, seq) for seq in range(1, len(bad) + 1)]
    reasons = [m.headers["Engage-Reason"] for m in parked]
    assert all(reasons) and carries_a_secret(repr(reasons)) == []
    assert [m.data for m in parked] == bad  # the event itself is kept for whoever may read it, as it was
    assert "payload.SurveyCompleted.profile.region" in reasons[0] and "participant_ref" in reasons[1]

    rebuilt = settings.model_copy(update={"database_url": await another_database()})
    with capture_logs() as rebuild_logs:
        result = await rebuilding.rebuild(rebuilt)
    assert result.unreadable == len(bad)
    skipped_lines = [e for e in rebuild_logs if e["event"] == "event_skipped"]
    assert [e["reason"] for e in skipped_lines] == reasons
    assert carries_a_secret(repr(rebuild_logs)) == []

    reported: list[str] = []
    read = [
        seq
        async for seq, _ in events(
            broker.connection, settings.stream_name, Window(), lambda _seq, _subject, reason: reported.append(reason)
        )
    ]
    assert read == list(range(2, last + 1, 2)) and reported == reasons

    await pool.close()
    await broker.stop()
