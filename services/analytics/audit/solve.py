"""The feasible range of every small count, with SciPy's HiGHS.

A variable whose box could hold a small count is settled the cheapest way that suffices:

1. its box alone (shown exactly);
2. integer solutions seen: every integer solution of the model shows every variable's value at
   once, so a variable seen at two values far enough apart is not pinned. Solutions are sampled
   first (integer programs stopped at their first solution, each heading a random way from where
   the open variables were last seen), and every later optimum that is integral (or rounds to a
   point satisfying every relation) adds one;
3. group tests: variables every solution had at one end of their box are tested together, since
   if their sum cannot move by 1 none of them can (a group that moves is split);
4. linear programs for its minimum and maximum, one model reused with only the objective
   changed, so each starts from the last one's basis; ends they leave narrower than k are
   confirmed by integer programs (the same HiGHS as ``scipy.optimize.milp``), under a time limit,
   narrowest first.

A variable is *pinned* when its integer range holds fewer than ``width`` values and meets
1..k-1: a small count of people that can be worked out (almost) exactly.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from services.analytics.audit.model import CAP, Model, is_small

Vector = npt.NDArray[np.float64]
_TOL = 1e-6
_INF = math.inf
SPREAD_ROUNDS = 60  # integer solutions sampled first, at most: each settles many variables at once
SPREAD_SHARE = 0.5  # of the time limit, at most
SPREAD_GAIN = 0.02  # sampling stops when a solution settles fewer than this share of the open variables
MILP_SECONDS = 10.0
GROUP = 64  # variables tested together at first


@dataclass(frozen=True)
class Checked:
    """A small variable's range of integer values: exact, or (``exact`` False) at least this wide."""

    variable: int
    lo: int
    hi: int
    exact: bool
    how: str  # "shown", "solutions", "linear programs", "integer programs", "timed out"
    pinned: bool

    @property
    def values(self) -> int:
        return self.hi - self.lo + 1


@dataclass
class Audit:
    model: Model
    width: int
    candidates: list[int]  # variables whose box could hold a small count, in the order they are checked
    checked: list[Checked] = field(default_factory=list)
    feasible: bool = True
    finished: bool = True
    stopped_because: str | None = None
    lps: int = 0
    milps: int = 0
    samples: int = 0
    seconds: float = 0.0
    engine: str = ""

    @property
    def pinned(self) -> list[Checked]:
        return [c for c in self.checked if c.pinned]

    def widths(self) -> dict[str, int]:
        """How many checked variables have each number of possible values ("≥n": at least n), small first."""
        counts: Counter[tuple[int, bool]] = Counter()
        for c in self.checked:
            k = self.model.variables[c.variable].k
            n = min(c.values, k)
            counts[(n, c.exact and n < k)] += 1
        return {
            (str(n) if exact else f"≥{n}"): counts[(n, exact)]
            for n, exact in sorted(counts, key=lambda key: (key[0], not key[1]))
        }

    @property
    def including_zero(self) -> int:
        return sum(c.lo <= 0 for c in self.checked)


