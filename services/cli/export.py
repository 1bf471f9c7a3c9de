"""`engage export`: ask analytics for an export (``POST /exports``) and write its files into a folder.

The command never reads the log itself: analytics makes the export under the token's role
(microdata for analysts, the protected aggregate tables for coordinators), records it on the
log, and sends it as one zip archive. The command checks the options, sends the request with
the token (``--token``, ``ENGAGE_TOKEN``, else the ``analyst`` token of ``engage up``'s tokens
file), writes each file of the archive under a temporary name and renames it into ``--out``,
and says what it wrote and how re-identifiable the microdata are. Whatever goes wrong is one
line (EngageError), never a traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from services.analytics.export.run import unpack
from services.analytics.export.tables import FORMATS, MICRODATA, TABLES, safe_name, write_files
from shared.errors import EngageError

# Each generalisation's name on the command line, and the request it makes.
GENERALISE: dict[str, dict[str, Any]] = {
    "multi_select": {"multi_select": True},
    "age_top_code": {"age_band": "top_code"},
    "age_wide": {"age_band": "wide"},
    "region_metro": {"region": "metro"},
}
# A field the API names, and the option that sets it.
OPTION_OF = {
    "process_id": "--process",
    "tables": "--tables",
    "formats": "--format",
    "k_anonymity": "--k-anonymity",
    "generalise": "--generalise",
    "generalise.drop": "--generalise",
}
TIMEOUT = httpx.Timeout(300.0, connect=10.0)  # a big log takes a while to replay; a dead analytics does not


def _listed(value: str, option: str, known: tuple[str, ...]) -> tuple[str, ...]:
    given = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not given:
        raise EngageError(f"{option}: give one or more of {', '.join(known)}")
    unknown = [v for v in given if v not in known]
    if unknown:
        raise EngageError(f"{option}: {unknown[0]!r} is not one of {', '.join(known)}")
    return tuple(v for v in known if v in given)


def formats_of(value: str) -> tuple[str, ...]:
    """``csv,parquet`` -> the formats, in our order; EngageError for anything else."""
    return _listed(value, "--format", FORMATS)


def tables_of(value: str) -> tuple[str, ...]:
    """``engagements,coverage`` -> the tables, in our order; EngageError for anything else."""
    return _listed(value, "--tables", TABLES)


def generalise_of(value: str | None) -> dict[str, Any] | None:
    """``multi_select,age_top_code,drop:gender`` -> the request's ``generalise``; None: analytics' default."""
    if value is None:
        return None
    request: dict[str, Any] = {}
    dropped: list[str] = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        if part.startswith("drop:") and part[5:]:
            dropped.append(part[5:])
        elif part in GENERALISE:
            request.update(GENERALISE[part])
        elif part != "none":
            raise EngageError(f"--generalise: {part!r} is not one of {', '.join(GENERALISE)}, drop:COLUMN or none")
    return {**request, "drop": dropped} if dropped else request


def k_of(value: int | None) -> int | None:
    if value is not None and not 2 <= value <= 100:
        raise EngageError(f"--k-anonymity: {value} is not from 2 to 100")
    return value


def _out(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise EngageError(f"--out {out}: is a file; give a folder")
    return out


def _reason(resp: httpx.Response) -> str:
    try:
        body = orjson.loads(resp.content) if resp.headers.get("content-type", "").startswith("application/json") else {}
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    problems = [
        f"{OPTION_OF.get(p.get('field', ''), p.get('field', ''))}: {p.get('reason', '')}"
        for p in body.get("problems", [])
        if isinstance(p, dict)
    ]
    return str(body.get("reason") or "; ".join(problems) or resp.text[:200])


def refusal(resp: httpx.Response, tables: tuple[str, ...]) -> EngageError:
    """One line for an answer that is not an export."""
    reason = _reason(resp)
    status = resp.status_code
    if status == 401:
        return EngageError(
            f"the token was refused (401): {reason}; give an analyst's token with --token or ENGAGE_TOKEN"
        )
    if status == 403:
        hint = ""
        if any(t in MICRODATA for t in tables):
            hint = "; microdata need the analyst role: a coordinator may export --tables coverage,totals"
        return EngageError(f"this token may not make this export (403): {reason}{hint}")
    if status == 422:
        return EngageError(f"analytics refused the request (422): {reason}")
    if status == 503:
        return EngageError(f"analytics could not make or record the export (503): {reason}; nothing was exported")
    return EngageError(f"analytics answered {status}: {reason}")


@dataclass(frozen=True)
class Written:
    """What the command wrote, and the export's own account of itself (its manifest)."""

    files: list[Path]
    manifest: dict[str, Any]


