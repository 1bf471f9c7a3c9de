"""The garbage collector of a long-running service, set once its start-up is done.

CPython's full collection walks every object the process holds. A service's start-up
(imports, the FastAPI app, pydantic schemas, the plans) leaves about 100,000 of them that
live as long as the process, and a full collection over them took 50-150 ms on a 2-core
machine, several times a minute under a steady stream of events: every event that arrived
meanwhile waited for it. Freezing what start-up made moves it out of every collection, and
a larger first generation lets a batch's short-lived objects die before they are collected
at all (most allocations here are acyclic and freed by reference counting).
"""

from __future__ import annotations

import gc

# Allocations between collections of the youngest generation (CPython's default is 700),
# and how many of those, then of the middle generation, before an older one is collected.
THRESHOLDS = (50_000, 20, 20)


def settle() -> None:
    """Call once a service has started: what exists now is never scanned by the collector again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
