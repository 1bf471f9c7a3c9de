"""`engage coverage` in the terminal: what each line of its output says, exact and rounded."""

from __future__ import annotations

import io

from rich.console import Console

from services.analytics.answers.coverage import coverage
from services.analytics.answers.models import CoverageAnswer
from services.analytics.answers.segments import in_segment, parse_segment
from services.analytics.projection.counts import counts_of
from services.cli.coverage import render
from shared.status_events import Status
from tests.unit.test_report import EXACT, FRESH, PLAN, ROUNDED, answers, population_2018, state


def shown(body: CoverageAnswer, show_all: bool = False) -> str:
    out = io.StringIO()
    render(body, Console(file=out, width=250, color_system=None), show_all)
    return out.getvalue()


def line_of(text: str, *words: str) -> str:
    """The one table line holding every word."""
    found = [line for line in text.splitlines() if all(w in line for w in words)]
    assert len(found) == 1, (words, found)
    return found[0]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("│") if c.strip()]


def test_exact_numbers_show_both_shares_and_people_beside_engagements_per_channel() -> None:
    everyone, _, _ = answers(EXACT)
    text = shown(everyone, show_all=True)
    assert "participants 294 (gave a profile 288) · engagements 364 · as of sequence 412 (up to date)" in text
    assert "by channel: advisory 35 people / 105 engagements · survey 259 people / 259 engagements" in text
    assert "rounded" not in text
    west = cells(line_of(text, "Region", "Twin Cities West Metro"))
    # count, share (of the 283 who answered), share of everyone who gave a profile (288)
    assert west[3:6] == ["90", "31.8%", "31.3%"]
    lived = cells(line_of(text, "People with lived experience", "40.0%"))
    assert lived[3:5] == ["111", "39.5%"] and lived[5] == "38.5%"


def test_a_multi_term_segment_is_named_by_its_labels_and_its_key() -> None:
    segment = parse_segment(PLAN, "lived_experience:yes,channel:advisory")
    assert segment is not None
    chosen = [state(p, c) for p, c in population_2018() if in_segment(state(p, c), segment, PLAN)]
    body = coverage(counts_of(chosen, PLAN, sequence=FRESH.sequence), "shfa-2018", PLAN, EXACT, FRESH, segment)
    text = shown(body)
    assert body.segment is not None and " and People with lived experience" in body.segment.label
    assert text.splitlines()[1] == f"segment: {body.segment.label} (channel:advisory,lived_experience:yes)"
    assert "participants 22 (gave a profile 22)" in text


def test_rounded_numbers_are_marked_and_attention_says_it_may_be_below_target() -> None:
    everyone, _, _ = answers(ROUNDED)
    doubtful = [c for c in everyone.under_reached if c.status is Status.ATTENTION]
    assert doubtful and all(c.needed_is_lower_bound for c in doubtful if c.needed is not None)
    text = shown(everyone)
    assert "numbers rounded to multiples of 5 (coordinator view), release at sequence 412" in text
    assert "<5 means fewer than 5" in text
    for c in doubtful:
        row = cells(line_of(text, c.dimension_label, f"│ {c.label} "))
        assert row[0] == "! may be below target"
        assert row[-1] == ("—" if c.needed is None else f"at least {c.needed}")
    assert "! may be below target: the rounded numbers allow values on both sides of the target" in text
    marks = [cells(line)[0] for line in text.splitlines() if line.startswith("│")]
    order = ["▼ under-reached", "! may be below target", "● watch", "✓ on track"]
    assert [order.index(m) for m in marks] == sorted(order.index(m) for m in marks)  # under-reached, then attention
    assert "counts below" not in text
