"""Dependencies point one way: services -> shared, never service to service; and inside
analytics, from the app down to the pure projection, never back up.

The rules are checked on the import graph of the code as it is (every ``import`` and
``from … import`` found by parsing each file), followed transitively through the project's
own modules, so a pure module cannot reach asyncpg through a helper it imports either.
Each rule is also shown to fail on a small tree that breaks it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "survey", "analytics")
A = "services.analytics"

# Libraries that do I/O or serve HTTP: the pure modules reach none of them, even indirectly.
IO_LIBRARIES = ("asyncpg", "nats", "faststream", "fastapi", "starlette", "uvicorn", "httpx")
PURE = (
    f"{A}.projection",
    f"{A}.answers.models",
    f"{A}.answers.coverage",
    f"{A}.answers.representation",
    f"{A}.answers.suppression",
    f"{A}.answers.segments",
    f"{A}.answers.timeline",
    f"{A}.reading.decode",
    f"{A}.dashboard.snapshot",
    f"{A}.export.tables",
    f"{A}.export.dictionary",
    f"{A}.export.risk",
    f"{A}.report",
    f"{A}.audit.model",
)
RUNNERS = (f"{A}.engine",)
ANSWERING = (f"{A}.answers",)
HTTP_LAYER = (f"{A}.api", f"{A}.dashboard.routes", f"{A}.state", f"{A}.app")
APP = f"{A}.app"


def module_name(file: Path, root: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules it imports (``from x import y`` counts ``x.y`` when that is a module)."""
    files = {module_name(f, root): f for pkg in packages for f in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, file in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in files)
        graph[name] = found
    return graph


def reach(graph: Mapping[str, set[str]], start: str) -> set[str]:
    """Everything ``start`` imports, directly or through the project's own modules."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def broken_rules(graph: Mapping[str, set[str]]) -> list[str]:
    """Every break of the analytics layering, as sentences."""
    problems = []
    for module in sorted(graph):
        direct, indirect = graph[module], reach(graph, module)
        if within(module, PURE):
            problems += [
                f"{module} is pure but reaches {lib}"
                for lib in IO_LIBRARIES
                if any(within(m, (lib,)) for m in indirect)
            ]
        if within(module, ANSWERING):
            problems += [f"{module} answers but reaches the runner {m}" for m in sorted(indirect) if within(m, RUNNERS)]
        if within(module, (f"{A}.projection",)):
            problems += [
                f"{module} is the projection but imports {m}"
                for m in sorted(direct)
                if within(m, (A,)) and not within(m, (f"{A}.projection",))
            ]
        if within(module, (f"{A}.reading",)):
            problems += [
                f"{module} reads the log but imports {m}"
                for m in sorted(direct)
                if within(m, (A,)) and not within(m, (f"{A}.reading",))
            ]
        if within(module, (f"{A}.store",)):
            problems += [
                f"{module} is storage but imports {m}"
                for m in sorted(direct)
                if within(m, (f"{A}.engine", f"{A}.answers"))
            ]
        if module != APP and not within(module, HTTP_LAYER):
            problems += [f"{module} imports the HTTP layer ({m})" for m in sorted(direct) if within(m, HTTP_LAYER)]
    return problems


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT, ("services", "shared", "bench"))


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_never_imports_another(service: str, graph: dict[str, set[str]]) -> None:
    others = [f"services.{s}" for s in SERVICES if s != service] + ["services.cli"]
    bad = {
        m for mod, found in graph.items() if within(mod, (f"services.{service}",)) for m in found if within(m, others)
    }
    assert not bad, f"services/{service} imports {bad}"


def test_shared_imports_no_service(graph: dict[str, set[str]]) -> None:
    bad = {m for mod, found in graph.items() if within(mod, ("shared",)) for m in found if within(m, ("services",))}
    assert not bad


def test_analytics_dependencies_point_one_way(graph: dict[str, set[str]]) -> None:
    """Pure modules reach no I/O library, answers never reach the runners, the projection and the
    log readers stand alone, storage knows no runner or answer, and only the app imports the HTTP layer."""
    assert broken_rules(graph) == []


def test_every_pure_module_exists(graph: dict[str, set[str]]) -> None:
    """A rule about a module that was renamed away would pass forever: each named module is real."""
    for name in (*PURE, *RUNNERS, *ANSWERING, *HTTP_LAYER):
        assert any(within(m, (name,)) for m in graph), f"{name} is named by a rule but does not exist"


BROKEN = {
    "services/analytics/projection/fold.py": "from services.analytics.store import writes\n",
    "services/analytics/store/writes.py": "import asyncpg\nfrom services.analytics.engine import batch\n",
    "services/analytics/engine/batch.py": "",
    "services/analytics/answers/coverage.py": "from services.analytics.helpers import db\n",
    "services/analytics/helpers/db.py": "from services.analytics.engine.batch import x\n",
    "services/analytics/reading/decode.py": "from services.analytics.projection import fold\n",
    "services/analytics/export/tables.py": "from services.analytics.api import router\n",
    "services/analytics/api.py": "",
    "services/analytics/app.py": "from services.analytics.api import router\n",
}


def test_the_rules_catch_each_kind_of_break(tmp_path: Path) -> None:
    """A tree that breaks every rule once, some only indirectly, is reported rule by rule."""
    for path, text in BROKEN.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    problems = broken_rules(import_graph(tmp_path, ("services",)))
    expected = [
        f"{A}.projection.fold is pure but reaches asyncpg",  # through store.writes
        f"{A}.projection.fold is the projection but imports {A}.store",
        f"{A}.projection.fold is the projection but imports {A}.store.writes",
        f"{A}.answers.coverage answers but reaches the runner {A}.engine.batch",  # through a helper
        f"{A}.reading.decode reads the log but imports {A}.projection",
        f"{A}.reading.decode reads the log but imports {A}.projection.fold",
        f"{A}.store.writes is storage but imports {A}.engine",
        f"{A}.store.writes is storage but imports {A}.engine.batch",
        f"{A}.export.tables imports the HTTP layer ({A}.api)",
    ]
    for problem in expected:
        assert problem in problems
    assert not any(p.startswith(f"{A}.app ") for p in problems)  # the app may import the HTTP layer
