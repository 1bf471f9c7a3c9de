"""`engage coverage`: the coverage answer as a table in the terminal, under-reached first."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.analytics.answers.models import CategoryRow, CoverageAnswer, Target
from shared.errors import EngageError
from shared.status_events import Status

STATUS_ORDER = {
    Status.UNDER_REACHED: 0,
    Status.ATTENTION: 1,
    Status.WATCH: 2,
    Status.ON_TRACK: 3,
    Status.NO_TARGET: 4,
}
STATUS_STYLE = {
    Status.UNDER_REACHED: "bold red",
    Status.ATTENTION: "bold yellow",
    Status.WATCH: "yellow",
    Status.ON_TRACK: "green",
    Status.NO_TARGET: "dim",
}
STATUS_MARK = {
    Status.UNDER_REACHED: "▼ under-reached",
    Status.ATTENTION: "! may be below target",
    Status.WATCH: "● watch",
    Status.ON_TRACK: "✓ on track",
    Status.NO_TARGET: "– no target",
}


class Refused(EngageError):
    """Analytics answered, but not 200; ``status`` says how."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


AS_OF_PATIENCE = 900.0  # seconds an as-of question may take, all tries together, before the command gives up
PROGRESS_EVERY = 2.0  # seconds between the lines that say the command is still waiting


