"""Every figure for one log size, in the order a deployment meets them, each step bounded in time.

1. a working copy of the kept log of n events, on a nats-server fsyncing every write;
2. a raw ordered consumer reads it (the rebuild's baseline), the rebuild's reader reads and
   validates it and does nothing more (the ceiling of any rebuild that validates in one
   process), then `engage rebuild` builds the read models of a fresh database from it (its
   rate and peak memory);
3. ``tail`` more events are published while analytics is stopped, then `engage serve analytics`
   (the shipped plans, status judging on) starts behind and counts them (live catch-up);
4. raw publish → consumer p99 at ``rate`` events/s (baseline) and publish → commit p99, in
   alternating rounds (``latency.alternate``);
5. ``GET /coverage`` timed as an analyst (median of ``calls``);
6. one ``GET /coverage?as_of=`` (the history's midpoint) with analytics' memory sampled (its
   as-of workers' included), then publish → commit p99 without, with 4 clients keeping as-of
   requests running, and without them again (the control: the measurement's own noise), in
   rounds that take turns;
7. coordinators' ``GET /coverage`` (for information; bounded like one as-of);
8. analytics stopped; a full replay of the same log into memory (the as-of baseline).
A step that fails or runs out of time is reported as missing and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import nats
import orjson

from bench import latency
from bench.logs import Progress, copy_log_async, make_log
from bench.rebuild import read_and_validate
from bench.service import (
    ANALYST,
    COORDINATOR,
    Analytics,
    Checkpoint,
    MemoryWatch,
    checkpoint_reader,
    engage_env,
    run_rebuild,
)
from bench.workload import Outreach, midpoint, publish_all
from services.cli.embedded import EmbeddedNats

T = TypeVar("T")
CONCURRENT_AS_OF = 4
AS_OF_DRAIN = 30.0  # seconds the as-of requests in flight get to be answered when a round ends


@dataclass(frozen=True)
class Options:
    data_dir: Path
    tail: int = 20_000
    rate: int = 1000
    latency_seconds: float = 10.0  # per figure, split into ``rounds`` alternating with its baseline's
    rounds: int = 5
    calls: int = 21
    coordinator_calls: int = 3  # 0 skips coordinators' /coverage (for information only)
    timeout: float = 900.0  # seconds, each step
    as_of_limit: float = 120.0  # seconds: above it (or above the memory guard) the 4 concurrent as-of are skipped
    memory_guard_mb: float = 1500.0


@dataclass
class Figures:
    """What one size measured; None where a step failed or was skipped (``notes`` says why)."""

    n: int
    values: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def get(self, key: str) -> float | None:
        return self.values.get(key)


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def bounded(figures: Figures, what: str, work: Awaitable[T], timeout: float, say: Progress) -> T | None:
    """``work``, or None (noted) if it fails or takes longer than ``timeout`` seconds."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            result = await work
    except TimeoutError as exc:  # the step's bound, or a timeout of its own (e.g. a PubAck that never came)
        spent = time.perf_counter() - start
        ran_out = spent >= timeout * 0.99
        figures.notes.append(f"{what}: gave up after {timeout:.0f} s" if ran_out else f"{what}: timed out: {exc}")
    except Exception as exc:  # noqa: BLE001 - one failed step is reported, the other figures still measured
        figures.notes.append(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    else:
        say(f"  {what}: {time.perf_counter() - start:.1f} s")
        return result
    say(f"  {figures.notes[-1]}")
    return None


async def raw_read(url: str, stream: str, n: int) -> float:
    """Events/s of a plain nats-py ordered consumer reading the first ``n`` events of the log."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    done, seen = asyncio.Event(), 0

    async def on_msg(_msg: object) -> None:
        nonlocal seen
        seen += 1
        if seen >= n:
            done.set()

    try:
        start = time.perf_counter()
        sub = await js.subscribe("engagement.>", ordered_consumer=True, cb=on_msg, stream=stream)
        await done.wait()
        elapsed = time.perf_counter() - start
        await sub.unsubscribe()
    finally:
        await nc.close()
    return n / elapsed


async def last_sequence(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info("ENGAGEMENT")).state.last_seq or 0
    finally:
        await nc.close()


async def catch_up(analytics: Analytics, dsn: str, base: int, end: int, timeout: float) -> float:
    """Start analytics behind by ``end - base`` events; events/s from its first batch to the end
    (the process's start-up, imports and connections, excluded)."""
    async with checkpoint_reader(dsn) as checkpoint:
        await analytics.start(timeout=60)
        deadline = time.perf_counter() + timeout
        began = time.perf_counter()
        while (value := await checkpoint.read()) < end:
            if value <= base:
                began = time.perf_counter()  # the last moment nothing was counted yet
            if time.perf_counter() > deadline:
                raise TimeoutError(f"counted up to {value:,} of {end:,}")
            await asyncio.sleep(0.05)
    return (end - base) / (time.perf_counter() - began)


async def time_coverage(url: str, token: str, calls: int, query: str = "") -> tuple[float, dict[str, object]]:
    """Median seconds of ``calls`` sequential ``GET /coverage`` (after one warm-up), and the last answer."""
    headers = {"Authorization": f"Bearer {token}"}
    times = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=None) as client:
        answer = await client.get("/coverage" + query)
        answer.raise_for_status()
        for _ in range(calls):
            start = time.perf_counter()
            answer = await client.get("/coverage" + query)
            times.append(time.perf_counter() - start)
            answer.raise_for_status()
    body: dict[str, object] = orjson.loads(answer.content)
    return statistics.median(times), body


async def as_of_once(url: str, refused: list[int] | None = None) -> float:
    """Seconds of one analyst ``GET /coverage?as_of=`` at the history's midpoint. Analytics answers a
    few as-of questions at once and refuses more with 429: the request is then asked again after
    its Retry-After, as `engage coverage --as-of` does (counted in ``refused``)."""
    query = {"as_of": midpoint().isoformat()}
    async with httpx.AsyncClient(base_url=url, timeout=None) as client:
        start = time.perf_counter()
        while True:
            answer = await client.get("/coverage", params=query, headers={"Authorization": f"Bearer {ANALYST}"})
            if answer.status_code != 429:
                break
            if refused is not None:
                refused[0] += 1
            await asyncio.sleep(min(float(answer.headers.get("Retry-After", "0.2") or 0.2), 1.0))
        answer.raise_for_status()
        return time.perf_counter() - start


@contextlib.asynccontextmanager
async def as_of_load(url: str, clients: int) -> AsyncIterator[tuple[list[int], list[int]]]:
    """``clients`` loops each keeping one as-of request in flight, run by ``bench.asofload`` in a
    process of its own (not in the measuring one); yields the counts answered and refused
    (429), filled in once the load has stopped."""
    answered, refused = [0], [0]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.asofload", url, str(clients), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        started = await asyncio.wait_for(proc.stdout.readline(), 60)
        if started.strip() != b"asking":
            raise RuntimeError(f"bench.asofload did not start: {started[-300:]!r}")
        await asyncio.sleep(0.2)  # the requests are in flight before the latency is measured
        yield answered, refused
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # the requests in flight are answered, then it reports
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), AS_OF_DRAIN + 30)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
        lines = out.strip().splitlines()
        if proc.returncode == 0 and lines:
            report = orjson.loads(lines[-1])
            answered[0], refused[0] = report["answered"], report["refused"]


