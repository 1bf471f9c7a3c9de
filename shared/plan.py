"""The plan: which communities a process means to hear from, and how many of each.

A plan is a TOML file naming the process, its dimensions (the participant profile's, or
*derived* ones built from profile answers with ``when`` rules), each category's display
label, and targets: a share or a minimum count, each with where its number comes from.
Plans are validated at start; every problem becomes a ``ConfigError`` that names the
file, the key path, the value and the reason, so a coordinator never sees a traceback.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from shared.errors import ConfigError
from shared.ids import PROCESS_ID_PATTERN
from shared.profile import CATEGORIES, DIMENSIONS, MULTI_SELECT

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_FROZEN = ConfigDict(frozen=True, extra="forbid")
# (derived dimension, category, ((profile dimension, codes that put a participant in it), ...))
Rule = tuple[str, str, tuple[tuple[str, frozenset[str]], ...]]


@dataclass(frozen=True)
class DerivedRules:
    """A plan's derived groups as the projection applies them to every participant it counts:
    the rules in plan order, and an index from each (profile dimension, code) to the groups
    (derived dimension, category) that answer puts a participant in."""

    rules: tuple[Rule, ...] = ()
    index: Mapping[tuple[str, str], tuple[tuple[str, str], ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for dimension, category, when in self.rules:
            for source, codes in when:
                for code in codes:
                    index.setdefault((source, code), []).append((dimension, category))
        object.__setattr__(self, "index", {key: tuple(groups) for key, groups in index.items()})

    def __bool__(self) -> bool:
        return bool(self.rules)

    def groups(self, chosen: Mapping[str, tuple[str, ...]]) -> set[tuple[str, str]]:
        """The groups a participant who chose ``chosen`` (``Profile.categories``) is in: any of
        their answers to a listed dimension is one of the group's codes."""
        index = self.index
        found: set[tuple[str, str]] = set()
        for dimension, codes in chosen.items():
            for code in codes:
                hit = index.get((dimension, code))
                if hit:
                    found.update(hit)
        return found


NO_RULES = DerivedRules()


def _problem(message: str) -> PydanticCustomError:
    # A custom error keeps our message as written (no "Value error, " prefix).
    return PydanticCustomError("plan", "{message}", {"message": message})


class Target(BaseModel):
    """What a category should reach: a share of participants, or a minimum count."""

    model_config = _FROZEN
    share: float | None = Field(None, gt=0, le=1, description="Target share (0-1] of the participants in ``base``.")
    base: Literal["answered", "profiled"] = Field(
        "answered",
        description="A share target's base: 'answered', those who answered the question (declined and "
        "skipped left out); 'profiled', everyone who gave a profile, as the 2018 report's regional shares are.",
    )
    min_count: int | None = Field(None, ge=1, description="Fewest participants from the category.")
    kind: Literal["benchmark", "goal"] = Field(
        description="'benchmark': a published population figure; 'goal': a coordinator's goal."
    )
    source: Text = Field(description="Where the number comes from, in words a reader can check.")
    vintage: str | None = Field(None, description="The year (or date) the number refers to.")

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.share is None) == (self.min_count is None):
            given = f"share = {self.share}, min_count = {self.min_count}"
            raise _problem(f"{given}: give exactly one of share or min_count")
        return self


class Category(BaseModel):
    """One category of a dimension: its label, its target, and (if derived) who is in it."""

    model_config = _FROZEN
    label: Text = Field(description="How reports show the category.")
    target: Target | None = Field(None, description="What the category should reach; none means no target.")
    when: dict[str, list[str]] | None = Field(
        None,
        description="Derived dimensions only: a participant is in the category if ANY listed "
        "category of ANY listed profile dimension is among their answers.",
    )


