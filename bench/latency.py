"""Publish → commit latency at a steady offered rate, and its baseline, raw publish → consumer.

The publisher is open-loop: event i is sent at start + i/rate whatever the PubAcks before it
did, so a slow system cannot lower the load it is offered. The live figure is the time
from sending an event to the first reading of the projector's checkpoint at or past its
sequence: the checkpoint table is read every ``POLL`` seconds on one connection (a
primary-key read, negligible load), so each latency is an upper bound by at most ``POLL``.
The baseline publishes the same bodies at the same rate to a throw-away stream on the same
nats-server and times their arrival at a plain ordered push consumer.

A figure and its baseline are measured in alternating rounds (``alternate``), so that a
machine whose disk or processors slow down for a while (a checkpoint of PostgreSQL after a
rebuild, the page cache writing back) slows both alike: each p99 is over the latencies of
all its rounds.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import Awaitable, Callable

import nats
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bench.service import Checkpoint
from bench.workload import Message, Outreach

POLL = 0.005
RAW_STREAM = "BENCH_RAW"


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank); inf if nothing was measured."""
    if not values:
        return math.inf
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


async def offer(
    rate: int, seconds: float, messages: Callable[[], Message], send: Callable[[Message], Awaitable[int]]
) -> list[tuple[int, float]]:
    """Send ``rate`` events a second for ``seconds``, open-loop; (sequence, time sent) of each."""
    total = max(int(rate * seconds), 1)
    sent: list[tuple[int, float]] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(message: Message) -> None:
        at = time.perf_counter()
        sent.append((await send(message), at))

    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(messages())))
    await asyncio.gather(*tasks)
    return sent


async def alternate(rounds: int, *arms: Callable[[int], Awaitable[list[float]]]) -> tuple[float, ...]:
    """The p99 of each of ``arms`` (each called with its round's number and giving latencies),
    measured in ``rounds`` rounds that take them in turn: first, second, ..., first, second..."""
    measured: list[list[float]] = [[] for _ in arms]
    for i in range(rounds):
        for arm, into in zip(arms, measured, strict=True):
            into += await arm(i)
    return tuple(p99(values) for values in measured)


async def publish_to_commit(
    url: str, checkpoint: Checkpoint, rate: int, seconds: float, timeout: float, seed: int
) -> list[float]:
    """Each offered event's publish → projector commit, in seconds (inf if it never committed
    within ``timeout``)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    outreach = Outreach(seed)
    seen: list[tuple[float, int]] = []  # (time read, checkpoint)
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            value = await checkpoint.read()
            seen.append((time.perf_counter(), value))
            await asyncio.sleep(POLL)

    async def send(m: Message) -> int:
        return (await js.publish(m.subject, m.body, headers=m.headers)).seq

    poller = asyncio.create_task(poll())
    try:
        sent = await offer(rate, seconds, outreach.now, send)
        last = max(seq for seq, _ in sent)
        deadline = time.perf_counter() + timeout
        while (not seen or seen[-1][1] < last) and time.perf_counter() < deadline:
            await asyncio.sleep(POLL)
    finally:
        stop.set()
        await poller
        await nc.close()
    times, values = [t for t, _ in seen], [v for _, v in seen]  # both only ever grow
    latencies = []
    for seq, at in sent:
        first = max(bisect.bisect_left(values, seq), bisect.bisect_left(times, at))
        latencies.append(times[first] - at if first < len(times) else math.inf)
    return latencies


async def publish_to_consumer(url: str, rate: int, seconds: float, seed: int) -> list[float]:
    """The baseline: each event's raw JetStream publish → ordered push consumer, in seconds, same
    bodies and rate, on a throw-away stream of the same server (deleted afterwards)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=RAW_STREAM, subjects=["benchraw.>"], storage=StorageType.FILE))
    arrived: dict[int, float] = {}

    async def on_msg(msg: Msg) -> None:
        arrived[msg.metadata.sequence.stream] = time.perf_counter()

    sub = await js.subscribe("benchraw.>", cb=on_msg, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    outreach = Outreach(seed)

    async def send(m: Message) -> int:
        return (await js.publish("benchraw." + m.subject, m.body, headers=m.headers)).seq

    try:
        sent = await offer(rate, seconds, outreach.now, send)
        deadline = time.perf_counter() + 10
        while len(arrived) < len(sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(RAW_STREAM)
        await nc.close()
    return [arrived[seq] - at if seq in arrived else math.inf for seq, at in sent]