async def full_replay(url: str, timeout: float) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fullreplay",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(err.decode()[-1000:])
    result: dict[str, float] = orjson.loads(out.splitlines()[-1])
    return result


async def measure_size(n: int, opts: Options, postgres_dsn: str, folder: Path, say: Progress) -> Figures:
    figures = Figures(n)
    put = figures.values
    step = opts.timeout
    say(f"=== log of {n:,} events ===")
    kept = await bounded(figures, "make or find the log", make_log(opts.data_dir, n, say), 4 * step, say)
    if kept is None:
        return figures
    work = await copy_log_async(kept, folder / f"nats-{n}")
    server = EmbeddedNats(work, sync_always=True)
    url = server.start()
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "bench_{n}"')
    await admin.close()
    dsn = with_database(postgres_dsn, f"bench_{n}")
    env = engage_env(url, dsn, folder)
    analytics = Analytics(env, folder / f"analytics-{n}.log")
    try:
        put["raw_read"] = await bounded(figures, "raw ordered consumer", raw_read(url, "ENGAGEMENT", n), step, say)
        put["read_validate"] = await bounded(
            figures, "the rebuild's reader and validation alone", read_and_validate(url, "ENGAGEMENT"), step, say
        )
        rebuilt = await bounded(figures, "engage rebuild", asyncio.to_thread(run_rebuild, env, step), step, say)
        if rebuilt is None:
            return figures
        put["rebuild_rate"], put["rebuild_peak_mb"] = rebuilt.rate, rebuilt.peak_mb
        tail = Outreach(n + 1)
        published = await bounded(
            figures, f"publish {opts.tail:,} more", publish_all(url, (tail.now() for _ in range(opts.tail))), step, say
        )
        if published is None:
            return figures
        end = await last_sequence(url)
        put["catch_up"] = await bounded(
            figures,
            f"analytics catches up {opts.tail:,}",
            catch_up(analytics, dsn, end - opts.tail, end, step),
            step,
            say,
        )
        if analytics.proc is None or analytics.proc.poll() is not None:
            return figures
        async with checkpoint_reader(dsn) as checkpoint:
            each, rounds = opts.latency_seconds / opts.rounds, opts.rounds
            pair = await bounded(
                figures,
                f"raw publish → consumer, then publish → commit, {opts.rate:,}/s: {rounds} rounds of {each:g} s",
                latency.alternate(
                    rounds,
                    lambda i: latency.publish_to_consumer(url, opts.rate, each, n + 2 + 10 * i),
                    lambda i: latency.publish_to_commit(url, checkpoint, opts.rate, each, 60, n + 3 + 10 * i),
                ),
                2 * step,
                say,
            )
            put["raw_p99"], put["live_p99"] = pair or (None, None)
            await measure_answers(figures, analytics, opts, say)
            if put.get("as_of") is not None:
                await measure_live_under_as_of(figures, analytics, checkpoint, url, opts, say)
            await measure_coordinators(figures, analytics, opts, say)
        analytics.stop()
        replayed = await bounded(figures, "full replay (as-of baseline)", full_replay(url, step), step, say)
        if replayed is not None:
            put["replay"], put["replay_events"] = replayed["seconds"], replayed["events"]
    finally:
        analytics.stop()
        server.stop()
    return figures


