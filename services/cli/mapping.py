"""`engage mapping check FILE`: is a source's mapping file one the survey service will accept?

It checks the file against the participant profile and the plan of its process (the plan
``--plan`` names, else the one ``ENGAGE_PLANS`` or the shipped plans give for the file's
``process_id``, else for ``ENGAGE_PROCESS_ID``): unknown questions and categories, a question
answered by two fields, a field both mapped and ignored, a category the plan sets a target for
that no code reaches. One line per problem, each naming the field.
"""

from __future__ import annotations

from pathlib import Path

from services.survey.sources.mapping import mapping_problems, parse_mapping
from shared.errors import ConfigError
from shared.plan import Plan, load_plan, load_plans
from shared.settings import Settings


def check_mapping(file: Path, settings: Settings, plan_file: Path | None = None) -> tuple[list[str], str]:
    """The problems with the mapping at ``file`` (one line each), and a one-line summary when there are none."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        return [f"{file}: cannot read it ({exc.strerror or exc})"], ""
    mapping, problems = parse_mapping(data, file.name)
    if mapping is None:
        return problems, ""
    process = mapping.process_id or settings.process_id
    plan: Plan | None
    try:
        plan = load_plan(plan_file) if plan_file else load_plans(settings.plans).get(process)
    except ConfigError as exc:
        return [f"plan: {line}" for line in str(exc).splitlines()], ""
    problems = [f"{file.name}: {p}" for p in mapping_problems(mapping, plan)]
    against = f"plan {plan.process_id}" if plan else f"the profile (no plan for {process})"
    questions = ", ".join(spec.question for spec in mapping.fields.values())
    return problems, f"mapping {file.name}: {len(mapping.fields)} fields ({questions}), checked against {against}"
