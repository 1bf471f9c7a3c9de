"""Delivering alerts: each alert in the outbox, once to each destination, retried with backoff.

Destinations are outgoing webhooks (``ENGAGE_ALERT_WEBHOOKS``) and e-mail over SMTP
(``ENGAGE_SMTP_URL``, ``ENGAGE_ALERT_EMAIL_FROM``, ``ENGAGE_ALERT_EMAIL_TO``). A webhook gets
``{"text": "..."}``: what Slack's incoming webhooks and Teams' (legacy) incoming-webhook
connectors both take. E-mail is sent with the standard library's smtplib in a thread.

Each destination has its own task, so one that fails or hangs delays only itself, and none
is in the projection's way: the projector only writes the outbox (``engine.announce``). Every
attempt is bounded (``SEND_TIMEOUT``); a failed one is tried again after 1, 2, 4... seconds (at
most ``BACKOFF_MAX``). Deliveries are recorded in ``alert_deliveries``, so a restart does not
send again what was recorded as delivered. A restart between a receiver's acceptance and the
recording sends that alert again (at least once): it carries the same ``Idempotency-Key``
header (webhooks) and ``Message-ID`` (e-mail), so a receiver can tell the repeat.

Webhook URLs are secrets (the URL is the credential): logs and the database name a webhook
by its host and a hash of the URL, never the URL; an SMTP password is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import smtplib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import httpx

from services.analytics.alerts.message import alert_text, subject
from services.analytics.answers.models import CategoryRow
from shared.errors import ConfigError
from shared.logging import get_logger
from shared.settings import Settings
from shared.status_events import CommunityStatusChanged

log = get_logger("engage.analytics.alerts")

Lookup = Callable[[str, str, str], Awaitable[CategoryRow | None]]
"""(process, dimension, category) -> the category as coordinators see it now, or None."""


class Destination(Protocol):
    @property
    def key(self) -> str: ...  # stable, and no secret: "webhook:<host>:<hash>" or "email:<hash>"

    @property
    def shown(self) -> str: ...  # what logs say: a host, never a URL or a password

    async def send(self, event_id: str, title: str, text: str) -> None: ...


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Webhook:
    url: str
    timeout: float = 10.0

    @property
    def shown(self) -> str:
        return urlsplit(self.url).hostname or "?"

    @property
    def key(self) -> str:
        return f"webhook:{self.shown}:{_digest(self.url)}"

    async def send(self, event_id: str, title: str, text: str) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            resp = await client.post(self.url, json={"text": text}, headers={"Idempotency-Key": event_id})
        if resp.status_code >= 300:
            raise DeliveryFailed(f"HTTP {resp.status_code}")


@dataclass(frozen=True)
class Email:
    smtp_url: str
    sender: str
    recipients: tuple[str, ...]
    timeout: float = 10.0

    @property
    def shown(self) -> str:
        return f"smtp {urlsplit(self.smtp_url).hostname or '?'} to {len(self.recipients)} recipient(s)"

    @property
    def key(self) -> str:
        return f"email:{_digest(','.join(sorted(self.recipients)))}"

    def _send(self, message: EmailMessage) -> None:
        url = urlsplit(self.smtp_url)
        host, port = url.hostname or "localhost", url.port
        starttls = parse_qs(url.query).get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
        smtp: smtplib.SMTP
        if url.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(host, port or 465, timeout=self.timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, port or 25, timeout=self.timeout)
        with smtp:
            if starttls:
                smtp.starttls(context=ssl.create_default_context())
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(message)

    async def send(self, event_id: str, title: str, text: str) -> None:
        message = EmailMessage()
        message["Subject"] = title
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Message-ID"] = f"<{event_id}@engage.alerts>"
        message.set_content(text)
        await asyncio.to_thread(self._send, message)


class DeliveryFailed(Exception):
    """A receiver refused an alert (the reason names no secret)."""


def destinations(settings: Settings) -> list[Destination]:
    """The configured destinations; ConfigError naming the setting (never its secret value)."""
    found: list[Destination] = []
    for i, secret in enumerate(settings.alert_webhooks):
        url = urlsplit(secret.get_secret_value())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(
                f"ENGAGE_ALERT_WEBHOOKS: URL {i + 1} is not an http(s) URL with a host (not shown: it is a secret)"
            )
        found.append(Webhook(secret.get_secret_value()))
    smtp = settings.smtp_url.get_secret_value() if settings.smtp_url else None
    if smtp or settings.alert_email_to:
        if not smtp:
            raise ConfigError("ENGAGE_SMTP_URL: not set, and ENGAGE_ALERT_EMAIL_TO needs an SMTP server")
        url = urlsplit(smtp)
        if url.scheme not in ("smtp", "smtps") or not url.hostname:
            raise ConfigError(
                "ENGAGE_SMTP_URL: must be smtp://[user:pass@]host[:port][?starttls=true] or smtps://... "
                "(not shown: it may hold a password)"
            )
        if not settings.alert_email_to:
            raise ConfigError("ENGAGE_ALERT_EMAIL_TO: not set, and ENGAGE_SMTP_URL needs recipients")
        if not settings.alert_email_from or "@" not in settings.alert_email_from:
            raise ConfigError(f"ENGAGE_ALERT_EMAIL_FROM={settings.alert_email_from!r}: needs an e-mail address")
        bad = [to for to in settings.alert_email_to if "@" not in to]
        if bad:
            raise ConfigError(f"ENGAGE_ALERT_EMAIL_TO: {bad[0]!r} is not an e-mail address")
        found.append(Email(smtp, settings.alert_email_from, tuple(settings.alert_email_to)))
    return found


class Deliverer:
    POLL = 0.5  # seconds between looks at the outbox when nothing is due
    SEND_TIMEOUT = 15.0  # seconds: an attempt that takes longer has failed
    BACKOFF_FIRST = 1.0  # seconds before the first retry; doubled at each failure
    BACKOFF_MAX = 300.0

    def __init__(self, pool: asyncpg.Pool, targets: list[Destination], lookup: Lookup, settings: Settings) -> None:
        self.pool, self.targets, self.lookup, self.settings = pool, targets, lookup, settings

    async def run(self) -> None:
        """Deliver until cancelled, each destination in its own task."""
        await self.pool.executemany(
            "INSERT INTO alert_destinations (destination) VALUES ($1) ON CONFLICT (destination) DO NOTHING",
            [(t.key,) for t in self.targets],
        )
        async with asyncio.TaskGroup() as group:
            for target in self.targets:
                group.create_task(self._serve(target), name=f"alerts-{target.shown}")

    async def _serve(self, target: Destination) -> None:
        while True:
            try:
                sent = await self.deliver_due(target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database hiccuped: look again later
                log.warning("alerts_look_failed", destination=target.shown, error_type=type(exc).__name__)
                sent = 0
            if not sent:
                await asyncio.sleep(self.POLL)

    async def deliver_due(self, target: Destination) -> int:
        """Try every alert due for ``target`` once; how many were delivered."""
        rows = await self.pool.fetch(
            """
            SELECT o.event_id, o.event::text AS event, coalesce(x.attempts, 0) AS attempts
              FROM alert_outbox o
              JOIN alert_destinations d ON d.destination = $1 AND o.created_at >= d.since
              LEFT JOIN alert_deliveries x ON x.event_id = o.event_id AND x.destination = $1
             WHERE x.delivered_at IS NULL AND (x.next_attempt IS NULL OR x.next_attempt <= now())
             ORDER BY o.created_at, o.event_id
             LIMIT 50
            """,
            target.key,
        )
        sent = 0
        for row in rows:
            event = CommunityStatusChanged.model_validate_json(row["event"])
            try:
                text = alert_text(event, await self._row(event), self.settings.small_cell_k, self.settings.public_url)
                async with asyncio.timeout(self.SEND_TIMEOUT):
                    await target.send(event.event_id, subject(event), text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of a receiver is retried later
                attempts = row["attempts"] + 1
                delay = min(self.BACKOFF_FIRST * 2 ** (attempts - 1), self.BACKOFF_MAX)
                reason = str(exc) if isinstance(exc, DeliveryFailed) else type(exc).__name__
                await self._record(event.event_id, target.key, attempts, delay, reason)
                log.warning(
                    "alert_delivery_failed",
                    destination=target.shown,
                    event_id=event.event_id,
                    attempts=attempts,
                    reason=reason,
                    retry_in=delay,
                )
                continue
            await self._record(event.event_id, target.key, row["attempts"] + 1, None, None)
            log.info("alert_delivered", destination=target.shown, event_id=event.event_id)
            sent += 1
        return sent

    async def _row(self, event: CommunityStatusChanged) -> CategoryRow | None:
        try:
            return await self.lookup(event.process_id, event.dimension, event.category)
        except Exception as exc:  # noqa: BLE001 - an alert without the ratio beats no alert
            log.warning("alert_ratio_unavailable", event_id=event.event_id, error_type=type(exc).__name__)
            return None

    async def _record(self, event_id: str, key: str, attempts: int, delay: float | None, reason: str | None) -> None:
        await self.pool.execute(
            """
            INSERT INTO alert_deliveries AS x (event_id, destination, attempts, next_attempt, last_error, delivered_at)
            VALUES ($1, $2, $3, now() + make_interval(secs => coalesce($4::float8, 0)), $5,
                    CASE WHEN $4::float8 IS NULL THEN now() END)
            ON CONFLICT (event_id, destination) DO UPDATE
               SET attempts = EXCLUDED.attempts, next_attempt = EXCLUDED.next_attempt,
                   last_error = EXCLUDED.last_error, delivered_at = EXCLUDED.delivered_at
            """,
            event_id,
            key,
            attempts,
            delay,
            reason,
        )


def start(settings: Settings, pool: asyncpg.Pool, lookup: Lookup) -> asyncio.Task[None] | None:
    """Start delivering alerts beside the projection; None when no destination is configured."""
    targets = destinations(settings)
    if not targets:
        return None
    log.info("alerts_delivering", destinations=[t.shown for t in targets])
    return asyncio.create_task(Deliverer(pool, targets, lookup, settings).run(), name="alerts")


async def stop(task: asyncio.Task[None] | None) -> None:
    """Stop delivering (bounded: shutting down never waits on a receiver)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        async with asyncio.timeout(5):
            await task