async def measure_answers(figures: Figures, analytics: Analytics, opts: Options, say: Progress) -> None:
    put, step = figures.values, opts.timeout
    timed = await bounded(
        figures, f"GET /coverage ×{opts.calls} (analyst)", time_coverage(analytics.url, ANALYST, opts.calls), step, say
    )
    if timed is not None:
        put["coverage"] = timed[0]
        participants = timed[1].get("participants")
        put["participants"] = float(participants) if isinstance(participants, int) else None
    async with MemoryWatch(analytics.pid) as memory:
        guard = asyncio.create_task(over_guard(memory, opts.memory_guard_mb))
        request = asyncio.create_task(as_of_once(analytics.url))
        start = time.perf_counter()
        await asyncio.wait({guard, request}, timeout=opts.as_of_limit, return_when=asyncio.FIRST_COMPLETED)
        waited = time.perf_counter() - start
        guard.cancel()
        if request.done() and request.exception() is None:
            put["as_of"] = request.result()
            say(f"  GET /coverage?as_of=: {waited:.1f} s")
        else:
            why = (
                f"{type(request.exception()).__name__}: {request.exception()}"
                if request.done()
                else f"analytics went over {opts.memory_guard_mb:,.0f} MB"
                if guard.done()
                else f"no answer within {opts.as_of_limit:.0f} s"
            )
            request.cancel()
            put["as_of_at_least"] = waited
            figures.notes.append(f"as-of: {why}; the request was abandoned after {waited:.1f} s")
            say(f"  GET /coverage?as_of=: {figures.notes[-1]}")
    put["as_of_rss_mb"] = memory.peak


