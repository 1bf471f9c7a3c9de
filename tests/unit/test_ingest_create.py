"""EventLog.create: a new aggregate costs one publish, conditional on the aggregate in every process."""

from __future__ import annotations

from typing import Any

from shared.bus import EventLog
from shared.settings import Settings
from tests import factories as f


class Ack:
    seq, duplicate = 7, False


class Broker:
    def __init__(self) -> None:
        self.published: list[dict[str, str]] = []

    async def publish(self, _data: bytes, _subject: str, *, headers: dict[str, str], **_: Any) -> Ack:
        self.published.append(headers)
        return Ack()


class NoReads:
    async def get_last_msg(self, *_: Any, **__: Any) -> None:
        raise AssertionError("a new aggregate is written without reading the log first")


async def test_a_new_aggregate_is_one_publish_checked_in_every_process() -> None:
    """The write itself refuses an aggregate any process has; nothing is read before it."""
    broker, event = Broker(), f.survey()
    log = EventLog(broker, NoReads(), Settings())  # fakes of the broker and the JetStream context

    stored = await log.create(event, exists="taken", request="fingerprint")

    assert (stored.sequence, stored.replayed) == (7, False)
    [headers] = broker.published
    _, _process, aggregate = event.subject.split(".", 2)
    assert headers["Nats-Expected-Last-Subject-Sequence"] == "0"
    assert headers["Nats-Expected-Last-Subject-Sequence-Subject"] == f"engagement.*.{aggregate}"
