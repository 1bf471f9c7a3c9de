"""Re-identification risk of exported microdata, and generalising it to k-anonymity. Pure: no I/O.

A participant's *quasi-identifiers* are what someone who knows them may know too: every
profile question (region, lived experience, race/ethnicity, gender, LGBQ+, age band, the
terms they use for their own experience, professional roles, task-force connection, tribal
affiliation) and every dimension the plan derives from those answers. Participants share an
*equivalence class* when all their released quasi-identifier values are equal: a
multi-select answer as a set, and "declined", not answered (``None``) and ``suppressed``
each a value like any other. A *sample unique* is a participant alone in their class: the
one person in the export with that combination, whom anyone who knows the combination can
find. The unit is the participant, not the engagement row: a person who took part three
times is one person.

With a target k, :func:`anonymise` makes every class hold at least k participants:

1. *generalisation*: recodings the analyst chooses, the same for every participant (two or
   more answers to a multi-select question become ``more_than_one``, age bands are
   top-coded or widened, regions merged into the Twin Cities metro and Greater Minnesota,
   a column withheld entirely);
2. *local suppression*: the values of participants still in classes smaller than k are
   replaced by ``suppressed``, one quasi-identifier at a time, each time the one that leaves
   the fewest participants in small classes; the participants suppressed in every value
   form one class, and if it is still smaller than k, participants whose class can spare
   them (or, failing that, whole classes) join it.

Fewer than k participants cannot be k-anonymous at all: :class:`TooFew` says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared.plan import Plan
from shared.profile import DIMENSIONS, MULTI_SELECT

Value = str | None  # a released cell: codes joined by ";", "declined", a generalised code, SUPPRESSED, or None
Record = Mapping[str, Value]
Signature = tuple[Value, ...]

SUPPRESSED = "suppressed"
MORE_THAN_ONE = "more_than_one"
SEPARATOR = ";"


def quasi_identifiers(plan: Plan) -> tuple[str, ...]:
    """Every profile question, then every dimension the plan derives from the answers."""
    return (*DIMENSIONS, *plan.derived_dimensions())


def _canonical(value: Value) -> Value:
    """A multi-select answer as a set: the same codes in any order are one value."""
    if value is None or SEPARATOR not in value:
        return value
    return SEPARATOR.join(sorted(value.split(SEPARATOR)))


def signature(record: Record, qis: Sequence[str]) -> Signature:
    """The participant's equivalence class: their quasi-identifier values, in ``qis`` order."""
    return tuple(_canonical(record.get(q)) for q in qis)


@dataclass(frozen=True)
class Risk:
    """How re-identifiable a set of records is on its quasi-identifiers."""

    participants: int
    classes: int  # distinct quasi-identifier combinations
    sample_uniques: int  # participants alone in their class
    smallest_class: int | None  # None when there is no one
    k: int
    below_k: int  # participants in classes smaller than k

    def as_dict(self) -> dict[str, int | None]:
        return {
            "participants": self.participants,
            "classes": self.classes,
            "sample_uniques": self.sample_uniques,
            "smallest_class": self.smallest_class,
            "k": self.k,
            "below_k": self.below_k,
        }


def measure(records: Sequence[Record], qis: Sequence[str], k: int) -> Risk:
    """Sample uniques, the smallest class, and how many participants are in classes smaller than ``k``."""
    sizes = Counter(signature(r, qis) for r in records)
    return Risk(
        participants=len(records),
        classes=len(sizes),
        sample_uniques=sum(1 for n in sizes.values() if n == 1),
        smallest_class=min(sizes.values()) if sizes else None,
        k=k,
        below_k=sum(n for n in sizes.values() if n < k),
    )


@dataclass(frozen=True)
class Generalisation:
    """One recoding applied to every participant alike: ``recode(column, value)`` for each of ``columns``."""

    name: str
    columns: tuple[str, ...]
    how: str
    recode: Callable[[str, Value], Value]


def _more_than_one(_column: str, value: Value) -> Value:
    return MORE_THAN_ONE if value is not None and SEPARATOR in value else value


def _mapped(table: Mapping[str, str]) -> Callable[[str, Value], Value]:
    def recode(_column: str, value: Value) -> Value:
        return table.get(value, value) if value is not None else None

    return recode


