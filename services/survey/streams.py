"""Attach to the event log's streams, whoever is allowed to declare them.

Locally (``engage up``, tests) the service's NATS user may manage streams, so it declares
them with ``shared.bus.ensure_streams``. In a real deployment (deploy/nats) the survey
user may publish only its own subjects: the admin user creates the streams at deploy
time, and the service only checks the event log is there.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError as JsNotFound

from shared.bus import ensure_streams
from shared.errors import ConfigError
from shared.settings import Settings

_POLL_SECONDS = 0.05


def _denied_stream_api(nc: Client) -> bool:
    # nats-py reports a permissions violation only through the error callback and
    # ``last_error``; the request itself would wait out its whole timeout.
    text = str(nc.last_error or "").lower()
    return "permissions violation" in text and "$js.api.stream." in text


async def attach_streams(nc: Client, js: JetStreamContext, settings: Settings) -> None:
    """Declare the streams if this user may; otherwise require that the event log exists."""
    declaring = asyncio.create_task(ensure_streams(js, settings))
    while not declaring.done():
        await asyncio.wait({declaring}, timeout=_POLL_SECONDS)
        if not declaring.done() and _denied_stream_api(nc):
            declaring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await declaring
            break
    else:
        declaring.result()  # declared, or a real failure to report
        return
    try:
        await js.stream_info(settings.stream_name)
    except JsNotFound as exc:
        raise ConfigError(
            f"the stream {settings.stream_name} does not exist and this NATS user may not create it: "
            "create the streams at deploy time with the admin user (see deploy/README.md)"
        ) from exc
