"""The data dictionary of an analyst export: every column, every category, every target, and the privacy terms.

Kept next to the export so a column cannot be added without saying what it means. Labels
come from the plan; the only words of ours are the column meanings and the notes below,
written in the process's own language ("people with lived experience", "participants").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from services.analytics.export.risk import MORE_THAN_ONE, SUPPRESSED, Anonymised, Generalisation
from shared.plan import Plan
from shared.profile import CATEGORIES, DECLINED, DIMENSIONS, MULTI_SELECT, Profile


@dataclass(frozen=True)
class Column:
    """One column of an exported table: ``type`` is string, integer, number, date or timestamp."""

    name: str
    type: str
    meaning: str


OWN_TERMS = "experience_terms"
CATEGORY_NOTES = {
    (OWN_TERMS, "own_term_prostitute"): (
        "The participant's own term: they chose this word for themselves. It is their term, never a label "
        "of ours; quote it as theirs. The code is kept as recorded."
    ),
}
DIMENSION_NOTES = {
    OWN_TERMS: "Each category is a term participants chose for their own experience, not a label of ours.",
}
PRIVACY = [
    "Participants appear under pseudonyms: a keyed hash (HMAC-SHA256) of the participant's key with a random "
    "key made for this export and not stored. Within one export a participant keeps one pseudonym; the "
    "pseudonyms cannot be joined back to intake's references, nor to another export's.",
    "Participants who withdrew are in no row and in no count.",
    "No free text exists in the event log: no name, phone number, e-mail address, street address or note. "
    "Profiles hold only category codes the participants chose.",
    "Counts here are not suppressed (the analyst view). Before sharing a table outside the analysis team, "
    "suppress counts from 1 to k-1 as the coordinators' dashboard does.",
    "Every export is recorded on the event log (DataExported): who asked, under which scope, what was "
    "exported and the point of the log it reflects.",
]
PRIVACY_SHOWN = [
    "These are the coordinators' numbers: every count is protected exactly as /coverage shows it to "
    "coordinators (small counts are never shown as they are), so the tables can be read beside the dashboard.",
    "Participants who withdrew are in no count.",
    "Every export is recorded on the event log (DataExported): who asked, under which scope, what was "
    "exported and the point of the log it reflects.",
]
RISK_NOTES = [
    "The unit is the participant: each person once, with their answers as released, whichever table.",
    "Quasi-identifiers are every profile answer and every dimension the plan derives from them: what someone "
    "who knows a participant may know too. A multi-select answer counts as the set of its codes; 'declined', "
    "an empty (not answered) value and 'suppressed' are values like any other.",
    "A sample unique is a participant alone in the export with their combination of quasi-identifiers: anyone "
    "who knows that combination finds them, and everything else their rows say.",
    "The event columns (sequence, event_type, channel, occurred_at, local_date, event_region) and the number of "
    "engagements are not counted as quasi-identifiers here, yet can single someone out to a person who knows "
    "when and where they took part; event_region is recoded and suppressed along with the participant's region.",
]

BASE_ENGAGEMENT_COLUMNS = [
    Column("participant", "string", "Pseudonym of the participant (see privacy); the same within this export."),
    Column("sequence", "integer", "Stream sequence of the event this engagement comes from."),
    Column(
        "event_type",
        "string",
        "The event: InterviewCompleted, GatheringHeld, SurveyCompleted, "
        "AdvisoryMemberJoined or AdvisoryFeedbackLogged.",
    ),
    Column("channel", "string", "How the participant took part; engagements are counted per channel."),
    Column("occurred_at", "timestamp", "When it happened, in UTC (ISO 8601 in CSV)."),
    Column("local_date", "date", "The local calendar day it happened (the export's time zone)."),
    Column(
        "event_region",
        "string",
        "Region the event itself names (an interview's from its scheduling, a "
        "gathering's); empty if none. The participant's own region is the `region` column.",
    ),
]

COVERAGE_COLUMNS = [
    Column("dimension", "string", "Dimension key (a profile question, or derived from answers)."),
    Column("dimension_label", "string", "The dimension's label in the plan."),
    Column("category", "string", "Category code."),
    Column("label", "string", "The category's label in the plan."),
    Column("count", "integer", "Participants in the category."),
    Column(
        "alone",
        "integer",
        "Multi-select profile questions only: participants who chose this category and "
        "nothing else (count is then 'alone or in combination').",
    ),
    Column(
        "share",
        "number",
        "Percent of those who answered the question (declined and unanswered left out; "
        "a derived dimension: of all participants), one decimal, half up.",
    ),
    Column(
        "share_of_profiled",
        "number",
        "Percent of everyone who gave a profile, those who declined or skipped the question included "
        "(the 2018 report's base for regions), one decimal, half up; empty for a derived dimension.",
    ),
    Column("interval_low", "number", "Lower bound of the Wilson 95% interval of the share, in percent."),
    Column("interval_high", "number", "Upper bound of the Wilson 95% interval of the share, in percent."),
    Column("target_share", "number", "The plan's target share, in percent; empty if the target is a minimum."),
    Column("target_min_count", "integer", "The plan's target minimum count; empty if the target is a share."),
    Column("target_kind", "string", "benchmark (a population figure) or goal (a coordinators' goal)."),
    Column("target_source", "string", "Where the target's number comes from."),
    Column("target_vintage", "string", "The year (or date) the target refers to."),
    Column("ratio", "number", "share / target_share, or count / target_min_count, two decimals."),
    Column("status", "string", "under-reached, watch, on-track or no-target (see the README)."),
    Column(
        "needed",
        "integer",
        "Under-reached only: the fewest more participants that bring the ratio to the plan's threshold.",
    ),
]

PARTICIPANT_BASE_COLUMNS = [
    Column("participant", "string", "Pseudonym of the participant (see privacy); the same as in the engagements."),
    Column("engagements", "integer", "How many times the participant took part (rows of theirs in engagements)."),
]

TOTALS_COLUMNS = [
    Column(
        "measure",
        "string",
        "participants, profiled (those who gave a profile), engagements, or a dimension's answered / declined / "
        "not_answered.",
    ),
    Column("dimension", "string", "For answered, declined, not_answered: the dimension; otherwise empty."),
    Column(
        "channel",
        "string",
        "For participants and engagements: one channel (the people who took part through it, or their "
        "engagements), or empty for all channels together.",
    ),
    Column("count", "integer", "The number."),
]


def _profile_columns(plan: Plan) -> list[Column]:
    cols = []
    for dim in DIMENSIONS:
        label = plan.dimensions[dim].label if dim in plan.dimensions else Profile.model_fields[dim].description
        how = (
            "category codes joined by ';' in the question's order" if dim in MULTI_SELECT else "the category code"
        ) + ", 'declined', or empty if not answered"
        cols.append(
            Column(
                dim,
                "string",
                f"{label}: the participant's answer as projected (merged over their engagements): {how}; "
                f"as released, it may be generalised (e.g. '{MORE_THAN_ONE}') or '{SUPPRESSED}' (see "
                "re-identification).",
            )
        )
    for dim, spec in plan.derived_dimensions().items():
        cols.append(
            Column(
                dim,
                "string",
                f"{spec.label}: derived by the plan's rules from the profile columns; "
                "category codes joined by ';', empty if none; as released, it may be generalised or "
                f"'{SUPPRESSED}'.",
            )
        )
    return cols


def engagement_columns(plan: Plan) -> list[Column]:
    """The engagements table's columns: the fixed ones, each profile question, each derived dimension."""
    return [*BASE_ENGAGEMENT_COLUMNS, *_profile_columns(plan)]


