"""Benchmark: what reading one event costs analytics, with pydantic alone and with the derived decoder.

Builds a realistic log in memory (``bench.catchup``'s mix: anonymous surveys, interviews with
returning participants, gatherings, withdrawals), then decodes it with ``decode_batch`` both
ways: pydantic only (``fast=False``) and the default path (the decoder
``shared.fastdecode`` derives from the contract, pydantic when it is unsure). The two are
interleaved batch by batch, so a change in the machine's load falls on both alike, and each
event is decoded once per way, as a replay meets it (the derived decoder's memory of
profiles starts empty). Prints CPU µs per event for each, and their ratio.

    python -m bench.decode --events 20000
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from bench.catchup import workload
from services.analytics.reading.decode import decode_batch
from shared import fastdecode
from shared.events import Envelope

Batch = list[tuple[int, str, bytes]]


def log(n: int, seed: int) -> list[Batch]:
    """``n`` events as the log holds them, in batches of 100 (the projector's pull size)."""
    raw = [(i, ev.subject, ev.model_dump_json().encode()) for i, ev in enumerate(workload(n, seed), start=1)]
    return [raw[i : i + 100] for i in range(0, len(raw), 100)]


def timed(run: Callable[[], object]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    batches = log(args.events, args.seed)
    n = sum(len(b) for b in batches)
    # A fresh derived decoder: nothing remembered from an earlier run in this process.
    fastdecode.FAST = fastdecode.FastDecoder(Envelope)
    slow = fast = 0.0
    gc.collect()
    for batch in batches:
        slow += timed(lambda b=batch: decode_batch(b, fast=False))  # type: ignore[misc]  # bound per batch
        fast += timed(lambda b=batch: decode_batch(b))  # type: ignore[misc]  # bound per batch
    same = all(decode_batch(b, fast=False) == decode_batch(b) for b in batches[:20])
    print(f"decode_batch over {n:,} events (CPU time, interleaved per batch of 100):")
    print(f"  pydantic only:          {slow / n * 1e6:7.1f} µs/event")
    print(f"  derived msgspec decoder: {fast / n * 1e6:6.1f} µs/event")
    print(f"  ratio (new / pydantic):  {fast / slow:6.2f}   speed-up {slow / fast:.2f}×   same events: {same}")


if __name__ == "__main__":
    main()
