"""The issue's targets as a table: each figure beside its same-run baseline, the ratio, the target, met."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bench.steps import Figures

Compare = Callable[[float], bool]


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None  # None: not measured


def _fmt(value: float | None, unit: str, scale: float = 1.0, digits: int = 0) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "never"
    return f"{value * scale:,.{digits}f} {unit}"


def _ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0 or math.isinf(baseline):
        return None
    return value / baseline


def _row(
    figure: str, value: str, baseline: str, ratio: float | None, target: str, check: Compare
) -> Row:  # one place decides met
    return Row(figure, value, baseline, ratio, target, None if ratio is None else check(ratio))


def rows(small: Figures, big: Figures, ingest: Mapping[str, float] | None) -> list[Row]:
    s, b = small.get, big.get
    nb, ns = f"{big.n:,}", f"{small.n:,}"
    out = [
        _row(
            f"live catch-up, {nb}-event log",
            _fmt(b("catch_up"), "events/s"),
            f"{_fmt(s('catch_up'), 'events/s')} ({ns})",
            _ratio(b("catch_up"), s("catch_up")),
            "≥ 0.8×",
            lambda r: r >= 0.8,
        ),
        _row(
            f"publish → commit p99 at 1,000/s, {nb}",
            _fmt(b("live_p99"), "ms", 1000),
            f"{_fmt(b('raw_p99'), 'ms', 1000, 1)} (raw → consumer)",
            _ratio(b("live_p99"), b("raw_p99")),
            "≤ 5×",
            lambda r: r <= 5,
        ),
        _row(
            f"GET /coverage, {_fmt(b('participants'), 'participants')}",
            _fmt(b("coverage"), "ms", 1000, 1),
            f"{_fmt(s('coverage'), 'ms', 1000, 1)} ({_fmt(s('participants'), 'participants')})",
            _ratio(b("coverage"), s("coverage")),
            "≤ 1.5×",
            lambda r: r <= 1.5,
        ),
    ]
    as_of, at_least = b("as_of"), b("as_of_at_least")
    as_of_text = _fmt(as_of, "s", digits=3) if as_of is not None else f"> {_fmt(at_least, 's')}"
    as_of_ratio = _ratio(as_of if as_of is not None else at_least, b("replay"))
    out += [
        Row(
            f"as-of at {nb} events",
            as_of_text,
            f"{_fmt(b('replay'), 's', digits=1)} (full replay)",
            as_of_ratio,
            "≤ 0.05×",
            None if as_of_ratio is None else as_of is not None and as_of_ratio <= 0.05,
        ),
        _mb_row(f"analytics RSS during as-of, {nb}", b("as_of_rss_mb")),
        _row(
            f"publish → commit p99 with 4 as-of, {nb}",
            _fmt(b("live_p99_as_of"), "ms", 1000),
            f"{_fmt(b('live_p99_without_as_of'), 'ms', 1000)} (without as-of)",
            _ratio(b("live_p99_as_of"), b("live_p99_without_as_of")),
            "≤ 1.5× (unchanged)",
            lambda r: r <= 1.5,
        ),
        Row(
            f"publish → commit p99, rounds without as-of, {nb}: the noise",
            _fmt(b("live_p99_control"), "ms", 1000),
            f"{_fmt(b('live_p99_without_as_of'), 'ms', 1000)} (the other rounds without)",
            _ratio(b("live_p99_control"), b("live_p99_without_as_of")),
            "none: nothing differs",
            None,
        ),
    ]
    got = ingest or {}
    out.append(
        _row(
            "HTTP ingest, 20 clients",
            _fmt(got.get("survey_rate"), "writes/s"),
            f"{_fmt(got.get('raw_rate'), 'events/s')} (raw windowed publish)",
            got.get("ratio", _ratio(got.get("survey_rate"), got.get("raw_rate"))),
            "≥ 0.25×",
            lambda r: r >= 0.25,
        )
    )
    out += [
        _row(
            f"engage rebuild, {nb} events",
            _fmt(b("rebuild_rate"), "events/s"),
            f"{_fmt(b('raw_read'), 'events/s')} (raw ordered reader)",
            _ratio(b("rebuild_rate"), b("raw_read")),
            "≥ 0.30×",
            lambda r: r >= 0.30,
        ),
        Row(
            f"read + validate alone, {nb} events",
            _fmt(b("read_validate"), "events/s"),
            f"{_fmt(b('raw_read'), 'events/s')} (raw ordered reader)",
            _ratio(b("read_validate"), b("raw_read")),
            "none: a rebuild's ceiling",
            None,
        ),
        _mb_row(f"engage rebuild peak RSS, {nb}", b("rebuild_peak_mb")),
    ]
    return out


def _mb_row(figure: str, mb: float | None) -> Row:
    return Row(
        figure,
        _fmt(mb, "MB"),
        "limit 300 MB",
        None if mb is None else mb / 300,
        "< 300 MB",
        None if mb is None else mb < 300,
    )


def _ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.4f}×"


def render(table: list[Row]) -> str:
    head = ("figure", "value", "baseline (same run)", "ratio", "target", "met")
    lines = [
        (
            r.figure,
            r.value,
            r.baseline,
            _ratio_text(r.ratio),
            r.target,
            "n/a" if r.met is None else "PASS" if r.met else "miss",
        )
        for r in table
    ]
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
    out = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [head, *lines]]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


DETAIL = {
    "raw_read": ("raw ordered reader", "events/s", 1.0, 0),
    "read_validate": ("the rebuild's reader and validation alone", "events/s", 1.0, 0),
    "rebuild_rate": ("engage rebuild", "events/s", 1.0, 0),
    "rebuild_peak_mb": ("engage rebuild peak RSS", "MB", 1.0, 0),
    "catch_up": ("live catch-up", "events/s", 1.0, 0),
    "raw_p99": ("raw publish → consumer p99", "ms", 1000.0, 1),
    "live_p99": ("publish → commit p99", "ms", 1000.0, 1),
    "participants": ("participants", "", 1.0, 0),
    "coverage": ("GET /coverage median (analyst)", "ms", 1000.0, 1),
    "coverage_coordinator": ("GET /coverage median (coordinator)", "ms", 1000.0, 1),
    "as_of": ("GET /coverage?as_of=", "s", 1.0, 2),
    "as_of_rss_mb": ("analytics RSS during as-of (with its workers)", "MB", 1.0, 0),
    "live_p99_without_as_of": ("publish → commit p99, rounds without as-of", "ms", 1000.0, 1),
    "live_p99_as_of": ("publish → commit p99, 4 as-of running", "ms", 1000.0, 1),
    "live_p99_control": ("publish → commit p99, rounds without as-of again", "ms", 1000.0, 1),
    "replay": ("full replay into memory", "s", 1.0, 2),
}


def details(sizes: list[Figures]) -> str:
    """Every figure measured, per log size."""
    head = ["", *(f"{f.n:,} events" for f in sizes)]
    lines = [head]
    for key, (label, unit, scale, digits) in DETAIL.items():
        lines.append([label, *(_fmt(f.get(key), unit, scale, digits).strip() for f in sizes)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )
