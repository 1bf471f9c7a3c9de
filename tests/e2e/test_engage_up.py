"""End to end: `engage up` on a fresh folder, then HTTP -> JetStream -> projection -> /coverage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from services.cli.embedded import free_port
from tests.polling import eventually_sync

pytestmark = pytest.mark.e2e


class Up:
    """One `engage up` process and what it printed."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = {name: free_port() for name in ("intake", "survey", "analytics")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
        env.update({f"ENGAGE_{n.upper()}_PORT": str(p) for n, p in self.ports.items()})
        env["ENGAGE_EMBEDDED_NATS_PORT"] = str(free_port())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "up", "--data-dir", str(data_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.url = {n: f"http://127.0.0.1:{p}" for n, p in self.ports.items()}

    def wait_ready(self, timeout: float = 90) -> None:
        """Until every service answers /health (they start side by side, in no set order)."""
        waiting = dict(self.url)

        def still_waiting() -> list[str]:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            for name, url in list(waiting.items()):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        del waiting[name]
                except httpx.HTTPError:
                    pass
            return sorted(waiting)

        eventually_sync(
            still_waiting,
            lambda names: not names,
            what="every service to answer /health",
            timeout=timeout,
            interval=0.1,
        )

    def token(self, name: str) -> dict[str, str]:
        tokens = orjson.loads((self.data_dir / "tokens.json").read_bytes())
        return {"Authorization": f"Bearer {tokens[name]['token']}"}

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        return self.proc.returncode, out.decode()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "engage-data"


def coverage_when(up: Up, predicate, timeout: float = 10.0) -> tuple[dict, float]:
    """Poll /coverage until ``predicate(body)``; return it and how long it took."""
    start = time.monotonic()
    body = eventually_sync(
        lambda: httpx.get(up.url["analytics"] + "/coverage", headers=up.token("analyst"), timeout=5).json(),
        predicate,
        what="/coverage to show the writes",
        timeout=timeout,
        interval=0.02,
    )
    return body, time.monotonic() - start


def test_engage_up_counts_what_intake_and_survey_record_and_resumes_after_a_restart(data_dir: Path) -> None:
    """Two curls change /coverage; Ctrl-C stops everything; a second up keeps the numbers."""
    up = Up(data_dir)
    try:
        up.wait_ready()
        scheduled = httpx.post(
            up.url["intake"] + "/interviews",
            headers=up.token("intake"),
            json={
                "format": "phone",
                "scheduled_for": "2018-03-05T15:00:00Z",
                "region": "northeast",
                "contact": {"name": "Jane Q. Example", "phone": "+1 612 555 0142"},
            },
            timeout=10,
        )
        assert scheduled.status_code == 201, scheduled.text
        iv, ref = scheduled.json()["interview_id"], scheduled.json()["participant_ref"]
        completed = httpx.post(
            up.url["intake"] + f"/interviews/{iv}/complete",
            headers=up.token("intake"),
            json={
                "participants": [
                    {"participant_ref": ref, "profile": {"region": "northeast", "lived_experience": "yes"}}
                ]
            },
            timeout=10,
        )
        assert completed.status_code == 200, completed.text
        _, lag = coverage_when(up, lambda b: b["participants"] == 1)
        response = httpx.post(
            up.url["survey"] + "/responses",
            headers=up.token("survey"),
            json={"profile": {"region": "central", "race_ethnicity": ["indigenous"]}},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        body, lag2 = coverage_when(up, lambda b: b["participants"] == 2)
        print(f"coverage reflected the writes after {lag:.3f} s and {lag2:.3f} s")
        assert body["engagements_by_channel"] == {"interview_phone": 1, "survey": 1}
        region = next(d for d in body["dimensions"] if d["dimension"] == "region")
        assert {c["category"]: c["count"] for c in region["categories"] if c["count"]} == {"northeast": 1, "central": 1}
        coordinator = httpx.get(up.url["analytics"] + "/coverage", headers=up.token("coordinator"), timeout=5).json()
        assert coordinator["participants"] == "<5"
    finally:
        code, out = up.stop()
    assert code == 0, out
    assert "intake" in out and "http://127.0.0.1:" in out
    for port in up.ports.values():  # everything it started has stopped
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    # The contact details reached neither the event log on disk nor any service's log.
    for file in [*(data_dir / "nats").rglob("*"), *(data_dir / "logs").rglob("*")]:
        if file.is_file():
            content = file.read_bytes()
            assert b"Jane" not in content and b"555 0142" not in content, file

    again = Up(data_dir)
    try:
        again.wait_ready()
        body, _ = coverage_when(again, lambda b: b["participants"] == 2)
        assert body["as_of"]["sequence"] == body["as_of"]["stream_sequence"] == 3
    finally:
        code, _ = again.stop()
    assert code == 0
