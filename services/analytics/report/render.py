"""The participation report as Markdown, a self-contained HTML page, or CSV. Pure (standard library).

Every format says the same: each section's lines, with people and shares as the section
rounds them. A line without a share (a total, or a line outside the base) has an empty
share; a share the numbers do not allow (a count shown as ``<k``) reads ``—``.
"""

from __future__ import annotations

import csv
import io
import re
from html import escape

from services.analytics.report.participation import Line, Report, Section

FORMATS = ("markdown", "html", "csv")
NOT_KNOWN = "—"
CSV_COLUMNS = ("section", "item", "people", "percent", "percent_of", "of_people", "rounded_to")


def people(line: Line) -> str:
    return NOT_KNOWN if line.people is None else str(line.people)


def share(line: Line, sign: str = "%") -> str:
    """The line's share as its section rounds it, e.g. ``31.3%`` or ``94%``."""
    if line.base is None:
        return ""
    return NOT_KNOWN if line.percent is None else f"{line.percent}{sign}"


def render(report: Report, fmt: str) -> str:
    if fmt == "markdown":
        return markdown(report)
    if fmt == "html":
        return html(report)
    if fmt == "csv":
        return csv_text(report)
    raise ValueError(f"{fmt!r} is not one of {', '.join(FORMATS)}")


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: no pipe splits it, no newline ends its row, and nothing in it
    becomes HTML when the Markdown is rendered (a tag's ``<``, an entity's ``&``; ``<5`` stays as it is)."""
    text = re.sub(r"&(?=#?\w+;)", "&amp;", text)
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def markdown(report: Report) -> str:
    out = [f"# {_cell(report.title)}", "", *(f"{_cell(note)}  " for note in report.notes), ""]
    for section in report.sections:
        out += [f"## {_cell(section.title)}", "", _cell(section.note), ""]
        if any(line.base is not None for line in section.lines):
            out += [f"| {_cell(section.title)} | People | Share |", "| :--- | ---: | ---: |"]
            out += [f"| {_cell(line.label)} | {_cell(people(line))} | {share(line)} |" for line in section.lines]
        else:
            out += [f"| {_cell(section.title)} | People |", "| :--- | ---: |"]
            out += [f"| {_cell(line.label)} | {_cell(people(line))} |" for line in section.lines]
        out.append("")
    return "\n".join(out)


STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; color: #1a1a1a; background: #fff; margin: 2rem auto; max-width: 46rem;
  padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
p.note { color: #444; margin: 0.2rem 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: left; }
td { text-align: right; font-variant-numeric: tabular-nums; }
thead th { border-bottom: 2px solid #1a1a1a; }
thead th + th { text-align: right; }
"""


def _section_html(section: Section) -> list[str]:
    rows = [
        f'<tr><th scope="row">{escape(line.label)}</th><td>{escape(people(line))}</td>'
        f"<td>{escape(share(line))}</td></tr>"
        for line in section.lines
    ]
    return [
        "<section>",
        f"<h2>{escape(section.title)}</h2>",
        f'<p class="note">{escape(section.note)}</p>',
        "<table>",
        f'<thead><tr><th scope="col">{escape(section.title)}</th><th scope="col">People</th>'
        '<th scope="col">Share</th></tr></thead>',
        "<tbody>",
        *rows,
        "</tbody>",
        "</table>",
        "</section>",
    ]


def html(report: Report) -> str:
    """A page that needs nothing else: its style inline, no script, no image, no link out."""
    notes = [f'<p class="note">{escape(note)}</p>' for note in report.notes]
    body = [line for section in report.sections for line in _section_html(section)]
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(report.title)}</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            "<main>",
            f"<h1>{escape(report.title)}</h1>",
            *notes,
            *body,
            "</main>",
            "</body>",
            "</html>",
            "",
        ]
    )


def csv_text(report: Report) -> str:
    """One row a line: its section, label, people, share (without %), what the share is of, and the
    rounding base k when the numbers are rounded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rounded = "" if report.rounded_to is None else str(report.rounded_to)
    for section in report.sections:
        for line in section.lines:
            of = "" if line.base is None or line.of is None else str(line.of)
            writer.writerow((section.title, line.label, people(line), share(line, ""), line.base or "", of, rounded))
    return buffer.getvalue()