class _Programs:
    """The model as one linear program over all variables; each call changes only the objective."""

    def __init__(self, model: Model, use_highs: bool = True) -> None:
        n = len(model.variables)
        self.n = n
        self.col_lo = np.array([max(v.lo, 0.0) for v in model.variables], dtype=np.float64)
        self.col_hi = np.array([min(v.hi, CAP) for v in model.variables], dtype=np.float64)
        rows, cols, vals = [], [], []
        for r, rel in enumerate(model.relations):
            for i, c in rel.terms:
                rows.append(r)
                cols.append(i)
                vals.append(c)
        m = len(model.relations)
        self.a = sparse.csr_matrix((vals, (rows, cols)), shape=(m, n), dtype=np.float64)
        self.row_lo = np.array([-_INF if r.lo <= -CAP else r.lo for r in model.relations], dtype=np.float64)
        self.row_hi = np.array([_INF if r.hi >= CAP else r.hi for r in model.relations], dtype=np.float64)
        self.lps = 0
        self.milps = 0
        self._highs: Any = _highs(self) if use_highs else None
        self._mip: Any = None  # made on the first integer program
        self._dive: Any = None  # the same, stopping at its first integer solution
        self.samples = 0
        self._last: dict[int, list[int]] = {}  # per HiGHS model: the variables the objective last touched
        self.engine = "HiGHS (one model, objective changed)" if self._highs is not None else "HiGHS via linprog"

    def lp(self, cost: Mapping[int, float], seconds: float) -> Vector | None:
        """A solution minimising ``cost``, or None (infeasible, or out of time)."""
        self.lps += 1
        if self._highs is not None:
            return self._lp_highs(cost, seconds)
        c = np.zeros(self.n)
        for i, v in cost.items():
            c[i] = v
        eq = self.row_lo == self.row_hi
        up, down = ~eq & np.isfinite(self.row_hi), ~eq & np.isfinite(self.row_lo)
        a_ub = sparse.vstack([self.a[up], -self.a[down]]).tocsr()
        b_ub = np.concatenate([self.row_hi[up], -self.row_lo[down]])
        res = linprog(
            c,
            A_ub=a_ub if a_ub.shape[0] else None,
            b_ub=b_ub if a_ub.shape[0] else None,
            A_eq=self.a[eq] if eq.any() else None,
            b_eq=self.row_lo[eq] if eq.any() else None,
            bounds=np.column_stack([self.col_lo, self.col_hi]),
            method="highs",
            options={"time_limit": max(seconds, 0.01)},
        )
        return np.asarray(res.x, dtype=np.float64) if res.status == 0 else None

    def _lp_highs(self, cost: Mapping[int, float], seconds: float) -> Vector | None:
        return self._run(self._highs, cost, seconds)

    def sample(self, cost: Mapping[int, float], seconds: float) -> Vector | None:
        """Some integer solution, found heading towards the minimum of ``cost`` (None if none in time)."""
        self.samples += 1
        if self._highs is not None:
            if self._dive is None:
                self._dive = _highs(self, integer=True)
                if self._dive is not None:
                    self._dive.setOptionValue("mip_max_improving_sols", 1)
            if self._dive is not None:
                return self._run(self._dive, cost, seconds, any_solution=True)
        c = np.zeros(self.n)
        for i, v in cost.items():
            c[i] = v
        res = milp(
            c,
            integrality=np.ones(self.n),
            bounds=Bounds(self.col_lo, self.col_hi),
            constraints=LinearConstraint(self.a, self.row_lo, self.row_hi),
            options={"time_limit": max(seconds, 0.01), "disp": False},
        )
        return np.asarray(res.x, dtype=np.float64) if res.x is not None else None

    def _run(self, h: Any, cost: Mapping[int, float], seconds: float, any_solution: bool = False) -> Vector | None:
        core = _core()
        last = self._last.get(id(h), [])
        touched = sorted(set(last) | set(cost))
        if touched:
            idx = np.array(touched, dtype=np.int32)
            h.changeColsCost(len(touched), idx, np.array([cost.get(i, 0.0) for i in touched], dtype=np.float64))
        self._last[id(h)] = list(cost)
        # HiGHS counts its time limit over every run of a model: the limit is the time so far plus this run's.
        h.setOptionValue("time_limit", float(h.getRunTime() + max(seconds, 0.01)))
        h.run()
        solution = h.getSolution()
        if h.getModelStatus() != core.HighsModelStatus.kOptimal and not (any_solution and solution.value_valid):
            return None
        return np.array(solution.col_value, dtype=np.float64)

    def milp(self, i: int, maximise: bool, seconds: float) -> Vector | None:
        """An integer solution minimising (or maximising) variable ``i``, or None if none was proven in time."""
        self.milps += 1
        sign = -1.0 if maximise else 1.0
        if self._highs is not None:
            if self._mip is None:
                self._mip = _highs(self, integer=True)
            if self._mip is not None:
                return self._run(self._mip, {i: sign}, seconds)
        c = np.zeros(self.n)
        c[i] = sign
        res = milp(
            c,
            integrality=np.ones(self.n),
            bounds=Bounds(self.col_lo, self.col_hi),
            constraints=LinearConstraint(self.a, self.row_lo, self.row_hi),
            options={"time_limit": max(seconds, 0.01), "disp": False},
        )
        return np.asarray(res.x, dtype=np.float64) if res.status == 0 and res.x is not None else None

    def integral(self, x: Vector) -> Vector | None:
        """``x`` rounded, if that point satisfies every bound and relation: an integer solution."""
        r = np.round(x)
        if np.any(r < self.col_lo - _TOL) or np.any(r > self.col_hi + _TOL):
            return None
        ax = self.a @ r
        if np.any(ax < self.row_lo - _TOL) or np.any(ax > self.row_hi + _TOL):
            return None
        return r


def _core() -> Any:
    # SciPy's own HiGHS binding (what linprog and milp call), used directly to keep one model between programs.
    from scipy.optimize._highspy import _core as core

    return core


