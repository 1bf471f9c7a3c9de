"""The bus, declared once: the streams, the subjects, and the one way to publish an event.

``ENGAGEMENT`` (subjects ``engagement.>``) is the event log and the source of truth.
What analytics writes itself lives on streams of its own, so the projector never reads
what it writes: dead letters on ``deadletter.>``, status changes on ``status.>``.
"""

from __future__ import annotations

import asyncio
import contextlib

from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError as JsNotFound, ServiceUnavailableError

from shared.errors import ConfigError, ConflictError, PublishError
from shared.events import Envelope
from shared.settings import Settings
from shared.upcasting import decode_event, encode_event

DEADLETTER_STREAM = "ENGAGEMENT_DEADLETTER"
STATUS_STREAM = "ENGAGEMENT_STATUS"
WRONG_LAST_SEQUENCE = 10071


def stream_configs(settings: Settings) -> list[StreamConfig]:
    keep_forever = dict(retention=RetentionPolicy.LIMITS, discard=DiscardPolicy.OLD, storage=StorageType.FILE,
                        num_replicas=settings.stream_replicas)
    return [
        StreamConfig(
            name=settings.stream_name,
            subjects=["engagement.>"],
            duplicate_window=float(settings.dedupe_window_seconds),
            description="The engagement event log: the source of truth.",
            **keep_forever,
        ),
        StreamConfig(
            name=DEADLETTER_STREAM,
            subjects=["deadletter.>"],
            duplicate_window=float(settings.dedupe_window_seconds),
            description="Events analytics could not read, each with the reason.",
            **keep_forever,
        ),
        StreamConfig(
            name=STATUS_STREAM,
            subjects=["status.>"],
            duplicate_window=float(settings.dedupe_window_seconds),
            description="Status changes analytics derives (e.g. a community becoming under-reached).",
            **keep_forever,
        ),
    ]


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create the streams if missing; an existing stream keeps its data and gets this config."""
    for config in stream_configs(settings):
        try:
            await js.stream_info(config.name)
        except JsNotFound:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


def _denied_stream_api(nc: Client) -> bool:
    # nats-py reports a permissions violation only through the error callback and
    # ``last_error``; the request itself would wait out its whole timeout.
    text = str(nc.last_error or "").lower()
    return "permissions violation" in text and "$js.api.stream." in text


async def attach_streams(nc: Client, settings: Settings) -> JetStreamContext:
    """Declare the streams if this NATS user may; otherwise require that the event log exists.

    Locally (``engage up``, tests) every service may manage streams. In a real deployment
    (deploy/nats) services may publish only their own subjects: the admin user creates
    the streams at deploy time, and a service only checks that the event log is there.
    """
    js = nc.jetstream()
    declaring = asyncio.create_task(ensure_streams(js, settings))
    while not declaring.done():
        await asyncio.wait({declaring}, timeout=0.05)
        if not declaring.done() and _denied_stream_api(nc):
            declaring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await declaring
            break
    else:
        declaring.result()  # declared, or a real failure to report
        return js
    try:
        await js.stream_info(settings.stream_name)
    except JsNotFound as exc:
        raise ConfigError(
            f"the stream {settings.stream_name} does not exist and this NATS user may not create it: "
            "create the streams at deploy time with the admin user (see deploy/README.md)"
        ) from exc
    return js


def make_broker(nats_url: str) -> NatsBroker:
    """A FastStream broker for one service; the streams are declared by ``ensure_streams``."""
    servers = [u.strip() for u in nats_url.split(",") if u.strip()]  # a cluster: several seed URLs
    return NatsBroker(servers, connect_timeout=5, max_reconnect_attempts=-1, logger=None)


async def publish_event(
    broker: NatsBroker,
    event: Envelope,
    settings: Settings,
    *,
    expected_last_subject_sequence: int | None = None,
) -> tuple[int, bool]:
    """Store ``event`` on the log and wait for JetStream's PubAck.

    The event id is the ``Nats-Msg-Id``, so a retry inside the dedupe window is stored
    once. ``expected_last_subject_sequence`` makes the write conditional on nobody else
    having written to this aggregate since (0: the aggregate must be new).
    Returns (stream sequence, whether it was a duplicate).
    """
    headers = {"Nats-Msg-Id": str(event.event_id), "Engage-Type": event.type}
    if expected_last_subject_sequence is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_sequence)
    try:
        ack = await broker.publish(
            encode_event(event),
            event.subject,
            headers=headers,
            stream=settings.stream_name,
            timeout=settings.publish_timeout_seconds,
            correlation_id=event.correlation_id,
        )
    except BadRequestError as exc:
        if exc.err_code == WRONG_LAST_SEQUENCE:
            raise ConflictError("someone else changed this record at the same moment; reload and try again") from exc
        raise PublishError(f"the event log refused the event: {exc.description}") from exc
    except (NatsTimeout, NoRespondersError, ServiceUnavailableError, TimeoutError) as exc:
        raise PublishError("the event log did not confirm the write in time; nothing was stored") from exc
    return ack.seq, bool(ack.duplicate)


async def last_event_on(js: JetStreamContext, settings: Settings, subject: str) -> tuple[Envelope, int] | None:
    """The newest event on ``subject`` and its stream sequence, or None if there is none."""
    try:
        raw = await js.get_last_msg(settings.stream_name, subject)
    except JsNotFound:
        return None
    return decode_event(raw.data or b""), raw.seq or 0

