"""Mapping files: which field of a survey platform is which profile question, and which code which category.

A mapping file is TOML::

    process_id = "shfa-2018"              # optional: the process the answers go to
    submitted_at = "_submission_time"     # optional: the field saying when it was submitted
    instrument = "engage_profile"         # REDCap only: the instrument whose completion counts
    ignore = ["name", "phone", "consent"] # fields dropped unread (never stored, never logged)

    [fields."about_you/region"]           # the platform's field name, as it sends it
    question = "region"                   # the profile question
    choices = { ne = "northeast", c = "central", pnts = "declined" }   # code -> category

A choice mapped to ``"declined"`` is the platform's "prefer not to say". At runtime a field
the file neither maps nor ignores, or a code it does not map, is refused naming the field (the
value is never echoed back): nothing is guessed. Pure: no I/O besides reading the file.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.errors import ConfigError
from shared.events import PastTimestamp
from shared.ids import PROCESS_ID_PATTERN
from shared.plan import Plan
from shared.profile import CATEGORIES, DECLINED, DIMENSIONS, MULTI_SELECT, Profile, no_repeated_ticks

Kind = Literal["kobo", "redcap", "webhook"]
_FROZEN = ConfigDict(frozen=True, extra="forbid")
_ALL = ", ".join(DIMENSIONS)
_UNMAPPED = "holds a choice code the mapping file does not map (the value is not shown)"


class FieldMap(BaseModel):
    """One field of the platform: the profile question it answers and what each of its codes means."""

    model_config = _FROZEN
    question: str = Field(description="The profile question this field answers.")
    choices: dict[str, str] = Field(min_length=1, description='Choice code -> category (or "declined").')


class SourceMapping(BaseModel):
    """A whole mapping file."""

    model_config = _FROZEN
    process_id: str | None = Field(None, pattern=PROCESS_ID_PATTERN)
    submitted_at: str | None = Field(None, min_length=1, description="Field holding when it was submitted.")
    instrument: str | None = Field(None, min_length=1, description="REDCap: the instrument that is recorded.")
    ignore: list[str] = Field(default_factory=list, description="Fields dropped unread; `*` matches anything.")
    fields: dict[str, FieldMap] = Field(min_length=1)

    def ignores(self, name: str, kind: Kind) -> bool:
        """Whether ``name`` is dropped: listed under ``ignore``, or the platform's own metadata."""
        if kind == "kobo" and (name.startswith(("_", "meta/", "formhub/")) or name == "__version__"):
            return True
        if kind == "redcap" and (name.startswith("redcap_") or name.endswith("_complete")):
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.ignore)


def _describe(err: Any) -> str:
    loc = ".".join(f'"{p}"' if isinstance(p, str) and not re.fullmatch(r"\w+", p) else str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def parse_mapping(data: bytes, name: str) -> tuple[SourceMapping | None, list[str]]:
    """The mapping in ``data``, or None and one line per problem (each naming ``name`` and the field)."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, [f"{name}: not UTF-8 text"]
    except tomllib.TOMLDecodeError as exc:  # e.g. a field listed twice: TOML refuses a repeated key
        return None, [f"{name}: TOML: {exc}"]
    try:
        return SourceMapping.model_validate(raw), []
    except ValidationError as exc:
        return None, [f"{name}: {_describe(err)}" for err in exc.errors()]


def mapping_problems(mapping: SourceMapping, plan: Plan | None) -> list[str]:
    """What is wrong with ``mapping`` against the profile and ``plan``: one line per problem, naming the field.

    Unknown questions and categories; a question answered by two fields; a field both mapped and
    ignored; and a category the plan sets a target for that no code of its field reaches (the
    source could never count towards it).
    """
    problems: list[str] = []
    answered_by: dict[str, str] = {}
    for name, spec in mapping.fields.items():
        at = f'fields."{name}"'
        if mapping.ignores(name, "webhook"):
            problems.append(f"{at}: duplicate: it is also listed under ignore")
        if spec.question not in DIMENSIONS:
            problems.append(f"{at}.question = {spec.question!r}: not a profile question (allowed: {_ALL})")
            continue
        if spec.question in answered_by:
            problems.append(
                f"{at}.question = {spec.question!r}: duplicate: field {answered_by[spec.question]!r} already answers it"
            )
        answered_by.setdefault(spec.question, name)
        allowed = (*CATEGORIES[spec.question], DECLINED)
        for code, category in spec.choices.items():
            if category not in allowed:
                problems.append(
                    f'{at}.choices."{code}" = {category!r}: not a {spec.question} category '
                    f"(allowed: {', '.join(allowed)})"
                )
        if plan is not None and spec.question in plan.dimensions:
            reached = set(spec.choices.values())
            for code, cat in plan.dimensions[spec.question].categories.items():
                if cat.target is not None and code not in reached:
                    problems.append(
                        f"{at}.choices: no code maps to {code!r}, which plan {plan.process_id} sets a target for"
                    )
    if mapping.submitted_at is not None and mapping.submitted_at in mapping.fields:
        problems.append(f"submitted_at = {mapping.submitted_at!r}: duplicate: that field is mapped to a question")
    seen: set[str] = set()
    for pattern in mapping.ignore:
        if pattern in seen:
            problems.append(f"ignore: {pattern!r}: duplicate: listed twice")
        seen.add(pattern)
    return problems


def load_mapping(path: Path, plan: Plan | None) -> SourceMapping:
    """Read a mapping file and check it; ConfigError with every problem, one a line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"mapping {path}: cannot read it ({exc.strerror or exc})") from None
    mapping, problems = parse_mapping(data, f"mapping {Path(path).name}")
    if mapping is not None:
        problems = [f"mapping {Path(path).name}: {p}" for p in mapping_problems(mapping, plan)]
    if problems or mapping is None:
        raise ConfigError("\n".join(problems))
    return mapping


