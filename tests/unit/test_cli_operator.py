"""The command line as an operator meets it: the data dir, a stale servers.json, a service
waiting for its servers, unknown processes, services that are down. Each case runs the
real command in a clean environment, and no case may show the user a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.cli.embedded import free_port

COMMANDS = {
    "rebuild": ["rebuild"],
    "replay": ["replay"],
}


def engage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "80", **env},
        timeout=60,
    )


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    """The run failed with exit code 2 and said why in exactly one line, without a traceback."""
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


def stale_data_dir(folder: Path) -> tuple[Path, str]:
    """A data dir whose servers.json names servers that are gone (nothing listens on their ports)."""
    folder.mkdir(parents=True)
    nats = f"nats://127.0.0.1:{free_port()}"
    (folder / "servers.json").write_text(
        json.dumps({"nats_url": nats, "database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"})
    )
    return folder, nats


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_stale_servers_json_in_the_data_dir_is_named_in_one_line(command: str, how: str, tmp_path: Path) -> None:
    folder, nats = stale_data_dir(tmp_path / "gone")
    args = [a.format(out=tmp_path / "out") for a in COMMANDS[command]]
    started = time.monotonic()
    if how == "option":
        run = engage(*args, "--data-dir", str(folder))
    else:
        run = engage(*args, ENGAGE_DATA_DIR=str(folder))
    line = one_line_error(run)
    assert f"{folder / 'servers.json'} names {nats}, which does not answer" in line
    assert "is `engage up` running? (delete the file if not)" in line
    assert time.monotonic() - started < 20  # detected, not retried for minutes


def test_without_servers_json_replay_looks_on_the_embedded_port(tmp_path: Path) -> None:
    port = str(free_port())
    run = engage("replay", "--data-dir", str(tmp_path / "empty"), ENGAGE_EMBEDDED_NATS_PORT=port)
    assert f"NATS at nats://127.0.0.1:{port} does not answer" in one_line_error(run)


def test_export_with_analytics_down_names_its_url_in_one_line(tmp_path: Path) -> None:
    """Exports go through analytics now: its URL is what did not answer, and no file is left."""
    tokens = {"analyst": {"token": "a" * 24, "scopes": ["coverage:read", "analyst:read"]}}
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    port = free_port()
    run = engage("export", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path), ENGAGE_ANALYTICS_PORT=str(port))
    assert f"analytics is not reachable at http://127.0.0.1:{port}" in one_line_error(run)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("command", ["coverage", "demo"])
def test_coverage_and_demo_take_the_tokens_from_the_data_dir_option(command: str, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    line = one_line_error(engage(command, "--data-dir", str(folder)))
    assert str(folder / "tokens.json") in line


@pytest.mark.parametrize(
    "args",
    [
        ["coverage", "--process", "nope"],
        ["export", "--out", "{x}", "--process", "nope"],
    ],
)
def test_an_unknown_process_is_refused_naming_the_known_ones(args: list[str], tmp_path: Path) -> None:
    args = [a.format(x=tmp_path / "x") for a in args]
    run = engage(*args, ENGAGE_DATA_DIR=str(tmp_path), ENGAGE_ANALYTICS_PORT=str(free_port()))
    line = one_line_error(run)
    assert "--process nope: no plan for it" in line and "shfa-2018" in line
    assert not (tmp_path / "x").exists()


def test_demo_with_the_services_down_says_which_url_did_not_answer(tmp_path: Path) -> None:
    tokens = {n: {"token": n * 4 + "-" * 16, "scopes": ["admin"]} for n in ("intake", "survey")}
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    port = free_port()
    run = engage("demo", "--data-dir", str(tmp_path), ENGAGE_INTAKE_PORT=str(port))
    assert f"intake did not answer at http://127.0.0.1:{port} " in one_line_error(run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_retries_an_unreachable_nats_and_stops_on_a_signal(sig: signal.Signals, tmp_path: Path) -> None:
    nats = f"nats://127.0.0.1:{free_port()}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")},
        "ENGAGE_NATS_URL": nats,
        "ENGAGE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        "ENGAGE_ANALYTICS_PORT": str(free_port()),
        "ENGAGE_LOG_FORMAT": "json",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "serve", "analytics"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count('"server_unreachable"') < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=10)
        assert time.monotonic() - sent < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    tries = [line for line in lines if line["event"] == "server_unreachable"]
    assert len(tries) >= 3
    assert [t["attempt"] for t in tries] == list(range(1, len(tries) + 1))
    assert all(t["server"] == "nats" and t["url"] == nats and "Refused" in t["error"] for t in tries)
    assert [t["retry_in"] for t in tries[:3]] == [0.5, 1.0, 2.0]  # backing off
    assert lines[-1]["event"] == "stopped_before_start"
    assert "traceback" not in log.read_text().lower()


def test_a_server_is_named_without_its_password() -> None:
    from services.cli.stack import shown

    assert shown("postgresql://engage:s3cret@db:5432/engage") == "postgresql://engage:***@db:5432/engage"
    assert shown("nats://127.0.0.1:4233") == "nats://127.0.0.1:4233"
