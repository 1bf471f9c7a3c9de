"""Freshness: which stream sequence an answer reflects, and how far behind the log it is.

(Not to be confused with ``asof``, which answers as of a past moment.)
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from nats.js import JetStreamContext

from services.analytics.answers.models import Freshness


async def freshness(js: JetStreamContext, stream: str, sequence: int, projected_at: datetime | None) -> Freshness:
    """The answer reflects ``sequence``; the stream's last sequence says how far behind that is."""
    info = await js.stream_info(stream)
    last = info.state.last_seq or 0
    return Freshness(
        sequence=sequence,
        stream_sequence=last,
        behind=max(last - sequence, 0),
        projected_at=projected_at,
        answered_at=datetime.now(UTC),
    )


async def behind_seconds(js: JetStreamContext, stream: str, fresh: Freshness) -> float | None:
    """How long the oldest event not yet counted has waited (None when up to date)."""
    if not fresh.behind:
        return None
    try:
        msg = await js.get_msg(stream, fresh.sequence + 1)
        recorded = datetime.fromisoformat(orjson.loads(msg.data or b"{}")["recorded_at"])
        return max(0.0, (datetime.now(UTC) - recorded).total_seconds())
    except Exception:  # noqa: BLE001 - an unreadable event is the dead-letter stream's business, not freshness's
        return None
