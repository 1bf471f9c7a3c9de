"""The form's languages: one gettext catalog (``locale/<lang>/LC_MESSAGES/messages.po``) each.

The ``.po`` files are the source and are read as they are (compiled in memory with Babel), so
a fresh install needs no build step, and a new language (Somali, Hmong) is a new catalog.
The questions come from the contract (:mod:`shared.profile`): each dimension is asked under
the msgid ``q.<dimension>`` with its hint ``hint.<dimension>``, each category is
``c.<dimension>.<category>``; a test fails when a catalog misses one.
"""

from __future__ import annotations

import gettext
import io
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from shared.profile import CATEGORIES, DECLINED, DIMENSIONS, MULTI_SELECT

LOCALE_DIR = Path(str(files("services.survey.form") / "locale"))
DEFAULT_LANGUAGE = "en"
PREFER_NOT_TO_SAY = "Prefer not to say"  # a msgid: every question offers it


def languages() -> tuple[str, ...]:
    """Every language with a catalog, the default first."""
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob("*/LC_MESSAGES/messages.po"))
    return (DEFAULT_LANGUAGE, *(lang for lang in found if lang != DEFAULT_LANGUAGE))


@cache
def translations(lang: str) -> gettext.GNUTranslations:
    """The catalog of ``lang``, compiled in memory from its ``.po`` file."""
    with (LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def contract_msgids() -> list[str]:
    """The msgids the contract's questions need, in the order the form asks them."""
    out: list[str] = []
    for dim in DIMENSIONS:
        out += [f"q.{dim}", f"hint.{dim}"]
        out += [f"c.{dim}.{code}" for code in CATEGORIES[dim]]
    return out


@dataclass(frozen=True)
class Choice:
    code: str
    msgid: str


@dataclass(frozen=True)
class Question:
    """One profile dimension as the form asks it."""

    name: str
    multi: bool
    choices: tuple[Choice, ...]

    @property
    def msgid(self) -> str:
        return f"q.{self.name}"

    @property
    def hint(self) -> str:
        return f"hint.{self.name}"


def questions() -> tuple[Question, ...]:
    """The profile's questions, from the contract, each with "prefer not to say" last."""
    return tuple(
        Question(
            name=dim,
            multi=dim in MULTI_SELECT,
            choices=(
                *(Choice(code, f"c.{dim}.{code}") for code in CATEGORIES[dim]),
                Choice(DECLINED, PREFER_NOT_TO_SAY),
            ),
        )
        for dim in DIMENSIONS
    )
