"""What protecting small counts costs: the rounding coordinators see against the best cell
suppression, found by brute force, on small random tables.

    python -m bench.suppression_loss [--tables 200] [--seed 7] [--k 5]

Each table is rows x columns of counts (some from 1 to k-1) with its row, column and grand
totals, as a coordinator sees a dimension by a segment. Both methods must keep every count
from 1 to k-1 from being worked out exactly (its feasible range, by linear programming over
everything shown and the table's sums, holds at least two whole numbers):

- **cell suppression, optimum**: hide the fewest entries (cells or totals; ties: the fewest
  people) so that no small count is pinned; hidden entries read as one marker (0 or more).
  Found by trying every set of entries, smallest first.
- **rounding** (what engage does): every entry rounded to base k at random (unbiased), 0
  read as "<k"; the entries "hidden" are those that read "<k" though people are in them.

Printed: entries and people hidden by each, how far rounding moves the numbers shown, how
many tables each hides whole, and how many small counts the LP pins under rounding.
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

Entry = tuple[int, int]  # (row, col); -1 stands for a total


@dataclass(frozen=True)
class Table:
    values: dict[Entry, int]  # cells, row totals (r, -1), column totals (-1, c), grand total (-1, -1)
    rows: int
    cols: int

    @property
    def entries(self) -> list[Entry]:
        return list(self.values)


def random_table(rng: random.Random, k: int) -> Table:
    rows, cols = rng.choice([(2, 2), (2, 3), (3, 2)])
    cells = {
        (r, c): rng.choice([0, 1, 2, 3, rng.randint(k, 4 * k), rng.randint(k, 4 * k)])
        for r in range(rows)
        for c in range(cols)
    }
    return with_totals(cells, rows, cols)


def with_totals(cells: Mapping[Entry, int], rows: int, cols: int) -> Table:
    """The table of ``cells`` with its row, column and grand totals."""
    values = dict(cells)
    for r in range(rows):
        values[(r, -1)] = sum(cells[(r, c)] for c in range(cols))
    for c in range(cols):
        values[(-1, c)] = sum(cells[(r, c)] for r in range(rows))
    values[(-1, -1)] = sum(cells.values())
    return Table(values, rows, cols)


def equations(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cells sum to its total, each column's too, and the totals to the grand total."""
    index = {e: i for i, e in enumerate(table.entries)}
    lines: list[list[Entry]] = [[(r, c) for c in range(table.cols)] + [(r, -1)] for r in range(table.rows)]
    lines += [[(r, c) for r in range(table.rows)] + [(-1, c)] for c in range(table.cols)]
    lines += [[(r, -1) for r in range(table.rows)] + [(-1, -1)], [(-1, c) for c in range(table.cols)] + [(-1, -1)]]
    a = np.zeros((len(lines), len(index)))
    for i, line in enumerate(lines):
        for e in line[:-1]:
            a[i, index[e]] = 1
        a[i, index[line[-1]]] = -1
    return a, np.zeros(len(lines))


def pinned(table: Table, box: Mapping[Entry, tuple[float, float | None]], small: list[Entry]) -> list[Entry]:
    """The small entries whose feasible range, given ``box`` for every entry, holds fewer than two whole numbers."""
    a, b = equations(table)
    bounds = [box[e] for e in table.entries]
    out = []
    for e in small:
        i = table.entries.index(e)
        objective = np.zeros(len(bounds))
        objective[i] = 1
        low = linprog(objective, A_eq=a, b_eq=b, bounds=bounds, method="highs")
        high = linprog(-objective, A_eq=a, b_eq=b, bounds=bounds, method="highs")
        if low.status != 0 or high.status not in (0, 3):  # the truth is feasible: only "unbounded" may come
            raise RuntimeError(f"the LP failed: {low.message} / {high.message}")
        lo = np.ceil(low.fun - 1e-7)
        hi = np.inf if high.status == 3 else np.floor(-high.fun + 1e-7)  # 3: unbounded above
        if hi - lo < 1:
            out.append(e)
    return out


