"""Status changes analytics announces: a community becoming under-reached, or reached.

They live on ``status.<process>.<dimension>.<category>`` (stream ENGAGEMENT_STATUS), outside
the event log, so the projector never reads what it writes. Other services can react to
them (e.g. point outreach at a region). They carry ratios and "needed", never counts of
participants.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.events import ProcessId, Timestamp


class Status(StrEnum):
    """A category's status against its target: the words every answer and announcement use."""

    UNDER_REACHED = "under-reached"  # below the threshold, and not by chance (the Wilson bound is below target)
    WATCH = "watch"  # below the threshold, not yet significant
    ON_TRACK = "on-track"
    NO_TARGET = "no-target"  # the plan sets no target: nothing to judge, nothing to announce
    # Coordinators' rounded numbers allow values on both sides of the target: look closer. Never
    # announced (announcements are judged on exact numbers), always listed among the under-reached.
    ATTENTION = "attention"


TYPE_OF_STATUS: dict[Status, str] = {
    Status.UNDER_REACHED: "CommunityUnderReached",
    Status.ON_TRACK: "CommunityReached",
    Status.WATCH: "CommunityOnWatch",
}


class CommunityStatusChanged(BaseModel):
    """A category's status against its target changed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["CommunityUnderReached", "CommunityReached", "CommunityOnWatch"] = Field(
        description="CommunityUnderReached: now under-reached; CommunityReached: now on track; "
        "CommunityOnWatch: below the threshold, not yet significant."
    )
    event_id: str = Field(description="Unique per change; also the Nats-Msg-Id.")
    process_id: ProcessId
    dimension: str = Field(description="The plan's dimension, e.g. `region`.")
    category: str = Field(description="The category code, e.g. `northwest`.")
    label: str = Field(description="The plan's display label for the category.")
    status: Status
    previous: Status | None = Field(description="The status announced before, if any.")
    ratio: float | None = Field(description="Representation ratio (share / target, or count / minimum).")
    needed: int | None = Field(description="Fewest more participants that bring the ratio to the threshold.")
    sequence: int = Field(ge=0, description="The event-log sequence the judgement reflects.")
    judged_at: Timestamp

    @field_validator("status", "previous")
    @classmethod
    def _announced(cls, value: Status | None) -> Status | None:
        if value is Status.NO_TARGET:
            raise ValueError("a category without a target has no status to announce")
        if value is Status.ATTENTION:
            raise ValueError("'attention' belongs to rounded numbers; announcements are judged on exact ones")
        return value

    @property
    def subject(self) -> str:
        return f"status.{self.process_id}.{self.dimension}.{self.category}"