def participant_columns(plan: Plan) -> list[Column]:
    """The participants table's columns: the pseudonym, how often, each profile question, each derived one."""
    return [*PARTICIPANT_BASE_COLUMNS, *_profile_columns(plan)]


COUNTED = {"count", "alone"}  # the columns that hold a number of people a coordinator sees protected


def as_shown(columns: Sequence[Column], protected: bool) -> list[Column]:
    """The columns as a protected answer fills them: its counts are what /coverage shows (text, e.g. '<5')."""
    if not protected:
        return list(columns)
    return [
        Column(c.name, "string", f"{c.meaning} As /coverage shows it to coordinators (protected).")
        if c.name in COUNTED
        else c
        for c in columns
    ]


def reidentification(risk: Anonymised, steps: Sequence[Generalisation], qis: Sequence[str]) -> dict[str, Any]:
    """The re-identification figures of a microdata export and what was done to reach them, JSON-ready."""
    return {
        "unit": "participant",
        "quasi_identifiers": list(qis),
        "k_anonymity": risk.k,
        "as_recorded": risk.before.as_dict(),
        "as_released": risk.after.as_dict(),
        "generalised": [
            {"name": g.name, "columns": list(g.columns), "how": g.how, "values": risk.generalised.get(g.name, 0)}
            for g in steps
        ],
        "suppressed": dict(risk.suppressed),
        "suppressed_values": risk.suppressed_values,
        "notes": RISK_NOTES,
    }


