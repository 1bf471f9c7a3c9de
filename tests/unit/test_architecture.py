"""Dependencies point one way: services -> shared, never service to service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "survey", "analytics")


def imports_of(package: Path) -> set[str]:
    found: set[str] = set()
    for file in package.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_never_imports_another(service: str) -> None:
    others = {f"services.{s}" for s in SERVICES if s != service} | {"services.cli"}
    bad = {m for m in imports_of(ROOT / "services" / service) if any(m.startswith(o) for o in others)}
    assert not bad, f"services/{service} imports {bad}"


def test_shared_imports_no_service() -> None:
    bad = {m for m in imports_of(ROOT / "shared") if m.startswith("services")}
    assert not bad