def fetch(url: str, token: str, process: str | None, segment: str | None, as_of: str | None = None) -> CoverageAnswer:
    """GET /coverage; EngageError in one line if analytics cannot be reached, Refused if it says no.
    A coordinator's token asking ``as_of`` is told to use the analyst's (analytics answers 403).

    An as-of question waits as long as the answer needs (up to ``AS_OF_PATIENCE``), saying on
    stderr that it waits, and asks again when analytics answers that its as-of slots are taken (429).
    """
    params = {k: v for k, v in {"process_id": process, "segment": segment, "as_of": as_of}.items() if v}
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    while True:
        try:
            if as_of:
                resp = _waiting(
                    lambda: httpx.get(f"{url}/coverage", params=params, headers=headers, timeout=_patient()), started
                )
            else:
                resp = httpx.get(f"{url}/coverage", params=params, headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            raise EngageError(
                f"analytics is not reachable at {url} ({exc.__class__.__name__}); is `engage up` running?"
            ) from exc
        wait = _retry_after(resp)
        if as_of and resp.status_code == 429 and time.monotonic() + wait - started < AS_OF_PATIENCE:
            print(f"analytics is answering other as-of questions; asking again in {wait:.0f} s", file=sys.stderr)
            time.sleep(wait)
            continue
        break
    if resp.status_code != 200:
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        reason = body.get("reason") or "; ".join(f"{p['field']}: {p['reason']}" for p in body.get("problems", []))
        if resp.status_code == 403 and as_of:
            raise Refused(
                f"--as-of {as_of}: needs the analyst token (scope analyst:read); analytics refused this token (403)",
                403,
            )
        raise Refused(f"analytics answered {resp.status_code}: {reason or resp.text[:200]}", resp.status_code)
    return CoverageAnswer.model_validate_json(resp.content)


def _patient() -> httpx.Timeout:
    return httpx.Timeout(30.0, read=AS_OF_PATIENCE)


def _retry_after(resp: httpx.Response) -> float:
    try:
        return min(max(float(resp.headers.get("Retry-After", "1")), 0.5), 30.0)
    except ValueError:
        return 1.0


def _waiting(ask: Callable[[], httpx.Response], started: float) -> httpx.Response:
    """``ask()``, saying on stderr every ``PROGRESS_EVERY`` s that the answer is still being worked out."""
    done = threading.Event()

    def tell() -> None:
        while not done.wait(PROGRESS_EVERY):
            print(f"waiting for analytics' as-of answer: {time.monotonic() - started:.0f} s", file=sys.stderr)

    teller = threading.Thread(target=tell, daemon=True)
    teller.start()
    try:
        return ask()
    finally:
        done.set()
        teller.join()


def token_from(tokens_file: Path, name: str) -> str:
    try:
        return str(orjson.loads(tokens_file.read_bytes())[name]["token"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise EngageError(f"--tokens-file {tokens_file}: no token named {name!r} ({exc.__class__.__name__})") from exc


def _fmt(value: Any, suffix: str = "") -> str:
    return "—" if value is None else f"{value}{suffix}"


def _target(target: Target | None) -> str:
    if target is None:
        return "—"
    value = f"{target.share}%" if target.share is not None else f"≥ {target.min_count}"
    if target.share is not None and target.base == "profiled":
        value += " of profiled"
    return value + (" (goal)" if target.kind == "goal" else "")


def _needed(row: CategoryRow) -> str:
    if row.needed is None:
        return "—"
    return f"at least {row.needed}" if row.needed_is_lower_bound else str(row.needed)


def _channels(body: CoverageAnswer) -> str:
    """People and engagements per channel, e.g. ``survey 120 people / 131 engagements``."""
    channels = sorted(set(body.engagements_by_channel) | set(body.people_by_channel))
    return " · ".join(
        f"{c.replace('_', ' ')} {body.people_by_channel.get(c, 0)} people / "
        f"{body.engagements_by_channel.get(c, 0)} engagements"
        for c in channels
    )


def render(body: CoverageAnswer, console: Console, show_all: bool = False) -> None:
    as_of = body.as_of
    behind = "up to date" if as_of.behind == 0 else f"{as_of.behind} events behind"
    title = body.plan.name if body.plan else body.process_id
    console.print(Text(title, style="bold"))
    if body.segment:
        console.print(Text(f"segment: {body.segment.label} ({body.segment.key})"))
    moment = getattr(as_of, "as_of", None)
    console.print(
        f"participants {body.participants} (gave a profile {body.profiled}) · engagements {body.engagements} · "
        + (
            f"as of {moment.isoformat()} (counted up to sequence {as_of.sequence}, {behind}; withdrawals always apply)"
            if moment
            else f"as of sequence {as_of.sequence} ({behind})"
        )
    )
    if body.engagements_by_channel or body.people_by_channel:
        console.print(Text("by channel: " + _channels(body)))
    sup = body.suppression
    if sup.applied:
        release = f", release at sequence {sup.release}" if sup.release is not None else ""
        console.print(
            Text(
                f"numbers rounded to multiples of {sup.k} (coordinator view){release}; "
                f"<{sup.k} means fewer than {sup.k}; shares are of the rounded numbers"
            )
        )
    table = Table(show_lines=False, header_style="bold")
    for name, right in [
        ("status", False),
        ("dimension", False),
        ("category", False),
        ("count", True),
        ("share", True),
        ("of profiled", True),
        ("95% interval", True),
        ("target", True),
        ("ratio", True),
        ("needed", True),
    ]:
        table.add_column(name, justify="right" if right else "left")
    rows = [(d, c) for d in body.dimensions for c in d.categories if show_all or c.status is not Status.NO_TARGET]
    rows.sort(key=lambda dc: (STATUS_ORDER[dc[1].status], dc[1].ratio if dc[1].ratio is not None else 9))
    for d, c in rows:
        interval = f"{c.interval[0]}–{c.interval[1]}%" if c.interval else "—"
        table.add_row(
            Text(STATUS_MARK[c.status], style=STATUS_STYLE[c.status]),
            d.label,
            c.label,
            str(c.count),
            _fmt(c.share, "%"),
            _fmt(c.share_of_profiled, "%"),
            interval,
            _target(c.target),
            _fmt(c.ratio),
            _needed(c),
        )
    console.print(table)
    if any(c.status is Status.ATTENTION for _, c in rows):
        console.print(
            Text(
                "! may be below target: the rounded numbers allow values on both sides of the target; "
                "`needed` is then the least any of them needs"
            )
        )