def optimum(table: Table, k: int) -> tuple[set[Entry], float]:
    """The fewest entries to hide (then the fewest people) so that no small count is pinned."""
    small = [e for e, v in table.values.items() if 0 < v < k]
    if not small:
        return set(), 0.0
    others = [e for e in table.entries if e not in small]
    lines = [[(r, c) for c in [*range(table.cols), -1]] for r in [*range(table.rows), -1]]
    lines += [[(r, c) for r in [*range(table.rows), -1]] for c in [*range(table.cols), -1]]
    started = time.perf_counter()
    for size in range(len(others) + 1):
        found: list[set[Entry]] = []
        for extra in itertools.combinations(others, size):
            hidden = {*small, *extra}
            if any(sum(e in hidden for e in line) == 1 for line in lines):  # a lone hidden entry: pinned
                continue
            box = {e: ((0.0, None) if e in hidden else (float(v), float(v))) for e, v in table.values.items()}
            if not pinned(table, box, small):
                found.append(hidden)
        if found:
            best = min(found, key=lambda h: sum(table.values[e] for e in h))
            return best, time.perf_counter() - started
    raise AssertionError("hiding every entry always protects")  # never reached: all hidden pins nothing


def rounded(value: int, rng: random.Random, k: int) -> int:
    low, rest = divmod(value, k)
    return k * (low + (rng.random() < rest / k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    rng, k = random.Random(args.seed), args.k

    entries = people = smalls = 0
    opt_cells = opt_people = opt_whole = 0
    rnd_cells = rnd_people = rnd_whole = rnd_pins = 0
    abs_error = 0.0
    search_time = 0.0
    for _ in range(args.tables):
        table = random_table(rng, k)
        nonzero = {e for e, v in table.values.items() if v}
        entries += len(table.values)
        people += table.values[(-1, -1)]
        small = [e for e, v in table.values.items() if 0 < v < k]
        smalls += len(small)

        hidden, took = optimum(table, k)
        search_time += took
        opt_cells += len(hidden)
        opt_people += sum(table.values[e] for e in hidden if e[0] >= 0 and e[1] >= 0)
        opt_whole += bool(nonzero) and nonzero <= hidden

        shown = {e: rounded(v, rng, k) for e, v in table.values.items()}
        under = {e for e in nonzero if shown[e] == 0}
        rnd_cells += len(under)
        rnd_people += sum(table.values[e] for e in under if e[0] >= 0 and e[1] >= 0)
        rnd_whole += bool(nonzero) and nonzero <= under
        abs_error += sum(abs(shown[e] - v) for e, v in table.values.items())
        box = {e: (float(max(0, p - k + 1)), float(p + k - 1)) for e, p in shown.items()}
        rnd_pins += len(pinned(table, box, small))

    print(f"{args.tables} tables (2x2, 2x3, 3x2 with every total shown), k = {k}, seed {args.seed}")
    print(f"  entries {entries}, of which counts from 1 to {k - 1}: {smalls}; people {people}")
    print(f"  cell suppression, optimum (brute force, {search_time:.1f} s of search):")
    print(f"    entries hidden {opt_cells} ({opt_cells / entries:.1%}); people in hidden cells {opt_people}")
    print(f"    tables hidden whole: {opt_whole}")
    print("  rounding to base k (engage):")
    print(
        f"    entries read '<{k}' though people are in them {rnd_cells} ({rnd_cells / entries:.1%}); "
        f"people in them {rnd_people}"
    )
    print(f"    tables hidden whole: {rnd_whole}")
    print(f"    mean |shown - true| over all entries: {abs_error / entries:.2f} (at most {k - 1})")
    print(f"    small counts pinned by the LP: {rnd_pins}")
    print(f"  ratio of entries hidden, rounding / optimum: {rnd_cells / max(opt_cells, 1):.2f}")


if __name__ == "__main__":
    main()
