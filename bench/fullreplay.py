"""The as-of figure's baseline: a full replay of the log into memory, counted against the plan.

Run as its own process (``python -m bench.fullreplay NATS_URL``) so its memory and time are
its own; it prints one JSON line: ``{"events": n, "seconds": s, "peak_mb": m}``. It reads the
log with the library's replay and projects it with the same in-memory projection the
service's as-of answers have used, so it is what an as-of that replays the whole log costs.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import nats

from bench.workload import PROCESS
from services.analytics.projection.memory import MemoryProjection
from services.analytics.reading import replay
from shared.plan import load_plans
from shared.settings import Settings


async def full_replay(url: str) -> dict[str, float]:
    settings = Settings(nats_url=url)
    plan = load_plans(None).get(PROCESS)
    nc = await nats.connect(url)
    start = time.perf_counter()
    memory = MemoryProjection(settings.tz)
    window = replay.Window(to_seq=await replay.last_sequence(nc, settings.stream_name), process_id=PROCESS)
    kept, events = [], 0
    async for seq, event in replay.events(nc, settings.stream_name, window):
        kept.append((seq, event))
        events += 1
        if len(kept) >= 5000:
            memory.feed(kept)
            kept = []
    memory.feed(kept)
    memory.counts(PROCESS, plan)
    seconds = time.perf_counter() - start
    await nc.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"events": events, "seconds": seconds, "peak_mb": peak}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(full_replay(sys.argv[1]))))
