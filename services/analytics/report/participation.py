"""The participation table, as the 2018 report's summary gives it. Pure: answers in, sections out.

The summary says who took part in this order: the total; each region's share of everyone
who gave a profile, and those who did not provide a location; lived experience (yes, and
"did not identify any lived experience": no, declined and not answered together); then,
among people with lived experience, race/ethnicity (several could be chosen; "identified
only as white" is the ``alone`` count), gender (with "transgender or gender non-binary" as
one figure: the people who chose either, the plan's derived ``gender_identity_groups``),
LGBQ+, the terms participants use for their own experience (their words, in quotes), and
professional roles; and the advisory group's share with lived experience.

Two bases for the shares:

- ``profiled`` (the report's): of everyone who gave a profile, those who declined or skipped
  the question included; among people with lived experience, of all of them;
- ``answered``: of those who answered each question. A line outside that base (those who
  did not provide a location, say) keeps its count and has no share.

Each section rounds its shares as the report does, half up: one decimal for the overall
table and race/ethnicity, whole percent for the rest. Shares of rounded (coordinator)
numbers are worked out from the rounded numbers; a count shown as ``<k`` has no share.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, get_args

from services.analytics.answers.models import CategoryRow, CoverageAnswer, DimensionAnswer, Replayed

Shown = int | str
Base = Literal["profiled", "answered"]
BASES: tuple[str, ...] = get_args(Base)

LIVED_SEGMENT = "lived_experience:yes"
ADVISORY_SEGMENT = "channel:advisory"
GENDER_GROUPS = "gender_identity_groups"
TRANS_OR_NON_BINARY = "transgender_or_non_binary"
ONE_FIGURE = ("transgender", "non_binary")  # shown together, as the people in TRANS_OR_NON_BINARY
ANOTHER_TERM = "another_term"  # "another term" is our phrase for a term not listed, not a participant's word

OF_PROFILED = "gave a profile"
OF_ANSWERED = "answered the question"
ONE_DECIMAL, WHOLE = 1, 0


class ReportError(ValueError):
    """The answers given cannot make the report (wrong segments, mixed views)."""


def percent(count: int, of: int, places: int) -> Decimal | None:
    """``count`` as a percentage of ``of``, to ``places`` decimals, half up (90 of 288 is 31.3)."""
    if of <= 0:
        return None
    return (Decimal(count) * 100 / Decimal(of)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Line:
    """One line of a section: a label, how many people, and their share of ``of`` people."""

    label: str
    people: Shown | None  # None: the rounded numbers do not allow it to be worked out
    percent: Decimal | None = None  # None with a base: the share cannot be worked out (a count shown as <k)
    of: Shown | None = None  # the base's people
    base: str | None = None  # OF_PROFILED, OF_ANSWERED, or None: the line has no share
    own_term: bool = False  # the label is a participant's own term, in quotes


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    places: int  # decimals of its shares
    note: str  # what its shares are of
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Report:
    title: str
    process_id: str
    base: str
    notes: tuple[str, ...]
    sections: tuple[Section, ...]
    rounded_to: int | None  # k for rounded (coordinator) numbers, None for exact ones

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


def their_term(label: str) -> str:
    """A participant's term in quotes: the quoted part of the plan's label if it has one
    ('"prostitute" (their own term)'), else the label as a word of theirs ("survivor of trafficking")."""
    for opening, closing in (('"', '"'), ("“", "”")):
        start = label.find(opening)
        end = label.find(closing, start + 1)
        if start >= 0 and end > start:
            return f"“{label[start + 1 : end]}”"
    return f"“{label[:1].lower()}{label[1:]}”"


class _Maker:
    """Lines of one answer (everyone, or a segment) on one base."""

    def __init__(self, answer: CoverageAnswer, base: str, k: int | None) -> None:
        self.answer, self.base, self.k = answer, base, k

    def dim(self, key: str) -> DimensionAnswer | None:
        return next((d for d in self.answer.dimensions if d.dimension == key), None)

    def of(self, dim: DimensionAnswer | None) -> Shown | None:
        if self.base == "profiled":
            return self.answer.profiled
        return None if dim is None else dim.answered

    def line(self, label: str, people: Shown | None, dim: DimensionAnswer | None, places: int, **kw: bool) -> Line:
        of = self.of(dim)
        share = percent(people, of, places) if isinstance(people, int) and isinstance(of, int) else None
        return Line(label, people, share, of, OF_PROFILED if self.base == "profiled" else OF_ANSWERED, **kw)

    def count_only(self, label: str, people: Shown | None) -> Line:
        return Line(label, people)

    def minus(self, whole: Shown, part: Shown) -> Shown | None:
        """``whole - part`` of shown numbers; None when either is only ``<k``. A rounded view never
        shows a result from 1 to k-1 (nor 0, which rounded numbers cannot vouch for): it is ``<k``."""
        if not isinstance(whole, int) or not isinstance(part, int):
            return None
        value = max(whole - part, 0)
        return f"<{self.k}" if self.k is not None and value < self.k else value

    def rows(self, dim: DimensionAnswer | None) -> Iterator[CategoryRow]:
        yield from dim.categories if dim else ()

    def note(self, dim: DimensionAnswer | None, who: str, places: int) -> str:
        decimals = "one decimal" if places == ONE_DECIMAL else "whole percent"
        if self.base == "profiled":
            return f"Shares of the {self.answer.profiled} {who} who gave a profile ({decimals})."
        answered = "—" if dim is None else dim.answered
        return f"Shares of the {answered} {who} who answered the question ({decimals})."


def _check(everyone: CoverageAnswer, lived: CoverageAnswer, advisory: CoverageAnswer) -> None:
    if everyone.segment is not None:
        raise ReportError(f"the first answer must be everyone's, not the segment {everyone.segment.key}")
    for answer, key in ((lived, LIVED_SEGMENT), (advisory, ADVISORY_SEGMENT)):
        if answer.segment is None or answer.segment.key != key:
            raise ReportError(f"an answer for the segment {key} is needed")
    if len({a.process_id for a in (everyone, lived, advisory)}) != 1:
        raise ReportError("the answers are of different processes")
    if len({a.suppression.applied for a in (everyone, lived, advisory)}) != 1:
        raise ReportError("the answers mix rounded and exact numbers")


def build(everyone: CoverageAnswer, lived: CoverageAnswer, advisory: CoverageAnswer, base: str = "profiled") -> Report:
    """The report from three answers: everyone's, ``lived_experience:yes`` and ``channel:advisory``."""
    if base not in BASES:
        raise ReportError(f"base {base!r} is not one of {', '.join(BASES)}")
    _check(everyone, lived, advisory)
    k = everyone.suppression.k if everyone.suppression.applied else None
    sections = (
        _participants(_Maker(everyone, base, k)),
        _region(_Maker(everyone, base, k)),
        _lived_experience(_Maker(everyone, base, k)),
        _race(_Maker(lived, base, k)),
        _gender(_Maker(lived, base, k)),
        _simple(_Maker(lived, base, k), "lgbq", "lgbq", "LGBQ+ among people with lived experience"),
        _terms(_Maker(lived, base, k)),
        _roles(_Maker(lived, base, k)),
        _advisory(_Maker(advisory, base, k)),
    )
    title = everyone.plan.name if everyone.plan else everyone.process_id
    return Report(
        title=f"Who participated: {title}",
        process_id=everyone.process_id,
        base=base,
        notes=_notes(everyone, lived, advisory, base, k),
        sections=sections,
        rounded_to=k,
    )