def request_export(url: str, token: str, body: dict[str, Any], tables: tuple[str, ...]) -> dict[str, bytes]:
    """POST the request; the archive's files, or EngageError saying in one line why not."""
    try:
        resp = httpx.post(
            f"{url.rstrip('/')}/exports", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
        )
    except httpx.HTTPError as exc:
        raise EngageError(
            f"analytics is not reachable at {url} ({exc.__class__.__name__}); is `engage up` running?"
        ) from None
    if resp.status_code != 200:
        raise refusal(resp, tables)
    try:
        files = unpack(resp.content)
    except ValueError as exc:
        raise EngageError(f"analytics sent an export that cannot be read ({exc}); nothing was written") from None
    bad = [name for name in files if not safe_name(name)]
    if bad or "manifest.json" not in files:
        raise EngageError("analytics sent an export with an unexpected file in it; nothing was written")
    return files


def run_export(
    *,
    out: Path,
    url: str,
    token: str,
    process: str | None = None,
    formats: str = "csv,parquet",
    tables: str = ",".join(TABLES),
    k_anonymity: int | None = None,
    generalise: str | None = None,
    report: TextIO = sys.stderr,
) -> Written:
    """The `engage export` command: check the options, ask analytics, write the files, say what was written."""
    chosen, wanted = formats_of(formats), tables_of(tables)
    body: dict[str, Any] = {"tables": list(wanted), "formats": list(chosen), "k_anonymity": k_of(k_anonymity)}
    if process is not None:
        body["process_id"] = process
    if (asked := generalise_of(generalise)) is not None:
        body["generalise"] = asked
    directory = _out(out)
    files = request_export(url, token, body, wanted)
    try:
        written = write_files(directory, files)
    except OSError as exc:
        raise EngageError(
            f"--out {out}: writing failed ({exc.strerror or exc}); no half-written file was left"
        ) from None
    about = orjson.loads(files["manifest.json"])
    report.write(summary(about))
    report.write("".join(f"  {path}\n" for path in written))
    return Written(written, about)


def summary(about: dict[str, Any]) -> str:
    """What the export was and how re-identifiable its microdata are, in a few lines."""
    tables = ", ".join(f"{name} ({t['rows']} rows)" for name, t in about["tables"].items())
    lines = [
        f"export {about['export_id']}: {about['process_id']}, {tables}; reflects the log up to sequence "
        f"{about['reflects_sequence']}; recorded on the log at sequence {about['audit']['sequence']} "
        f"(requested by {about['requested_by']}, scope {about['scope']})"
    ]
    if about.get("unreadable_events_skipped"):
        lines.append(f"  {about['unreadable_events_skipped']} unreadable events skipped")
    risk = about.get("reidentification")
    if risk:
        before, after = risk["as_recorded"], risk["as_released"]
        target = risk["k_anonymity"]
        lines.append(
            f"re-identification, {after['participants']} participants on {len(risk['quasi_identifiers'])} "
            f"quasi-identifiers: as recorded {before['sample_uniques']} sample uniques, smallest class "
            f"{before['smallest_class']}; as released"
            + (f" (k = {target})" if target is not None else "")
            + f" {after['sample_uniques']} sample uniques, smallest class {after['smallest_class']}, "
            f"{after['below_k']} in classes below k = {after['k']}"
        )
        done = [f"{g['name']} ({g['values']} values)" for g in risk["generalised"]]
        if done:
            lines.append(f"  generalised: {', '.join(done)}")
        if risk["suppressed"]:
            per = ", ".join(f"{column} {n}" for column, n in risk["suppressed"].items())
            lines.append(f"  suppressed {risk['suppressed_values']} values: {per}")
    return "\n".join(lines) + "\n"
