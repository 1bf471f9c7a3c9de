"""Everything a token can see, fetched from analytics' HTTP API and kept as one saved set.

One snapshot is: /coverage for the whole process and for every single-term segment (each
category of each question, its ``declined`` and ``not_answered``, each derived group, each
channel), optionally some two-term segments (chosen the same way every time), and
/coverage/over-time by week and by day. Segments analytics does not offer (a 422 naming the
segment) are listed as refused, never an error. If the answers of a snapshot come from
different states of the log (events arrived meanwhile), the snapshot is fetched again.

The saved set is ``{"snapshots": [{"changed_since_previous": int|null, "answers": [...],
"refused": [...]}, ...], "gathered": {...}}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.errors import EngageError

CONCURRENT = 4
ATTEMPTS = 3  # fetches of a snapshot whose answers come from different states of the log
SEGMENT_ROWS = ("declined", "not_answered")


@dataclass
class Gathered:
    """The saved set, and how it was made."""

    snapshots: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0

    def saved(self, url: str, process: str | None, pairs: int) -> dict[str, Any]:
        return {
            "snapshots": self.snapshots,
            "gathered": {
                "url": url,
                "process": process,
                "pairs": pairs,
                "requests": self.requests,
                "seconds": round(self.seconds, 2),
            },
        }


def single_terms(whole: dict[str, Any]) -> list[str]:
    """Every one-term segment of the whole process's answer: categories, declined and not answered, groups, channels."""
    terms: list[str] = []
    for dim in whole.get("dimensions", []):
        d = dim["dimension"]
        terms += [f"{d}:{row['category']}" for row in dim.get("categories", [])]
        if not dim.get("derived", False):
            terms += [f"{d}:{row}" for row in SEGMENT_ROWS]
    channels = set(whole.get("engagements_by_channel") or {}) | set(whole.get("people_by_channel") or {})
    terms += [f"channel:{c}" for c in sorted(channels)]
    return terms


def pair_segments(whole: dict[str, Any], n: int) -> list[str]:
    """``n`` two-term segments, the same ones every time for the same answer: pairs of terms that can both
    hold (not two answers to one single-select question), ordered by a hash of the pair."""
    if n <= 0:
        return []
    multi = {d["dimension"] for d in whole.get("dimensions", []) if d.get("multi_select")} | {"channel"}
    terms = single_terms(whole)
    pairs = []
    for i, a in enumerate(terms):
        for b in terms[i + 1 :]:
            da, ca = a.split(":", 1)
            db, cb = b.split(":", 1)
            if da == db and (da not in multi or ca in SEGMENT_ROWS or cb in SEGMENT_ROWS):
                continue
            pairs.append(",".join(sorted((a, b))))
    pairs.sort(key=lambda key: hashlib.sha256(key.encode()).hexdigest())
    return pairs[:n]


def source_of(answer: dict[str, Any]) -> Any:
    """Which state of the log an answer reflects: its release if rounded, else its stream sequence."""
    release = (answer.get("suppression") or {}).get("release")
    return ("release", release) if release is not None else ("sequence", (answer.get("as_of") or {}).get("sequence"))


class Analytics:
    """Analytics' coverage answers, as one token sees them."""

    def __init__(self, client: httpx.AsyncClient, url: str, process: str | None) -> None:
        self.client, self.url, self.process = client, url, process
        self.requests = 0
        self._limit = asyncio.Semaphore(CONCURRENT)

    async def get(self, path: str, **params: str | None) -> dict[str, Any] | str:
        """The answer, or (a 422 about the segment) the reason analytics refused the segment."""
        query = {k: v for k, v in {"process_id": self.process, **params}.items() if v is not None}
        async with self._limit:
            self.requests += 1
            try:
                resp = await self.client.get(path, params=query)
            except httpx.HTTPError as exc:
                raise EngageError(
                    f"analytics is not reachable at {self.url} ({type(exc).__name__}); is `engage up` running?"
                ) from None
        if resp.status_code == 200:
            body: dict[str, Any] = resp.json()
            return body
        problems = _problems(resp)
        if resp.status_code == 422 and problems and all(field == "segment" for field, _ in problems):
            return "; ".join(reason for _, reason in problems)
        reason = "; ".join(f"{f}: {r}" for f, r in problems) or _reason(resp)
        if resp.status_code in (401, 403):
            raise EngageError(f"--token: analytics answered {resp.status_code} ({reason})")
        raise EngageError(f"analytics answered {resp.status_code} to {path}: {reason}")


def _problems(resp: httpx.Response) -> list[tuple[str, str]]:
    try:
        body = resp.json()
    except ValueError:
        return []
    if not isinstance(body, dict):
        return []
    return [(str(p.get("field")), str(p.get("reason"))) for p in body.get("problems") or [] if isinstance(p, dict)]


def _reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return " ".join(resp.text.split())[:200]
    if isinstance(body, dict) and body.get("reason"):
        return str(body["reason"])
    return " ".join(resp.text.split())[:200]


async def snapshot(api: Analytics, pairs: int) -> dict[str, Any]:
    """One snapshot: every answer the token can see, from one state of the log if it can be had."""
    for _ in range(ATTEMPTS):
        whole = await api.get("/coverage")
        if isinstance(whole, str):
            raise EngageError(f"analytics refused the whole process's coverage: {whole}")
        segments = single_terms(whole) + pair_segments(whole, pairs)
        fetched = await asyncio.gather(
            *(api.get("/coverage", segment=s) for s in segments),
            api.get("/coverage/over-time", by="week"),
            api.get("/coverage/over-time", by="day"),
        )
        answers = [whole]
        refused = []
        for segment, got in zip([*segments, "by=week", "by=day"], fetched, strict=True):
            if isinstance(got, str):
                refused.append({"segment": segment, "reason": got})
            else:
                answers.append(got)
        if len({repr(source_of(a)) for a in answers}) == 1:
            break
    return {"changed_since_previous": None, "answers": answers, "refused": refused}


async def gather(
    api: Analytics,
    *,
    pairs: int = 0,
    snapshots: int = 1,
    every: float = 0.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    progress: Callable[[int], None] | None = None,
) -> Gathered:
    """``snapshots`` snapshots, ``every`` seconds apart."""
    started = time.monotonic()
    out = Gathered()
    for n in range(snapshots):
        if n:
            await sleep(every)
        out.snapshots.append(await snapshot(api, pairs))
        if progress is not None:
            progress(n + 1)
    out.requests, out.seconds = api.requests, time.monotonic() - started
    return out