def _notes(
    everyone: CoverageAnswer, lived: CoverageAnswer, advisory: CoverageAnswer, base: str, k: int | None
) -> tuple[str, ...]:
    answers = (everyone, lived, advisory)
    sequences = sorted({a.as_of.sequence for a in answers})
    reached = f"sequence {sequences[0]}" if len(sequences) == 1 else f"sequences {sequences[0]} to {sequences[-1]}"
    moment = everyone.as_of.as_of if isinstance(everyone.as_of, Replayed) else None
    if moment is not None:
        when = f"As of {moment.isoformat()} (the log read up to {reached}; withdrawals always apply)."
    else:
        behind = max(a.as_of.behind for a in answers)
        when = f"As of {reached} ({'up to date' if behind == 0 else f'{behind} events behind'})."
    if k is not None:
        release = everyone.suppression.release
        view = (
            f"Numbers rounded to multiples of {k} (coordinator view, base k = {k})"
            + (f", from the release at sequence {release}" if release is not None else "")
            + f": a shown count may be up to {k - 1} away from the true one, and “<{k}” means fewer than {k}. "
            "Shares are worked out from the rounded numbers."
        )
    else:
        view = "Exact numbers (analyst view)."
    shares = (
        "Shares are of everyone who gave a profile, those who declined or skipped a question included "
        "(the report's base)."
        if base == "profiled"
        else "Shares are of those who answered each question; declined and skipped answers are left out."
    )
    return when, view, shares, "Where several answers could be chosen, shares add up past 100%."


def _participants(m: _Maker) -> Section:
    lines = (
        m.count_only("Participants", m.answer.participants),
        m.count_only("Gave a profile", m.answer.profiled),
    )
    return Section("participants", "Participants", ONE_DECIMAL, "Everyone the process heard from.", lines)


def _region(m: _Maker) -> Section:
    dim = m.dim("region")
    lines = [m.line(row.label, row.count, dim, ONE_DECIMAL) for row in m.rows(dim)]
    missing = m.minus(m.answer.profiled, dim.answered) if dim else None
    if m.base == "profiled":
        lines.append(m.line("Did not provide a location", missing, dim, ONE_DECIMAL))
    else:
        lines.append(m.count_only("Did not provide a location", missing))
    return Section(
        "region", dim.label if dim else "Region", ONE_DECIMAL, m.note(dim, "participants", ONE_DECIMAL), tuple(lines)
    )


