"""Nothing on the log stops counting: an event the projector cannot read or cannot project is parked.

Two poison events sit mid-log among good ones, in the middle of a batch: one carries a time
in year 1 (published raw, around the API, which refuses it), the other makes the fold
raise. Each is parked on the dead-letter stream with a reason that quotes nothing it
carried, every other event is counted, and the checkpoint reaches the end of the log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from faststream.nats import NatsBroker
from nats.js import JetStreamContext

from services.analytics.engine import batch
from services.analytics.engine.projector import Projector
from services.analytics.projection import fold
from services.analytics.store import reads, schema
from shared.bus import DEADLETTER_STREAM, attach_streams, make_broker, publish_event
from shared.events import Envelope
from shared.settings import Settings
from shared.upcasting import encode_event
from tests import factories as f
from tests.projecting import project_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]

PROCESS = "shfa-2018"
Log = tuple[Settings, NatsBroker, JetStreamContext]


@pytest.fixture
async def log(make_settings: Callable[..., Settings]) -> AsyncIterator[Log]:
    """This test's event log, in batches of 10 for the projector: settings, a connected broker, JetStream."""
    settings = make_settings(batch_size=10)
    broker = make_broker(settings.nats_url or "", settings, "admin")
    await broker.connect()
    yield settings, broker, await attach_streams(broker.connection, settings)
    await broker.stop()


async def test_poison_events_mid_log_are_parked_and_every_other_event_is_counted(
    log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, broker, js = log

    # The fold raises on one marked event, as it did on a day it could not compute.
    poisoned = f.survey(region="central")

    def project(envelopes: Sequence[Envelope], *args: Any, **kwargs: Any) -> fold.Changes:
        if any(e.event_id == poisoned.event_id for e in envelopes):
            raise OverflowError("date value out of range")
        return fold.project(envelopes, *args, **kwargs)

    monkeypatch.setattr(batch, "project", project)

    year_one = f.survey(region="central").model_dump(mode="json")
    year_one["occurred_at"] = "0001-01-01T00:00:00Z"

    good = [f.survey(region="northeast") for _ in range(24)]
    for ev in good[:7]:
        await publish_event(broker, ev, settings)
    year_one_seq = (
        await js.publish(
            f"engagement.{PROCESS}.survey-response.{year_one['payload']['response_id']}",
            json.dumps(year_one).encode(),
        )
    ).seq
    for ev in good[7:13]:
        await publish_event(broker, ev, settings)
    poisoned_seq, _ = await publish_event(broker, poisoned, settings)
    for ev in good[13:]:
        await publish_event(broker, ev, settings)
    last = (await js.stream_info(settings.stream_name)).state.last_seq
    assert (year_one_seq, poisoned_seq, last) == (8, 15, 26)  # both mid-log, each in the middle of a batch of 10

    pool = await schema.open_pool(settings.database_url or "")
    await schema.migrate(pool)
    projector = Projector(settings, broker.connection, pool)
    projector.BATCH_TRIES = projector.EVENT_TRIES = 1  # no pause before splitting: the test stays quick
    await project_until(projector, last)

    counted = await reads.counts(pool, PROCESS, settings.consumer_name, None)
    assert counted.sequence == last
    assert counted.participants == len(good)
    assert counted.categories[("region", "northeast")] == len(good)
    assert counted.categories.get(("region", "central"), 0) == 0
    assert projector.progress.parked == 2

    info = await js.stream_info(DEADLETTER_STREAM)
    assert info.state.messages == 2
    parked = {}
    for seq in (1, 2):
        msg = await js.get_msg(DEADLETTER_STREAM, seq)
        assert msg.headers is not None
        parked[int(msg.headers["Engage-Original-Sequence"])] = (msg.subject, msg.headers["Engage-Reason"])
    assert parked[year_one_seq] == (
        f"deadletter.engagement.{PROCESS}.survey-response.{year_one['payload']['response_id']}",
        "invalid event: occurred_at: Value error, must not be before 2000-01-01",
    )
    assert parked[poisoned_seq] == (
        f"deadletter.{poisoned.subject}",
        "event could not be projected (OverflowError)",
    )
    await pool.close()


async def test_a_database_error_is_retried_and_never_parks_an_event(log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing connection is the database's fault, not the batch's: retried until it goes through."""
    settings, broker, js = log
    for _ in range(5):
        last, _ = await publish_event(broker, f.survey(region="northeast"), settings)

    failures = 0

    def project(envelopes: Sequence[Envelope], *args: Any, **kwargs: Any) -> fold.Changes:
        nonlocal failures
        if failures < 4:
            failures += 1
            raise ConnectionResetError("the connection went away")
        return fold.project(envelopes, *args, **kwargs)

    monkeypatch.setattr(batch, "project", project)
    pool = await schema.open_pool(settings.database_url or "")
    await schema.migrate(pool)
    projector = Projector(settings, broker.connection, pool)
    projector.BATCH_TRIES = projector.EVENT_TRIES = 1
    await project_until(projector, last)

    counted = await reads.counts(pool, PROCESS, settings.consumer_name, None)
    assert (counted.sequence, counted.participants, failures) == (last, 5, 4)
    assert projector.progress.parked == 0
    assert (await js.stream_info(DEADLETTER_STREAM)).state.messages == 0
    await pool.close()


async def test_an_event_on_another_aggregates_subject_is_parked_not_counted(log: Log) -> None:
    """What the survey user could once publish on its own subject: a withdrawal of someone else and a
    40-person interview. Each is parked with the rule as its reason; the surveys around them count."""
    settings, broker, js = log
    someone = f.ref()
    await publish_event(broker, f.interview(someone, region="central"), settings)
    survey_subject = f"engagement.{PROCESS}.survey-response.sr-forged00001"
    forged = [
        f.withdrawn(someone),
        f.gathering(40, []),
        f.interview(f.ref(), region="northeast"),
    ]
    sequences = [(await js.publish(survey_subject, encode_event(ev))).seq for ev in forged]
    for _ in range(3):
        last, _ = await publish_event(broker, f.survey(region="northeast"), settings)

    pool = await schema.open_pool(settings.database_url or "")
    await schema.migrate(pool)
    projector = Projector(settings, broker.connection, pool)
    projector.BATCH_TRIES = projector.EVENT_TRIES = 1
    await project_until(projector, last)
    counted = await reads.counts(pool, PROCESS, settings.consumer_name, None)
    assert counted.participants == 4  # the interviewed person is still counted: the withdrawal was forged
    assert counted.categories[("region", "central")] == 1 and counted.categories[("region", "northeast")] == 3
    assert projector.progress.parked == len(forged)
    reasons = {}
    for seq in range(1, len(forged) + 1):
        msg = await js.get_msg(DEADLETTER_STREAM, seq)
        assert msg.headers is not None and msg.subject == f"deadletter.{survey_subject}"
        reasons[int(msg.headers["Engage-Original-Sequence"])] = msg.headers["Engage-Reason"]
    assert reasons == {
        sequences[0]: "a ParticipantWithdrawn belongs on engagement.<its process>.participant.<its participant_ref>; "
        "it was stored on another subject",
        sequences[1]: "a GatheringHeld belongs on engagement.<its process>.gathering.<its gathering_id>; "
        "it was stored on another subject",
        sequences[2]: "an InterviewCompleted belongs on engagement.<its process>.interview.<its interview_id>; "
        "it was stored on another subject",
    }
    await pool.close()
