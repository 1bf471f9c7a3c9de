"""`engage coverage`: the coverage answer as a table in the terminal, under-reached first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.analytics.answers.models import CoverageAnswer, Target
from shared.errors import EngageError
from shared.status_events import Status

STATUS_ORDER = {Status.UNDER_REACHED: 0, Status.WATCH: 1, Status.ON_TRACK: 2, Status.NO_TARGET: 3}
STATUS_STYLE = {
    Status.UNDER_REACHED: "bold red",
    Status.WATCH: "yellow",
    Status.ON_TRACK: "green",
    Status.NO_TARGET: "dim",
}
STATUS_MARK = {
    Status.UNDER_REACHED: "▼ under-reached",
    Status.WATCH: "● watch",
    Status.ON_TRACK: "✓ on track",
    Status.NO_TARGET: "– no target",
}


class Refused(EngageError):
    """Analytics answered, but not 200; ``status`` says how."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def fetch(url: str, token: str, process: str | None, segment: str | None, as_of: str | None = None) -> CoverageAnswer:
    """GET /coverage; EngageError in one line if analytics cannot be reached, Refused if it says no.
    A coordinator's token asking ``as_of`` is told to use the analyst's (analytics answers 403)."""
    params = {k: v for k, v in {"process_id": process, "segment": segment, "as_of": as_of}.items() if v}
    try:
        resp = httpx.get(f"{url}/coverage", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        raise EngageError(
            f"analytics is not reachable at {url} ({exc.__class__.__name__}); is `engage up` running?"
        ) from exc
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
    return value + (" (goal)" if target.kind == "goal" else "")


def render(body: CoverageAnswer, console: Console, show_all: bool = False) -> None:
    as_of = body.as_of
    behind = "up to date" if as_of.behind == 0 else f"{as_of.behind} events behind"
    title = body.plan.name if body.plan else body.process_id
    console.print(Text(title, style="bold"))
    if body.segment:
        console.print(f"segment: {body.segment.label}")
    moment = getattr(as_of, "as_of", None)
    console.print(
        f"participants {body.participants} · engagements {body.engagements} · "
        + (
            f"as of {moment.isoformat()} (log read up to sequence {as_of.sequence}; withdrawals always apply)"
            if moment
            else f"as of sequence {as_of.sequence} ({behind})"
        )
        + (f" · counts below {body.suppression.k} shown as <{body.suppression.k}" if body.suppression.applied else "")
    )
    table = Table(show_lines=False, header_style="bold")
    for name, right in [
        ("status", False),
        ("dimension", False),
        ("category", False),
        ("count", True),
        ("share", True),
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
        needed = "—" if c.needed is None else (f"≥ {c.needed}" if c.needed_is_lower_bound else str(c.needed))
        table.add_row(
            Text(STATUS_MARK[c.status], style=STATUS_STYLE[c.status]),
            d.label,
            c.label,
            str(c.count),
            _fmt(c.share, "%"),
            interval,
            _target(c.target),
            _fmt(c.ratio),
            needed,
        )
    console.print(table)