def _highs(p: _Programs, integer: bool = False) -> Any:
    """SciPy's HiGHS as one model whose objective can change (None if this SciPy lacks the binding)."""
    try:
        core = _core()
        lp = core.HighsLp()
        lp.num_col_, lp.num_row_ = p.n, p.a.shape[0]
        lp.col_cost_ = np.zeros(p.n)
        lp.col_lower_, lp.col_upper_ = p.col_lo, p.col_hi
        lp.row_lower_, lp.row_upper_ = p.row_lo, p.row_hi
        csc = p.a.tocsc()
        lp.a_matrix_.format_ = core.MatrixFormat.kColwise
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = p.n, p.a.shape[0]
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = csc.indptr, csc.indices, csc.data
        if integer:
            lp.integrality_ = [core.HighsVarType.kInteger] * p.n
        h = core._Highs()
        h.setOptionValue("output_flag", False)
        if h.passModel(lp) != core.HighsStatus.kOk:
            return None
    except (ImportError, AttributeError, TypeError):
        return None
    return h


class _Stop:
    """When to stop: out of time, or at the limit of programs; the audit then says why."""

    def __init__(self, result: Audit, deadline: float, max_programs: int, p: _Programs) -> None:
        self.result, self.deadline, self.max_programs, self.p = result, deadline, max_programs, p

    def because(self, why: str) -> None:
        if self.result.finished:
            self.result.finished, self.result.stopped_because = False, why

    def now(self, programs: int) -> bool:
        if time.monotonic() >= self.deadline:
            self.because("out of time")
        elif self.p.lps + self.p.milps + self.p.samples + programs > self.max_programs:
            self.because("program limit reached")
        return not self.result.finished

    def budget(self) -> float:
        return min(MILP_SECONDS, max(self.deadline - time.monotonic(), 0.0))


def _unconfirmed(i: int, lo: int, hi: int, width: int, k: int) -> Checked:
    """A range the integer programs could not confirm: the linear programs' bounds hold around it, so it pins
    the count if it is narrow and within 1..k-1 even so."""
    return Checked(i, lo, hi, False, "timed out", narrower(lo, hi, width, k) and lo >= 1 and hi <= k - 1)


def narrower(lo: int, hi: int, width: int, k: int) -> bool:
    """Whether an integer range pins a small count: fewer than ``width`` values, meeting 1..k-1."""
    return hi - lo + 1 < width and is_small(lo, hi, k)


def _away(seen: float, lowest: float) -> float:
    """The objective's weight that moves a variable away from where a solution had it: up from its lowest, else down."""
    return 1.0 if seen > lowest + _TOL else -1.0


