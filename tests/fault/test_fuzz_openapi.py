"""OpenAPI fuzzing of intake, survey and analytics, each served for real: no 5xx, and counting never stops.

Each service runs under uvicorn against this test's own nats-server and PostgreSQL. Schemathesis
reads the service's /openapi.json and generates requests for every documented operation, valid
ones and invalid ones; most carry the bearer token with the operation's scope, some none, one of
the wrong scope or one nobody issued. Every answer must be below 500, have a status its route
documents, and a body valid for the documented schema. After intake and survey were fuzzed,
analytics' projector runs over whatever they stored and must reach the end of the log: every
event the fuzzer made was counted or parked on the dead-letter stream. Analytics is fuzzed last,
over those counts. (Its /dashboard/* pages and every service's /docs are not in the schema.)

The run is bounded and repeatable: a fixed number of examples per operation and generation mode,
derandomized, within a time budget. Run it wider with, for example::

    ENGAGE_FUZZ_EXAMPLES=200 ENGAGE_FUZZ_SECONDS=900 ENGAGE_FUZZ_SEED=7 \
        pytest -m fault -s tests/fault/test_fuzz_openapi.py

(``ENGAGE_FUZZ_SEED`` turns derandomization off and seeds hypothesis instead: each seed is
another repeatable run). ``-s`` shows the summary: cases sent per service and the 5xx found.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.analytics.app import build_app as build_analytics
from services.analytics.engine.projector import Projector
from services.analytics.store import reads, schema
from services.intake.app import build_app as build_intake
from services.survey.app import build_app as build_survey
from shared.bus import DEADLETTER_STREAM, attach_streams, make_broker, stop_broker
from shared.settings import Settings
from tests.conftest import TOKENS
from tests.projecting import project_until
from tests.servers import serving

pytestmark = pytest.mark.fault

EXAMPLES = int(os.environ.get("ENGAGE_FUZZ_EXAMPLES", "10"))  # per operation and generation mode
BUDGET = float(os.environ.get("ENGAGE_FUZZ_SECONDS", "60"))  # for all three services; cases past it are not sent
SEED = os.environ.get("ENGAGE_FUZZ_SEED")  # unset: derandomized, the same cases on every run
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]

# Who sends a case: mostly the token with the operation's scope, so the fuzzer reaches the handlers.
RIGHT, NOBODY, WRONG_SCOPE, UNKNOWN = "right", "nobody", "wrong scope", "unknown token"
WHO = (RIGHT,) * 5 + (NOBODY, WRONG_SCOPE, UNKNOWN)


@dataclass
class Report:
    """What the fuzzing of one service sent and what it found."""

    service: str
    sent: Counter[str] = field(default_factory=Counter)  # by operation
    late: int = 0  # cases drawn after the time budget ran out, not sent
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # a 5xx: the operation, the status, the curl
    findings: dict[str, str] = field(default_factory=dict)  # a check failing, by what failed: the first report
    times: Counter[str] = field(default_factory=Counter)  # how often each of them failed

    def summary(self) -> str:
        return (
            f"{self.service}: {sum(self.sent.values())} cases over {len(self.sent)} operations, "
            f"{len(self.server_errors)} 5xx, {sum(self.times.values())} check failures, "
            f"{self.late} not sent (out of time); "
            f"statuses {dict(sorted(self.statuses.items()))}"
        )


def tokens_for(service: str, path: str) -> tuple[str, str]:
    """The token with this operation's scope, and one of another scope."""
    if path == "/metrics":
        return TOKENS["monitoring"].token, TOKENS["intake" if service != "intake" else "survey"].token
    right = {"intake": "intake", "survey": "survey", "analytics": "analyst"}[service]
    wrong = {"intake": "survey", "survey": "coordinator", "analytics": "intake"}[service]
    return TOKENS[right].token, TOKENS[wrong].token


