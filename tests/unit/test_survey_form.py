"""The survey form without a server: its catalogs, its pages, its tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path

import httpx
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from fastapi import FastAPI

from services.survey.form.i18n import LOCALE_DIR, contract_msgids, languages, questions
from services.survey.form.routes import form_router
from services.survey.form.settings import FormSettings
from services.survey.form.tokens import FormTokens, Verdict
from shared.profile import CATEGORIES, DECLINED, DIMENSIONS, MULTI_SELECT

FORM_DIR = Path(str(files("services.survey.form")))


def catalog(lang: str) -> dict[str, str]:
    with (LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return {str(m.id): str(m.string) for m in read_po(po) if m.id}


def used_msgids() -> set[str]:
    """Every msgid the form can show: its templates, its code (``N_``) and the contract's questions."""
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    found = {str(m[2]) for m in extract_from_dir(str(FORM_DIR), method_map, keywords={"_": None, "N_": None})}
    from_questions = {q.msgid for q in questions()} | {q.hint for q in questions()}
    from_choices = {c.msgid for q in questions() for c in q.choices}
    return found | from_questions | from_choices | set(contract_msgids()) | {"language.self"}


def test_english_and_spanish_catalogs_exist() -> None:
    assert {"en", "es"} <= set(languages()) and languages()[0] == "en"


@pytest.mark.parametrize("lang", ["es", *[lang for lang in languages() if lang not in ("en", "es")]])
def test_every_msgid_has_a_translation(lang: str) -> None:
    translated = {k for k, v in catalog(lang).items() if v.strip()}
    missing = sorted(used_msgids() - translated)
    assert not missing, f"{lang} has no translation of: {missing}"


def test_english_catalog_words_every_question_of_the_contract() -> None:
    worded = {k for k, v in catalog("en").items() if v.strip()}
    keys = {m for m in used_msgids() if m.startswith(("q.", "hint.", "c.")) or m == "language.self"}
    assert sorted(keys - worded) == []


def test_questions_are_the_contracts_each_with_prefer_not_to_say() -> None:
    asked = questions()
    assert [q.name for q in asked] == list(DIMENSIONS)
    for q in asked:
        assert [c.code for c in q.choices] == [*CATEGORIES[q.name], DECLINED]
        assert q.multi == (q.name in MULTI_SELECT)


def test_a_participants_own_term_is_shown_in_quotes_as_theirs() -> None:
    for lang in ("en", "es"):
        label = catalog(lang)["c.experience_terms.own_term_prostitute"]
        assert label.startswith("“") and "”" in label


@pytest.fixture
async def form() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(form_router(FormSettings(exit_url="http://neutral.test/weather")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://survey") as client:
        yield client


@pytest.mark.parametrize(
    ("query", "lang", "exit_text", "question"),
    [
        ("", "en", "Exit site", "Where in Minnesota do you live or work?"),
        ("?lang=es", "es", "Salir del sitio", "¿En qué parte de Minnesota vive o trabaja?"),
        ("?lang=xx", "en", "Exit site", "Where in Minnesota do you live or work?"),
    ],
)
async def test_form_renders_from_the_catalog(
    form: httpx.AsyncClient, query: str, lang: str, exit_text: str, question: str
) -> None:
    r = await form.get("/form" + query)
    assert r.status_code == 200
    assert f'<html lang="{lang}">' in r.text
    assert f'href="http://neutral.test/weather" rel="noreferrer">{exit_text}</a>' in r.text
    assert f"<legend>{question}</legend>" in r.text
    assert r.text.count("<fieldset") == len(DIMENSIONS)
    assert r.text.count(f'value="{DECLINED}"') == len(DIMENSIONS)
    assert "q." not in r.text.replace("q.name", "")  # no msgid shows through untranslated


async def test_pages_set_no_cookie_and_keep_nothing(form: httpx.AsyncClient) -> None:
    for path in ("/form", "/form?lang=es", "/form/static/form.css", "/form/static/exit.js"):
        r = await form.get(path)
        assert r.status_code == 200, path
        assert "set-cookie" not in r.headers, path
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "unsafe-inline" not in r.headers["content-security-policy"]
    page = (await form.get("/form")).text
    assert "<script>" not in page and " on" + "click=" not in page and "style=" not in page  # nothing inline
    assert "http://" not in page.replace("http://neutral.test/weather", "")  # no third-party asset


def test_tokens_refuse_forged_stale_and_too_fast_forms() -> None:
    now = [1_000_000.0]
    tokens = FormTokens(b"k" * 32, min_seconds=2, max_age_seconds=7200, clock=lambda: now[0])
    token = tokens.issue()
    assert tokens.check(token) is Verdict.too_fast
    now[0] += 2.5
    assert tokens.check(token) is Verdict.ok
    issued, nonce, mac = token.split(".")
    assert tokens.check(f"{int(issued) - 1}.{nonce}.{mac}") is Verdict.forged  # an older time, same mac
    assert tokens.check("garbage") is Verdict.forged
    assert FormTokens(b"x" * 32, 2, 7200, lambda: now[0]).check(token) is Verdict.forged  # another secret
    now[0] += 7200
    assert tokens.check(token) is Verdict.stale
    assert tokens.nonce(token) == nonce and tokens.nonce(tokens.issue()) != nonce
