"""The interview lifecycle rules, on their own: open interviews accept every action,
finished ones accept none, and the refusal says why in the coordinator's words."""

from __future__ import annotations

import pytest

from services.intake.interviews import (
    EVENT_TYPE,
    FINAL_STATES,
    OPEN_STATES,
    STATUS_AFTER,
    Action,
    is_final,
    refusal,
)

IV = "iv-0123456789abcdef0123"


@pytest.mark.parametrize("last", sorted(OPEN_STATES))
@pytest.mark.parametrize("action", list(Action))
def test_open_interview_allows_every_action(last: str, action: Action) -> None:
    assert refusal(IV, last, action) is None


@pytest.mark.parametrize("last", sorted(FINAL_STATES))
@pytest.mark.parametrize("action", list(Action))
def test_final_interview_refuses_every_action(last: str, action: Action) -> None:
    reason = refusal(IV, last, action)
    assert reason is not None
    assert reason.startswith(f"interview {IV} ")


@pytest.mark.parametrize(
    ("last", "action", "reason"),
    [
        (
            "InterviewCancelled",
            Action.complete,
            f"interview {IV} was cancelled; a cancelled interview cannot be completed",
        ),
        (
            "InterviewCancelled",
            Action.reschedule,
            f"interview {IV} was cancelled; a cancelled interview cannot be rescheduled",
        ),
        (
            "InterviewCancelled",
            Action.cancel,
            f"interview {IV} was cancelled; a cancelled interview cannot be cancelled",
        ),
        (
            "InterviewCompleted",
            Action.cancel,
            f"interview {IV} was completed; a completed interview cannot be cancelled",
        ),
        (
            "InterviewCompleted",
            Action.complete,
            f"interview {IV} was completed; a completed interview cannot be completed",
        ),
        (
            "InterviewCompleted",
            Action.no_show,
            f"interview {IV} was completed; a completed interview cannot be marked a no-show",
        ),
        ("InterviewNoShow", Action.complete, f"interview {IV} was a no-show; a no-show interview cannot be completed"),
        (
            "InterviewNoShow",
            Action.reschedule,
            f"interview {IV} was a no-show; a no-show interview cannot be rescheduled",
        ),
    ],
)
def test_refusal_reasons(last: str, action: Action, reason: str) -> None:
    assert refusal(IV, last, action) == reason


def test_unexpected_history_is_refused_not_guessed() -> None:
    reason = refusal(IV, "GatheringHeld", Action.complete)
    assert reason == f"interview {IV} has an unexpected history (GatheringHeld); it cannot be completed"


def test_final_and_open_states_cover_every_interview_event() -> None:
    assert OPEN_STATES | set(FINAL_STATES) == {
        "InterviewScheduled",
        "InterviewRescheduled",
        "InterviewCancelled",
        "InterviewNoShow",
        "InterviewCompleted",
    }
    assert not OPEN_STATES & set(FINAL_STATES)


@pytest.mark.parametrize("action", list(Action))
def test_only_rescheduling_leaves_an_interview_open(action: Action) -> None:
    """Each action's event is final but a reschedule's, and its status says so."""
    event_type = EVENT_TYPE[action]
    assert is_final(event_type) is (action is not Action.reschedule)
    assert (STATUS_AFTER[action] == "scheduled") is (action is Action.reschedule)