class Dimension(BaseModel):
    """A dimension of the profile, or one derived from it, with its categories in order."""

    model_config = _FROZEN
    label: Text = Field(description="How reports show the dimension.")
    multi_select: bool = Field(description="Whether a participant can be in several categories.")
    derived: bool = Field(False, description="Built from profile answers by each category's `when`.")
    categories: dict[str, Category] = Field(min_length=1, description="Category code -> category, in order.")


class Announce(BaseModel):
    """When a status change is announced (hysteresis): only on a large enough base, and only once it held.

    A category's base is who its share is worked out of (those who answered the question, or
    everyone profiled; everyone counted for a derived group or a minimum count). A change is
    announced once the base holds at least ``min_participants`` and the new status has held at
    every check while ``hold_participants`` more participants joined the base. The defaults (0, 0)
    announce every change at once, as plans written before these fields expect; set both.
    """

    model_config = _FROZEN
    min_participants: int = Field(
        0, ge=0, le=100_000, description="No status is judged or announced while the category's base is smaller."
    )
    hold_participants: int = Field(
        0,
        ge=0,
        le=100_000,
        description="A new status is announced once it held while this many more participants joined the base.",
    )


class Plan(BaseModel):
    """A process's plan: its dimensions, categories, labels and targets."""

    model_config = _FROZEN
    process_id: str = Field(pattern=PROCESS_ID_PATTERN, description="The process this plan is for.")
    name: Text = Field(description="The process's name, as reports show it.")
    threshold: float = Field(
        0.8, gt=0, le=1, description="Representation ratio below which a category falls short (four-fifths rule)."
    )
    dimensions: dict[str, Dimension] = Field(min_length=1, description="Dimension key -> dimension, in order.")
    announce: Announce = Field(default_factory=Announce, description="When status changes are announced.")

    @model_validator(mode="after")
    def _cross_check(self) -> Self:
        # Collect every problem so one run of `engage plan check` shows them all.
        problems = [p for key, dim in self.dimensions.items() for p in _check_dimension(key, dim)]
        if problems:
            raise _problem("\n".join(problems))
        return self

    def dimension(self, key: str) -> Dimension:
        """The dimension ``key``; KeyError naming the plan's dimensions if there is none."""
        try:
            return self.dimensions[key]
        except KeyError:
            raise KeyError(
                f"{key!r} is not a dimension of plan {self.process_id} (its dimensions: {', '.join(self.dimensions)})"
            ) from None

    def label_of(self, dimension: str, category: str) -> str:
        """The category's display label, or its code when the plan gives none."""
        cat = self.dimensions.get(dimension, _NO_DIM).categories.get(category)
        return cat.label if cat else category

    def derived_dimensions(self) -> dict[str, Dimension]:
        """The derived dimensions, in plan order."""
        return {key: dim for key, dim in self.dimensions.items() if dim.derived}

    def derived_rules(self) -> dict[str, dict[str, dict[str, tuple[str, ...]]]]:
        """The rule of every derived category, as data: dimension -> category -> {profile
        dimension: codes}. A participant is in the category if any of their answers to a
        listed profile dimension is one of its codes. :meth:`matches` applies the rule in
        Python; the read models' SQL applies this same data (``store.reads``)."""
        return {
            key: {
                code: {dim: tuple(wanted) for dim, wanted in (cat.when or {}).items()}
                for code, cat in spec.categories.items()
            }
            for key, spec in self.derived_dimensions().items()
        }

    def derived_rule_list(self) -> DerivedRules:
        """Every derived category's rule in plan order, in the form the projection applies to
        each participant it counts."""
        return DerivedRules(
            tuple(
                (key, code, tuple((dim, frozenset(wanted)) for dim, wanted in when.items()))
                for key, categories in self.derived_rules().items()
                for code, when in categories.items()
            )
        )

    def matches(self, dimension_key: str, categories_of_participant: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
        """The categories of derived dimension ``dimension_key`` a participant is in, in plan order.

        ``categories_of_participant`` is ``Profile.categories``: profile dimension -> chosen codes.
        """
        rules = self.derived_rule_list()
        found = rules.groups(categories_of_participant)
        return tuple(code for key, code, _ in rules.rules if key == dimension_key and (key, code) in found)


_NO_DIM = Dimension.model_construct(label="", multi_select=False, categories={})


def _allowed(dim: str) -> str:
    return ", ".join(CATEGORIES[dim])


def _check_dimension(key: str, dim: Dimension) -> list[str]:
    """The problems with one dimension that need the profile (or the other fields) to see."""
    at, problems = f"dimensions.{key}", []
    if dim.derived:
        if key in DIMENSIONS:
            problems.append(f"{at}.derived = true: {key!r} is a profile dimension; a derived one needs its own name")
        if not dim.multi_select:
            problems.append(
                f"{at}.multi_select = false: a derived dimension must be multi_select = true "
                "(a participant can be in several of its categories)"
            )
        for code, cat in dim.categories.items():
            problems += _check_when(f"{at}.categories.{code}.when", cat.when)
        return problems
    if key not in DIMENSIONS:
        return [
            f"{at}: {key!r} is not a profile dimension (allowed: {', '.join(DIMENSIONS)}; "
            "or set derived = true and give each category a `when`)"
        ]
    if dim.multi_select != (key in MULTI_SELECT):
        kind = "multi-select" if key in MULTI_SELECT else "single-select"
        problems.append(
            f"{at}.multi_select = {str(dim.multi_select).lower()}: {key} is {kind} in the "
            f"participant profile, so multi_select must be {str(key in MULTI_SELECT).lower()}"
        )
    for code, cat in dim.categories.items():
        if code not in CATEGORIES[key]:
            problems.append(f"{at}.categories.{code}: {code!r} is not a {key} category (allowed: {_allowed(key)})")
        if cat.when is not None:
            problems.append(
                f"{at}.categories.{code}.when = {cat.when}: only categories of a derived "
                f"dimension take `when` (set derived = true on {at}, or remove `when`)"
            )
    shares = {code: cat.target.share for code, cat in dim.categories.items() if cat.target and cat.target.share}
    if not dim.multi_select and sum(shares.values()) > 1.0 + 1e-9:
        terms = " + ".join(f"{c} {s:g}" for c, s in shares.items())
        problems.append(
            f"{at}: target shares add up to {sum(shares.values()):g} ({terms}): in a "
            "single-select dimension each participant is in one category, so they cannot pass 1.0"
        )
    return problems


def _check_when(at: str, when: dict[str, list[str]] | None) -> list[str]:
    if not when:
        return [
            f"{at}: missing: every category of a derived dimension needs a `when` naming profile "
            'categories (e.g. when = { professional_roles = ["police"] })'
        ]
    problems = []
    for dim, codes in when.items():
        if dim not in DIMENSIONS:
            problems.append(f"{at}.{dim}: {dim!r} is not a profile dimension (allowed: {', '.join(DIMENSIONS)})")
        elif not codes:
            problems.append(f"{at}.{dim} = []: lists no categories, so no participant could match")
        problems += [
            f"{at}.{dim}: {c!r} is not a {dim} category (allowed: {_allowed(dim)})"
            for c in codes
            if dim in DIMENSIONS and c not in CATEGORIES[dim]
        ]
    return problems


def _describe(err: Any) -> str:
    """One pydantic error as `key.path = value: reason` (the value only when it is one)."""
    loc = ".".join(str(part) for part in err["loc"])
    value = err.get("input")
    shown = f" = {value!r}" if err["type"] != "missing" and isinstance(value, str | int | float | list) else ""
    return f"{loc}{shown}: {err['msg']}" if loc else err["msg"]


def _parse(data: bytes, name: str) -> Plan:
    """Parse and validate one plan's bytes; ConfigError names ``name`` on any problem."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"plan {name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        # 3.11's message ends "(at line N, column M)" or "(at end of document)"; lead with
        # the place, as editors do.
        found = re.search(r"^(.*) \(at (?:line (\d+), column (\d+)|end of document)\)$", str(exc))
        last = len(data.decode("utf-8").splitlines()) or 1
        where = (
            str(exc)
            if not found
            else f"line {found[2]}, column {found[3]}: {found[1]}"
            if found[2]
            else f"line {last} (end of file): {found[1]}"
        )
        raise ConfigError(f"plan {name}: TOML syntax error at {where}") from None
    try:
        return Plan.model_validate(raw)
    except ValidationError as exc:
        lines = [f"plan {name}: {line}" for err in exc.errors() for line in _describe(err).splitlines()]
        raise ConfigError("\n".join(lines)) from None


def load_plan(path: Path) -> Plan:
    """Read and validate the plan at ``path``; ConfigError on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"plan {path}: cannot read it ({exc.strerror or exc})") from None
    return _parse(data, path.name)


