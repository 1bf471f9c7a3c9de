"""Small-count protection for what coordinators see: random rounding to base k, keyed by who is
counted. Pure: participant states and a secret in, rounded numbers out.

Every count a coordinator sees is rounded to a multiple of k, up or down at random with the
chances that keep it unbiased (a count of ``qk + r`` becomes ``(q+1)k`` with chance ``r/k``,
else ``qk``). A count rounded to 0 is shown as ``"<k"``. So a shown ``p`` says only that
the true count lies in ``[p-k+1, p+k-1]``, and ``"<k"`` that it lies in ``[0, k-1]``.

The chance is not drawn afresh each time. Each participant has a secret random key (an
HMAC of their pseudonymous id under a secret kept in PostgreSQL), and a count's direction
is decided by the sum of its members' keys (the "cell key", as in the ABS cell key
method). So the same people give the same number however the question is asked (as a row
of one view or the total of a segment, today or next week), and asking again, or two
ways, averages nothing away. Counts of engagements weigh each member's key by their
engagements; a total's key is the sum of its parts' keys.

Rounding alone does not survive watching the numbers change one participant at a time (a
count seen to step from ``<5`` to 5 to 10 over two arrivals was 4, 5, 6). Coordinators
therefore see releases (``answers.release``): the numbers move only once at least
``release_every`` participants have changed. ``engage audit-suppression`` checks the whole.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable
from datetime import tzinfo

from services.analytics.projection.counts import Counts, counts_of, daily_of
from services.analytics.projection.fold import ANSWERED, DEFAULT_TZ, ParticipantState
from shared.plan import Plan
from shared.profile import DECLINED, DIMENSIONS

KEY_BITS = 64
_MOD = 1 << KEY_BITS

Cell = tuple[str, ...]
"""What a count counts: ``("participants",)``, ``("profiled",)``, ``("engagements",)``,
``("engagements", channel)``, ``("people", channel)``, ``("category", dimension, category)``,
``("not_answered", dimension)``, ``("day", day, channel)`` (engagements) and ``("first", day, channel)``
(first reached)."""


def record_key(secret: bytes, participant: str) -> int:
    """A participant's secret random key, uniform on [0, 2**64)."""
    digest = hmac.new(secret, participant.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")


def cells_of(counts: Counts) -> dict[Cell, int]:
    """The counts as cells (see ``Cell``)."""
    cells: dict[Cell, int] = {
        ("participants",): counts.participants,
        ("profiled",): counts.profiled,
        ("engagements",): counts.engagements,
    }
    cells.update({("engagements", c): n for c, n in counts.channels.items()})
    cells.update({("people", c): n for c, n in counts.people_by_channel.items()})
    cells.update({("category", d, c): n for (d, c), n in counts.categories.items()})
    for d in DIMENSIONS:
        answered = counts.categories.get((d, ANSWERED), 0) + counts.categories.get((d, DECLINED), 0)
        cells[("not_answered", d)] = counts.participants - answered
    return cells


def cell_keys(
    members: Iterable[tuple[int, ParticipantState]], plan: Plan | None, tz: tzinfo = DEFAULT_TZ
) -> dict[Cell, int]:
    """Each cell's key: the sum (mod 2**64) of its members' keys, each weighted by what the member
    adds to the cell. Built from each member's own counts, so it agrees with the count builder."""
    keys: Counter[Cell] = Counter()
    for key, state in members:
        if state.withdrawn:
            continue
        for cell, n in cells_of(counts_of([state], plan, sequence=0)).items():
            keys[cell] += key * n
        engagements, firsts = daily_of([state], tz)
        for (day, channel), n in engagements.items():
            keys[("day", day, channel)] += key * n
        for (day, channel), n in firsts.items():
            keys[("first", day, channel)] += key * n
    return {cell: total % _MOD for cell, total in keys.items()}


def round_to_base(value: int, key: int, k: int) -> int:
    """``value`` rounded to a multiple of ``k``: up with chance (value mod k) / k, decided by ``key``."""
    if value < 0:
        raise ValueError("counts cannot be negative")
    low, rest = divmod(value, k)
    return k * (low + (key * k < rest * _MOD))


def show(value: int, k: int) -> int | str:
    """A rounded count as coordinators see it: ``"<k"`` for 0."""
    return value if value else f"<{k}"


def bounds(shown: int | str, k: int, rounded: bool) -> tuple[int, int]:
    """What a shown count allows the true count to be."""
    if not rounded:
        if isinstance(shown, str):
            raise ValueError(f"{shown!r} is not an exact count")
        return shown, shown
    if isinstance(shown, str):
        return 0, k - 1
    return max(0, shown - k + 1), shown + k - 1