def _withheld(_column: str, value: Value) -> Value:
    return SUPPRESSED


TOP_CODE = {"55-64": "55+", "65+": "55+"}
WIDE_AGES = {"18-24": "18-34", "25-34": "18-34", "35-44": "35-54", "45-54": "35-54", **TOP_CODE}
METRO = {"twin_cities_west_metro": "twin_cities_metro", "twin_cities_east_metro": "twin_cities_metro"}
GREATER = dict.fromkeys(
    ("northeast", "southwest", "northwest", "central", "southeast", "west_central"), "greater_minnesota"
)


def multi_select(columns: Iterable[str]) -> Generalisation:
    """Two or more answers to a multi-select question (or derived groups) become ``more_than_one``."""
    return Generalisation(
        "multi_select",
        tuple(columns),
        "two or more answers to a multi-select question (or two or more derived groups) become `more_than_one`",
        _more_than_one,
    )


AGE_TOP_CODE = Generalisation("age_top_code", ("age_band",), "age bands 55-64 and 65+ become `55+`", _mapped(TOP_CODE))
AGE_WIDE = Generalisation("age_wide", ("age_band",), "age bands become `18-34`, `35-54` and `55+`", _mapped(WIDE_AGES))
REGION_METRO = Generalisation(
    "region_metro",
    ("region",),
    "the two Twin Cities regions become `twin_cities_metro`, the six others `greater_minnesota`",
    _mapped({**METRO, **GREATER}),
)


def dropped(column: str) -> Generalisation:
    """The column is withheld entirely: every value becomes ``suppressed``."""
    return Generalisation(
        f"drop:{column}", (column,), f"`{column}` is withheld: every value is `{SUPPRESSED}`", _withheld
    )


def generalise(
    records: Sequence[Record], steps: Sequence[Generalisation]
) -> tuple[list[dict[str, Value]], dict[str, int]]:
    """``records`` recoded by each step in turn, and how many values each step changed."""
    out = [dict(r) for r in records]
    changed: dict[str, int] = {}
    for step in steps:
        n = 0
        for record in out:
            for column in step.columns:
                if column not in record:
                    continue
                new = step.recode(column, record[column])
                if new != record[column]:
                    record[column] = new
                    n += 1
        changed[step.name] = n
    return out, changed


class TooFew(ValueError):
    """Fewer participants than k: no release of them can be k-anonymous."""

    def __init__(self, participants: int, k: int) -> None:
        super().__init__(
            f"the export holds {participants} participants, fewer than k = {k}: no release of them is "
            f"{k}-anonymous; export the aggregate tables instead"
        )
        self.participants, self.k = participants, k


def _small(rows: Sequence[list[Value]], k: int) -> list[int]:
    sizes = Counter(tuple(map(_canonical, row)) for row in rows)
    return [i for i, row in enumerate(rows) if sizes[tuple(map(_canonical, row))] < k]


def _below_after(rows: Sequence[list[Value]], small: Sequence[int], j: int, k: int) -> int:
    """Participants left in classes smaller than k if the small ones had column ``j`` suppressed."""
    chosen = set(small)
    sizes: Counter[Signature] = Counter()
    keys = []
    for i, row in enumerate(rows):
        values = [*row[:j], SUPPRESSED, *row[j + 1 :]] if i in chosen else row
        key = tuple(map(_canonical, values))
        keys.append(key)
        sizes[key] += 1
    return sum(1 for key in keys if sizes[key] < k)


