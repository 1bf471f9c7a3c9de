"""``POST /exports``: analysts' microdata and coordinators' aggregate tables, as one zip archive.

Every export needs a token with ``coverage:read``. The microdata (``engagements``: a row per
engagement; ``participants``: a row per participant) need the analyst role
(``analyst:read``) too: a coordinator asking for them gets 403, and nothing is made or
recorded. A coordinator may export the aggregate tables (``coverage``, ``totals``), built
from the very coverage answer ``/coverage`` gives them, protected the same way.

Each export is recorded on the event log (``DataExported``) before it is sent; if the log
does not store that record, the answer is 503 and nothing is sent. The answer is never
cached (``Cache-Control: no-store``).

The routes are made by :func:`export_router`, which the app hands how it tells a caller's
view (``view_for``) and where its answers come from, so this module stays below the HTTP
layer it is part of.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import nats.errors
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from services.analytics.answers import queries
from services.analytics.answers.coverage import View
from services.analytics.answers.queries import Sources
from services.analytics.export.risk import TooFew, steps_for
from services.analytics.export.run import Scope, audit_event, manifest, new_export_id, package, record, replayed
from services.analytics.export.tables import MICRODATA, TABLES, Export, Release, aggregates, files_of
from shared.errors import PublishError
from shared.events import ExportFormat, ExportTable
from shared.http import UnauthorizedError, error_responses, invalid, require_scope
from shared.ids import PROCESS_ID_PATTERN
from shared.logging import get_logger

log = get_logger("engage.analytics.export")
ZIP = "application/zip"
ANALYST: Literal["analyst:read"] = "analyst:read"
FORMATS: tuple[ExportFormat, ...] = ("csv",)  # the default: one CSV a table


class Started(Protocol):
    """The started app's state, as far as exports need it."""

    @property
    def sources(self) -> Sources: ...


ViewFor = Callable[[Request, str], View]
StateOf = Callable[[Request], Started]


class Generalise(BaseModel):
    """How microdata are generalised before they are released; each applies to every participant alike."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    multi_select: bool = Field(
        False,
        description="Two or more answers to a multi-select question (race/ethnicity, gender, the terms "
        "participants use for their own experience, professional roles, the derived groups) become "
        "`more_than_one`.",
    )
    age_band: Literal["as_given", "top_code", "wide"] = Field(
        "as_given", description="`top_code`: 55-64 and 65+ become `55+`; `wide`: `18-34`, `35-54`, `55+`."
    )
    region: Literal["as_given", "metro"] = Field(
        "as_given",
        description="`metro`: the two Twin Cities regions become `twin_cities_metro`, the six others "
        "`greater_minnesota` (also in `event_region`).",
    )
    drop: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Quasi-identifier columns withheld entirely (every value `suppressed`), e.g. `experience_terms`.",
    )


DEFAULT_GENERALISE = Generalise(multi_select=True, age_band="top_code")


class ExportRequest(BaseModel):
    """What to export."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    process_id: str | None = Field(
        None, pattern=PROCESS_ID_PATTERN, description="The process; default ENGAGE_PROCESS_ID. It needs a plan."
    )
    tables: list[ExportTable] = Field(
        default_factory=lambda: list(TABLES),
        min_length=1,
        max_length=8,
        description="`engagements` and `participants` are microdata (the analyst role); `coverage` and "
        "`totals` are aggregate tables (coordinators get them protected as /coverage shows them). "
        "Default: all four.",
    )
    formats: list[ExportFormat] = Field(
        default_factory=lambda: list(FORMATS), min_length=1, max_length=2, description="`csv`, `parquet`, or both."
    )
    k_anonymity: int | None = Field(
        None,
        ge=2,
        le=100,
        description="Release the microdata k-anonymous: generalised (see `generalise`), then the quasi-identifier "
        "values of participants still in classes smaller than k suppressed, until every participant shares "
        "their combination with at least k-1 others. Null: released as recorded, with the risk reported.",
    )
    generalise: Generalise | None = Field(
        None,
        description="Generalisations of the microdata. Default with `k_anonymity`: multi-select answers "
        "coarsened and age top-coded; without it: none.",
    )


RISK_HEADERS = {
    "Export-Id": "The export's id, as its record on the log (`DataExported`) names it.",
    "Export-Reflects-Sequence": "The event log's stream sequence the export reflects.",
    "Export-Audit-Sequence": "The stream sequence of the export's record on the log.",
    "Export-Participants": "Microdata: participants in the export.",
    "Export-Sample-Uniques": "Microdata: participants alone in their quasi-identifier class, as released.",
    "Export-Smallest-Class": "Microdata: the size of the smallest quasi-identifier class, as released.",
    "Export-K-Anonymity": "Microdata: the k-anonymity target, if one was set.",
    "Export-Suppressed-Values": "Microdata: quasi-identifier values suppressed to reach the target.",
}
PACKAGE_WORDS = (
    "A zip archive: each table in each format asked for (`engagements.csv`, `coverage.parquet`, …), "
    "`data_dictionary.json` and `data_dictionary.md` (every column and category, the privacy terms and, for "
    "microdata, the re-identification risk), and `manifest.json` (the export's record on the log, its rows and "
    "the risk figures: sample uniques, the smallest class, what was generalised and how many values were "
    "suppressed, as recorded and as released). Never cached."
)


def _unique(tables: list[ExportTable]) -> list[ExportTable]:
    return list(dict.fromkeys(tables))


