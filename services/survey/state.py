"""The running survey service's state, typed, and the dependency that hands it to a route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from shared.bus import EventLog
from shared.settings import Settings


@dataclass(frozen=True)
class SurveyState:
    """Settings and the event log: the survey has no database, the log is its only store.

    Made once by the app's lifespan and kept on ``app.state.survey``; routes get it typed
    through ``SurveyDep`` instead of reading loose attributes off ``app.state``.
    """

    settings: Settings
    log: EventLog


def survey_state(request: Request) -> SurveyState:
    """The running survey's state (a dependency); only there while the app is started."""
    state = getattr(request.app.state, "survey", None)
    if not isinstance(state, SurveyState):
        raise RuntimeError("survey is not started: its lifespan has not set app.state.survey")
    return state


SurveyDep = Annotated[SurveyState, Depends(survey_state)]