def suppress_to_k(
    records: Sequence[Record], qis: Sequence[str], k: int
) -> tuple[list[dict[str, Value]], dict[str, int]]:
    """Suppress quasi-identifier values until every class holds at least ``k`` participants.

    Returns the records (other columns untouched) and how many values were suppressed per
    column. Raises :class:`TooFew` when there are fewer than ``k`` participants (but some).
    """
    if 0 < len(records) < k:
        raise TooFew(len(records), k)
    rows = [[r.get(q) for q in qis] for r in records]
    suppressed: Counter[str] = Counter()

    def suppress(i: int, j: int) -> None:
        if rows[i][j] != SUPPRESSED:
            rows[i][j] = SUPPRESSED
            suppressed[qis[j]] += 1

    left = list(range(len(qis)))
    small = _small(rows, k)
    # A class of k or more is never touched again, so it stays one: at the end, whoever is still in a
    # small class has had every column suppressed, and they all share the one class of `suppressed`s.
    while small and left:
        j = min(left, key=lambda c: (_below_after(rows, small, c, k), left.index(c)))
        for i in small:
            suppress(i, j)
        left.remove(j)
        small = _small(rows, k)
    if small:
        _fill_the_suppressed_class(rows, small, k, suppress)
    out = [dict(r) for r in records]
    for record, row in zip(out, rows, strict=True):
        record.update(zip(qis, row, strict=True))
    return out, {q: suppressed[q] for q in qis if suppressed[q]}


def _fill_the_suppressed_class(
    rows: list[list[Value]], small: list[int], k: int, suppress: Callable[[int, int], None]
) -> None:
    """The all-``suppressed`` class holds fewer than k: others join it until it holds k.

    First participants whose class can spare them (it keeps k), from the largest classes;
    if that is not enough, whole classes, from the smallest. There are at least k
    participants in all, so this ends with every class holding k or more.
    """
    members: dict[Signature, list[int]] = {}
    for i, row in enumerate(rows):
        if i not in small:
            members.setdefault(tuple(map(_canonical, row)), []).append(i)
    need = k - len(small)
    width = len(rows[0])

    def order(item: tuple[Signature, list[int]]) -> tuple[int, list[tuple[bool, str]]]:
        return len(item[1]), [(v is None, v or "") for v in item[0]]

    for _, ids in sorted(members.items(), key=order, reverse=True):
        for i in ids[k:][:need]:
            for j in range(width):
                suppress(i, j)
            need -= 1
        if need == 0:
            return
    # Nobody can be spared: the smallest class joins whole (it holds k or more, so that is enough).
    _, ids = min(members.items(), key=order)
    for i in ids:
        for j in range(width):
            suppress(i, j)


@dataclass(frozen=True)
class Anonymised:
    """Records as released, and what was done to them."""

    records: list[dict[str, Value]]
    k: int | None  # the target, if there was one
    generalised: dict[str, int]  # generalisation name -> values it changed
    suppressed: dict[str, int]  # column -> values suppressed
    before: Risk  # as recorded
    after: Risk  # as released

    @property
    def suppressed_values(self) -> int:
        return sum(self.suppressed.values())


def anonymise(
    records: Sequence[Record], qis: Sequence[str], k: int | None, steps: Sequence[Generalisation], *, report_k: int
) -> Anonymised:
    """Generalise ``records`` by ``steps``, then (with a target ``k``) suppress until they are k-anonymous.

    ``report_k`` is the class size the risk figures count against when there is no target.
    """
    at = k or report_k
    before = measure(records, qis, at)
    released, generalised = generalise(records, steps)
    suppressed: dict[str, int] = {}
    if k is not None:
        released, suppressed = suppress_to_k(released, qis, k)
    return Anonymised(released, k, generalised, suppressed, before, measure(released, qis, at))


def steps_for(
    plan: Plan, *, multi: bool = False, age_band: str = "as_given", region: str = "as_given", drop: Sequence[str] = ()
) -> tuple[Generalisation, ...]:
    """The generalisations asked for, in the order they apply; ValueError naming a column that is not
    a quasi-identifier of the plan."""
    qis = quasi_identifiers(plan)
    unknown = [column for column in drop if column not in qis]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a quasi-identifier; they are {', '.join(qis)}")
    steps: list[Generalisation] = []
    if multi:
        derived = [key for key, spec in plan.derived_dimensions().items() if spec.multi_select]
        steps.append(multi_select([*(d for d in DIMENSIONS if d in MULTI_SELECT), *derived]))
    steps += {"top_code": [AGE_TOP_CODE], "wide": [AGE_WIDE]}.get(age_band, [])
    steps += [REGION_METRO] if region == "metro" else []
    steps += [dropped(column) for column in dict.fromkeys(drop)]
    return tuple(steps)
