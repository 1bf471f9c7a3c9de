"""Representation against the plan's targets: shares, Wilson intervals, ratios, status, needed.

Pure functions. For a category with a share target t, with c of the n participants who
answered the question in it:

- share = c / n; representation ratio = share / t;
- the Wilson 95% interval of the share;
- status: ``on-track`` when the ratio reaches the threshold τ (default 0.8, the
  four-fifths rule); below it, ``under-reached`` when the shortfall is not noise (the
  interval's upper bound is below t), otherwise ``watch``; ``no-target`` without a target;
- needed (under-reached only): the fewest more participants from the category, each
  also answering the question, that lift the ratio to τ: the least x with
  (c + x) / (n + x) >= τ·t.

A minimum-count target m has no sampling noise: ratio = c / m, and below τ the category
is under-reached, needing ceil(τ·m) - c more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from shared.status_events import Status

Z95 = 1.959963984540054

ON_TRACK, WATCH, UNDER_REACHED, NO_TARGET = Status.ON_TRACK, Status.WATCH, Status.UNDER_REACHED, Status.NO_TARGET


def percent(count: int, of: int) -> float | None:
    """``count`` as a percentage of ``of``, one decimal, half up (90 of 288 is 31.3)."""
    if of <= 0:
        return None
    return float((Decimal(count) * 100 / Decimal(of)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def round_half_up(value: float, places: int) -> float:
    return float(Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def wilson(count: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the proportion count / n (0..1 when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = count / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _exact(x: float) -> Fraction:
    return Fraction(repr(x))  # 0.8 as four fifths, not its binary neighbour


def needed_for_share(count: int, n: int, target: float, threshold: float) -> int | None:
    """Fewest more participants in the category that bring (c+x)/(n+x) to threshold·target."""
    goal = _exact(threshold) * _exact(target)
    if n > 0 and Fraction(count, n) >= goal:
        return 0
    if goal >= 1:
        return None  # only reachable if everyone who answered is in the category
    return max(0, math.ceil((goal * n - count) / (1 - goal)))


def needed_for_count(count: int, minimum: int, threshold: float) -> int:
    return max(0, math.ceil(_exact(threshold) * minimum) - count)


@dataclass(frozen=True)
class Judgement:
    ratio: float | None
    status: Status
    needed: int | None
    interval: tuple[float, float] | None


def judge(
    count: int, n: int, *, share: float | None = None, min_count: int | None = None, threshold: float = 0.8
) -> Judgement:
    """Ratio, status and needed for one category (``n``: participants who answered)."""
    interval = wilson(count, n) if n > 0 else None
    if share is not None:
        if n == 0:
            return Judgement(None, WATCH, None, None)  # nobody has answered yet: nothing to judge
        ratio = Fraction(count, n) / _exact(share)
        if ratio >= _exact(threshold):
            return Judgement(float(ratio), ON_TRACK, None, interval)
        if interval is not None and interval[1] < share:
            return Judgement(float(ratio), UNDER_REACHED, needed_for_share(count, n, share, threshold), interval)
        return Judgement(float(ratio), WATCH, None, interval)
    if min_count is not None:
        ratio = Fraction(count, min_count)
        if ratio >= _exact(threshold):
            return Judgement(float(ratio), ON_TRACK, None, interval)
        return Judgement(float(ratio), UNDER_REACHED, needed_for_count(count, min_count, threshold), interval)
    return Judgement(None, NO_TARGET, None, interval)
