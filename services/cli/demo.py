"""A realistic synthetic outreach, fed through the real HTTP services.

Shaped on the Safe Harbor for All 2018 process (seed report): an advisory group formed
in January, one-on-one interviews in person and by phone, small-group interviews,
Art-of-Hosting events and an anonymous survey, through the end of May, across the eight
regions. Profiles are drawn from the report's participation figures. Everything here is
made up; no real person is in it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.progress import Progress

from shared.errors import EngageError
from shared.settings import Settings

START = datetime(2018, 1, 15, 15, 0, tzinfo=UTC)
WEEKS = 19  # mid-January to the end of May
REGIONS = {
    "twin_cities_west_metro": 31.3,
    "twin_cities_east_metro": 26.4,
    "northeast": 12.5,
    "southwest": 9.7,
    "northwest": 6.6,
    "central": 4.9,
    "southeast": 4.5,
    "west_central": 2.4,
}
RACE_LIVED = {
    "white": 0.495,
    "black": 0.315,
    "indigenous": 0.216,
    "multiracial": 0.207,
    "asian": 0.063,
    "latinx": 0.054,
    "immigrant": 0.036,
}
RACE_OTHER = {
    "white": 0.72,
    "black": 0.12,
    "indigenous": 0.08,
    "multiracial": 0.05,
    "asian": 0.05,
    "latinx": 0.05,
    "immigrant": 0.03,
}
TERMS = {
    "survivor_of_trafficking": 0.45,
    "survivor_of_sexual_exploitation": 0.40,
    "sex_worker": 0.25,
    "own_term_prostitute": 0.19,
    "independent_provider": 0.12,
}
ROLES = [
    "outreach_worker",
    "social_worker",
    "social_service_provider",
    "advocate",
    "police",
    "prosecutor",
    "public_defender",
    "attorney",
    "probation_officer",
    "judge",
    "public_health",
    "nurse",
    "therapist",
    "researcher",
    "hospitality_worker",
    "faith_community",
    "philanthropy",
    "crime_victim_coalition",
    "intersecting_issues",
    "tribal_agency",
]


class Outreach:
    """Draws participants and engagements; all randomness from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def _declined_or(self, value: Any, missing: float = 0.02, declined: float = 0.03) -> Any:
        r = self.rng.random()
        return None if r < missing else "declined" if r < missing + declined else value

    def _several(self, odds: dict[str, float]) -> list[str]:
        chosen = [k for k, p in odds.items() if self.rng.random() < p]
        return chosen or [max(odds, key=odds.__getitem__)]

    def region(self) -> str:
        return self.rng.choices(list(REGIONS), weights=list(REGIONS.values()))[0]

    def profile(self, lived: bool | None = None, region: str | None = None) -> dict[str, Any]:
        rng = self.rng
        lived = rng.random() < 0.385 if lived is None else lived
        gender = (
            (["female"] if rng.random() < 0.94 else ["male"])
            if lived
            else (["female"] if rng.random() < 0.75 else ["male"])
        )
        if rng.random() < (0.09 if lived else 0.03):
            gender.append(rng.choice(["transgender", "non_binary", "two_spirit"]))
        profile = {
            "region": self._declined_or(region or self.region()),
            "lived_experience": self._declined_or("yes" if lived else "no", missing=0, declined=0.01),
            "race_ethnicity": self._declined_or(self._several(RACE_LIVED if lived else RACE_OTHER)),
            "gender": self._declined_or(gender),
            "lgbq": self._declined_or("yes" if rng.random() < (0.20 if lived else 0.12) else "no"),
            "age_band": self._declined_or(
                rng.choices(["18-24", "25-34", "35-44", "45-54", "55-64", "65+"], weights=[12, 26, 24, 19, 13, 6])[0]
            ),
            "task_force_connection": self._declined_or("yes" if rng.random() < 0.5 else "no"),
            "tribal_affiliation": self._declined_or("yes" if rng.random() < 0.12 else "no"),
        }
        if lived:
            profile["experience_terms"] = self._declined_or(self._several(TERMS))
        if not lived or rng.random() < 0.5:
            profile["professional_roles"] = self._declined_or(rng.sample(ROLES, rng.choice([1, 1, 2, 3])))
        return {k: v for k, v in profile.items() if v is not None}

    def plan(self) -> list[tuple[datetime, str, dict[str, Any]]]:
        """The whole outreach as (when, what, details), in time order."""
        rng = self.rng
        steps: list[tuple[datetime, str, dict[str, Any]]] = []
        for _ in range(35):  # the Process Advisory Group, more than 60% with lived experience
            when = START + timedelta(days=rng.uniform(0, 10))
            steps.append((when, "advisory", {"profile": self.profile(lived=rng.random() < 0.63)}))
        for _ in range(105):
            when = START + timedelta(weeks=rng.uniform(1, WEEKS))
            steps.append((when, "interview", {"format": rng.choice(["in_person", "in_person", "phone"])}))
        for _ in range(10):
            when = START + timedelta(weeks=rng.uniform(2, WEEKS))
            steps.append((when, "small_group", {"size": rng.randint(3, 7)}))
        for _ in range(4):
            when = START + timedelta(weeks=rng.uniform(3, WEEKS))
            steps.append((when, "gathering", {"attendees": rng.randint(10, 22), "region": self.region()}))
        for _ in range(50):
            when = START + timedelta(weeks=rng.uniform(4, WEEKS))
            steps.append((when, "survey", {"profile": self.profile()}))
        return sorted(steps, key=lambda s: s[0])


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    for attempt in range(5):  # the same key makes a retry harmless
        try:
            resp = await client.post(
                url, content=orjson.dumps(body), headers={**headers, "content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise EngageError(f"{url} did not answer ({type(exc).__name__}); is `engage up` running?") from None
        if resp.status_code < 500:
            if resp.status_code >= 400:
                raise EngageError(f"{url} answered {resp.status_code}: {_reason(resp)}")
            answer: dict[str, Any] = resp.json()
            return answer
        await asyncio.sleep(0.2 * (attempt + 1))
    raise EngageError(f"{url} answered {resp.status_code} five times: {_reason(resp)}")


def _reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return " ".join(resp.text.split())[:200] or resp.reason_phrase
    if isinstance(body, dict):
        problems = "; ".join(f"{p.get('field')}: {p.get('reason')}" for p in body.get("problems") or [])
        return str(body.get("reason") or body.get("detail") or problems or body)[:200]
    return str(body)[:200]


async def _answering(client: httpx.AsyncClient, urls: dict[str, str]) -> None:
    """Each service answers its health check, or EngageError names the URL that did not."""
    for name, url in urls.items():
        try:
            await client.get(f"{url}/health", timeout=5)
        except httpx.HTTPError as exc:
            raise EngageError(
                f"{name} did not answer at {url} ({type(exc).__name__}); is `engage up` running?"
            ) from None


def _tokens(settings: Settings, tokens_file: Path | None) -> dict[str, str]:
    tokens = {n: t.token for n, t in settings.all_tokens().items()}
    if tokens_file is not None:
        try:
            tokens.update({n: spec["token"] for n, spec in orjson.loads(tokens_file.read_bytes()).items()})
        except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            raise EngageError(
                f"--tokens-file {tokens_file}: cannot be read ({type(exc).__name__}); "
                "`engage up` writes it in its data dir"
            ) from None
    missing = [name for name in ("intake", "survey") if name not in tokens]
    if missing:
        raise EngageError(f"no token named {' or '.join(missing)}: give --tokens-file or ENGAGE_TOKENS")
    return tokens


async def feed(
    urls: dict[str, str],
    tokens_file: Path | None,
    settings: Settings,
    *,
    pace: float = 0.05,
    seed: int = 2018,
    stop: threading.Event | None = None,
) -> int:
    """Send the outreach to intake and survey; returns how many requests were made."""
    tokens = _tokens(settings, tokens_file)
    outreach = Outreach(seed)
    steps = outreach.plan()
    intake, survey = urls["intake"], urls["survey"]
    sent = 0
    async with httpx.AsyncClient(timeout=10) as client:
        await _answering(client, {"intake": intake, "survey": survey})
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("feeding a synthetic outreach", total=len(steps))
            for when, kind, details in steps:
                if stop is not None and stop.is_set():
                    break
                sent += await _step(client, outreach, intake, survey, tokens, when, kind, details)
                bar.advance(task)
                await asyncio.sleep(pace)
    Console(stderr=True).print(f"demo: {len(steps)} engagements fed through {sent} requests")
    return sent


async def _step(
    client: httpx.AsyncClient,
    o: Outreach,
    intake: str,
    survey: str,
    tokens: dict[str, str],
    when: datetime,
    kind: str,
    d: dict[str, Any],
) -> int:
    at = when.isoformat()
    if kind == "advisory":
        await _post(
            client, f"{intake}/advisory/members", {"profile": d["profile"], "occurred_at": at}, tokens["intake"]
        )
        return 1
    if kind == "survey":
        await _post(client, f"{survey}/responses", {"profile": d["profile"], "submitted_at": at}, tokens["survey"])
        return 1
    if kind == "gathering":
        profiles = [o.profile(region=d["region"]) for _ in range(int(d["attendees"] * 0.7))]
        body = {
            "kind": "art_of_hosting",
            "region": d["region"],
            "attendee_count": d["attendees"],
            "profiles": profiles,
            "occurred_at": at,
        }
        await _post(client, f"{intake}/gatherings", body, tokens["intake"])
        return 1
    size = d.get("size", 1)
    fmt = "small_group" if kind == "small_group" else d["format"]
    region = o.region()
    scheduled = await _post(
        client,
        f"{intake}/interviews",
        {
            "format": fmt,
            "region": region,
            "expected_participants": size,
            "scheduled_for": (when + timedelta(days=3)).isoformat(),
            "occurred_at": at,
        },
        tokens["intake"],
    )
    iv = scheduled["interview_id"]
    outcome = o.rng.random()
    done_at = (when + timedelta(days=3)).isoformat()
    if outcome < 0.06:
        await _post(
            client,
            f"{intake}/interviews/{iv}/cancel",
            {"reason": "participant_request", "occurred_at": done_at},
            tokens["intake"],
        )
        return 2
    if outcome < 0.10:
        await _post(client, f"{intake}/interviews/{iv}/no-show", {"occurred_at": done_at}, tokens["intake"])
        return 2
    first = scheduled["participant_ref"]
    refs = [first] + ["p-" + o.rng.randbytes(6).hex() for _ in range(size - 1)]
    participants = [{"participant_ref": r, "profile": o.profile(region=region)} for r in refs]
    await _post(
        client,
        f"{intake}/interviews/{iv}/complete",
        {"participants": participants, "occurred_at": done_at},
        tokens["intake"],
    )
    return 2
