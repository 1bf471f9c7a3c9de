"""Events for the benchmark: a realistic outreach, built fast, published with a wide window.

Participants are mostly heard from once (anonymous surveys, one-on-one interviews), some
come back for a second interview, a few take part in small groups, gatherings and the
advisory board, and some withdraw. Profiles answer the plan's questions (with some declined
or left out), so every category of the shipped plan is judged. Events are built as JSON
directly (pydantic per event would make a 1M-event log take minutes); every
``VALIDATE_EVERY``-th one is checked against the contract, so a change to the contract that
these bodies no longer meet stops the benchmark instead of filling the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nats
import orjson
from nats.aio.msg import Msg

from shared.events import ENVELOPE

# Bump when the events generated change: cached logs are kept per version.
GENERATOR_VERSION = 2
PROCESS = "shfa-2018"
START = datetime(2018, 3, 1, 14, tzinfo=UTC)
SPAN = timedelta(days=180)
VALIDATE_EVERY = 10
ACK_TIMEOUT = 30.0  # seconds without a PubAck before a publish gives up
REPEATS_KEPT = 50_000  # refs remembered for returning participants and withdrawals
PROFILE_BITS = 12  # 4,096 distinct profiles drawn from: people share profiles, and drawing each is half the cost

REGIONS = [
    "twin_cities_west_metro",
    "twin_cities_east_metro",
    "northeast",
    "southwest",
    "northwest",
    "central",
    "southeast",
    "west_central",
]
RACES = ["white", "black", "indigenous", "multiracial", "asian", "latinx", "immigrant", "other"]
GENDERS = ["female", "male", "transgender", "non_binary", "two_spirit", "another"]
AGES = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
TERMS = ["survivor_of_trafficking", "survivor_of_sexual_exploitation", "sex_worker", "independent_provider"]
ROLES = ["outreach_worker", "social_worker", "advocate", "police", "nurse"]


@dataclass(frozen=True)
class Message:
    """One event as it goes on the log."""

    subject: str
    body: bytes
    headers: dict[str, str]


def profile(rng: random.Random) -> dict[str, object]:
    """A self-identified profile: most questions answered, some declined, some skipped."""

    def answer(value: object) -> object:
        r = rng.random()
        return None if r < 0.12 else "declined" if r < 0.16 else value

    fields = {
        "region": answer(rng.choice(REGIONS)),
        "lived_experience": answer("yes" if rng.random() < 0.35 else "no"),
        "race_ethnicity": answer(rng.sample(RACES, rng.choice((1, 1, 1, 2)))),
        "gender": answer(rng.sample(GENDERS, rng.choice((1, 1, 1, 1, 2)))),
        "lgbq": answer("yes" if rng.random() < 0.2 else "no"),
        "age_band": answer(rng.choice(AGES)),
        "experience_terms": answer(rng.sample(TERMS, 1)) if rng.random() < 0.3 else None,
        "professional_roles": answer(rng.sample(ROLES, 1)) if rng.random() < 0.25 else None,
    }
    return {k: v for k, v in fields.items() if v is not None}


class Outreach:
    """A deterministic stream of events (for a seed), with participants who return and withdraw."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.refs: list[str] = []
        self.profiles = [profile(self.rng) for _ in range(1 << PROFILE_BITS)]

    def _profile(self) -> dict[str, object]:
        return self.profiles[self.rng.getrandbits(PROFILE_BITS)]

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _ref(self) -> str:
        ref = f"p-{self.rng.getrandbits(60):015x}"
        if len(self.refs) < REPEATS_KEPT:
            self.refs.append(ref)
        else:
            self.refs[self.rng.randrange(REPEATS_KEPT)] = ref
        return ref

    def _agg(self, prefix: str) -> str:
        return f"{prefix}-{self.rng.getrandbits(64):016x}"

    def payload(self) -> tuple[str, str, dict[str, object]]:
        """(aggregate, aggregate id, payload) of the next event."""
        rng, r = self.rng, self.rng.random()
        if r < 0.70 or (r >= 0.99 and not self.refs):
            rid = self._agg("sr")
            return "survey-response", rid, {"type": "SurveyCompleted", "response_id": rid, "profile": self._profile()}
        if r < 0.92:
            returning = bool(self.refs) and rng.random() < 0.15
            ref = rng.choice(self.refs) if returning else self._ref()
            iid = self._agg("iv")
            attendee = {"participant_ref": ref, "profile": {} if returning else self._profile()}
            fmt = rng.choice(("in_person", "phone"))
            return (
                "interview",
                iid,
                {"type": "InterviewCompleted", "interview_id": iid, "format": fmt, "participants": [attendee]},
            )
        if r < 0.95:
            iid = self._agg("iv")
            group = [{"participant_ref": self._ref(), "profile": self._profile()} for _ in range(rng.randint(2, 5))]
            return (
                "interview",
                iid,
                {"type": "InterviewCompleted", "interview_id": iid, "format": "small_group", "participants": group},
            )
        if r < 0.96:
            gid, attendees = self._agg("gh"), rng.randint(8, 30)
            profiles = [self._profile() for _ in range(rng.randint(0, attendees // 2))]
            kind = rng.choice(("art_of_hosting", "small_group_meeting"))
            return (
                "gathering",
                gid,
                {
                    "type": "GatheringHeld",
                    "gathering_id": gid,
                    "kind": kind,
                    "attendee_count": attendees,
                    "profiles": profiles,
                },
            )
        if r < 0.99:
            ref = self._ref()
            return (
                "advisory-member",
                ref,
                {"type": "AdvisoryMemberJoined", "participant_ref": ref, "profile": self._profile()},
            )
        ref = rng.choice(self.refs)
        return "participant", ref, {"type": "ParticipantWithdrawn", "participant_ref": ref}

    def message(self, occurred: datetime) -> Message:
        aggregate, aggregate_id, payload = self.payload()
        event_id = self._id()
        recorded = occurred + timedelta(minutes=self.rng.randint(1, 600))
        envelope = {
            "event_id": event_id,
            "type": payload["type"],
            "schema_version": 1,
            "process_id": PROCESS,
            "occurred_at": occurred.isoformat(),
            "recorded_at": min(recorded, datetime.now(UTC)).isoformat(),
            "source": "survey" if payload["type"] == "SurveyCompleted" else "intake",
            "correlation_id": event_id.replace("-", ""),
            "payload": payload,
        }
        subject = f"engagement.{PROCESS}.{aggregate}.{aggregate_id}"
        return Message(subject, orjson.dumps(envelope), {"Nats-Msg-Id": event_id, "Engage-Type": str(payload["type"])})

    def history(self, n: int) -> Iterator[Message]:
        """``n`` events spread over ``SPAN`` from ``START``, in the order they were recorded."""
        step = SPAN / max(n, 1)
        for i in range(n):
            message = self.message(START + step * i)
            if i % VALIDATE_EVERY == 0:
                ENVELOPE.validate_json(message.body)
            yield message

    def now(self) -> Message:
        """An event that happened just now (live traffic)."""
        return self.message(datetime.now(UTC) - timedelta(seconds=1))


def midpoint() -> datetime:
    """A moment half-way through the history: what the as-of figure asks about."""
    return START + SPAN / 2


async def publish_all(
    url: str, messages: Iterable[Message], window: int = 4000, progress: Callable[[int], None] | None = None
) -> tuple[int, float]:
    """Publish ``messages`` with up to ``window`` awaiting their PubAck; (count, events/s).

    Plain NATS publishes with a reply subject per message and one subscription counting the
    PubAcks: a future per message (``js.publish``) would make the publisher, not the server,
    the limit.
    """
    nc = await nats.connect(url)
    inbox = nc.new_inbox()
    acked, errors = 0, []

    async def on_ack(msg: Msg) -> None:
        nonlocal acked
        acked += 1
        if b'"error"' in msg.data:
            errors.append(msg.data.decode())

    async def wait_until(most: int) -> None:
        last, still = acked, time.monotonic()
        while count - acked > most:
            await asyncio.sleep(0.002)
            if acked != last:
                last, still = acked, time.monotonic()
            elif time.monotonic() - still > ACK_TIMEOUT:
                raise TimeoutError(f"no PubAck for {ACK_TIMEOUT:.0f} s ({acked:,} of {count:,} acknowledged)")
        if errors:
            raise RuntimeError(f"{len(errors)} publishes refused, e.g. {errors[0][:300]}")

    sub = await nc.subscribe(inbox + ".*", cb=on_ack)
    count = 0
    start = time.perf_counter()
    try:
        for m in messages:
            await nc.publish(m.subject, m.body, reply=f"{inbox}.{count}", headers=m.headers)
            count += 1
            if count - acked >= window:
                await wait_until(window // 2)
                if progress is not None:
                    progress(count)
        await wait_until(0)
        elapsed = time.perf_counter() - start
    finally:
        await sub.unsubscribe()
        await nc.close()
    return count, count / elapsed if elapsed else 0.0
