"""The bus, declared once: the streams, the subjects, the one way to publish an event, and
the one way a service writes to an aggregate (``EventLog``).

``ENGAGEMENT`` (subjects ``engagement.>``) is the event log and the source of truth.
What analytics writes itself lives on streams of its own, so the projector never reads
what it writes: dead letters on ``deadletter.>``, status changes on ``status.>``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import nats
import nkeys  # nats-py's own dependency for NKeys
from faststream.nats import NatsBroker
from faststream.security import BaseSecurity
from nats.aio.client import Client
from nats.errors import (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
)
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RawStreamMsg, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NoStreamResponseError, ServiceUnavailableError
from nats.js.errors import NotFoundError as JsNotFound

from shared import metrics
from shared.errors import ConfigError, ConflictError, EventTooLarge, NotFoundError, PublishError
from shared.events import MAX_EVENT_BYTES, Envelope
from shared.logging import get_logger
from shared.settings import Settings
from shared.upcasting import decode_event, encode_event

DEADLETTER_STREAM = "ENGAGEMENT_DEADLETTER"
STATUS_STREAM = "ENGAGEMENT_STATUS"
WRONG_LAST_SEQUENCE = 10071
REQUEST_HEADER = "Engage-Request"
# The stream could not store a write: e.g. at one of its limits (discard new), or out of disk.
STORE_FAILED = 10077
# The log did not answer (down, unreachable, or too slow): nothing was stored, a retry is safe.
_UNAVAILABLE = (
    NatsTimeout,
    NoRespondersError,
    NoStreamResponseError,  # in a cluster, while the stream elects a new leader
    ServiceUnavailableError,
    TimeoutError,
    ConnectionClosedError,
    ConnectionReconnectingError,
    OutboundBufferLimitError,  # publishing while disconnected: refused, never buffered (see make_broker)
)
RETRY = "; retry with the same Idempotency-Key (this answer's Idempotency-Key header)"
_T = TypeVar("_T")
log = get_logger("engage.bus")


def stream_configs(settings: Settings) -> list[StreamConfig]:
    """The streams as engage expects them.

    Nothing ever leaves a stream by itself: no limits, and should one be set, a full stream
    refuses new writes (discard new) instead of dropping the oldest events. Nobody can
    delete a message or purge a stream through the API (deny delete, deny purge: once
    set, the server never lets them be turned off).
    """

    def kept_forever(name: str, subjects: str, description: str) -> StreamConfig:
        return StreamConfig(
            name=name,
            subjects=[subjects],
            description=description,
            duplicate_window=float(settings.dedupe_window_seconds),
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.NEW,
            deny_delete=True,
            deny_purge=True,
            # Reads of one subject's last message go to `$JS.API.DIRECT.GET.<stream>.<subject>`, whose
            # subject names what is read, so NATS permissions can limit a service to its own subjects.
            allow_direct=True,
            storage=StorageType.FILE,
            num_replicas=settings.stream_replicas,
        )

    return [
        kept_forever(settings.stream_name, "engagement.>", "The engagement event log: the source of truth."),
        kept_forever(DEADLETTER_STREAM, "deadletter.>", "Events analytics could not read, each with the reason."),
        kept_forever(
            STATUS_STREAM, "status.>", "Status changes analytics derives (e.g. a community becoming under-reached)."
        ),
    ]


def _value(v: object) -> object:
    return v.value if isinstance(v, Enum) else v


def _limit(v: float | None) -> float | None:
    # The server reports "no limit" as -1 (counts, bytes) or 0 (age); engage's config leaves it unset.
    return None if v is None or v <= 0 else v


def stream_differences(expected: StreamConfig, actual: StreamConfig) -> tuple[list[str], list[str]]:
    """How an existing stream differs from engage's config: (what can lose stored events, the rest).

    Each difference reads ``setting: the stream has X, engage expects Y``. A stream that can
    lose stored events by itself (retention other than limits, memory storage, a limit that
    silently drops the oldest events, or not holding engage's subjects) breaks the promise
    that the log is the truth; the rest (replicas, dedupe window, discard without a limit,
    the deny flags) weakens a guarantee without losing what is stored.
    """
    unsafe: list[str] = []
    other: list[str] = []

    def compare(setting: str, has: object, expects: object, into: list[str]) -> None:
        if _value(has) != _value(expects):
            into.append(f"{setting}: the stream has {_value(has)}, engage expects {_value(expects)}")

    compare("retention", actual.retention, expected.retention, unsafe)
    compare("storage", actual.storage, expected.storage, unsafe)
    limits = {
        "max_msgs": _limit(actual.max_msgs),
        "max_bytes": _limit(actual.max_bytes),
        "max_age": _limit(actual.max_age),
        "max_msgs_per_subject": _limit(actual.max_msgs_per_subject),
    }
    if limits["max_msgs_per_subject"] is not None and not actual.discard_new_per_subject:
        # A full subject drops its oldest events whatever the discard policy, unless told per subject.
        del limits["max_msgs_per_subject"]
        unsafe.append(
            f"max_msgs_per_subject: the stream has {actual.max_msgs_per_subject} without discard_new_per_subject, "
            "so a full subject drops its oldest events; engage expects no limit"
        )
    limited = {name: v for name, v in limits.items() if v is not None}
    if limited and _value(actual.discard) != DiscardPolicy.NEW.value:
        unsafe.append(
            f"discard: the stream has {_value(actual.discard)} with limits {limited}, so it drops its oldest "
            f"events when full; engage expects {_value(expected.discard)}"
        )
    else:
        compare("discard", actual.discard, expected.discard, other)
    missing = sorted(set(expected.subjects or []) - set(actual.subjects or []))
    if missing:
        unsafe.append(f"subjects: the stream has {actual.subjects}, engage expects {expected.subjects}")
    compare("deny_delete", actual.deny_delete, expected.deny_delete, other)
    compare("deny_purge", actual.deny_purge, expected.deny_purge, other)
    compare("allow_direct", bool(actual.allow_direct), bool(expected.allow_direct), other)
    if (actual.num_replicas or 1) < (expected.num_replicas or 1):  # more replicas than asked for only adds safety
        compare("num_replicas", actual.num_replicas, expected.num_replicas, other)
    compare("duplicate_window", actual.duplicate_window, expected.duplicate_window, other)
    return unsafe, other


def _check_existing(expected: StreamConfig, actual: StreamConfig) -> None:
    """Refuse a stream that differs from engage's configuration. Never change it.

    A service checks; only the admin identity (`engage streams`) changes a stream. A stream
    with fewer replicas than ``ENGAGE_STREAM_REPLICAS``, without deny delete/purge, with
    another dedupe window, or one that can lose stored events is refused with every difference
    named and the operator command that fixes it.
    """
    name = expected.name or ""
    unsafe, other = stream_differences(expected, actual)
    if unsafe:
        raise ConfigError(
            f"the stream {name} can lose stored events ({'; '.join(unsafe)}): engage will not use it. "
            f"An operator fixes it with the admin NATS user, e.g. `nats stream edit {name} --discard new` "
            "(retention and storage cannot be changed in place: create the stream anew and copy the events)"
        )
    if other:
        raise ConfigError(
            f"the stream {name} is not configured as engage expects ({'; '.join(other)}): engage will not use it. "
            "Services never change a stream; an operator brings it to engage's configuration with the admin "
            "NATS identity: `engage streams` (see deploy/README.md)"
        )


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create the streams that are missing; check those that exist, and never change them.

    An existing stream keeps its data and its configuration, whoever set it (in a cluster,
    the admin identity at deploy time, with its replicas). One that differs from engage's
    configuration is refused with a ConfigError naming every difference (``_check_existing``).
    """
    for config in stream_configs(settings):
        try:
            info = await js.stream_info(config.name or "")
        except JsNotFound:
            await js.add_stream(config)
        else:
            _check_existing(config, info.config)


async def apply_streams(js: JetStreamContext, settings: Settings) -> list[str]:
    """The admin's job (`engage streams`): create missing streams and bring existing ones to engage's config.

    Returns what was done, one line per stream. Nothing stored is ever dropped: a stream that
    can lose stored events is refused (``stream_differences``' unsafe list: retention and storage
    cannot change in place), and deny delete/purge, once on, can never be turned off. Replicas
    go up or down to ``ENGAGE_STREAM_REPLICAS`` (JetStream copies the data to new replicas).
    """
    done: list[str] = []
    for config in stream_configs(settings):
        name = config.name or ""
        try:
            info = await js.stream_info(name)
        except JsNotFound:
            await js.add_stream(config)
            done.append(f"{name}: created with {config.num_replicas} replica(s)")
            continue
        unsafe, _ = stream_differences(config, info.config)
        if unsafe:
            raise ConfigError(
                f"the stream {name} can lose stored events ({'; '.join(unsafe)}): `engage streams` will not "
                "change it in place; create the stream anew and copy the events (`engage backup`, `engage restore`)"
            )
        changed = [
            setting
            for setting in ("deny_delete", "deny_purge", "allow_direct", "num_replicas", "duplicate_window", "discard")
            if _value(getattr(info.config, setting)) != _value(getattr(config, setting))
        ]
        if changed:
            await js.update_stream(config)
            done.append(f"{name}: changed {', '.join(changed)}")
        else:
            done.append(f"{name}: already as engage expects")
    return done


def _denied_stream_api(nc: Client) -> bool:
    # nats-py reports a permissions violation only through the error callback and
    # ``last_error``; the request itself would wait out its whole timeout.
    text = str(nc.last_error or "").lower()
    return "permissions violation" in text and "$js.api.stream." in text


async def attach_streams(nc: Client, settings: Settings, needs: tuple[str, ...] = ()) -> JetStreamContext:
    """Declare the streams if this NATS user may; otherwise require that the streams it needs exist.

    Locally (``engage up``, tests) a service creates the streams that are missing; no
    service ever changes an existing one (``ensure_streams``). In a real deployment
    (deploy/nats) services may not create streams: the admin identity creates them at deploy
    time (`engage streams`), and a service checks that the event log and ``needs`` (the
    other streams it writes) are there and configured as engage expects, or refuses to start.
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
    wanted = {c.name: c for c in stream_configs(settings)}
    for name in (settings.stream_name, *needs):
        try:
            info = await js.stream_info(name)
        except JsNotFound as exc:
            raise ConfigError(
                f"the stream {name} does not exist and this NATS user may not create it: "
                "create the streams at deploy time with the admin identity, `engage streams` (see deploy/README.md)"
            ) from exc
        _check_existing(wanted[name], info.config)
    return js


def nats_servers(nats_url: str) -> list[str]:
    """The servers of ``ENGAGE_NATS_URL``: one URL, or a comma-separated seed list of every node."""
    return [u.strip() for u in nats_url.split(",") if u.strip()]


def inbox_prefix(who: str) -> str:
    """Where replies to ``who`` arrive: a prefix of its own, so no other NATS user may read them.

    deploy/nats/accounts.conf lets each user subscribe to its own prefix only (``_INBOX_intake.>``, ...).
    """
    return f"_INBOX_{who}"


def _valid_seed(text: str) -> bool:
    """Whether ``text`` is a whole NKey seed: its checksum holds (nkeys itself does not check it)."""
    raw = text.encode()
    try:
        decoded = base64.b32decode(raw + b"=" * (-len(raw) % 8))
        nkeys.from_seed(bytearray(raw))
    except (binascii.Error, nkeys.ErrInvalidSeed, nkeys.ErrInvalidPrefixByte, ValueError):
        return False
    return len(decoded) > 2 and bytes(nkeys.crc16_checksum(decoded[:-2])) == decoded[-2:]


def connect_options(settings: Settings, who: str) -> dict[str, Any]:
    """How ``who`` (intake, survey, analytics or admin) connects to NATS, as nats-py's keyword arguments.

    Its own inbox prefix; with ``ENGAGE_NATS_NKEY_SEED_FILE``, its NKey (the seed signs the server's
    challenge; the seed never leaves this process); with ``ENGAGE_NATS_CA_FILE``, TLS that trusts
    only that CA. A file that cannot be read is a ConfigError naming the variable.
    """
    options: dict[str, Any] = {"inbox_prefix": inbox_prefix(who)}
    seed = settings.nats_nkey_seed_file
    if seed is not None:
        try:
            text = seed.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"ENGAGE_NATS_NKEY_SEED_FILE={str(seed)!r}: cannot be read ({exc.strerror})") from None
        if not text.startswith("SU") or not _valid_seed(text):
            raise ConfigError(
                f"ENGAGE_NATS_NKEY_SEED_FILE={str(seed)!r}: not a user NKey seed, or a damaged one "
                "(a seed starts with 'SU' and its checksum holds; make one with `engage nkey`)"
            )
        options["nkeys_seed_str"] = text
    ca = settings.nats_ca_file
    if ca is not None:
        try:
            options["tls"] = ssl.create_default_context(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ENGAGE_NATS_CA_FILE={str(ca)!r}: not a readable CA certificate ({exc})") from None
    return options


async def close_nats(nc: Client) -> None:
    """Close ``nc``; a TLS connection whose close notice crossed the server's last data is closed all the same."""
    with contextlib.suppress(ssl.SSLError):
        await nc.close()


async def connect_nats(settings: Settings, who: str, url: str | None = None, **kwargs: Any) -> Client:
    """A plain nats-py connection for ``who`` to ``url`` (default ``ENGAGE_NATS_URL``), with its identity and TLS."""
    target = url or settings.nats_url
    if not target:
        raise ConfigError("ENGAGE_NATS_URL is not set: name the NATS server(s) of the event log")
    return await nats.connect(nats_servers(target), **connect_options(settings, who), **kwargs)


def make_broker(nats_url: str, settings: Settings, who: str) -> NatsBroker:
    """A FastStream broker for one service (``who``); the streams are declared by ``ensure_streams``.

    ``pending_size=0``: while the connection is down, nats-py refuses a publish
    (OutboundBufferLimitError, a 503) instead of keeping it in its reconnect buffer and
    sending it once NATS is back, long after the request was answered 503. A publish in
    flight when the connection drops can still reach the log after its 503: the answer's
    Idempotency-Key is what makes retrying it safe.
    """
    options = connect_options(settings, who)
    tls = options.pop("tls", None)
    return NatsBroker(
        nats_servers(nats_url),  # a cluster: every node, so the first connection needs only one of them up
        connect_timeout=5,
        max_reconnect_attempts=-1,
        logger=None,
        pending_size=0,
        security=BaseSecurity(ssl_context=tls) if tls is not None else None,
        **options,
    )


async def stop_broker(broker: NatsBroker) -> None:
    """Stop ``broker``, also while its NATS server is unreachable.

    FastStream drains the connection, which nats-py refuses while it is reconnecting; a
    service must still stop then. The connection is closed without draining: nothing is
    lost, since a write answered 2xx only after its PubAck. Closing may still fail to flush
    what a refused request left buffered for the dead server; that is dropped.
    """
    client = broker.connection
    try:
        await broker.stop()
    except (ConnectionReconnectingError, ConnectionClosedError):
        with contextlib.suppress(OSError):
            await client.close()
    except ssl.SSLError:
        pass  # a TLS connection's close may fail after it is closed (nats-py): nothing left to do


async def publish_event(
    broker: NatsBroker,
    event: Envelope,
    settings: Settings,
    *,
    expected_last_subject_sequence: int | None = None,
    expected_subjects: str | None = None,
    request: str | None = None,
) -> tuple[int, bool]:
    """Store ``event`` on the log and wait for JetStream's PubAck.

    The event id is the ``Nats-Msg-Id``, so a retry inside the dedupe window is stored
    once. ``expected_last_subject_sequence`` makes the write conditional on nobody else
    having written to this aggregate since (0: the aggregate must be new); ``expected_subjects``
    (a subject filter, wildcards allowed) checks that sequence on every subject it matches
    instead of the event's own (nats-server 2.11+). ``request`` is the
    fingerprint of the request that made the event (header ``Engage-Request``), so a retry
    can tell its own request from another one sent with the same key.
    Returns (stream sequence, whether it was a duplicate).
    """
    data = encode_event(event)
    if len(data) > MAX_EVENT_BYTES:  # the contract's bounds keep events far below this: a last line of defence
        raise EventTooLarge(f"the event would be {len(data):,} bytes; the event log takes at most {MAX_EVENT_BYTES:,}")
    headers = {"Nats-Msg-Id": str(event.event_id), "Engage-Type": event.type}
    if request is not None:
        headers[REQUEST_HEADER] = request
    if expected_last_subject_sequence is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_sequence)
        if expected_subjects is not None:
            headers["Nats-Expected-Last-Subject-Sequence-Subject"] = expected_subjects
    started = time.perf_counter()
    try:
        ack = await broker.publish(
            data,
            event.subject,
            headers=headers,
            stream=settings.stream_name,
            timeout=settings.publish_timeout_seconds,
            correlation_id=event.correlation_id,
        )
    except BadRequestError as exc:
        if exc.err_code == WRONG_LAST_SEQUENCE:
            metrics.WRITES.labels(event.type, "conflict").inc()
            raise ConflictError("someone else changed this record at the same moment; reload and try again") from exc
        metrics.PUBLISH_FAILURES.labels("refused").inc()
        raise PublishError(f"the event log refused the event: {exc.description}{RETRY}") from exc
    except ServiceUnavailableError as exc:
        metrics.PUBLISH_FAILURES.labels("full" if exc.err_code == STORE_FAILED else "unavailable").inc()
        if exc.err_code == STORE_FAILED:
            # discard new: a full log refuses the write rather than dropping its oldest events.
            raise PublishError(
                f"the event log could not store the event ({exc.description}); nothing was stored{RETRY}"
            ) from exc
        raise PublishError(f"the event log did not confirm the write in time{RETRY}") from exc
    except _UNAVAILABLE as exc:
        metrics.PUBLISH_FAILURES.labels("unavailable").inc()
        raise PublishError(f"the event log did not confirm the write in time{RETRY}") from exc
    metrics.WRITE_SECONDS.labels(event.type).observe(time.perf_counter() - started)
    metrics.WRITES.labels(event.type, "duplicate" if ack.duplicate else "stored").inc()
    return ack.seq, bool(ack.duplicate)


