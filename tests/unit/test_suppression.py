"""Small-cell suppression: hand examples, then properties over random rows and tables.

The table properties are checked against an independent judge: exact linear algebra over
the totals shown, which says whether any hidden count can be worked out exactly.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.answers.suppression import TOTAL, show, suppress_row, suppress_table

K = 5


# --- one row ---------------------------------------------------------------------------


def test_one_small_cell_takes_the_smallest_other_non_zero_cell_with_it() -> None:
    assert suppress_row({"a": 8, "b": 2, "c": 12}, 22, K) == {"b", "a"}


def test_zeros_are_never_the_complement() -> None:
    assert suppress_row({"a": 0, "b": 3, "c": 9, "d": 7}, 19, K) == {"b", "d"}


def test_ties_take_the_first_in_order() -> None:
    assert suppress_row({"x": 9, "y": 1, "z": 9}, 19, K) == {"y", "x"}


def test_two_small_cells_protect_each_other() -> None:
    assert suppress_row({"a": 1, "b": 4, "c": 30}, 35, K) == {"a", "b"}


def test_no_small_cell_hides_nothing() -> None:
    assert suppress_row({"a": 5, "b": 0, "c": 40}, 45, K) == set()


def test_zeros_are_shown_as_zero() -> None:
    assert suppress_row({"a": 0, "b": 0}, 0, K) == set()
    assert show(0, False, K) == 0


def test_without_a_shown_total_only_primary_applies() -> None:
    assert suppress_row({"a": 3, "b": 20, "c": 0}, None, K) == {"a"}


def test_a_small_total_hides_itself_and_every_non_zero_cell() -> None:
    hidden = suppress_row({"a": 3, "b": 0, "c": 1}, 4, K)
    assert hidden == {"a", "c", TOTAL}


def test_a_lone_small_cell_with_only_zeros_beside_it_hides_the_total() -> None:
    hidden = suppress_row({"a": 0, "b": 2, "c": 0}, 2, K)
    assert hidden == {"b", TOTAL}


def test_a_large_total_is_never_hidden_for_a_row() -> None:
    assert TOTAL not in suppress_row({"a": 1, "b": 60}, 61, K)


def test_an_unshown_remainder_counts_as_a_cell() -> None:
    # 30 answered, cells show 24: the remainder 6 is unknown once "b" is hidden, so it suffices
    assert suppress_row({"a": 20, "b": 4}, 30, K) == {"b"}
    # a small remainder could be worked out from the total: one shown cell must go with it
    assert suppress_row({"a": 20, "b": 9}, 31, K) == {"b"}


def test_a_total_below_its_cells_is_refused() -> None:
    with pytest.raises(ValueError, match="below the sum"):
        suppress_row({"a": 3, "b": 9}, 10, K)


def test_show_uses_k() -> None:
    assert show(3, True, 10) == "<10" and show(3, False, 10) == 3 and show(12, True, K) == "suppressed"


# --- tables ----------------------------------------------------------------------------


def test_a_lone_small_cell_takes_a_cell_in_its_row_and_column_and_a_fourth_to_close() -> None:
    table = {("w1", "phone"): 2, ("w1", "web"): 10, ("w2", "phone"): 20, ("w2", "web"): 30}
    assert suppress_table(table, K) == set(table)


def test_a_complement_alone_in_its_row_hides_that_row_total() -> None:
    table = {
        ("w1", "phone"): 2,
        ("w1", "web"): 9,
        ("w2", "phone"): 0,
        ("w2", "web"): 40,
        ("w3", "phone"): 7,
        ("w3", "web"): 0,
    }
    hidden = suppress_table(table, K)
    assert ("w1", "phone") in hidden and ("w3", "phone") in hidden  # 7 is the column's complement
    assert ("w3", TOTAL) in hidden  # else the w3 total (7) gives it back
    assert_unrecoverable(table, hidden, K, rows=True, cols=True)


def test_hidden_blocks_joined_by_one_cell_do_not_give_that_cell_back() -> None:
    # Every row and column has >= 2 small cells, yet rows 1-2 minus columns 1-2 (hidden parts)
    # equal cell (2, 3) exactly. The line rule alone would leave it recoverable.
    small = {(1, 1), (1, 2), (2, 1), (2, 2), (3, 3), (3, 4), (4, 3), (4, 4), (2, 3)}
    table = {(r, c): 1 if (r, c) in small else 50 for r in range(1, 5) for c in range(1, 5)}
    hidden = suppress_table(table, K)
    assert small <= hidden
    assert_unrecoverable(table, hidden, K, rows=True, cols=True)


def test_without_totals_a_table_gets_primary_only() -> None:
    table = {("a", "x"): 1, ("a", "y"): 30, ("b", "x"): 40, ("b", "y"): 50}
    assert suppress_table(table, K, row_totals=False, col_totals=False) == {("a", "x")}


def test_an_empty_table_hides_nothing() -> None:
    assert suppress_table({}, K) == set()


# --- properties ------------------------------------------------------------------------


@st.composite
def rows(draw: st.DrawFn) -> tuple[dict[int, int], int]:
    counts = draw(st.lists(st.integers(0, 60), min_size=1, max_size=12))
    return dict(enumerate(counts)), draw(st.integers(2, 10))


@settings(max_examples=300, deadline=None)
@given(rows())
def test_a_row_never_leaves_a_hidden_count_to_be_worked_out(row: tuple[dict[int, int], int]) -> None:
    cells, k = row
    total = sum(cells.values())
    hidden = suppress_row(cells, total, k)
    assert {c for c, n in cells.items() if 0 < n < k} <= hidden  # (1) primary
    if TOTAL not in hidden:  # (2) total shown:
        assert len(hidden) != 1  # >= 2 unknowns or none
    else:
        assert 0 < total < k and hidden == {c for c, n in cells.items() if n} | {TOTAL}
    assert not {c for c in hidden if c is not TOTAL and cells[c] == 0}  # (3) zeros stay shown
    assert suppress_row(cells, None, k) == {c for c, n in cells.items() if 0 < n < k}


@st.composite
def tables(draw: st.DrawFn) -> tuple[dict[tuple[int, int], int], int, bool, bool]:
    n_rows, n_cols = draw(st.integers(2, 6)), draw(st.integers(2, 5))
    k = draw(st.integers(2, 10))
    count = st.one_of(st.integers(1, k - 1), st.just(0), st.integers(k, 60))  # a third each
    cells = {(r, c): draw(count) for r in range(n_rows) for c in range(n_cols)}
    return cells, k, draw(st.booleans()), draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(tables())
def test_a_table_never_leaves_a_hidden_count_to_be_worked_out(
    table: tuple[dict[tuple[int, int], int], int, bool, bool],
) -> None:
    cells, k, rows_shown, cols_shown = table
    hidden = suppress_table(cells, k, row_totals=rows_shown, col_totals=cols_shown)
    entries = _with_totals(cells, rows_shown, cols_shown)
    assert {e for e, n in entries.items() if 0 < n < k} <= hidden  # primary, totals too
    assert all(entries[e] > 0 for e in hidden)  # zeros stay shown
    for line in _lines(entries, rows_shown, cols_shown):  # the line rule
        assert sum(e in hidden for e in line) != 1
    assert_unrecoverable(cells, hidden, k, rows=rows_shown, cols=cols_shown)


# --- the independent judge -------------------------------------------------------------

Entry = tuple[Hashable, Hashable]


def _with_totals(cells: Mapping[Entry, int], rows: bool, cols: bool) -> dict[Entry, int]:
    out = dict(cells)
    rs, cs = sorted({r for r, _ in cells}), sorted({c for _, c in cells})
    if rows:
        out.update({(r, TOTAL): sum(cells[r, c] for c in cs) for r in rs})
    if cols:
        out.update({(TOTAL, c): sum(cells[r, c] for r in rs) for c in cs})
    if rows or cols:
        out[TOTAL, TOTAL] = sum(cells.values())
    return out


def _lines(entries: Mapping[Entry, int], rows: bool, cols: bool) -> list[list[Entry]]:
    """Each shown-total line, as its entries (cells and total); the grand total is shown
    whenever any totals are, so the row totals and the column totals are lines too."""
    out = []
    for axis, shown, margin_shown in ((0, rows, cols), (1, cols, rows)):
        for index in {e[axis] for e in entries}:
            if margin_shown if index is TOTAL else shown:
                out.append([e for e in entries if e[axis] == index])
    return out


def assert_unrecoverable(cells: Mapping[Entry, int], hidden: set[Entry], k: int, *, rows: bool, cols: bool) -> None:
    """No hidden entry is pinned down by the shown totals: its unit vector is not in the row
    space of (each line's sum of cells minus its total) restricted to the hidden entries."""
    entries = _with_totals(cells, rows, cols)
    unknowns = [e for e in entries if e in hidden]
    matrix = [
        [Fraction(0 if e not in line else -1 if e == line[-1] else 1) for e in unknowns]
        for line in _lines(entries, rows, cols)
    ]
    for row in _rref(matrix):
        assert sum(x != 0 for x in row) != 1, f"{unknowns[[x != 0 for x in row].index(True)]} recoverable"


def _rref(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    rows, pivot_row = [r[:] for r in matrix], 0
    for col in range(len(rows[0]) if rows else 0):
        pivot = next((i for i in range(pivot_row, len(rows)) if rows[i][col] != 0), None)
        if pivot is None:
            continue
        rows[pivot_row], rows[pivot] = rows[pivot], rows[pivot_row]
        rows[pivot_row] = [x / rows[pivot_row][col] for x in rows[pivot_row]]
        for i in range(len(rows)):
            if i != pivot_row and rows[i][col] != 0:
                factor = rows[i][col]
                rows[i] = [a - factor * b for a, b in zip(rows[i], rows[pivot_row], strict=True)]
        pivot_row += 1
    return rows
