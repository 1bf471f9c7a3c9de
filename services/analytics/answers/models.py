"""The typed answers: what /coverage and /coverage/over-time say, and what the dashboard, the
``engage coverage`` command and the export read. Pure (pydantic only).

A shown count is an ``int``. For coordinators every count is rounded to a multiple of k
(see ``answers.suppression``) and a count rounded to 0 is shown as ``"<k"``: then a shown
``p`` means the true count lies in ``[p-k+1, p+k-1]`` and ``"<k"`` means 0 to k-1.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.status_events import Status

Shown = int | str


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Target(_Answer):
    """A category's target: a share of those who answered (percent) or a minimum count."""

    kind: str = Field(description="`goal` (the coordinators' aim) or `benchmark` (a population figure).")
    source: str = Field(description="Where the number comes from.")
    vintage: str | None = Field(None, description="The year or edition of the source, if given.")
    share: float | None = Field(None, description="Target share in percent, one decimal.")
    base: str = Field("answered", description="A share target's base: `answered` or `profiled` (see CategoryRow).")
    min_count: int | None = Field(None, description="Target minimum number of participants.")


class CategoryRow(_Answer):
    """One category of a dimension (see README, "Reading a coverage row")."""

    category: str
    label: str
    count: Shown = Field(description="Participants in the category.")
    alone: Shown | None = Field(description="Multi-select only: participants who chose this and nothing else.")
    share: float | None = Field(description="Percent of those who answered the question, one decimal, half up.")
    share_of_profiled: float | None = Field(
        None,
        description="Percent of everyone who gave a profile (those who declined or skipped the question "
        "included), one decimal, half up: the base of the 2018 report's regional shares.",
    )
    interval: tuple[float, float] | None = Field(description="Wilson 95% interval of the share, in percent.")
    target: Target | None
    ratio: float | None = Field(description="Representation ratio: share / target share, or count / minimum.")
    status: Status
    needed: int | None = Field(description="Under-reached: the fewest more participants that reach the threshold.")
    needed_is_lower_bound: bool = Field(
        description="`needed` was judged from rounded numbers: the least any value they allow needs."
    )


class UnderReached(CategoryRow):
    """An under-reached category, with the dimension it belongs to."""

    dimension: str
    dimension_label: str


class DimensionAnswer(_Answer):
    dimension: str
    label: str
    multi_select: bool
    derived: bool = Field(
        description="Built from profile answers (e.g. the mandated groups): all participants are its denominator."
    )
    answered: Shown
    declined: Shown
    not_answered: Shown
    categories: list[CategoryRow]


class Freshness(_Answer):
    """Which stream sequence an answer reflects, and how far behind the log that is."""

    sequence: int = Field(description="The stream sequence the numbers reflect.")
    stream_sequence: int = Field(description="The stream's last sequence when answered.")
    behind: int = Field(description="Events on the log not yet counted.")
    projected_at: datetime | None = Field(description="When the numbers last moved (a replay: when it was read).")
    answered_at: datetime


class Replayed(Freshness):
    """The numbers as they stood at a moment, from the read models at ``sequence``."""

    as_of: datetime = Field(description="The moment asked about.")
    unreadable: int = Field(description="Events the projector could not read and parked: in no count, then or now.")


class PlanInfo(_Answer):
    """The plan the answer is judged against."""

    name: str = Field(description="The process's name, as reports show it.")
    threshold: float = Field(description="The representation ratio below which a category falls short.")


class Term(_Answer):
    """One condition of a segment."""

    dimension: str = Field(description="A profile question (e.g. `lived_experience`), a derived group, or `channel`.")
    category: str = Field(description="A category, `declined`, `not_answered`, or a channel.")
    label: str = Field(description="How the plan names it.")


class SegmentInfo(_Answer):
    """The participants the answer is restricted to: those who meet every term."""

    key: str = Field(
        description="The segment in its one canonical spelling, e.g. `lived_experience:yes,region:central`."
    )
    label: str = Field(description="The terms' labels, joined.")
    terms: list[Term]


class Suppression(_Answer):
    k: int = Field(description="The rounding base: counts are multiples of k, and a count below k is shown as `<k`.")
    applied: bool = Field(description="Whether the numbers are protected (coordinators) or exact (analysts).")
    method: str = Field(
        description="`rounded`: unbiased random rounding to base k, the same for the same people however asked, "
        "taken from a release; `none`: exact numbers."
    )
    release: int | None = Field(
        None, description="Rounded answers: the log sequence of the release the numbers come from."
    )
    release_number: int | None = Field(
        None,
        description="Rounded answers: the release's number; between releases n and n+j exactly "
        "j x `release_every` participants changed.",
    )
    release_every: int | None = Field(
        None, description="Rounded answers: a new release is cut once this many participants have changed."
    )


class CoverageAnswer(_Answer):
    """Who has been heard from, per dimension and category, against the plan."""

    process_id: str
    plan: PlanInfo | None
    segment: SegmentInfo | None
    as_of: Replayed | Freshness
    suppression: Suppression
    participants: Shown
    profiled: Shown = Field(description="Participants who gave a profile (answered or declined any question).")
    engagements: Shown
    engagements_by_channel: dict[str, Shown]
    people_by_channel: dict[str, Shown] = Field(description="Participants who took part through each channel.")
    first_event: datetime | None
    last_event: datetime | None
    under_reached: list[UnderReached] = Field(description="Every under-reached category, the furthest behind first.")
    dimensions: list[DimensionAnswer] = Field(description="In the plan's order.")

    def row(self, dimension: str, category: str) -> CategoryRow | None:
        """One category's row, if the answer has it."""
        for dim in self.dimensions:
            if dim.dimension == dimension:
                return next((row for row in dim.categories if row.category == category), None)
        return None


class Period(_Answer):
    period: str = Field(description="The day, or the Monday that starts the week (ISO date).")
    engagements: dict[str, Shown] = Field(description="Per channel.")
    participants_reached: dict[str, Shown] = Field(description="Participants first reached, per channel.")
    total_engagements: Shown
    total_participants_reached: Shown


class OverTimeAnswer(_Answer):
    """Participation per period and channel."""

    process_id: str
    segment: SegmentInfo | None = None
    by: str
    timezone: str
    as_of: Freshness
    suppression: Suppression
    periods: list[Period]
