"""Small-cell suppression for coordinator-facing counts. Pure: counts in, hidden keys out.

Primary: a count from 1 to k-1 is hidden (shown as "<k"); 0 is shown (it singles out no
one). Complementary: in each line whose total is shown, the entries (cells and the total)
must have 0 or >= 2 hidden, else total minus shown cells gives the hidden one back; a line
with one hides its smallest shown non-zero cell (ties: the first), failing that its total.
Hidden totals are reported with the ``TOTAL`` sentinel in the returned set: ``TOTAL`` for
a row, ``(row, TOTAL)`` / ``(TOTAL, col)`` / ``(TOTAL, TOTAL)`` in a table.

Tables get one more check, as the line rule is not enough there: two blocks of hidden cells
joined by one hidden cell give that cell back (one side's row sums minus its column sums).
With lines as vertices and hidden entries as edges, an entry is recoverable exactly when it
is a bridge; a bridge is broken by hiding the smallest shown entry that closes a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Final

_Check = Callable[[int, Hashable], bool]  # (axis, index) -> does that line show its total?


class _Sentinel:
    """A key no caller's can equal (identity comparison), with a readable repr."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


TOTAL: Final = _Sentinel("TOTAL")
"""Stands for a total in the sets returned by ``suppress_row`` and ``suppress_table``."""
_REST: Final = _Sentinel("REST")  # a row total above its cells' sum implies an unshown remainder
_FREE: Final = _Sentinel("FREE")  # all lines without a shown total, as one graph vertex


SUPPRESSED = "suppressed"


def show(count: int, hidden: bool, k: int) -> int | str:
    """The displayed value: the count; "<k" for a small count; "suppressed" for a cell of k or
    more hidden only to protect a small one (calling it "<k" would mislead)."""
    if not hidden:
        return count
    return f"<{k}" if count < k else SUPPRESSED


def _fix_line(line: Sequence[Any], value: Mapping[Any, int], hidden: set[Any]) -> bool:
    """Hide one more entry if exactly one of the line's is hidden; the total is last in line."""
    if sum(e in hidden for e in line) != 1:
        return False
    shown = [i for i, e in enumerate(line) if e not in hidden and value[e] > 0]
    # Never empty when the total is the sum of the cells: a lone hidden cell leaves the total
    # (>= it) shown, a lone hidden total leaves its non-zero cells shown.
    pick = min(shown, key=lambda i: (i == len(line) - 1, value[line[i]], i))
    hidden.add(line[pick])
    return True


def suppress_row(cells: Mapping[Any, int], total: int | None, k: int) -> set[Any]:
    """Cells to hide in one row whose total (sum of cells, or None if the row has no shown total,
    e.g. a multi-select dimension whose cells overlap) is shown. Returns the hidden cell keys.
    Primary: 1..k-1. Complementary: if exactly one is hidden and a total is shown, hide the
    smallest other non-zero cell.

    The result holds ``TOTAL`` when the total must be hidden too (exactly when it is 1..k-1;
    every non-zero cell is then hidden as well). A total above the cells' sum is allowed (an
    unshown remainder, protected like a cell); one below it raises ValueError, since no rule
    can protect numbers that do not add up.
    """
    value: dict[Any, int] = dict(cells)
    if any(n < 0 for n in value.values()):
        raise ValueError("counts cannot be negative")
    hidden = {c for c, n in value.items() if 0 < n < k}
    if total is None:
        return hidden
    rest = total - sum(value.values())
    if rest < 0:
        raise ValueError(f"row total {total} is below the sum of its cells {total - rest}")
    line = [*value, *([_REST] if rest else []), TOTAL]
    value.update({_REST: rest, TOTAL: total})
    hidden |= {e for e in (_REST, TOTAL) if 0 < value[e] < k}
    _fix_line(line, value, hidden)  # one line: hiding a second entry cannot create a lone one
    return hidden - {_REST}


