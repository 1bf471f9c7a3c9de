"""The typed answers: what /coverage and /coverage/over-time say, and what the dashboard, the
``engage coverage`` command and the export read. Pure (pydantic only).

A shown count is an ``int``, or for coordinators ``"<k"`` (a count from 1 to k-1) or
``"suppressed"`` (a cell of k or more hidden only to protect a small one).
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
    min_count: int | None = Field(None, description="Target minimum number of participants.")


class CategoryRow(_Answer):
    """One category of a dimension (see README, "Reading a coverage row")."""

    category: str
    label: str
    count: Shown = Field(description="Participants in the category.")
    alone: Shown | None = Field(description="Multi-select only: participants who chose this and nothing else.")
    share: float | None = Field(description="Percent of those who answered the question, one decimal, half up.")
    interval: tuple[float, float] | None = Field(description="Wilson 95% interval of the share, in percent.")
    target: Target | None
    ratio: float | None = Field(description="Representation ratio: share / target share, or count / minimum.")
    status: Status
    needed: int | None = Field(description="Under-reached: the fewest more participants that reach the threshold.")
    needed_is_lower_bound: bool = Field(description="`needed` was judged from a hidden count: at least this many.")


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
    """The numbers as they stood at a moment, replayed from the log (never behind it)."""

    as_of: datetime = Field(description="The moment asked about.")
    unreadable: int = Field(description="Events the replay could not read (the projector parks them too).")


class PlanInfo(_Answer):
    """The plan the answer is judged against."""

    name: str = Field(description="The process's name, as reports show it.")
    threshold: float = Field(description="The representation ratio below which a category falls short.")


class SegmentInfo(_Answer):
    """The participants the answer is restricted to: those in one category of another dimension."""

    dimension: str = Field(description="A profile question, e.g. `lived_experience`.")
    category: str = Field(description="One of its categories, e.g. `yes`.")
    label: str = Field(description="The category's label in the plan.")


class Suppression(_Answer):
    k: int = Field(description="Counts from 1 to k-1 are hidden.")
    applied: bool = Field(description="Whether small counts are hidden in this answer (coordinators).")


class CoverageAnswer(_Answer):
    """Who has been heard from, per dimension and category, against the plan."""

    process_id: str
    plan: PlanInfo | None
    segment: SegmentInfo | None
    as_of: Replayed | Freshness
    suppression: Suppression
    participants: Shown
    engagements: Shown
    engagements_by_channel: dict[str, Shown]
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
    by: str
    timezone: str
    as_of: Freshness
    suppression: Suppression
    periods: list[Period]