@dataclass(frozen=True)
class Stored:
    """An event the log holds: its id, its stream sequence, and whether this request was a retry."""

    event_id: str
    sequence: int
    replayed: bool


@dataclass(frozen=True)
class EventLog:
    """How intake and survey write to the log so that retries and races come out right.

    Each aggregate has its own subject, and a write is conditional on the subject's last
    sequence, so two people acting at once cannot both win. JetStream checks
    ``Nats-Expected-Last-Subject-Sequence`` *before* it dedupes on ``Nats-Msg-Id``, so a
    retried request whose event is already stored would be refused as a conflict. Before
    (and after a refused) publish we therefore look at what is stored: if it is our own
    event (same id, derived from the Idempotency-Key), the request already succeeded and
    is answered from the stored event without publishing again.

    A read that gets no answer in time is a PublishError (503) like an unconfirmed write:
    the request stored nothing and may be retried with the same key.
    """

    broker: NatsBroker
    js: JetStreamContext
    settings: Settings

    async def newest(self, subject: str) -> tuple[Envelope, int] | None:
        """The newest event on ``subject`` and its stream sequence, or None if there is none."""
        found = await self._newest_raw(subject)
        return None if found is None else (decode_event(found.data or b""), found.seq or 0)

    async def _newest_raw(self, subject: str) -> RawStreamMsg | None:
        # A direct get of the last message on a subject: the only read intake and survey may make,
        # and only on their own subjects (deploy/nats/accounts.conf).
        try:
            return await self._answer(self.js.get_last_msg(self.settings.stream_name, subject, direct=True))
        except JsNotFound:
            return None

    async def last(self, subject: str, missing: str) -> tuple[Envelope, int]:
        """The newest event on ``subject``; NotFoundError(``missing``) when there is none."""
        found = await self.newest(subject)
        if found is None:
            raise NotFoundError(missing)
        return found

    async def find(self, event: Envelope) -> tuple[Envelope, int, str | None] | None:
        """``event`` as the log holds it, if it is its aggregate's newest: stored event, sequence, fingerprint.

        Looks at the newest event on the aggregate's subject in every process (an event id is
        stored once, whichever process a retry names), by the ``Nats-Msg-Id`` header. It is what
        keeps a retry from storing an event a second time after the log's dedupe window has
        passed. Only the newest is read: a service may read nothing else (least privilege). A
        retry of an older write is answered by intake's own record of its answers (within the
        dedupe window); after it, a conditional write is refused as a conflict, since the
        aggregate has moved on, and a fact that may be stated twice (a withdrawal) is stated again.
        """
        return (await self._newest_of_aggregate(event))[0]

    async def _newest_of_aggregate(
        self, event: Envelope
    ) -> tuple[tuple[Envelope, int, str | None] | None, tuple[Envelope, int] | None]:
        """``find``'s answer, and else the newest event of the aggregate, in any process (if any)."""
        raw = await self._newest_raw(_in_any_process(event))
        if raw is None:
            return None, None
        headers = raw.headers or {}
        stored = decode_event(raw.data or b""), raw.seq or 0
        if headers.get("Nats-Msg-Id") == str(event.event_id):
            return (*stored, headers.get(REQUEST_HEADER)), None
        return None, stored

    async def create(
        self, event: Envelope, exists: str, *, differs: str | None = None, request: str | None = None
    ) -> Stored:
        """Publish the first event of a new aggregate; ConflictError(``exists``) if someone else's is there.

        A retried request finds its own event stored and is answered from it. With
        ``differs``, the stored event must also carry the same payload (and, with
        ``request``, come from a request with the same fingerprint), else
        ConflictError(``differs``): the same key sent with different content (the survey's
        answers) must not silently keep one and lose what someone said.

        A new aggregate costs one round trip, the publish: it is conditional on no event
        of the aggregate in any process (``engagement.*.<aggregate>``), and only a refused
        write (or a duplicate) reads what is stored to tell a retry from someone else's write.
        """
        try:
            seq, duplicate = await publish_event(
                self.broker,
                event,
                self.settings,
                expected_last_subject_sequence=0,
                expected_subjects=_in_any_process(event),
                request=request,
            )
        except ConflictError:
            # The aggregate has an event: our own (a retry, maybe a concurrent one), or someone else's.
            mine, found = await self._newest_of_aggregate(event)
            if mine is not None:
                return _ours_or_conflict(mine, event, exists, differs, request)
            if found is not None:
                return _ours_or_conflict((*found, None), event, exists, differs, request)
            raise
        if duplicate:  # the dedupe window answered from an earlier write with this id: is it this request's?
            mine = await self.find(event)
            if mine is not None:
                return _ours_or_conflict(mine, event, exists, differs, request)
        return Stored(event.event_id, seq, duplicate)

    async def append(self, event: Envelope, after: int) -> Stored:
        """Publish ``event`` only if the aggregate's last event is still at sequence ``after``.

        An event the log already holds (a retry, even after the dedupe window) is not published again.
        """
        mine = await self.find(event)
        if mine is not None:
            return Stored(event.event_id, mine[1], True)
        try:
            seq, duplicate = await publish_event(
                self.broker, event, self.settings, expected_last_subject_sequence=after
            )
        except ConflictError:
            mine = await self.find(event)
            if mine is not None:
                return Stored(event.event_id, mine[1], True)
            raise
        return Stored(event.event_id, seq, duplicate)

    async def publish(self, event: Envelope) -> Stored:
        """Publish unconditionally (for facts that may be stated twice, like a withdrawal).

        An event the log already holds (a retry, even after the dedupe window) is not published again.
        """
        mine = await self.find(event)
        if mine is not None:
            return Stored(event.event_id, mine[1], True)
        seq, duplicate = await publish_event(self.broker, event, self.settings)
        return Stored(event.event_id, seq, duplicate)

    async def _answer(self, request: Awaitable[_T]) -> _T:
        # Bounded like a publish: a log that does not answer must not hold the request for
        # the JetStream context's own (longer) timeout. Not wait_for: on 3.11 it can
        # swallow a cancellation.
        try:
            async with asyncio.timeout(self.settings.publish_timeout_seconds):
                return await request
        except _UNAVAILABLE as exc:
            raise PublishError(f"the event log did not answer in time; nothing was stored{RETRY}") from exc


