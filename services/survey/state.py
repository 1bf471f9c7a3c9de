"""The running survey service's state, typed, and the dependency that hands it to a route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from shared.bus import ServiceState
from shared.http import app_state_dependency


@dataclass(frozen=True)
class SurveyState(ServiceState):
    """Settings and the event log: the survey has no database, the log is its only store.

    Kept on ``app.state.survey``; routes get it through ``SurveyDep``.
    """


SurveyDep = Annotated[SurveyState, Depends(app_state_dependency("survey", SurveyState))]