class Refused(Exception):
    """A submission the mapping cannot read as it is: (field, reason) pairs; nothing is stored."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {r}" for f, r in problems))
        self.problems = problems


_CHECKBOX = re.compile(r"^(?P<field>.+)___(?P<code>[^_].*)$")  # REDCap's flat export of a checkbox: race___3
_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(PastTimestamp)


def _code(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value).strip()


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def apply_mapping(mapping: SourceMapping, fields: dict[str, Any], kind: Kind) -> tuple[Profile, datetime | None]:
    """The profile (and submission time) a submission's flat ``fields`` state; Refused naming each bad field.

    Only mapped fields are read. A multi-select answer is a list of codes or codes separated by
    spaces (Kobo's select_multiple); REDCap's checkbox columns (``race___3 = "1"``) are read as
    the codes ticked. Empty values are questions not answered.
    """
    problems: list[tuple[str, str]] = []
    given: dict[str, Any] = {}
    ticked: dict[str, list[str]] = {}
    for name, value in fields.items():
        if name in mapping.fields:
            given[name] = value
            continue
        box = _CHECKBOX.match(name) if kind == "redcap" else None
        if box and box["field"] in mapping.fields:
            if _code(value) not in ("0", "1"):
                problems.append((name, "must be 0 or 1 (a REDCap checkbox)"))
            elif _code(value) == "1":
                ticked.setdefault(box["field"], []).append(box["code"])
            continue
        if name == mapping.submitted_at or mapping.ignores(name, kind):
            continue
        problems.append((name, "is not in the mapping file: map it to a question, or list it under ignore"))
    for name, codes in ticked.items():
        if not _empty(given.get(name)):
            problems.append((name, "is given both as one value and as checkbox columns"))
        given[name] = codes
    answers: dict[str, Any] = {}
    field_of: dict[str, str] = {}
    for name, value in given.items():
        if _empty(value):
            continue
        spec = mapping.fields[name]
        field_of[spec.question] = name
        answer = _answer(spec, value)
        if isinstance(answer, str) and answer.startswith("!"):
            problems.append((name, answer[1:]))
        else:
            answers[spec.question] = answer
    submitted = _submitted(mapping, fields, problems)
    if problems:
        raise Refused(problems)
    try:
        return no_repeated_ticks(Profile.model_validate(answers)), submitted
    except (ValidationError, ValueError) as exc:  # a mapping check lets nothing through that gets here
        name = next(iter(field_of.values()), "body")
        raise Refused([(name, str(exc).splitlines()[0])]) from None


def _answer(spec: FieldMap, value: Any) -> Any:
    """The answer to ``spec.question`` for ``value``, or ``"!reason"``."""
    multi = spec.question in MULTI_SELECT
    if multi and isinstance(value, list):
        codes = [_code(v) for v in value]
    elif multi and isinstance(value, str):
        codes = list(value.split())
    else:
        codes = [_code(value)]
    if any(c is None for c in codes):
        return "!must be a choice code (text)" + (" or a list of them" if multi else "")
    categories = [spec.choices.get(c) for c in codes if c is not None]
    if any(c is None for c in categories):
        return "!" + _UNMAPPED
    chosen = list(dict.fromkeys(c for c in categories if c is not None))
    if DECLINED in chosen:
        return DECLINED if len(chosen) == 1 else "!combines 'prefer not to say' with other choices"
    if not multi:
        return chosen[0] if len(chosen) == 1 else "!one choice expected"
    return chosen


def _submitted(mapping: SourceMapping, fields: dict[str, Any], problems: list[tuple[str, str]]) -> datetime | None:
    name = mapping.submitted_at
    value = fields.get(name) if name else None
    if name is None or _empty(value):
        return None
    if not isinstance(value, str):
        problems.append((name, "must be a date and time (ISO 8601)"))
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:  # Kobo's _submission_time is UTC without a zone
            moment = moment.replace(tzinfo=UTC)
        return _TIMESTAMP.validate_python(moment)
    except ValueError as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "is not a date and time (ISO 8601)"
        problems.append((name, reason))
        return None
