"""The toolchain holds the code: CI runs README's test command, and every silenced check says why."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A silenced check (a type-ignore or a noqa comment), and what follows it on the line.
SILENCED = re.compile(r"#\s*(?:type:\s*ignore(?:\[[^\]]*\])?|noqa(?::\s*[A-Z0-9, ]+)?)(?P<rest>.*)$")


def unexplained(text: str) -> list[int]:
    """Lines that silence a check without a reason after it (a comment, or "- why")."""
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        found = SILENCED.search(line)
        if found and not re.match(r"\s*(?:#|-|—)\s*\w", found["rest"]):
            lines.append(number)
    return lines


def test_every_type_ignore_and_noqa_says_why() -> None:
    files = [
        f
        for top in ("services", "shared", "bench", "tests")
        for f in sorted((ROOT / top).rglob("*.py"))
        if f != Path(__file__).resolve()
    ]  # this file quotes the markers it looks for
    missing = {str(f.relative_to(ROOT)): lines for f in files if (lines := unexplained(f.read_text()))}
    assert missing == {}


def test_the_check_finds_a_silenced_line_without_a_reason() -> None:
    assert unexplained("x = f()  # type: ignore[arg-type]\ny = 1  # noqa: E501\n") == [1, 2]
    assert (
        unexplained(
            "x = f()  # type: ignore[arg-type]  # the stub is wrong\n"
            "except Exception:  # noqa: BLE001 - health reports, it does not raise\n"
        )
        == []
    )


def test_ci_runs_the_readme_s_test_command_verbatim() -> None:
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command in (ROOT / "README.md").read_text()
    for step in ("ruff check", "ruff format --check", "mypy", "pytest"):
        assert f".venv/bin/{step}" in command
