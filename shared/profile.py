"""The participant profile: what a person chose to say about themselves.

Every field is optional. ``None`` means the question was not asked or not answered;
``"declined"`` is an answer in its own right ("I'd rather not say") and is counted as one.
Multi-select questions (race/ethnicity, gender, the terms people use for their
experience, professional roles) take a list of categories, or ``"declined"``; a list holds
at most as many items as the question has categories.

The categories follow the Safe Harbor for All 2018 report. There is deliberately no
free-text field: nothing here can carry a name, a phone number or an address.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DECLINED = "declined"
Declined = Literal["declined"]


class Region(StrEnum):
    """The report's eight regions of Minnesota."""

    twin_cities_west_metro = "twin_cities_west_metro"
    twin_cities_east_metro = "twin_cities_east_metro"
    northeast = "northeast"
    southwest = "southwest"
    northwest = "northwest"
    central = "central"
    southeast = "southeast"
    west_central = "west_central"


class YesNo(StrEnum):
    yes = "yes"
    no = "no"


class RaceEthnicity(StrEnum):
    white = "white"
    black = "black"
    indigenous = "indigenous"
    multiracial = "multiracial"
    asian = "asian"
    latinx = "latinx"
    immigrant = "immigrant"
    other = "other"


class Gender(StrEnum):
    female = "female"
    male = "male"
    transgender = "transgender"
    non_binary = "non_binary"
    two_spirit = "two_spirit"
    another = "another"


class AgeBand(StrEnum):
    age_18_24 = "18-24"
    age_25_34 = "25-34"
    age_35_44 = "35-44"
    age_45_54 = "45-54"
    age_55_64 = "55-64"
    age_65_plus = "65+"


class ExperienceTerm(StrEnum):
    """Terms participants chose for their own experience (several may be chosen).

    ``own_term_prostitute`` records that a participant chose the word "prostitute" for
    themselves. It is their term, always shown in quotes as theirs, never a label of ours.
    """

    survivor_of_trafficking = "survivor_of_trafficking"
    survivor_of_sexual_exploitation = "survivor_of_sexual_exploitation"
    sex_worker = "sex_worker"
    independent_provider = "independent_provider"
    survival_sex = "survival_sex"
    own_term_prostitute = "own_term_prostitute"
    another_term = "another_term"


class ProfessionalRole(StrEnum):
    outreach_worker = "outreach_worker"
    social_worker = "social_worker"
    social_service_provider = "social_service_provider"
    advocate = "advocate"
    police = "police"
    prosecutor = "prosecutor"
    public_defender = "public_defender"
    attorney = "attorney"
    probation_officer = "probation_officer"
    judge = "judge"
    public_health = "public_health"
    nurse = "nurse"
    therapist = "therapist"
    researcher = "researcher"
    hospitality_worker = "hospitality_worker"
    faith_community = "faith_community"
    philanthropy = "philanthropy"
    crime_victim_coalition = "crime_victim_coalition"
    intersecting_issues = "intersecting_issues"
    tribal_agency = "tribal_agency"


class Profile(BaseModel):
    """What a participant chose to say about themselves. Every field is optional."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: Region | Declined | None = Field(None, description="Where in Minnesota the participant lives or works.")
    lived_experience: YesNo | Declined | None = Field(
        None, description="Whether the participant has lived experience in transactional sex."
    )
    race_ethnicity: (
        Annotated[list[RaceEthnicity], Field(min_length=1, max_length=len(RaceEthnicity))] | Declined | None
    ) = Field(None, description="Race/ethnicity; several may be chosen.")
    gender: Annotated[list[Gender], Field(min_length=1, max_length=len(Gender))] | Declined | None = Field(
        None, description="Gender; several may be chosen."
    )
    lgbq: YesNo | Declined | None = Field(
        None, description="Whether the participant identifies as lesbian, gay, bisexual, queer or pansexual."
    )
    age_band: AgeBand | Declined | None = Field(None, description="Age band (participants are 18 or older).")
    experience_terms: (
        Annotated[list[ExperienceTerm], Field(min_length=1, max_length=len(ExperienceTerm))] | Declined | None
    ) = Field(None, description="The terms the participant uses for their own experience; several may be chosen.")
    professional_roles: (
        Annotated[list[ProfessionalRole], Field(min_length=1, max_length=len(ProfessionalRole))] | Declined | None
    ) = Field(None, description="Professional roles related to the participant's knowledge of the issues; several.")
    task_force_connection: YesNo | Declined | None = Field(
        None, description="Whether the participant has a connection to a human-trafficking task force."
    )
    tribal_affiliation: YesNo | Declined | None = Field(
        None, description="Whether the participant is formally affiliated with a tribal agency or entity."
    )

    def merged_with(self, newer: Profile) -> Profile:
        """The profile after ``newer`` answers: fields it answers replace ours, others stay."""
        if not self.model_fields_set:
            return newer
        given = newer.model_dump(exclude_none=True)
        if not given:
            return self
        # Build a new model (not model_copy, which would carry over the cached categories).
        return type(self).model_construct(**{**self.model_dump(exclude_none=True), **given})

    @cached_property
    def categories(self) -> dict[str, tuple[str, ...]]:
        """Each answered dimension and its chosen categories (``("declined",)`` when declined)."""
        out: dict[str, tuple[str, ...]] = {}
        values = self.__dict__  # the fields' values; read directly, as replays ask this of every participant
        for name in _FIELD_NAMES:
            value = values.get(name)
            if value is None:
                continue
            if type(value) is list:
                # dict.fromkeys drops a repeated tick, keeping the participant's order;
                # str.__str__ turns an enum member into its plain code
                out[name] = tuple(dict.fromkeys(map(str.__str__, value)))
            else:
                out[name] = (str.__str__(value),)
        return out


DIMENSIONS: tuple[str, ...] = tuple(Profile.model_fields)
_FIELD_NAMES = DIMENSIONS
MULTI_SELECT: frozenset[str] = frozenset({"race_ethnicity", "gender", "experience_terms", "professional_roles"})

_ENUM_OF: dict[str, type[StrEnum]] = {
    "region": Region,
    "lived_experience": YesNo,
    "race_ethnicity": RaceEthnicity,
    "gender": Gender,
    "lgbq": YesNo,
    "age_band": AgeBand,
    "experience_terms": ExperienceTerm,
    "professional_roles": ProfessionalRole,
    "task_force_connection": YesNo,
    "tribal_affiliation": YesNo,
}
# Every dimension's category codes (besides "declined"), in the order the enums list them.
CATEGORIES: dict[str, tuple[str, ...]] = {dim: tuple(c.value for c in _ENUM_OF[dim]) for dim in DIMENSIONS}


def no_repeated_ticks(profile: Profile) -> Profile:
    """Refuse a multi-select that lists a category twice (the message names the question, never a value).

    The log has always accepted a repeated tick and counts it once (older events may carry
    one), so the rule is the request's, not the event's: see :data:`StatedProfile`.
    """
    values = profile.__dict__
    for name in sorted(MULTI_SELECT):
        value = values.get(name)
        if type(value) is list and len(set(value)) != len(value):
            raise ValueError(f"{name} lists a category more than once")
    return profile


# A profile as a request states it: a Profile, and each multi-select lists a category once.
StatedProfile = Annotated[Profile, AfterValidator(no_repeated_ticks)]