def repeatable(cases: st.SearchStrategy[schemathesis.Case], send: Callable[[schemathesis.Case, str], None]) -> None:
    """Send ``EXAMPLES`` cases drawn from ``cases``, each as one of ``WHO``, the same ones on every run."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=SEED is None,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # findings are collected, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=cases, who=st.sampled_from(WHO))
    def run(case: schemathesis.Case, who: str) -> None:
        send(case, who)

    if SEED is not None:
        run = seed(int(SEED))(run)
    with contextlib.suppress(Unsatisfiable):  # an operation with nothing to make invalid has no negative cases
        run()


def fuzz(service: str, base_url: str, deadline: float, path_values: dict[str, list[str]]) -> Report:
    """Fuzz every operation of the service at ``base_url`` (blocking: run it off the server's event loop).

    ``path_values`` names real values for path parameters (interviews that exist), used for half
    the cases of an operation with that parameter, so changes reach an interview and not only 404.
    """
    report = Report(service)
    api = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert operations, f"{service} documents no operation"
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        right, wrong = tokens_for(service, operation.path)
        named = {name: values for name, values in path_values.items() if f"{{{name}}}" in operation.path}

        def send(
            case: schemathesis.Case,
            who: str,
            label: str = label,
            path: str = operation.path,
            right: str = right,
            wrong: str = wrong,
        ) -> None:
            if time.monotonic() > deadline:
                report.late += 1
                return
            headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            token = {RIGHT: right, WRONG_SCOPE: wrong, UNKNOWN: "not-a-token-anyone-was-given", NOBODY: None}[who]
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            case.headers = headers
            response = case.call(base_url=base_url, timeout=30)
            report.sent[label] += 1
            report.statuses[response.status_code] += 1
            if response.status_code >= 500:
                curl = case.as_curl_command(base_url=base_url)
                answer = response.content[:300].decode(errors="replace")
                report.server_errors.append(f"{label} ({who}) -> {response.status_code} {answer}\n    {curl}")
            try:
                case.validate_response(response, checks=CHECKS, transport_kwargs={"base_url": base_url})
            except FailureGroup as failed:
                for failure in failed.exceptions:
                    what = f"{label} -> {response.status_code}: {failure.code} {failure.title}"
                    report.findings.setdefault(what, f"{what} ({who}):\n{failed.message}")
                    report.times[what] += 1

        for mode in MODES:
            cases = operation.as_strategy(generation_mode=mode)
            for name, values in named.items():
                real = st.sampled_from(values).map(lambda value, name=name: {name: value})
                cases = st.one_of(
                    cases,
                    real.flatmap(lambda known, mode=mode, op=operation: op.as_strategy(mode, path_parameters=known)),
                )
            repeatable(cases, send)
    return report


async def fuzzed(app: FastAPI, service: str, budget_ends: float, path_values: dict[str, list[str]]) -> Report:
    async with serving(app) as base_url:
        report = await asyncio.to_thread(fuzz, service, base_url, budget_ends, path_values)
    print(report.summary())
    for line in report.server_errors:
        print("  5xx:", line)
    for what, times in report.times.items():
        print(f"  {times} x {what}")
    return report


async def some_interviews(app: FastAPI, count: int) -> list[str]:
    """Schedule interviews the fuzzer can then reschedule, cancel, complete or erase contacts of."""
    soon = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    made = []
    async with serving(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        for i in range(count):
            answer = await client.post(
                "/interviews",
                json={"format": "phone", "scheduled_for": soon, "contact": {"name": f"caller {i}"}},
                headers={"Authorization": f"Bearer {TOKENS['intake'].token}"},
            )
            assert answer.status_code == 201, answer.text
            made.append(answer.json()["interview_id"])
    return made


@pytest.mark.timeout(300)
async def test_fuzzing_all_three_services_finds_no_5xx_and_counting_catches_up(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(write_burst=1_000_000)  # the fuzzer's writes are never refused as too many
    budget_ends = time.monotonic() + BUDGET
    interviews = await some_interviews(build_intake(settings), 6)
    reports = [
        await fuzzed(build_intake(settings), "intake", budget_ends, {"interview_id": interviews}),
        await fuzzed(build_survey(settings), "survey", budget_ends, {}),
    ]

    # Whatever intake and survey stored, the projector counts or parks, up to the end of the log.
    broker = make_broker(settings.nats_url or "", settings, "admin")
    await broker.connect()
    pool = await schema.open_pool(settings.database_url or "")
    try:
        js = await attach_streams(broker.connection, settings)
        last = (await js.stream_info(settings.stream_name)).state.last_seq
        await schema.migrate(pool)
        projector = Projector(settings, broker.connection, pool)
        await project_until(projector, last, timeout=60)
        reached = await reads.checkpoint(pool, settings.consumer_name)
        parked = (await js.stream_info(DEADLETTER_STREAM)).state.messages
    finally:
        await pool.close()
        await stop_broker(broker)
    print(f"projection: {last} events on the log, checkpoint at {reached}, {parked} parked")
    assert last > len(interviews), "the fuzzer stored nothing: it never reached the handlers"
    assert reached == last

    reports.append(await fuzzed(build_analytics(settings), "analytics", budget_ends, {}))
    print(
        f"fuzzing: {sum(sum(r.sent.values()) for r in reports)} cases, {sum(len(r.server_errors) for r in reports)} 5xx"
    )
    for report in reports:
        assert report.sent, f"{report.service}: no case was sent within the time budget"
    server_errors = [f"{r.service}: {line}" for r in reports for line in r.server_errors]
    assert not server_errors, "\n".join(server_errors)
    findings = [f"{r.service}: {first}" for r in reports for first in r.findings.values()]
    assert not findings, "\n\n".join(findings)
