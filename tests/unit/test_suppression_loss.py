"""The information-loss benchmark's own parts: the LP check and the brute-force optimum."""

from __future__ import annotations

from bench.suppression_loss import Table, optimum, pinned, with_totals

SMALL_CORNER = with_totals({(0, 0): 2, (0, 1): 20, (1, 0): 30, (1, 1): 40}, 2, 2)


def exact_except(t: Table, hidden: set[tuple[int, int]]) -> dict[tuple[int, int], tuple[float, float | None]]:
    return {e: ((0.0, None) if e in hidden else (float(v), float(v))) for e, v in t.values.items()}


def test_one_hidden_cell_is_pinned_by_its_totals() -> None:
    assert pinned(SMALL_CORNER, exact_except(SMALL_CORNER, {(0, 0)}), [(0, 0)]) == [(0, 0)]


def test_a_rectangle_of_four_hidden_cells_protects_it() -> None:
    rectangle = {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert pinned(SMALL_CORNER, exact_except(SMALL_CORNER, rectangle), [(0, 0)]) == []


def test_the_optimum_hides_the_fewest_entries_then_the_fewest_people() -> None:
    """Four entries are needed (three always leave a line with one hidden); of the sets of four the
    cheapest in people hides the corner, its row and column neighbours and the cell between them."""
    hidden, _ = optimum(SMALL_CORNER, 5)
    assert len(hidden) == 4 and (0, 0) in hidden
    assert pinned(SMALL_CORNER, exact_except(SMALL_CORNER, hidden), [(0, 0)]) == []


def test_rounded_boxes_pin_nothing_in_a_plain_table() -> None:
    """Rounded to base 5 (2 -> 0, 20, 30, 40, totals 22 -> 20, 32 -> 30, 60, 42 -> 40, 70, 92 -> 90)."""
    shown = {(0, 0): 0, (0, 1): 20, (1, 0): 30, (1, 1): 40, (0, -1): 20, (1, -1): 70, (-1, 0): 30, (-1, 1): 60}
    shown[(-1, -1)] = 90
    box = {e: (float(max(0, p - 4)), float(p + 4)) for e, p in shown.items()}
    assert pinned(SMALL_CORNER, box, [(0, 0)]) == []
