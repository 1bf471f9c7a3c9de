"""`engage audit-suppression`: gather every answer a token can see (or read a saved set), and report
every small count of people that the published numbers, put together, pin down.

Exit code 1 if anything is pinned, 0 if not; 2 (one line) for anything that stops the audit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console

from services.analytics.audit.gather import Analytics, Gathered, gather
from services.analytics.audit.model import BadAnswers, Model, Snapshot, build, describe, snapshots_from
from services.analytics.audit.solve import Audit, audit
from services.cli.coverage import token_from
from shared.errors import EngageError

SHOWN_PUBLICATIONS = 3  # of a pinned count's publications, listed in the report


def check_options(
    *,
    sources: Sequence[Path],
    save: Path | None,
    pairs: int,
    width: int,
    time_limit: float,
    snapshots: int,
    every: float,
) -> None:
    """EngageError naming the first option that cannot be used, and why."""
    if sources and save is not None:
        raise EngageError("--save: cannot be used with --from (the answers are already saved)")
    if sources and snapshots != 1:
        raise EngageError("--snapshots: cannot be used with --from (give --from once per snapshot set)")
    if pairs < 0:
        raise EngageError(f"--pairs {pairs}: must be 0 or more")
    if width < 1:
        raise EngageError(f"--width {width}: must be at least 1")
    if time_limit <= 0:
        raise EngageError(f"--time-limit {time_limit:g}: must be more than 0 seconds")
    if snapshots < 1:
        raise EngageError(f"--snapshots {snapshots}: must be at least 1")
    if every < 0:
        raise EngageError(f"--every {every:g}: must be 0 or more seconds")


def load(paths: Sequence[Path]) -> tuple[list[Snapshot], int]:
    """The snapshots of saved sets, in order, and how many segments their gathering saw refused."""
    snapshots: list[Snapshot] = []
    refused = 0
    for path in paths:
        try:
            data = orjson.loads(path.read_bytes())
        except OSError as exc:
            raise EngageError(f"--from {path}: cannot be read ({type(exc).__name__})") from None
        except orjson.JSONDecodeError:
            raise EngageError(f"--from {path}: is not JSON") from None
        try:
            snapshots += snapshots_from(data)
        except BadAnswers as exc:
            raise EngageError(f"--from {path}: {exc}") from None
        refused += sum(len(s.get("refused") or []) for s in data["snapshots"])
    return snapshots, refused


def save_to(path: Path, saved: dict[str, Any]) -> None:
    try:
        path.write_bytes(orjson.dumps(saved))
    except OSError as exc:
        raise EngageError(f"--save {path}: cannot be written ({type(exc).__name__})") from None


async def fetch(url: str, token: str, process: str | None, pairs: int, snapshots: int, every: float) -> Gathered:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        return await gather(Analytics(client, url, process), pairs=pairs, snapshots=snapshots, every=every)


def token_or_default(token: str | None, tokens_file: Path) -> str:
    """The token given (or ENGAGE_TOKEN), else the coordinator token of `engage up`'s tokens file."""
    return token or token_from(tokens_file, "coordinator")


