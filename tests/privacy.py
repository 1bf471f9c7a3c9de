"""What coordinators may see: checks shared by the dashboard's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Fields of a dashboard snapshot that hold a count of people or of engagements.
COUNT_FIELDS = {"participants", "engagements", "count", "answered", "declined", "not_answered", "total"}
# What a feed line may say: what happened, through which channel, where, about what, when.
FEED_FIELDS = {"kind", "label", "channel", "region", "topic", "occurred_at", "recorded_at"}


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from walk(inner, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for inner in value:
            yield from walk(inner, path + "[]")
    else:
        yield path, value


def small_counts_in(snap: dict[str, Any], k: int) -> list[str]:
    """Paths of count fields holding 1..k-1 (engagements per channel and per week are counts too)."""
    found = []
    for path, value in walk(snap):
        leaf = path.rsplit(".", 1)[-1].removesuffix("[]")
        counted = leaf in COUNT_FIELDS or ".engagements." in f".{path}." or path.startswith("over_time.periods")
        if counted and isinstance(value, int) and not isinstance(value, bool) and 0 < value < k:
            found.append(f"{path}={value}")
    return found