def suppress_table(
    cells: Mapping[tuple[Any, Any], int], k: int, *, row_totals: bool = True, col_totals: bool = True
) -> set[tuple[Any, Any]]:
    """The same for a 2-D table (e.g. weeks x channels) whose row and/or column totals are shown;
    iterates until every shown-total line has 0 or >= 2 hidden cells.

    Missing (row, col) pairs count as 0. Whenever any totals are shown the grand total is
    assumed shown as well (it usually is, somewhere): the row totals then form a line of their
    own, as do the column totals. Hidden totals come back as ``(row, TOTAL)``, ``(TOTAL, col)``
    and ``(TOTAL, TOTAL)``; a total can be hidden even when it is >= k, so callers must ask.
    Finally no hidden entry may be recoverable by combining several lines (see module doc).
    """
    rows, cols = list(dict.fromkeys(r for r, _ in cells)), list(dict.fromkeys(c for _, c in cells))
    value: dict[tuple[Any, Any], int] = {(r, c): cells.get((r, c), 0) for r in rows for c in cols}
    if any(n < 0 for n in value.values()):
        raise ValueError("counts cannot be negative")
    if row_totals:
        value.update({(r, TOTAL): sum(value[r, c] for c in cols) for r in rows})
    if col_totals:
        value.update({(TOTAL, c): sum(value[r, c] for r in rows) for c in cols})
    if rows and (row_totals or col_totals):
        value[TOTAL, TOTAL] = sum(value[r, c] for r in rows for c in cols)

    def constrained(axis: int, index: Hashable) -> bool:  # does this line show its total?
        return (row_totals, col_totals)[axis] if index is not TOTAL else (col_totals, row_totals)[axis]

    # Rows, then columns, then the margins; each line's own total comes last (dict order).
    lines = [
        [e for e in value if e[axis] == index]
        for axis, indices in ((0, rows), (1, cols))
        for index in [*indices, TOTAL]
        if constrained(axis, index)
    ]
    hidden = {e for e, n in value.items() if 0 < n < k}
    while True:
        while any([_fix_line(line, value, hidden) for line in lines]):  # noqa: C419 - a list: fix every line
            pass
        bridge = _bridge(value, hidden, constrained)
        if bridge is None:
            return hidden
        side_a, side_b = bridge
        closing = [
            e
            for e in value
            if e not in hidden
            and value[e] > 0
            and set(_ends(e, constrained)) & side_a
            and set(_ends(e, constrained)) & side_b
        ]
        if not closing:  # not seen in testing; hiding every non-zero entry is the safe way out
            return {e for e, n in value.items() if n > 0}
        hidden.add(min(closing, key=lambda e: (TOTAL in e, value[e])))


def _ends(entry: tuple[Hashable, Hashable], constrained: _Check) -> tuple[Hashable, Hashable]:
    """The entry's two line-vertices; lines without a shown total all merge into _FREE."""
    row, col = entry
    return (("r", row) if constrained(0, row) else _FREE, ("c", col) if constrained(1, col) else _FREE)


def _bridge(
    value: Mapping[tuple[Hashable, Hashable], int], hidden: set[tuple[Hashable, Hashable]], constrained: _Check
) -> tuple[set[Hashable], set[Hashable]] | None:
    """The two sides of the first hidden entry whose value the shown totals pin down, if any."""
    edges = [(e, *_ends(e, constrained)) for e in value if e in hidden]
    near: dict[Hashable, list[tuple[Hashable, Hashable]]] = {}  # vertex -> (entry, other end)
    for e, u, v in edges:
        near.setdefault(u, []).append((e, v))
        near.setdefault(v, []).append((e, u))

    def reach(start: Hashable, without: Hashable) -> set[Hashable]:
        seen, todo = {start}, [start]
        while todo:
            for e, nxt in near[todo.pop()]:
                if e != without and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    for e, u, v in edges:
        side_a = reach(u, e)
        if v not in side_a:
            return side_a, reach(v, e)
    return None
