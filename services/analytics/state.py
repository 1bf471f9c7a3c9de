"""The analytics app's state, typed: what its routes may use."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.analytics.answers.queries import Sources
from services.analytics.dashboard.limits import StreamSlots, Throttle
from services.analytics.engine.projector import Projector
from shared.http import app_state


@dataclass(frozen=True)
class AnalyticsState:
    """Set on ``app.state.analytics`` when the app starts."""

    sources: Sources  # where answers come from
    projector: Projector  # its pulse beats after every commit
    sign_ins: Throttle = field(default_factory=Throttle)  # refused dashboard sign-ins per client
    streams: StreamSlots = field(default_factory=StreamSlots)  # open dashboard streams


state_of = app_state("analytics", AnalyticsState)
"""``state_of(request)``: the started app's state, typed (the same accessor intake and survey use)."""
