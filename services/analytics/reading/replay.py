"""Reading the event log from any point: for rebuilds, as-of views, exports and notebooks.

The log is read through a throw-away pull consumer (no acknowledgements: a replay
changes nothing on the stream) from ``from_seq`` up to ``to_seq``, or up to the last
sequence the stream held when the read began, so a replay always ends. Events come back
typed and upcast (:func:`decode.decode`); one that cannot be read is
reported through ``on_unreadable`` and skipped, exactly as the projector parks it.

For notebooks::

    from services.analytics.reading.replay import replay
    for seq, event in replay("nats://127.0.0.1:4233", since="2018-03-01T00:00:00Z"):
        print(seq, event.type, event.occurred_at)
"""

from __future__ import annotations

import asyncio
import queue
import secrets
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.analytics.reading.decode import Unreadable, decode
from services.analytics.reading.reader import PullReader, stream_sequence
from shared.events import Envelope

OnUnreadable = Callable[[int, str, str], None]  # (sequence, subject, reason)


@dataclass(frozen=True)
class Window:
    """Which part of the log: stream sequences (both ends included), and when events happened
    (``occurred_at``: from ``since`` included, to ``until`` excluded)."""

    from_seq: int = 1
    to_seq: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    process_id: str | None = None

    def admits(self, event: Envelope) -> bool:
        return (
            (self.since is None or event.occurred_at >= self.since)
            and (self.until is None or event.occurred_at < self.until)
            and (self.process_id is None or event.process_id == self.process_id)
        )


def parse_time(value: str | datetime | None, name: str) -> datetime | None:
    """An ISO 8601 time with a zone (``2018-04-01T00:00Z``); a bare date means its midnight UTC."""
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError(f"{name}: needs a time zone, e.g. 2018-04-01T00:00Z")
        return value
    text = value.strip().replace("z", "Z")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{name}: {value!r} is not a time like 2018-04-01T00:00Z") from exc
    if len(text) == 10:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.tzinfo is None:
        raise ValueError(f"{name}: {value!r} needs a time zone, e.g. 2018-04-01T00:00Z")
    return parsed


async def last_sequence(nc: Client, stream: str) -> int:
    return (await nc.jetstream().stream_info(stream)).state.last_seq or 0


async def raw_batches(
    nc: Client, stream: str, from_seq: int = 1, to_seq: int | None = None, batch: int = 2000
) -> AsyncGenerator[list[tuple[int, str, bytes]], None]:
    """Batches of (sequence, subject, data) from ``from_seq`` through ``to_seq`` (default: the
    stream's last sequence now), in order."""
    last = await last_sequence(nc, stream)
    end = last if to_seq is None else min(to_seq, last)  # past the end would wait for events to come
    async for msgs in message_batches(nc, stream, max(from_seq, 1), end, batch):
        yield [(stream_sequence(msg), msg.subject, msg.data) for msg in msgs]


async def message_batches(
    nc: Client, stream: str, start: int, end: int, batch: int = 2000, name_prefix: str = "replay"
) -> AsyncGenerator[list[Msg], None]:
    """Batches of the stored messages from ``start`` through ``end``, in order, as NATS delivers
    them (headers and metadata included), read by a throw-away consumer removed at the end."""
    if end < start:
        return
    js = nc.jetstream()
    name = f"{name_prefix}-{secrets.token_hex(6)}"
    await js.add_consumer(
        stream,
        ConsumerConfig(
            name=name,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            inactive_threshold=60.0,
            max_waiting=4,
            mem_storage=True,
        ),
    )
    reader = PullReader(nc, stream, name, batch, expires=2.0)
    await reader.start()
    try:
        while True:
            msgs = await reader.next_batch(wait=5.0)
            out = [msg for msg in msgs if stream_sequence(msg) <= end]
            if out:
                yield out
            # A turn for the event loop per batch: while NATS delivers faster than this reads, the
            # reader's buffer never runs dry, so nothing here would wait, and a reader inside a
            # service (coordinators' releases, as-of answers) would hold the projector up.
            await asyncio.sleep(0)
            if msgs and stream_sequence(msgs[-1]) >= end:
                return
            if not msgs and await last_sequence(nc, stream) < start:
                return  # the stream was purged under us
    finally:
        await reader.stop()
        with suppress(NotFoundError):
            await js.delete_consumer(stream, name)


async def events(
    nc: Client, stream: str, window: Window = Window(), on_unreadable: OnUnreadable | None = None
) -> AsyncGenerator[tuple[int, Envelope], None]:
    """Typed, upcast events in ``window``, in log order, with their stream sequences.

    An unreadable event's reason names fields and rules, never the values (they may be what
    must not be shown). Stopping early closes the reader, which removes its consumer.
    """
    async with aclosing(raw_batches(nc, stream, window.from_seq, window.to_seq)) as batches:
        async for batch in batches:
            for seq, subject, data in batch:
                event = decode(data, subject)
                if isinstance(event, Unreadable):
                    if on_unreadable is not None:
                        on_unreadable(seq, subject, event.reason)
                    continue
                if window.admits(event):
                    yield seq, event


def replay(
    nats_url: str,
    *,
    stream: str = "ENGAGEMENT",
    from_seq: int = 1,
    to_seq: int | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    process_id: str | None = None,
) -> Iterator[tuple[int, Envelope]]:
    """The same events for code without an event loop (a notebook, a script): a plain iterator.

    Runs the reader on a thread of its own, so it also works where a loop is already running.
    """
    window = Window(from_seq, to_seq, parse_time(since, "since"), parse_time(until, "until"), process_id)
    out: queue.Queue[object] = queue.Queue(maxsize=10_000)
    done = object()

    async def pump() -> None:
        nc = await nats.connect([url.strip() for url in nats_url.split(",") if url.strip()])  # a cluster: several
        try:
            async for item in events(nc, stream, window):
                await asyncio.to_thread(out.put, item)
        finally:
            await nc.close()

    def run() -> None:
        try:
            asyncio.run(pump())
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            out.put(exc)
        out.put(done)

    threading.Thread(target=run, name="engage-replay", daemon=True).start()
    while (item := out.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield cast(tuple[int, Envelope], item)  # the pump puts only pairs, exceptions and ``done``