async def measure_coordinators(figures: Figures, analytics: Analytics, opts: Options, say: Progress) -> None:
    """Coordinators' ``GET /coverage`` (rounded, from the latest release), for information: their
    first answer reads the log forward into memory, so it runs after the as-of figures, bounded
    like one as-of."""
    if not opts.coordinator_calls:
        return
    coordinator = await bounded(
        figures,
        f"GET /coverage ×{opts.coordinator_calls} (coordinator)",
        time_coverage(analytics.url, COORDINATOR, opts.coordinator_calls),
        opts.as_of_limit,
        say,
    )
    figures.values["coverage_coordinator"] = coordinator[0] if coordinator else None


async def over_guard(memory: MemoryWatch, limit_mb: float) -> None:
    while memory.peak < limit_mb:
        await asyncio.sleep(0.1)


async def measure_live_under_as_of(
    figures: Figures, analytics: Analytics, checkpoint: Checkpoint, url: str, opts: Options, say: Progress
) -> None:
    """Publish → commit p99 with ``CONCURRENT_AS_OF`` clients asking as-of questions, and without
    them, in rounds that take turns: without, with, and without again. The second rounds
    without (the control) change nothing: their p99 against the first's is this measurement's
    own noise on this machine, printed beside the figure."""
    put = figures.values
    one = put.get("as_of") or 0.0
    if one > opts.as_of_limit / 4 or (put.get("as_of_rss_mb") or 0.0) > opts.memory_guard_mb / CONCURRENT_AS_OF:
        figures.notes.append(f"{CONCURRENT_AS_OF} concurrent as-of: skipped (one took {one:.1f} s)")
        return
    each, asked = opts.latency_seconds / opts.rounds, [0, 0]

    async def without(i: int) -> list[float]:
        return await latency.publish_to_commit(url, checkpoint, opts.rate, each, 60, figures.n + 100 + 10 * i)

    async def beside(i: int) -> list[float]:
        async with as_of_load(analytics.url, CONCURRENT_AS_OF) as (answered, refused):
            latencies = await latency.publish_to_commit(url, checkpoint, opts.rate, each, 60, figures.n + 105 + 10 * i)
        asked[0], asked[1] = asked[0] + answered[0], asked[1] + refused[0]
        return latencies

    async def control(i: int) -> list[float]:
        return await latency.publish_to_commit(url, checkpoint, opts.rate, each, 60, figures.n + 107 + 10 * i)

    async with MemoryWatch(analytics.pid) as memory:
        measured = await bounded(
            figures,
            f"publish → commit at {opts.rate:,}/s without, with {CONCURRENT_AS_OF} as-of running, and without "
            f"again: {opts.rounds} rounds of {each:g} s each",
            latency.alternate(opts.rounds, without, beside, control),
            3 * opts.timeout,
            say,
        )
    say(f"  as-of requests meanwhile: {asked[0]} answered, {asked[1]} refused for now (429) and asked again")
    put["live_p99_without_as_of"], put["live_p99_as_of"], put["live_p99_control"] = measured or (None, None, None)
    put["as_of_rss_mb"] = max(put.get("as_of_rss_mb") or 0.0, memory.peak)
