"""Benchmark: how fast does the survey service take writes, against a raw JetStream publish?

In one run it starts a throw-away nats-server (from the wheel, fsyncing every write before
its PubAck, as ``engage up`` and deploy/ run it) and the survey service as users run it
(``engage serve survey``, its own process), then:
  - drives ``POST /responses`` with N anonymous survey responses from ``--clients``
    concurrent keep-alive connections, each with its own Idempotency-Key; the load runs in a
    process of its own, on a minimal HTTP/1.1 client, so the client is not what is measured;
  - publishes the same events with nats-py, as many in flight as there were clients (the
    baseline: a raw windowed publish, PubAck awaited for each).
Prints writes/s and p99 for both, their ratio, and the survey's CPU per request.

    python -m bench.ingest --requests 5000 --clients 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import nats

from bench.catchup import print_figures
from services.cli.embedded import EmbeddedNats, free_port
from shared.bus import ensure_streams
from shared.events import Envelope, SurveyCompleted
from shared.settings import Settings
from shared.upcasting import encode_event
from tests import factories as f

TOKEN = "bench-ingest-" + "t" * 24
WARMUP = 200
WIDE_WINDOW = 256


def bodies(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` request bodies of ``POST /responses``: plausible self-identified profiles."""
    rng = random.Random(seed)
    return [{"profile": f.random_profile(rng).model_dump(mode="json", exclude_none=True)} for _ in range(n)]


def _requests(port: int, batch: list[dict[str, Any]], label: str) -> list[bytes]:
    """Each body as the bytes of a whole HTTP/1.1 request, sent as-is on a keep-alive connection."""
    out = []
    for i, body in enumerate(batch):
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST /responses HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Idempotency-Key: bench-{label}-{i}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        out.append(head.encode() + data)
    return out


async def _drive_async(port: int, requests: list[bytes], clients: int) -> tuple[float, list[float], dict[int, int]]:
    pending = iter(requests)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in pending:  # the clients share one iterator: whoever is free sends the next
                started = time.perf_counter()
                writer.write(request)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies, dict(statuses)


def drive(port: int, requests: list[bytes], clients: int) -> tuple[float, list[float], dict[int, int]]:
    """Send ``requests`` over ``clients`` connections (in the load process): elapsed s, latencies, statuses."""
    return asyncio.run(_drive_async(port, requests, clients))


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def events(batch: list[dict[str, Any]], process_id: str) -> Iterator[Envelope]:
    """The events the survey makes of ``batch`` (new response ids), for the raw publish."""
    for body in batch:
        payload = SurveyCompleted(response_id=f.agg("sr"), profile=body["profile"])
        yield Envelope.wrap(payload, process_id=process_id, source="survey")


async def raw_publish(url: str, settings: Settings, batch: list[dict[str, Any]], window: int) -> dict[str, float]:
    """Publish the events of ``batch`` with ``window`` in flight, each awaiting its PubAck: rate and p99."""
    prepared = [(ev.subject, encode_event(ev), {"Nats-Msg-Id": str(ev.event_id)}) for ev in events(batch, "bench")]
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    pending = iter(prepared)
    latencies: list[float] = []

    async def publisher() -> None:
        for subject, data, headers in pending:
            started = time.perf_counter()
            await js.publish(subject, data, headers=headers, stream=settings.stream_name)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(window)))
    elapsed = time.perf_counter() - started
    await nc.close()
    return {"rate": len(prepared) / elapsed, "p99_ms": p99(latencies) * 1000}


@contextlib.contextmanager
def survey_service(folder: Path, nats_url: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``engage serve survey`` as its own process, with a token allowed to write as fast as it can."""
    tokens = folder / "tokens.json"
    tokens.write_text(json.dumps({"bench": {"token": TOKEN, "scopes": ["survey:write"]}}))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")},
        "ENGAGE_NATS_URL": nats_url,
        "ENGAGE_SURVEY_PORT": str(port),
        "ENGAGE_TOKENS_FILE": str(tokens),
        "ENGAGE_LOG_FORMAT": "json",
        "ENGAGE_WRITE_RATE": "100000",  # the benchmark measures the service, not the token's rate limit
        "ENGAGE_WRITE_BURST": "1000000",
    }
    with (folder / "survey.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "serve", "survey"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"survey exited: {(folder / 'survey.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("survey did not answer /health within 60 s")
            time.sleep(0.1)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(requests: int = 5000, clients: int = 20) -> dict[str, float]:
    """One run: the survey's writes/s and p99 over HTTP, a raw windowed publish of the same events, the ratio.

    Keys: ``survey_rate`` and ``survey_p99_ms``, ``raw_rate`` and ``raw_p99_ms`` (``clients`` in
    flight), ``ratio`` (survey / raw), ``survey_cpu_ms`` (survey process CPU per request).
    """
    batch = bodies(requests + WARMUP)
    loop = asyncio.get_running_loop()
    with (
        tempfile.TemporaryDirectory(prefix="engage-bench-ingest-") as tmp,
        ProcessPoolExecutor(1, mp_context=get_context("spawn")) as load,
    ):
        folder = Path(tmp)
        server = EmbeddedNats(folder / "nats", sync_always=True)
        url = server.start()
        try:
            settings = Settings(nats_url=url)
            with survey_service(folder, url) as (port, proc):
                warm = _requests(port, batch[:WARMUP], "warm")
                await loop.run_in_executor(load, drive, port, warm, clients)
                timed = _requests(port, batch[WARMUP:], "timed")
                cpu_before = cpu_seconds(proc.pid)
                elapsed, latencies, statuses = await loop.run_in_executor(load, drive, port, timed, clients)
                cpu = cpu_seconds(proc.pid) - cpu_before
            if statuses != {201: requests}:
                raise RuntimeError(f"not every write was stored: statuses {statuses}; see the survey's log")
            raw = await raw_publish(url, settings, batch[WARMUP:], clients)
            wide = await raw_publish(url, settings, batch[WARMUP:], WIDE_WINDOW)
        finally:
            server.stop()
    rate = requests / elapsed
    return {
        "survey_rate": rate,
        "survey_p99_ms": p99(latencies) * 1000,
        "survey_cpu_ms": cpu / requests * 1000,
        "raw_rate": raw["rate"],
        "raw_p99_ms": raw["p99_ms"],
        "ratio": rate / raw["rate"],
        "wide_rate": wide["rate"],
        "wide_p99_ms": wide["p99_ms"],
        "wide_ratio": rate / wide["rate"],
    }


def report(figures: dict[str, float], clients: int) -> None:
    print_figures(
        {
            f"survey POST /responses ({clients} clients)": f"{figures['survey_rate']:>7,.0f} writes/s, "
            f"p99 {figures['survey_p99_ms']:.1f} ms, {figures['survey_cpu_ms']:.2f} ms CPU/request",
            f"raw JetStream publish ({clients} in flight)": f"{figures['raw_rate']:>7,.0f} events/s, "
            f"p99 {figures['raw_p99_ms']:.1f} ms",
            f"raw JetStream publish ({WIDE_WINDOW} in flight)": f"{figures['wide_rate']:>7,.0f} events/s, "
            f"p99 {figures['wide_p99_ms']:.1f} ms",
            f"ratio to {clients} in flight": f"{figures['ratio']:.2f}",
            f"ratio to {WIDE_WINDOW} in flight": f"{figures['wide_ratio']:.2f}",
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    report(asyncio.run(measure(args.requests, args.clients)), args.clients)