def _keyed(loaded: list[tuple[str, Plan]]) -> dict[str, Plan]:
    """process_id -> plan; two plans for one process is a ConfigError naming both files."""
    out: dict[str, Plan] = {}
    origin: dict[str, str] = {}
    for where, plan in loaded:
        if plan.process_id in out:
            raise ConfigError(
                f"plan {where}: process_id = {plan.process_id!r}: already planned by "
                f"{origin[plan.process_id]}; each process has one plan"
            )
        out[plan.process_id], origin[plan.process_id] = plan, where
    return out


def shipped_plans() -> dict[str, Plan]:
    """The plans shipped in ``shared/plans/``, by process_id."""
    shipped = sorted(
        (f for f in files("shared").joinpath("plans").iterdir() if f.name.endswith(".toml")), key=lambda f: f.name
    )
    return _keyed([(f.name, _parse(f.read_bytes(), f.name)) for f in shipped])


def load_plans(paths: list[Path] | None = None) -> dict[str, Plan]:
    """The plans in ``paths`` (or the shipped ones when None or empty), by process_id."""
    if not paths:
        return shipped_plans()
    return _keyed([(str(p), load_plan(Path(p))) for p in paths])


def check_plan_text(path: Path) -> str:
    """A short summary of the plan at ``path`` for `engage plan check`; ConfigError if it is bad."""
    plan = load_plan(Path(path))
    cats = [(key, code, cat) for key, dim in plan.dimensions.items() for code, cat in dim.categories.items()]
    targets = [cat.target for _, _, cat in cats if cat.target]
    goals = sum(t.kind == "goal" for t in targets)
    lines = [
        f"plan {Path(path).name}: {plan.process_id} ({plan.name})",
        f"  {len(plan.dimensions)} dimensions ({len(plan.derived_dimensions())} derived), "
        f"{len(cats)} categories, {len(targets)} targets ({goals} goals, {len(targets) - goals} benchmarks), "
        f"threshold {plan.threshold:g}",
    ]
    warnings = []
    for key, dim in plan.dimensions.items():
        shares = [c.target.share for c in dim.categories.values() if c.target and c.target.share]
        # One share (e.g. lived experience "yes") is a deliberate goal; several adding to
        # under half look like a distribution left unfinished.
        if len(shares) > 1 and not dim.multi_select and sum(shares) < 0.5:
            warnings.append(
                f"dimensions.{key}: target shares add up to only {sum(shares):g}; "
                "most of this single-select dimension has no target"
            )
    warnings += [
        f"dimensions.{key}.categories.{code}.target: a benchmark without a vintage; say which year it is"
        for key, code, cat in cats
        if cat.target and cat.target.kind == "benchmark" and not cat.target.vintage
    ]
    if plan.announce.hold_participants == 0:
        warnings.append(
            "announce.hold_participants = 0: every status change is announced at once, however briefly it "
            "holds; set announce = { min_participants = ..., hold_participants = ... }"
        )
    lines += [f"  warning: {w}" for w in warnings] or ["  no warnings"]
    return "\n".join(lines)
