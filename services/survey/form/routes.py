"""``GET /form``, ``POST /form`` and the form's two static files.

Every answer carries no cookie, ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer``
and a Content-Security-Policy that allows only this service's own CSS and script. Nothing
here reads or logs the client's address or user agent.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError

from services.survey.api import record_survey_response
from services.survey.form.i18n import DEFAULT_LANGUAGE, languages, questions, translations
from services.survey.form.settings import FormSettings
from services.survey.form.tokens import FormTokens, Verdict
from services.survey.models import RecordSurveyResponse
from services.survey.state import SurveyDep
from shared.errors import ConflictError, PublishError
from shared.http import TooManyRequests, WriteLimits, problems_of
from shared.idempotency import Key
from shared.logging import get_logger
from shared.profile import DECLINED

log = get_logger("engage.survey.form")

FORM_CLIENT = "survey-form"  # the "token" a form's idempotency key is scoped to
MAX_FORM_BYTES = 16 * 1024  # the whole form, every box ticked, is well under 2 KiB
MAX_FIELDS = 200
POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_STATIC = {"form.css": "text/css", "exit.js": "text/javascript"}


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "a msgid, translated later" (pybabel -k N_)
    return message


# What the person reads about each problem (msgids; translated when the page is rendered).
NOT_A_CHOICE = N_("Please choose one of the answers listed.")
ONLY_ONE = N_("Please choose only one answer.")
DECLINED_AND_MORE = N_("Please choose either “Prefer not to say” or answers, not both.")
NOT_ASKED = N_("This form does not ask this question.")
TOO_LARGE = N_("The form sent was larger than expected. Please fill it in again.")
TOO_FAST = N_("That was quicker than we expected. Please check your answers and send them again.")
STALE = N_("This form was open for a long time, so we need you to send it again. Your answers are still here.")
FORGED = N_("We could not read this form. Please send it again.")
TOO_MANY = N_("Many people are sending answers right now. Please wait a minute, then send your answers again.")
UNAVAILABLE = N_("We could not save your answers just now. Please send them again.")
_VERDICTS = {Verdict.too_fast: TOO_FAST, Verdict.stale: STALE, Verdict.forged: FORGED}


@dataclass
class Problem:
    """One problem on the page: the field it is about (its anchor) and the reason (a msgid)."""

    field: str
    reason: str


@dataclass
class Filled:
    """What a sent form said: its language, token, the answers accepted, and the problems."""

    lang: str = DEFAULT_LANGUAGE
    token: str = ""
    answers: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def chosen_language(value: str | None) -> str:
    return value if value in languages() else DEFAULT_LANGUAGE


@cache
def environment(lang: str) -> Environment:
    env = Environment(
        loader=PackageLoader("services.survey.form", "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]  # added by jinja2.ext.i18n at run time
    return env


def read_answers(fields: dict[str, list[str]], filled: Filled) -> None:
    """Keep each answer that is one of the question's choices; a problem for each that is not."""
    asked = {q.name: q for q in questions()}
    for name in fields:
        if name not in asked and name not in ("token", "lang"):
            filled.problems.append(Problem(name[:40], NOT_ASKED))
    for question in asked.values():
        given = fields.get(question.name, [])
        codes = {c.code for c in question.choices}
        kept = list(dict.fromkeys(v for v in given if v in codes))
        if len(kept) < len(set(given)):
            filled.problems.append(Problem(question.name, NOT_A_CHOICE))
        elif len(kept) > 1 and not question.multi:
            filled.problems.append(Problem(question.name, ONLY_ONE))
        elif len(kept) > 1 and DECLINED in kept:
            filled.problems.append(Problem(question.name, DECLINED_AND_MORE))
        if kept:
            filled.answers[question.name] = kept


def profile_of(answers: dict[str, list[str]]) -> dict[str, Any]:
    multi = {q.name for q in questions() if q.multi}
    out: dict[str, Any] = {}
    for name, codes in answers.items():
        out[name] = DECLINED if codes == [DECLINED] else (codes if name in multi else codes[0])
    return out