@contextlib.asynccontextmanager
async def connected_log(nats_url: str, settings: Settings, who: str) -> AsyncIterator[EventLog]:
    """A service's event log while it runs: connect a broker, attach the streams, and stop the broker on exit."""
    broker = make_broker(nats_url, settings, who)
    await broker.connect()
    try:
        yield EventLog(broker, await attach_streams(broker.connection, settings), settings)
    finally:
        await stop_broker(broker)


@dataclass(frozen=True)
class ServiceState:
    """A running service that writes to the log: its settings and its ``EventLog``.

    Made once by the app's lifespan and kept on ``app.state``; routes get it typed through
    a dependency (``shared.http.app_state``) instead of reading loose attributes off ``app.state``.
    """

    settings: Settings
    log: EventLog


def _in_any_process(event: Envelope) -> str:
    """The subjects of ``event``'s aggregate in every process: ``engagement.*.<aggregate>``."""
    _, _process, aggregate = event.subject.split(".", 2)
    return f"engagement.*.{aggregate}"


def _ours_or_conflict(
    found: tuple[Envelope, int, str | None], event: Envelope, exists: str, differs: str | None, request: str | None
) -> Stored:
    stored, seq, stored_request = found
    if stored.event_id != event.event_id:
        raise ConflictError(exists)
    if differs is not None and (
        stored.payload != event.payload or (request is not None and stored_request not in (None, request))
    ):
        raise ConflictError(differs)
    return Stored(event.event_id, seq, True)
