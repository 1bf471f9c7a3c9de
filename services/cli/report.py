"""`engage report`: the participation table, in the layout of the 2018 report's summary.

It asks analytics' HTTP API three times (everyone, people with lived experience, the
advisory group) and prints the table as Markdown, HTML or CSV (``analytics.report``). The
three answers are taken again, a few times at most, until they reflect the same stream
sequence, so the sections agree with each other.
"""

from __future__ import annotations

from pathlib import Path

from services.analytics.answers.models import CoverageAnswer
from services.analytics.report.participation import (
    ADVISORY_SEGMENT,
    BASES,
    LIVED_SEGMENT,
    Report,
    ReportError,
    build,
)
from services.analytics.report.render import FORMATS, render
from services.cli.coverage import fetch, token_from
from shared.errors import EngageError

SCOPES = {"analyst": "analyst", "coordinator": "coordinator"}  # --scope -> the name in the tokens file
TRIES = 3


def check_choices(fmt: str, base: str | None, scope: str) -> None:
    """Refuse an unknown --format, --base or --scope in one line naming the choices."""
    if fmt not in FORMATS:
        raise EngageError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
    if base is not None and base not in BASES:
        raise EngageError(f"--base {base}: not one of {', '.join(BASES)}")
    if scope not in SCOPES:
        raise EngageError(f"--scope {scope}: not one of {', '.join(SCOPES)}")


def choose_token(token: str | None, tokens_file: Path, scope: str) -> str:
    """--token (or ENGAGE_TOKEN) if given, else the scope's token in `engage up`'s tokens file."""
    if token is not None:
        if not token.strip():
            raise EngageError("--token: is empty (or ENGAGE_TOKEN is set to nothing)")
        return token.strip()
    return token_from(tokens_file, SCOPES[scope])


def answers(
    url: str, token: str, process: str | None, as_of: str | None
) -> tuple[CoverageAnswer, CoverageAnswer, CoverageAnswer]:
    """Everyone's answer and the two segments', reflecting one stream sequence if the log lets them."""
    for _ in range(TRIES):
        got = (
            fetch(url, token, process, None, as_of),
            fetch(url, token, process, LIVED_SEGMENT, as_of),
            fetch(url, token, process, ADVISORY_SEGMENT, as_of),
        )
        if len({a.as_of.sequence for a in got}) == 1:
            break
    return got  # still apart after TRIES: the report says which sequences it spans


def make_report(
    url: str,
    token: str,
    *,
    process: str | None = None,
    as_of: str | None = None,
    base: str | None = None,
    fmt: str = "markdown",
) -> str:
    """The report's text in ``fmt``."""
    try:
        report: Report = build(*answers(url, token, process, as_of), base=base or "profiled")
    except ReportError as exc:
        raise EngageError(f"report: {exc}") from exc
    return render(report, fmt)
