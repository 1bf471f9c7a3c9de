"""A group's drill-down as a page: HTML from the drill-down ``snapshot.drilldown`` builds. Pure.

Server-rendered, with no script: the page holds only what the drill-down holds (rounded
numbers, "<k" for a count rounded to 0), every value escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from string import Template
from typing import Any
from urllib.parse import urlencode

ICONS = {"under-reached": "▼", "attention": "!", "watch": "●", "on-track": "✓", "no-target": "–"}


def _e(value: object) -> str:
    return html.escape(str(value))


def dashboard_link(process_id: str, segment: str | None) -> str:
    return "/dashboard?" + urlencode({"process_id": process_id, **({"segment": segment} if segment else {})})


def group_link(process_id: str, group: str, segment: str | None) -> str:
    query = {"process_id": process_id, "group": group, **({"segment": segment} if segment else {})}
    return "/dashboard/group?" + urlencode(query)


def count_cell(value: int | str | None, k: int) -> str:
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if value is None:
        return '<td class="num">–</td>'
    return f'<td class="num" title="Fewer than {k}: from 0 to {k - 1}">{_e(value)}</td>'


def _count(value: int | str, k: int) -> str:
    return f"{value:,}" if isinstance(value, int) else _e(value)


def target_text(target: Mapping[str, Any] | None) -> str:
    if not target:
        return "no target"
    if target.get("share") is not None:
        base = "everyone who gave a profile" if target.get("base") == "profiled" else "those who answered"
        return f"{target['share']:.1f}% of {base}"
    return f"at least {target['min_count']} people"


def _standing(drill: Mapping[str, Any], k: int) -> str:
    facts = (
        '<dl class="facts">'
        f'<div><dt>People in this group</dt><dd id="group-participants">{_count(drill["participants"], k)}</dd></div>'
        f'<div><dt>Their engagements</dt><dd id="group-engagements">{_count(drill["engagements"], k)}</dd></div>'
        "</dl>"
    )
    card = drill["card"]
    if card is None:
        return facts
    reach = card["reach_text"]
    icon = ICONS.get(card["status"], "?")
    return (
        f'<p class="standing {_e(card["status"])}"><span aria-hidden="true">{icon}</span> '
        f'<span id="group-status">{_e(card["status_text"])}</span></p>'
        f'<p class="hint" id="group-reach">{_e(reach[:1].upper() + reach[1:])}; '
        f"the plan asks for {_e(target_text(card['target']))}.</p>" + facts
    )


def _table(head: Sequence[str], rows: Sequence[str], table_id: str) -> str:
    cols = "".join(
        f'<th scope="col" class="num">{_e(h)}</th>' if i else f'<th scope="col">{_e(h)}</th>'
        for i, h in enumerate(head)
    )
    return f'<table class="cats" id="{table_id}"><thead><tr>{cols}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _share(row: Mapping[str, Any]) -> str:
    """A share of rounded numbers; none for a count rounded to 0 (its true share is not 0)."""
    share = row["share"]
    return f"{share:.1f}%" if isinstance(row["count"], int) and share is not None else "–"


def channels_table(drill: Mapping[str, Any], k: int) -> str:
    rows = [
        f'<tr><th scope="row">{_e(c["label"])}</th>'
        f"{count_cell(c['participants'], k)}{count_cell(c['engagements'], k)}</tr>"
        for c in drill["channels"]
    ]
    if not rows:
        return '<p class="empty">Nothing recorded yet.</p>'
    return _table(["Channel", "People", "Engagements"], rows, "group-channels")


def regions_section(drill: Mapping[str, Any], k: int) -> str:
    regions = drill["regions"]
    if regions is None:
        return '<p class="empty">The plan has no regions.</p>'
    meta = (
        f'<p class="hint">Shares are of the group\'s people who said where they are. Answered '
        f"{_count(regions['answered'], k)} · declined {_count(regions['declined'], k)} · "
        f"not answered {_count(regions['not_answered'], k)}.</p>"
    )
    rows = [
        f'<tr><th scope="row">{_e(r["label"])}</th>{count_cell(r["count"], k)}<td class="num">{_share(r)}</td></tr>'
        for r in regions["categories"]
    ]
    return meta + '<div class="table-wrap">' + _table(["Region", "People", "Share"], rows, "group-regions") + "</div>"


def weeks_table(drill: Mapping[str, Any], k: int) -> str:
    data = drill["over_time"]
    if not data["periods"]:
        return '<p class="empty">Nothing recorded yet.</p>'
    rows = [
        f'<tr><th scope="row">{_e(p["period"])}</th>'
        + "".join(count_cell(p["by_channel"].get(c["channel"]), k) for c in data["channels"])
        + count_cell(p["total"], k)
        + "</tr>"
        for p in data["periods"]
    ]
    head = ["Week of", *(c["label"] for c in data["channels"]), "All"]
    return _table(head, rows, "group-weeks")


def render(drill: Mapping[str, Any], template: Template) -> str:
    """The drill-down page."""
    k = drill["k"]
    within = drill["within"]
    group = drill["group"]
    context = f"{group['dimension_label']} · {drill['process_name']}"
    if within:
        context += f" · among {within['label']}"
    return template.substitute(
        title=_e(group["label"]),
        label=_e(group["label"]),
        context=_e(context),
        back=_e(dashboard_link(drill["process_id"], within["key"] if within else None)),
        k=k,
        release=_e(drill["release"]["sequence"] or 0),
        note=_e(drill["release"]["note"]),
        standing=_standing(drill, k),
        channels=channels_table(drill, k),
        regions=regions_section(drill, k),
        weeks=weeks_table(drill, k),
    )