def run(
    *,
    url: str,
    token: str | None,
    tokens_file: Path,
    process: str | None,
    sources: Sequence[Path],
    save: Path | None,
    audit_saved: bool,
    pairs: int,
    width: int,
    time_limit: float,
    snapshots: int,
    every: float,
    out: Console,
    status: Console,
) -> int:
    """Gather or load, audit, report; the exit code (1: something is pinned; 3: out of time before
    every small count was checked, so nothing is shown either way)."""
    check_options(
        sources=sources, save=save, pairs=pairs, width=width, time_limit=time_limit, snapshots=snapshots, every=every
    )
    if sources:
        loaded, refused = load(sources)
        gathered_note = f"{len(sources)} saved set{'s' if len(sources) != 1 else ''}"
    else:
        secret = token_or_default(token, tokens_file)
        with status.status(f"gathering answers from {url}…"):
            got = asyncio.run(fetch(url, secret, process, pairs, snapshots, every))
        saved = got.saved(url, process, pairs)
        refused = sum(len(s["refused"]) for s in got.snapshots)
        gathered_note = f"{got.requests} requests in {got.seconds:.1f} s"
        if save is not None:
            save_to(save, saved)
            out.print(
                f"saved {len(got.snapshots)} snapshot(s), {sum(len(s['answers']) for s in got.snapshots)} answers "
                f"({gathered_note}; {refused} segments refused) to {save}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            if not audit_saved:
                return 0
        loaded = snapshots_from(saved)
    if not any(snapshot.answers for snapshot in loaded):
        raise EngageError(f"{'--from' if sources else 'analytics'}: no answers to audit")
    try:
        model = build(loaded)
    except BadAnswers as exc:
        raise EngageError(f"answers: {exc}") from None
    with status.status("auditing…") as spinner:

        def progress(done: int, total: int) -> None:
            spinner.update(f"auditing: {done} of {total} small counts checked…")

        result = audit(model, width=width, time_limit=time_limit, progress=progress)
    if not result.feasible:
        raise EngageError(
            f"answers: {result.stopped_because} and relation; they contradict each other (answers of different "
            "processes or moments mixed?), so nothing can be concluded"
        )
    report(result, loaded, gathered_note, refused, time_limit, out)
    return exit_code(result)


def exit_code(result: Audit) -> int:
    """1: something is pinned; 3: stopped before every small count was checked (not a pass); 0: none pinned."""
    if result.pinned:
        return 1
    return 0 if result.finished else 3


def report(
    result: Audit, snapshots: Sequence[Snapshot], gathered: str, refused: int, limit: float, out: Console
) -> None:
    model = result.model
    answers = sum(len(s.answers) for s in snapshots)

    def say(text: str = "") -> None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)

    say(
        f"Small-count audit: {len(snapshots)} snapshot(s), {answers} answers ({gathered}"
        + (f"; {refused} segments refused by analytics" if refused else "")
        + ")"
    )
    say(
        f"variables {len(model.variables):,} · equations {model.equations:,} · relations {len(model.relations):,} · "
        f"small variables checked {len(result.checked):,} of {len(result.candidates):,} · "
        f"pinned {len(result.pinned):,}"
    )
    say(
        f"linear programs {result.lps:,} · integer programs {result.milps:,} to confirm, {result.samples:,} for "
        f"example solutions · {result.seconds:.1f} s · {result.engine}"
    )
    widths = " · ".join(f"{label}: {n:,}" for label, n in result.widths().items()) or "none"
    say(f"possible values of the small ones: {widths}; {result.including_zero:,} still include 0")
    if not result.finished:
        reason = result.stopped_because or "stopped"
        say(
            f"STOPPED ({reason}, --time-limit {limit:g} s): {len(result.checked):,} of {len(result.candidates):,} "
            "small variables checked; the rest were not"
        )
    pinned = result.pinned
    if not pinned:
        say(f"Nothing pinned: every small count checked keeps at least {result.width} possible values.")
        return
    say(f"PINNED ({len(pinned)}): small counts the published numbers narrow to fewer than {result.width} values")
    for c in pinned:
        say("  " + pinned_line(model, c.variable, c.lo, c.hi, c.how))
        shown = model.variables[c.variable].shown
        for where in shown[:SHOWN_PUBLICATIONS]:
            say(f"      shown: {where}")
        if len(shown) > SHOWN_PUBLICATIONS:
            say(f"      … and {len(shown) - SHOWN_PUBLICATIONS} more publications")
        if not shown:
            say("      never shown itself: worked out from the numbers around it")


def pinned_line(model: Model, i: int, lo: int, hi: int, how: str) -> str:
    v = model.variables[i]
    state = model.states[v.state]
    value = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
    return f"{describe(v.quantity)}, snapshot {state.snapshot} ({state.source}): {value} (by {how})"