def audit(
    model: Model,
    *,
    width: int = 2,
    time_limit: float = 120.0,
    max_programs: int = 100_000,
    seed: int = 2018,
    use_highs: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Audit:
    """Every variable whose box could hold a small count, with its feasible range; pinned ones marked."""
    started = time.monotonic()
    deadline = started + time_limit
    variables = model.variables
    candidates = sorted(
        (i for i, v in enumerate(variables) if v.lo <= v.k - 1),
        key=lambda i: (not variables[i].published, i),
    )
    result = Audit(model, width, candidates)
    if model.conflicts:
        result.feasible, result.stopped_because = False, model.conflicts[0]
        return result
    p = _Programs(model, use_highs)
    result.engine = p.engine

    def finish() -> Audit:
        result.lps, result.milps, result.samples = p.lps, p.milps, p.samples
        result.seconds = time.monotonic() - started
        return result

    seen_lo = np.full(p.n, _INF)
    seen_hi = np.full(p.n, -_INF)

    def solved(x: Vector | None) -> Vector | None:
        if x is not None and (r := p.integral(x)) is not None:
            np.minimum(seen_lo, r, out=seen_lo)
            np.maximum(seen_hi, r, out=seen_hi)
        return x

    if not variables:
        return finish()
    if solved(p.lp({}, deadline - time.monotonic())) is None:
        out_of_time = time.monotonic() >= deadline
        result.feasible = out_of_time  # out of time, it cannot be told; in time, no counts fit at all
        result.finished = False
        result.stopped_because = "out of time" if out_of_time else "no counts satisfy every published number"
        return finish()

    done: dict[int, Checked] = {}

    def settle(i: int) -> bool:
        """Decide ``i`` from its box or the integer solutions seen, if they suffice."""
        v = variables[i]
        box_lo, box_hi = math.ceil(v.lo - _TOL), math.floor(min(v.hi, CAP) + _TOL)
        if box_lo == box_hi:
            done[i] = Checked(i, box_lo, box_hi, True, "shown", narrower(box_lo, box_hi, width, v.k))
        elif seen_hi[i] - seen_lo[i] >= width - 1:
            done[i] = Checked(i, int(seen_lo[i]), int(seen_hi[i]), False, "solutions", False)
        return i in done

    # Integer solutions first, each heading away from where the open variables were last seen.
    rng = np.random.default_rng(seed)
    sampling_until = started + time_limit * SPREAD_SHARE
    open_ = [i for i in candidates if not settle(i)]
    for r in range(SPREAD_ROUNDS):
        now = time.monotonic()
        if not open_ or now >= sampling_until or p.lps + p.milps + p.samples >= max_programs:
            break
        # random sizes, so that each solution moves different ones of those that cannot all move at once
        sizes = rng.uniform(0.1, 1.0, len(open_)).tolist()
        weights = [
            size * (_away(seen_lo[i], variables[i].lo) if np.isfinite(seen_lo[i]) else float(rng.choice([-1, 1])))
            for i, size in zip(open_, sizes, strict=True)
        ]
        solved(p.sample(dict(zip(open_, weights, strict=True)), min(MILP_SECONDS, sampling_until - now)))
        before, open_ = len(open_), [i for i in open_ if not settle(i)]
        if r >= 2 and before - len(open_) < SPREAD_GAIN * before:
            break

    total = len(candidates)
    stop = _Stop(result, deadline, max_programs, p)
    # Variables every solution had at the lowest (or highest) value of their box: one program tests a group of
    # them, since if their sum cannot move by 1, none of them can; a group that moves is split.
    for up in (True, False):
        edge = [
            i
            for i in candidates
            if i not in done
            and seen_lo[i]
            == seen_hi[i]
            == (math.ceil(variables[i].lo - _TOL) if up else math.floor(variables[i].hi + _TOL))
        ]
        groups = [edge[j : j + GROUP] for j in range(0, len(edge), GROUP)]
        while groups and not stop.now(1):
            group = [i for i in groups.pop() if i not in done and not settle(i)]
            if len(group) < 2:
                continue
            x = solved(p.lp(dict.fromkeys(group, -1.0 if up else 1.0), deadline - time.monotonic()))
            if x is None:
                break
            bounds = np.array(
                [math.ceil(variables[i].lo - _TOL) if up else math.floor(variables[i].hi + _TOL) for i in group]
            )
            moved = float(np.sum(x[group] - bounds)) if up else float(np.sum(bounds - x[group]))
            if moved < 1 - _TOL:
                for i, end in zip(group, bounds.tolist(), strict=True):
                    done[i] = Checked(i, end, end, True, "linear programs", narrower(end, end, width, variables[i].k))
            else:
                groups += [group[: len(group) // 2], group[len(group) // 2 :]]
    # Linear programs first, for every small variable the solutions seen have not settled ...
    confirm: list[tuple[float, int, float, float]] = []  # (width, variable, lower end, upper end)
    for n_done, i in enumerate(candidates):
        if progress is not None:
            progress(n_done, total)
        if i in done or settle(i):
            continue
        if stop.now(2):
            break
        ends: list[float] = []
        for sign in (1.0, -1.0):
            x = solved(p.lp({i: sign}, deadline - time.monotonic()))
            if x is None:
                break
            ends.append(float(x[i]))
            if settle(i):
                break
        if i in done:
            continue
        if len(ends) < 2:
            stop.because("out of time")
            break
        lo_lp, hi_lp = ends
        lo, hi = math.ceil(lo_lp - _TOL), math.floor(hi_lp + _TOL)
        exact = bool(seen_lo[i] == lo and seen_hi[i] == hi)
        small = is_small(lo, hi, variables[i].k)
        if not small or hi_lp - lo_lp >= max(variables[i].k, width) or exact:
            done[i] = Checked(i, lo, hi, exact, "linear programs", exact and narrower(lo, hi, width, variables[i].k))
        else:
            confirm.append((hi_lp - lo_lp, i, lo_lp, hi_lp))
    # ... then integer programs for those the linear programs leave narrower than k, the narrowest first.
    for _, i, lo_lp, hi_lp in sorted(confirm):
        if settle(i):
            continue
        lo, hi = math.ceil(lo_lp - _TOL), math.floor(hi_lp + _TOL)
        if stop.now(0):
            done[i] = _unconfirmed(i, lo, hi, width, variables[i].k)
            continue
        lo_exact, hi_exact = bool(seen_lo[i] == lo), bool(seen_hi[i] == hi)
        if not lo_exact and (m := solved(p.milp(i, False, stop.budget()))) is not None:
            lo, lo_exact = round(m[i]), True
        if settle(i):
            continue
        if not hi_exact and (m := solved(p.milp(i, True, stop.budget()))) is not None:
            hi, hi_exact = round(m[i]), True
        if settle(i):
            continue
        if lo_exact and hi_exact:
            done[i] = Checked(i, lo, hi, True, "integer programs", narrower(lo, hi, width, variables[i].k))
        else:
            done[i] = _unconfirmed(i, lo, hi, width, variables[i].k)
    if progress is not None:
        progress(len(done), total)
    result.checked = [done[i] for i in candidates if i in done]
    return finish()