def _lived_experience(m: _Maker) -> Section:
    dim = m.dim("lived_experience")
    rows = {row.category: row for row in m.rows(dim)}
    lines = []
    if m.base == "profiled":
        yes = rows.get("yes")
        if yes is not None:
            lines.append(m.line(yes.label, yes.count, dim, ONE_DECIMAL))
        not_yes = m.minus(m.answer.profiled, yes.count) if yes is not None else None
        lines.append(m.line("Did not identify any lived experience", not_yes, dim, ONE_DECIMAL))
    else:
        lines += [m.line(row.label, row.count, dim, ONE_DECIMAL) for row in rows.values()]
        skipped = m.minus(m.answer.profiled, dim.answered) if dim else None
        lines.append(m.count_only("Declined or did not answer", skipped))
    title = dim.label if dim else "Lived experience"
    return Section("lived_experience", title, ONE_DECIMAL, m.note(dim, "participants", ONE_DECIMAL), tuple(lines))


def _race(m: _Maker) -> Section:
    dim = m.dim("race_ethnicity")
    lines = []
    for row in m.rows(dim):
        lines.append(m.line(row.label, row.count, dim, ONE_DECIMAL))
        if row.category == "white" and row.alone is not None:
            lines.append(m.line("Identified only as white", row.alone, dim, ONE_DECIMAL))
    note = m.note(dim, "people with lived experience", ONE_DECIMAL) + " Several could be chosen."
    return Section("race_ethnicity", "Race/ethnicity of people with lived experience", ONE_DECIMAL, note, tuple(lines))


def _gender(m: _Maker) -> Section:
    dim = m.dim("gender")
    groups = m.dim(GENDER_GROUPS)
    together = next((r for r in m.rows(groups) if r.category == TRANS_OR_NON_BINARY), None)
    lines, placed = [], together is None
    for row in m.rows(dim):
        if together is not None and row.category in ONE_FIGURE:
            if not placed:  # the one figure stands where the plan lists the first of the two
                lines.append(m.line(together.label, together.count, dim, WHOLE))
                placed = True
            continue
        lines.append(m.line(row.label, row.count, dim, WHOLE))
    if together is not None and not placed:
        lines.append(m.line(together.label, together.count, dim, WHOLE))
    note = m.note(dim, "people with lived experience", WHOLE) + " Several could be chosen"
    note += (
        f"; “{together.label}” counts each person who chose either once."
        if together is not None
        else f"; the plan has no {GENDER_GROUPS}, so transgender and non-binary are shown apart."
    )
    return Section("gender", "Gender of people with lived experience", WHOLE, note, tuple(lines))


def _simple(m: _Maker, key: str, dimension: str, title: str) -> Section:
    dim = m.dim(dimension)
    lines = tuple(m.line(row.label, row.count, dim, WHOLE) for row in m.rows(dim))
    return Section(key, title, WHOLE, m.note(dim, "people with lived experience", WHOLE), lines)


def _terms(m: _Maker) -> Section:
    dim = m.dim("experience_terms")
    lines = tuple(
        m.line("Another term of their own", row.count, dim, WHOLE)
        if row.category == ANOTHER_TERM
        else m.line(their_term(row.label), row.count, dim, WHOLE, own_term=True)
        for row in m.rows(dim)
    )
    note = (
        m.note(dim, "people with lived experience", WHOLE)
        + " Each term is the participant's own, shown in quotes; several could be chosen."
    )
    title = "The terms people with lived experience use for their own experience"
    return Section("experience_terms", title, WHOLE, note, lines)


def _roles(m: _Maker) -> Section:
    dim = m.dim("professional_roles")
    identified = dim.answered if dim else None
    first = (
        m.line("Identified a professional role", identified, dim, WHOLE)
        if m.base == "profiled"
        else m.count_only("Identified a professional role", identified)
    )
    lines = (first, *(m.line(row.label, row.count, dim, WHOLE) for row in m.rows(dim)))
    note = m.note(dim, "people with lived experience", WHOLE) + " Several could be chosen."
    return Section("professional_roles", "Professional roles of people with lived experience", WHOLE, note, lines)


def _advisory(m: _Maker) -> Section:
    dim = m.dim("lived_experience")
    yes = next((r for r in m.rows(dim) if r.category == "yes"), None)
    lines = (
        m.count_only("Members", m.answer.participants),
        m.line(yes.label if yes else "People with lived experience", yes.count if yes else None, dim, WHOLE),
    )
    return Section("advisory", "Process Advisory Group", WHOLE, m.note(dim, "members", WHOLE), lines)