def _dimensions(plan: Plan) -> list[dict[str, Any]]:
    out = []
    keys = list(plan.dimensions) + [d for d in DIMENSIONS if d not in plan.dimensions]
    for key in keys:
        spec = plan.dimensions.get(key)
        derived = bool(spec and spec.derived)
        codes = list(spec.categories) if spec else list(CATEGORIES[key])
        cats = []
        for code in codes:
            cat: dict[str, Any] = {"code": code, "label": plan.label_of(key, code)}
            if spec and spec.categories[code].when:
                cat["when"] = spec.categories[code].when
            if (key, code) in CATEGORY_NOTES:
                cat["note"] = CATEGORY_NOTES[(key, code)]
            cats.append(cat)
        if not derived:
            cats.append({"code": DECLINED, "label": "Declined to answer"})
        entry = {
            "dimension": key,
            "label": spec.label if spec else Profile.model_fields[key].description,
            "multi_select": spec.multi_select if spec else key in MULTI_SELECT,
            "derived": derived,
            "categories": cats,
        }
        if key in DIMENSION_NOTES:
            entry["note"] = DIMENSION_NOTES[key]
        out.append(entry)
    return out


def _targets(plan: Plan) -> list[dict[str, Any]]:
    return [
        {
            "dimension": key,
            "category": code,
            "label": cat.label,
            "share_percent": None if cat.target.share is None else round(100 * cat.target.share, 1),
            "min_count": cat.target.min_count,
            "kind": cat.target.kind,
            "source": cat.target.source,
            "vintage": cat.target.vintage,
        }
        for key, dim in plan.dimensions.items()
        for code, cat in dim.categories.items()
        if cat.target
    ]


