"""The interview lifecycle as pure rules: given the last thing that happened, may we act?

An interview is open while scheduled or rescheduled. Cancelled, no-show and completed are
final: the record of what happened never changes, so a correction is a new interview.
No I/O here, so the rules are tested on their own.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


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


class _Effect(NamedTuple):
    verb: str  # as in "cannot be ..."
    status: str  # the status an allowed action leads to
    event_type: str  # the event it writes


_EFFECTS = {
    Action.reschedule: _Effect("rescheduled", "scheduled", "InterviewRescheduled"),
    Action.cancel: _Effect("cancelled", "cancelled", "InterviewCancelled"),
    Action.no_show: _Effect("marked a no-show", "no_show", "InterviewNoShow"),
    Action.complete: _Effect("completed", "completed", "InterviewCompleted"),
}
_VERB = {action: effect.verb for action, effect in _EFFECTS.items()}
STATUS_AFTER = {action: effect.status for action, effect in _EFFECTS.items()}
EVENT_TYPE = {action: effect.event_type for action, effect in _EFFECTS.items()}


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
