"""The interview lifecycle as pure rules: given the last thing that happened, may we act?

An interview is open while scheduled or rescheduled. Cancelled, no-show and completed are
final: the record of what happened never changes, so a correction is a new interview.
No I/O here, so the rules are tested on their own.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What a coordinator can do to an open interview."""

    reschedule = "reschedule"
    cancel = "cancel"
    no_show = "no-show"
    complete = "complete"


OPEN_STATES = frozenset({"InterviewScheduled", "InterviewRescheduled"})

# Final event type -> (how the interview ended, the adjective for "a ... interview").
FINAL_STATES: dict[str, tuple[str, str]] = {
    "InterviewCancelled": ("was cancelled", "a cancelled interview"),
    "InterviewNoShow": ("was a no-show", "a no-show interview"),
    "InterviewCompleted": ("was completed", "a completed interview"),
}

# The verb in "cannot be ...", and the status an allowed action leads to.
_VERB = {
    Action.reschedule: "rescheduled",
    Action.cancel: "cancelled",
    Action.no_show: "marked a no-show",
    Action.complete: "completed",
}
STATUS_AFTER = {
    Action.reschedule: "scheduled",
    Action.cancel: "cancelled",
    Action.no_show: "no_show",
    Action.complete: "completed",
}
EVENT_TYPE = {
    Action.reschedule: "InterviewRescheduled",
    Action.cancel: "InterviewCancelled",
    Action.no_show: "InterviewNoShow",
    Action.complete: "InterviewCompleted",
}
_STATUS_OF = {
    "InterviewScheduled": "scheduled",
    "InterviewRescheduled": "scheduled",
    "InterviewCancelled": "cancelled",
    "InterviewNoShow": "no_show",
    "InterviewCompleted": "completed",
}


def status_of(last_event_type: str) -> str:
    """The interview's status after ``last_event_type`` ("unknown" for anything else)."""
    return _STATUS_OF.get(last_event_type, "unknown")


def is_final(last_event_type: str) -> bool:
    return last_event_type in FINAL_STATES


def refusal(interview_id: str, last_event_type: str, action: Action) -> str | None:
    """Why ``action`` is not allowed after ``last_event_type``, or None when it is allowed.

    The reason is written for the coordinator reading the 409, e.g.
    "interview iv-… was cancelled; a cancelled interview cannot be completed".
    """
    if last_event_type in OPEN_STATES:
        return None
    if last_event_type in FINAL_STATES:
        how, which = FINAL_STATES[last_event_type]
        return f"interview {interview_id} {how}; {which} cannot be {_VERB[action]}"
    # Only interview events are written on an interview's subject; anything else means
    # the log holds something intake did not write, and guessing would be worse.
    return f"interview {interview_id} has an unexpected history ({last_event_type}); it cannot be {_VERB[action]}"