def form_router(settings: FormSettings | None = None, clock: Callable[[], float] = time.time) -> APIRouter:
    """The form's routes; its token secret lives in this router, never on disk or in a page."""
    settings = settings or FormSettings()
    secret = settings.secret.get_secret_value().encode() if settings.secret else secrets.token_bytes(32)
    tokens = FormTokens(secret, settings.min_seconds, settings.max_age_seconds, clock)
    everyone = WriteLimits(settings.rate, settings.burst, clock=clock)  # all forms together
    each_form = WriteLimits(0.2, 3, clock=clock)  # one form sent again and again
    router = APIRouter(include_in_schema=False)

    def page(name: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
        others = [(code, translations(code).gettext("language.self")) for code in languages() if code != lang]
        text = (
            environment(lang)
            .get_template(name)
            .render(lang=lang, exit_url=settings.exit_url, others=others, questions=questions(), **context)
        )
        return HTMLResponse(text, status_code=status, headers=headers(lang))

    def form_page(filled: Filled, status: int) -> HTMLResponse:
        gettext = translations(filled.lang).gettext
        labels = {q.name: gettext(q.msgid) for q in questions()}
        problems = [
            {
                "anchor": f"{p.field}-0" if p.field in labels else "submit",
                "label": labels.get(p.field, p.field if p.field not in ("body", "token") else ""),
                "reason": gettext(p.reason),
            }
            for p in filled.problems
        ]
        errors = {p.field: gettext(p.reason) for p in filled.problems if p.field in labels}
        return page(
            "form.html",
            filled.lang,
            status,
            token=filled.token,
            answers=filled.answers,
            problems=problems,
            errors=errors,
        )

    @router.get("/form", response_class=HTMLResponse)
    async def show_form(request: Request) -> HTMLResponse:
        lang = chosen_language(request.query_params.get("lang"))
        return form_page(Filled(lang=lang, token=tokens.issue()), 200)

    @router.post("/form", response_class=HTMLResponse)
    async def send_form(request: Request, survey: SurveyDep) -> HTMLResponse:
        lang = chosen_language(request.query_params.get("lang"))
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            log.info("survey_form_refused", reason="too_large")
            return form_page(Filled(lang, tokens.issue(), problems=[Problem("body", TOO_LARGE)]), 413)
        try:
            fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_FIELDS)
        except ValueError:
            return form_page(Filled(lang, tokens.issue(), problems=[Problem("body", TOO_LARGE)]), 413)
        lang = chosen_language((fields.get("lang") or [lang])[0])
        token = (fields.get("token") or [""])[0]
        filled = Filled(lang, token)
        read_answers(fields, filled)
        verdict = tokens.check(token)
        if verdict is not Verdict.ok:
            log.info("survey_form_refused", reason=verdict.value)
            filled.token = tokens.issue()
            filled.problems.append(Problem("token", _VERDICTS[verdict]))
            return form_page(filled, 422)
        if filled.problems:
            return form_page(filled, 422)
        try:
            response = RecordSurveyResponse(profile=profile_of(filled.answers))
        except ValidationError as exc:  # the contract's own rules, should the form ever allow more than it
            for problem in problems_of([dict(e) for e in exc.errors()]):
                filled.problems.append(Problem(problem["field"].removeprefix("profile.").split(".")[0], NOT_A_CHOICE))
            return form_page(filled, 422)
        nonce = tokens.nonce(token)
        try:
            everyone.take("all")
            each_form.take(nonce)
        except TooManyRequests:
            log.info("survey_form_refused", reason="too_many")
            filled.problems.append(Problem("token", TOO_MANY))
            return form_page(filled, 429)
        try:
            # The very function POST /responses runs: same event, same dedupe; the form's nonce is the key.
            await record_survey_response(response, survey, Key(FORM_CLIENT, f"form-{nonce}"))
        except ConflictError:  # the same form sent again with other answers: the first ones stand
            return page("thanks.html", lang, 200, already=True)
        except PublishError:
            filled.problems.append(Problem("token", UNAVAILABLE))
            return form_page(filled, 503)
        return page("thanks.html", lang, 200, already=False)

    @router.get("/form/static/{name}")
    async def static(name: str) -> Response:
        if name not in _STATIC:
            return Response("not found", status_code=404, media_type="text/plain", headers=headers(DEFAULT_LANGUAGE))
        text = (files("services.survey.form") / "static" / name).read_text(encoding="utf-8")
        return Response(text, media_type=_STATIC[name], headers=headers(DEFAULT_LANGUAGE))

    return router


def headers(lang: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": POLICY,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Language": lang,
    }