def export_router(view_for: ViewFor, state_of: StateOf) -> APIRouter:
    """The export route, given how the app tells a caller's view and where its answers come from."""
    router = APIRouter(tags=["exports"])

    @router.post(
        "/exports",
        response_class=Response,
        responses={
            200: {
                "description": PACKAGE_WORDS,
                "content": {ZIP: {"schema": {"type": "string", "format": "binary"}}},
                "headers": {
                    name: {"description": words, "schema": {"type": "string"}}
                    for name, words in {"Cache-Control": "`no-store`.", **RISK_HEADERS}.items()
                },
            },
            **error_responses(
                401,
                403,
                422,
                503,
                described={
                    403: "The token lacks `coverage:read`, or asks for microdata without the analyst role "
                    "(`analyst:read`); nothing was made or recorded.",
                    503: "The event log did not answer, or did not store the export's record: nothing was sent.",
                },
            ),
        },
    )
    async def post_export(
        request: Request, body: ExportRequest, token: str = Depends(require_scope("coverage:read"))
    ) -> Response:
        """Export a process's tables as one zip archive, recorded on the event log first.

        Analysts (`analyst:read`) may export the microdata (`engagements`, `participants`), with
        each export's re-identification risk (sample uniques and the smallest class on the
        quasi-identifiers, the profile answers), optionally generalised and suppressed to a
        k-anonymity target, and exact `coverage` and `totals`. Coordinators may export only
        `coverage` and `totals`, protected exactly as `/coverage` shows them.
        """
        src, view = state_of(request).sources, view_for(request, token)
        tables = _unique(body.tables)
        micro = [t for t in tables if t in MICRODATA]
        if micro and view.suppressed:
            raise UnauthorizedError(
                403,
                f"{' and '.join(micro)} {'is' if len(micro) == 1 else 'are'} microdata: exporting "
                f"{'it' if len(micro) == 1 else 'them'} needs the analyst role (scope {ANALYST!r}); this token "
                "may export the aggregate tables coverage and totals",
            )
        process, plan = src.process(body.process_id)
        if plan is None:
            raise invalid(
                "process_id", f"no plan for process {process}; known: {', '.join(sorted(src.plans))}", where="body"
            )
        g = body.generalise or (DEFAULT_GENERALISE if body.k_anonymity is not None else Generalise())
        try:
            steps = steps_for(plan, multi=g.multi_select, age_band=g.age_band, region=g.region, drop=g.drop)
        except ValueError as exc:
            raise invalid("generalise.drop", str(exc), where="body") from None
        if not src.nc.is_connected:
            raise PublishError("the event log is not connected, so nothing was exported; try again")
        settings, unreadable = src.settings, 0
        try:
            if view.suppressed:
                answer = await queries.coverage_now(src, process, None, view)
                export = aggregates(
                    answer, plan, tz=settings.tz, stream=settings.stream_name, formats=body.formats, tables=tables
                )
            else:
                done = await replayed(
                    src.nc,
                    plan,
                    stream=settings.stream_name,
                    tz=settings.tz,
                    formats=body.formats,
                    k=view.k,
                    tables=tables,
                    release=Release(body.k_anonymity, steps),
                )
                export, unreadable = done.export, done.unreadable
        except TooFew as exc:
            raise invalid("k_anonymity", str(exc), where="body") from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise PublishError("the event log did not answer in time, so nothing was exported; try again") from exc
        return await _send(request, src, export, token, view, process, body, tables, unreadable)

    return router


async def _send(
    request: Request,
    src: Sources,
    export: Export,
    token: str,
    view: View,
    process: str,
    body: ExportRequest,
    tables: list[ExportTable],
    unreadable: int,
) -> Response:
    """Record the export on the log (503 if it is not stored), then send it."""
    scopes = request.app.state.tokens[token].scopes
    scope: Scope = "coverage:read" if view.suppressed else ANALYST
    if scope not in scopes:
        scope = "admin"
    risk = export.risk
    event = audit_event(
        export,
        export_id=new_export_id(),
        process_id=process,
        requested_by=token,
        scope=scope,
        tables=tables,
        formats=body.formats,
        k_anonymity=body.k_anonymity if risk else None,
        participants=risk.after.participants if risk else 0,
    )
    audited = await record(src.nc, event, src.settings)
    files = files_of(export, body.formats, {"manifest.json": manifest(export, event, audited, unreadable)})
    log.info(
        "data_exported",
        export_id=event.aggregate_id,
        requested_by=token,
        scope=scope,
        process_id=process,
        tables=tables,
        formats=body.formats,
        k_anonymity=body.k_anonymity if risk else None,
        rows=export.rows,
        reflects_sequence=export.sequence,
        audit_sequence=audited,
    )
    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'attachment; filename="engage-export-{process}-{export.sequence}.zip"',
        "Export-Id": event.aggregate_id,
        "Export-Reflects-Sequence": str(export.sequence),
        "Export-Audit-Sequence": str(audited),
    }
    if risk is not None:
        figures = {
            "Export-Participants": risk.after.participants,
            "Export-Sample-Uniques": risk.after.sample_uniques,
            "Export-Smallest-Class": risk.after.smallest_class,
            "Export-K-Anonymity": risk.k,
            "Export-Suppressed-Values": risk.suppressed_values,
        }
        headers |= {name: str(value) for name, value in figures.items() if value is not None}
    return Response(package(files, event.occurred_at), media_type=ZIP, headers=headers)
