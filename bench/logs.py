"""Event logs of a given size, made once and kept: a nats-server's JetStream folder per size.

Making a 1M-event log takes a minute or two (built as JSON, published 4,000 in flight to a
nats-server with lazy fsync); a run then copies the kept folder and starts a nats-server
on the copy with ``sync_interval: always``, as ``engage up`` and deploy/ run it. Kept logs
live under ``--data-dir`` (default ``.engage-bench/``), one folder per generator version
and size, written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from pathlib import Path

import nats

from bench.workload import GENERATOR_VERSION, Outreach, publish_all
from services.cli.embedded import EmbeddedNats
from shared.bus import ensure_streams, stream_configs
from shared.settings import Settings

SEED = 2018


def kept_log(data_dir: Path, n: int) -> Path:
    """The folder of the kept log: per size, generator version and stream configuration (a log
    made for other stream settings would be refused by the services)."""
    streams = hashlib.sha256(repr(stream_configs(Settings())).encode()).hexdigest()[:8]
    return data_dir / "logs" / f"v{GENERATOR_VERSION}-{streams}-{n}"


async def make_log(data_dir: Path, n: int, say: Progress) -> Path:
    """The kept log of ``n`` events, made now if it is not there yet."""
    final = kept_log(data_dir, n)
    if (final / "jetstream").is_dir():
        say(f"log of {n:,} events: kept in {final}")
        return final
    building = final.with_name(final.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    server = EmbeddedNats(building, sync_always=False)
    url = server.start()
    try:
        nc = await nats.connect(url)
        await ensure_streams(nc.jetstream(), Settings(nats_url=url))
        await nc.close()
        start = time.perf_counter()
        step = max(n // 10, 4000)
        marks = iter(range(step, n + step, step))
        mark = next(marks)

        def progress(done: int) -> None:
            nonlocal mark
            if done >= mark:
                say(f"  published {done:,}/{n:,} ({done / (time.perf_counter() - start):,.0f}/s)")
                mark = next(marks, n + 1)

        _count, rate = await publish_all(url, Outreach(SEED).history(n), progress=progress)
        say(f"log of {n:,} events made in {time.perf_counter() - start:.0f} s ({rate:,.0f}/s published)")
    finally:
        server.stop()
    building.rename(final)
    return final


def copy_log(kept: Path, folder: Path) -> Path:
    """A working copy of a kept log (a run appends to it), as an EmbeddedNats data folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copytree(kept / "jetstream", folder / "jetstream")
    return folder


async def copy_log_async(kept: Path, folder: Path) -> Path:
    return await asyncio.to_thread(copy_log, kept, folder)


class Progress:
    """Prints a line with the time since the start of the run."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, line: str) -> None:
        print(f"[{time.monotonic() - self.start:6.0f} s] {line}", flush=True)
