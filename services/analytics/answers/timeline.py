"""Participation over time: engagements, and participants first reached, per day or week and channel.

Days are local days (``ENGAGE_TIMEZONE``); a week starts on Monday and is named by that
Monday's date. For coordinators every cell and every period's total is rounded to base k
(``answers.suppression``): a period's key is the sum of its days' keys, so a week and the
days in it are rounded as the people in them, whichever way they are added up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Literal

from services.analytics.answers.models import Period as PeriodAnswer
from services.analytics.answers.suppression import Cell, round_to_base, show

Period = Literal["day", "week"]
Daily = Mapping[tuple[date, str], int]  # (local day, channel) -> count


def period_of(day: date, by: Period) -> date:
    return day - timedelta(days=day.weekday()) if by == "week" else day


def _by_period(
    daily: Daily, by: Period, keys: Mapping[Cell, int] | None, kind: str
) -> tuple[Counter[tuple[date, str]], Counter[tuple[date, str]]]:
    values: Counter[tuple[date, str]] = Counter()
    sums: Counter[tuple[date, str]] = Counter()
    for (day, channel), n in daily.items():
        values[(period_of(day, by), channel)] += n
        if keys is not None:
            sums[(period_of(day, by), channel)] += keys.get((kind, day.isoformat(), channel), 0)
    return values, sums


def timeline(
    engagements: Daily,
    reached: Daily,
    by: Period,
    k: int,
    keys: Mapping[Cell, int] | None = None,
    grid: tuple[Iterable[date], Iterable[str]] | None = None,
) -> list[PeriodAnswer]:
    """One entry per period with any activity, oldest first; rounded when ``keys`` are given.

    ``grid`` (coordinators) gives the days and channels every answer lists, whether anyone in
    it took part then or not: a segment's period or channel appearing would say "at least one"."""
    e_values, e_keys = _by_period(engagements, by, keys, "day")
    r_values, r_keys = _by_period(reached, by, keys, "first")

    def shown(value: int, key: int) -> int | str:
        return value if keys is None else show(round_to_base(value, key % (1 << 64), k), k)

    out: list[PeriodAnswer] = []
    periods = {p for p, _ in e_values} | {p for p, _ in r_values}
    if grid is not None:
        periods |= {period_of(day, by) for day in grid[0]}
        every_channel = sorted({*grid[1]})
    for period in sorted(periods):
        channels = (
            every_channel
            if grid is not None
            else sorted({c for p, c in e_values if p == period} | {c for p, c in r_values if p == period})
        )
        out.append(
            PeriodAnswer(
                period=period.isoformat(),
                engagements={c: shown(e_values[(period, c)], e_keys[(period, c)]) for c in channels},
                participants_reached={c: shown(r_values[(period, c)], r_keys[(period, c)]) for c in channels},
                total_engagements=shown(
                    sum(e_values[(period, c)] for c in channels), sum(e_keys[(period, c)] for c in channels)
                ),
                total_participants_reached=shown(
                    sum(r_values[(period, c)] for c in channels), sum(r_keys[(period, c)] for c in channels)
                ),
            )
        )
    return out
