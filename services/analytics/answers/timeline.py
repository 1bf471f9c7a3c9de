"""Participation over time: engagements, and participants first reached, per day or week and channel.

Days are local days (``ENGAGE_TIMEZONE``); a week starts on Monday and is named by that
Monday's date. For coordinators each table (periods x channels, with period and channel
totals shown: each channel's total is public in /coverage) is suppressed as a whole,
primary and complementary, totals included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Literal

from services.analytics.answers.models import Period as PeriodAnswer
from services.analytics.answers.suppression import TOTAL, show, suppress_table

Period = Literal["day", "week"]


def period_of(day: date, by: Period) -> date:
    return day - timedelta(days=day.weekday()) if by == "week" else day


def timeline(rows: Iterable[tuple[date, str, int, int]], by: Period, k: int, suppressed: bool) -> list[PeriodAnswer]:
    """One entry per period with any activity, oldest first."""
    engagements: Counter[tuple[date, str]] = Counter()
    reached: Counter[tuple[date, str]] = Counter()
    for day, channel, n_engagements, n_participants in rows:
        engagements[(period_of(day, by), channel)] += n_engagements
        reached[(period_of(day, by), channel)] += n_participants
    hidden_e = suppress_table(engagements, k) if suppressed else set()
    hidden_p = suppress_table(reached, k) if suppressed else set()
    out: list[PeriodAnswer] = []
    for period in sorted({p for p, _ in engagements} | {p for p, _ in reached}):
        channels = sorted({c for p, c in engagements if p == period} | {c for p, c in reached if p == period})
        total_e = sum(engagements[(period, c)] for c in channels)
        total_p = sum(reached[(period, c)] for c in channels)
        out.append(
            PeriodAnswer(
                period=period.isoformat(),
                engagements={c: show(engagements[(period, c)], (period, c) in hidden_e, k) for c in channels},
                participants_reached={c: show(reached[(period, c)], (period, c) in hidden_p, k) for c in channels},
                total_engagements=show(total_e, (period, TOTAL) in hidden_e, k),
                total_participants_reached=show(total_p, (period, TOTAL) in hidden_p, k),
            )
        )
    return out