def dictionary(
    plan: Plan,
    tables: Mapping[str, Sequence[Column]],
    *,
    formats: Any,
    stream: str,
    sequence: int,
    made_at: datetime,
    tz: tzinfo,
    first_event: datetime | None,
    last_event: datetime | None,
    suppressed: bool = False,
    k: int | None = None,
    risk: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The data dictionary as plain JSON-ready data.

    ``suppressed``: the aggregate tables are the coordinators' protected view (small-cell ``k``);
    ``risk``: a microdata export's re-identification figures (see ``reidentification``).
    """
    about = {
        "engagements": "One row per participant-engagement: an interview participant, a gathering attendee, a "
        "survey response, an advisory member joining, each member named in advisory feedback.",
        "participants": "One row per participant: their pseudonym, how many times they took part, and their "
        "answers (merged over their engagements) as released.",
        "coverage": (
            f"One row per dimension x category: the coordinators' coverage answer, protected as /coverage "
            f"shows it (k = {k})."
            if suppressed
            else "One row per dimension x category: the analyst coverage answer (unsuppressed)."
        ),
        "totals": "Participants and engagements (all, and per channel), and per dimension how many answered, "
        "declined or did not answer" + (", protected as /coverage shows them." if suppressed else "."),
    }
    made: dict[str, Any] = {
        "process_id": plan.process_id,
        "process_name": plan.name,
        "stream": stream,
        "stream_sequence": sequence,
        "made_at": made_at.isoformat(),
        "timezone": str(tz),
        "first_event": first_event.isoformat() if first_event else None,
        "last_event": last_event.isoformat() if last_event else None,
        "threshold": plan.threshold,
        "view": "coordinator" if suppressed else "analyst",
        "tables": {
            name: {
                "files": [f"{name}.{fmt}" for fmt in formats],
                "description": about[name],
                "columns": [{"name": c.name, "type": c.type, "meaning": c.meaning} for c in cols],
            }
            for name, cols in tables.items()
        },
        "dimensions": _dimensions(plan),
        "targets": _targets(plan),
        "privacy": PRIVACY_SHOWN if suppressed else PRIVACY,
    }
    if risk is not None:
        made["reidentification"] = risk
    return made


def risk_markdown(risk: dict[str, Any]) -> list[str]:
    """The re-identification section of the Markdown dictionary (and the CLI's summary)."""
    before, after = risk["as_recorded"], risk["as_released"]
    target = risk["k_anonymity"]
    lines = [
        "",
        "## Re-identification risk",
        "",
        f"- quasi-identifiers: {', '.join(f'`{q}`' for q in risk['quasi_identifiers'])}",
        f"- k-anonymity target: {target if target is not None else 'none (released as recorded)'}",
        "",
        "| | participants | sample uniques | smallest class | classes | in classes below k |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in (("as recorded", before), ("as released", after)):
        lines.append(
            f"| {name} | {r['participants']} | {r['sample_uniques']} | {_cell(r['smallest_class'])} | "
            f"{r['classes']} | {r['below_k']} (k = {r['k']}) |"
        )
    if risk["generalised"]:
        lines += ["", "Generalised:", ""]
        lines += [f"- `{g['name']}`: {g['how']} ({g['values']} values)" for g in risk["generalised"]]
    if risk["suppressed"]:
        lines += ["", f"Suppressed ({risk['suppressed_values']} values in all, shown as `{SUPPRESSED}`):", ""]
        lines += [f"- `{column}`: {n}" for column, n in risk["suppressed"].items()]
    lines += ["", *[f"- {note}" for note in risk["notes"]]]
    return lines


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def markdown(d: dict[str, Any]) -> str:
    """The same dictionary for people: one page of Markdown."""
    lines = [
        f"# Data dictionary: {d['process_name']}",
        "",
        f"- process: `{d['process_id']}`",
        f"- reflects stream `{d['stream']}` up to sequence {d['stream_sequence']}",
        f"- made at {d['made_at']}; local days in {d['timezone']}",
        f"- events from {d['first_event'] or '(none)'} to {d['last_event'] or '(none)'}",
        "",
        "## Privacy",
        "",
    ]
    lines += [f"- {p}" for p in d["privacy"]]
    if d.get("reidentification"):
        lines += risk_markdown(d["reidentification"])
    for name, table in d["tables"].items():
        lines += [
            "",
            f"## {name} ({', '.join(table['files'])})",
            "",
            table["description"],
            "",
            "| column | type | meaning |",
            "| --- | --- | --- |",
        ]
        lines += [f"| `{c['name']}` | {c['type']} | {_cell(c['meaning'])} |" for c in table["columns"]]
    lines += ["", "## Dimensions and categories"]
    for dim in d["dimensions"]:
        kind = (
            "derived, several may apply"
            if dim["derived"]
            else "several may be chosen"
            if dim["multi_select"]
            else "one answer"
        )
        lines += ["", f"### {_cell(dim['label'])} (`{dim['dimension']}`; {kind})", ""]
        if dim.get("note"):
            lines += [dim["note"], ""]
        lines += ["| code | label | note |", "| --- | --- | --- |"]
        for c in dim["categories"]:
            note = c.get("note") or (f"when any of {c['when']}" if c.get("when") else "")
            lines.append(f"| `{c['code']}` | {_cell(c['label'])} | {_cell(note)} |")
    lines += [
        "",
        f"## Targets (threshold {d['threshold']})",
        "",
        "| dimension | category | target | kind | vintage | source |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in d["targets"]:
        value = f"{t['share_percent']}%" if t["share_percent"] is not None else f"at least {t['min_count']}"
        lines.append(
            f"| `{t['dimension']}` | {_cell(t['label'])} | {value} | {t['kind']} | {_cell(t['vintage'])} "
            f"| {_cell(t['source'])} |"
        )
    return "\n".join(lines) + "\n"
