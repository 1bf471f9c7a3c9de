"""The live reader's batches and pull requests, fed by a fake connection standing in for nats-server.

A batch is handed out when full, when the stream goes quiet, or when its time budget runs out:
under a steady 1,000 events/s a message came every millisecond, the linger never expired and a
batch ended only when full, and publish to commit took over a second.

At most one pull request is open, each with its own reply subject; the end of a request given
up on leads to nothing, and a request answered at once is asked again only after a back-off.
The storm these prevent is reproduced against a real server in
tests/integration/test_reader_storm.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.msg import Msg

from services.analytics.reading.reader import PullReader


class FakeNats:
    """The part of a nats-py client the reader uses; ``deliver`` plays the server's pull responses."""

    def __init__(self) -> None:
        self.requests: list[str] = []  # the reply subject of each pull request
        self.callback: Any = None
        self.sequence = 0

    def new_inbox(self) -> str:
        return "_INBOX.reader"

    async def subscribe(self, subject: str, cb: Any) -> Any:
        self.callback = cb
        return self

    async def unsubscribe(self) -> None:
        self.callback = None

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        self.requests.append(reply)

    async def deliver(self, n: int = 1) -> None:
        for _ in range(n):
            self.sequence += 1
            ack = f"$JS.ACK.LOG.projector.1.{self.sequence}.{self.sequence}.0.0"
            await self.callback(Msg(_client=self, subject="events.live", reply=ack, data=b"{}"))  # type: ignore[arg-type]  # a stand-in for the client


async def reader_on(fake: FakeNats, batch: int) -> PullReader:
    reader = PullReader(fake, "LOG", "projector", batch)  # type: ignore[arg-type]  # a stand-in for the client
    await reader.start()
    return reader


async def test_a_steady_trickle_faster_than_the_linger_is_handed_out_within_the_budget() -> None:
    """One message every 2 ms, a linger of 1 s and room for 1,000: batches still come out every ~20 ms."""
    fake = FakeNats()
    reader = await reader_on(fake, batch=1000)

    async def trickle() -> None:
        for _ in range(100):
            await fake.deliver()
            await asyncio.sleep(0.002)

    feeding = asyncio.create_task(trickle())
    sizes: list[int] = []
    async with asyncio.timeout(10):
        while sum(sizes) < 100:
            msgs = await reader.next_batch(linger=1.0, budget=0.02)
            sizes.append(len(msgs))
    await feeding
    # 100 messages over at least 200 ms: about ten batches of about ten. Without the budget the
    # linger never expires and one batch of 100 comes out. The bound is loose: a slow machine
    # delivers fewer messages per budget, never more.
    assert len(sizes) >= 3, sizes
    assert max(sizes) <= 30, sizes


async def test_a_full_batch_is_handed_out_without_waiting() -> None:
    """Catching up, what has arrived comes out in full batches at once, even with a long linger and budget."""
    fake = FakeNats()
    reader = await reader_on(fake, batch=10)
    await fake.deliver(25)
    async with asyncio.timeout(1):
        sizes = [len(await reader.next_batch(linger=10.0, budget=10.0)) for _ in range(2)]
    assert sizes == [10, 10]


async def test_a_quiet_stream_ends_the_batch_after_the_linger() -> None:
    """A lone live event is handed out once nothing follows for the linger, not after the whole budget."""
    fake = FakeNats()
    reader = await reader_on(fake, batch=10)
    await fake.deliver(3)
    async with asyncio.timeout(1):
        msgs = await reader.next_batch(linger=0.01, budget=10.0)
    assert len(msgs) == 3


async def end(fake: FakeNats, request: str, status: str, description: str) -> None:
    """The server's status response ending ``request``."""
    headers = {"Status": status, "Description": description}
    await fake.callback(Msg(_client=fake, subject=request, headers=headers))  # type: ignore[arg-type]  # a stand-in for the client


async def test_each_pull_request_has_its_own_reply_subject() -> None:
    """An expired request is replaced at once by one with a new reply subject."""
    fake = FakeNats()
    reader = await reader_on(fake, batch=10)
    reader._requested_at -= 3.0  # it lived its 2 s
    await end(fake, fake.requests[0], "408", "Request Timeout")
    assert len(fake.requests) == 2
    assert fake.requests[0] != fake.requests[1]


async def test_the_end_of_a_request_given_up_on_asks_for_nothing() -> None:
    """After an event loop blocked past a request's life, the reader asks once; the old request's 408 adds nothing."""
    fake = FakeNats()
    reader = await reader_on(fake, batch=10)
    reader._requested_at -= 10.0  # the loop was blocked: the request expired, its 408 still queued
    assert await reader.next_batch(wait=0.01) == []
    assert len(fake.requests) == 2  # given up on, and replaced
    await end(fake, fake.requests[0], "408", "Request Timeout")
    await asyncio.sleep(2 * reader.RETRY_FIRST)  # past any back-off the 408 might have set
    assert await reader.next_batch(wait=0.01) == []
    assert len(fake.requests) == 2  # the second request is still the open one


async def test_a_request_answered_at_once_is_asked_again_after_a_growing_back_off() -> None:
    """409 "Exceeded MaxWaiting" at once: the reader asks again after a back-off, twice as long the next time."""
    fake = FakeNats()
    reader = await reader_on(fake, batch=10)
    reader.RETRY_FIRST = 0.3
    await end(fake, fake.requests[-1], "409", "Exceeded MaxWaiting")
    assert await reader.next_batch(wait=0.05) == []
    assert len(fake.requests) == 1  # backing off 0.3 s
    assert await reader.next_batch(wait=0.5) == []
    assert len(fake.requests) == 2  # asked again once it ran out
    await end(fake, fake.requests[-1], "409", "Exceeded MaxWaiting")
    assert await reader.next_batch(wait=0.4) == []
    assert len(fake.requests) == 2  # backing off 0.6 s now
