"""The analytics app's state, typed: what its routes may use."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from services.analytics.answers.queries import Sources
from services.analytics.engine.projector import Projector


@dataclass(frozen=True)
class AnalyticsState:
    """Set on ``app.state.analytics`` when the app starts."""

    sources: Sources  # where answers come from
    projector: Projector  # its pulse beats after every commit


def state_of(request: Request) -> AnalyticsState:
    found: AnalyticsState = request.app.state.analytics
    return found
