"""The deploy configuration (deploy/: NATS users and permissions, the cluster, compose, the image)
says what it should, read as files: checked without YAML (PyYAML is not a dependency).

The NATS rules are checked two ways: parsed here with NATS's own wildcard semantics, and
validated by the real nats-server binary (``nats-server -t`` only tests the file and exits;
nothing is started). A live check of the survey's rules, on a running nats-server, is in
tests/integration/test_survey_deploy_permissions.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from services.cli.embedded import nats_server_binary
from shared.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NATS_CONF = DEPLOY / "nats" / "nats-server.conf"
ACCOUNTS = DEPLOY / "nats" / "accounts.conf"
COMPOSE = DEPLOY / "compose.yaml"
PASSWORDS = ["ADMIN_NATS_PASSWORD", "INTAKE_NATS_PASSWORD", "SURVEY_NATS_PASSWORD", "ANALYTICS_NATS_PASSWORD"]

# One subject of each aggregate, and who alone may publish it.
OWNED = {
    "engagement.shfa-2018.interview.iv-0123456789": "intake",
    "engagement.shfa-2018.gathering.ga-0123456789": "intake",
    "engagement.shfa-2018.advisory-member.p-0123456789": "intake",
    "engagement.shfa-2018.advisory-feedback.af-0123456789": "intake",
    "engagement.shfa-2018.participant.p-0123456789": "intake",
    "engagement.shfa-2018.survey-response.sr-0123456789": "survey",
    "deadletter.engagement.shfa-2018": "analytics",
    "status.shfa-2018.region": "analytics",
}


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard semantics: ``*`` is one token, ``>`` one or more trailing tokens."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def _block(text: str, start: int) -> str:
    """The ``{...}`` block opening at or after ``start``."""
    open_at = text.index("{", start)
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at : i + 1]
    raise AssertionError("unbalanced braces")


def _uncommented(text: str) -> str:
    """``text`` without ``#`` comments (a ``#`` inside double quotes is kept)."""
    lines = []
    for line in text.splitlines():
        quoted = False
        for i, char in enumerate(line):
            quoted ^= char == '"'
            if char == "#" and not quoted:
                line = line[:i]
                break
        lines.append(line)
    return "\n".join(lines)


def allowed(user: str, direction: str) -> list[str]:
    """The ``allow`` list of ``user``'s publish or subscribe permissions in accounts.conf."""
    text = _uncommented(ACCOUNTS.read_text())
    perms = _block(text, text.index(f"{user.upper()}_PERMISSIONS ="))
    section = _block(perms, perms.index(f"{direction}:"))
    return re.findall(r'"([^"]+)"', section)


def users() -> dict[str, str]:
    """Each user in accounts.conf and its permissions variable ('' for none)."""
    text = _uncommented(ACCOUNTS.read_text())
    found = {}
    for entry in re.findall(r"\{\s*user:[^{}]*\}", text):
        name = re.search(r"user:\s*(\w+)", entry).group(1)
        perm = re.search(r"permissions:\s*\$(\w+)", entry)
        found[name] = perm.group(1) if perm else ""
        assert re.search(r"password:\s*\$[A-Z_]+_NATS_PASSWORD", entry), f"{name}: password must come from env"
    return found


def test_the_subject_matcher_follows_nats_wildcards() -> None:
    """``*`` is one token and ``>`` at least one, so the checks below read the rules as NATS does."""
    assert subject_matches("engagement.*.survey-response.>", "engagement.x.survey-response.sr-1")
    assert not subject_matches("engagement.*.survey-response.>", "engagement.x.survey-response")
    assert not subject_matches("engagement.*.survey-response.>", "engagement.x.interview.iv-1")
    assert subject_matches("$JS.API.>", "$JS.API.STREAM.UPDATE.ENGAGEMENT")


def test_every_user_is_listed_with_its_password_from_the_environment() -> None:
    assert users() == {
        "admin": "",
        "intake": "INTAKE_PERMISSIONS",
        "survey": "SURVEY_PERMISSIONS",
        "analytics": "ANALYTICS_PERMISSIONS",
    }


@pytest.mark.parametrize("user", ["intake", "survey", "analytics"])
def test_each_service_publishes_only_its_own_events(user: str) -> None:
    rules = allowed(user, "publish")
    for subject, owner in OWNED.items():
        may = any(subject_matches(rule, subject) for rule in rules)
        assert may == (owner == user), f"{user} {'may' if may else 'may not'} publish {subject}"


@pytest.mark.parametrize("user", ["intake", "survey"])
def test_writers_cannot_change_the_event_log(user: str) -> None:
    rules = allowed(user, "publish")
    for api in (
        "STREAM.UPDATE.ENGAGEMENT",
        "STREAM.DELETE.ENGAGEMENT",
        "STREAM.PURGE.ENGAGEMENT",
        "STREAM.MSG.DELETE.ENGAGEMENT",
        "STREAM.CREATE.ENGAGEMENT",
    ):
        assert not any(subject_matches(rule, f"$JS.API.{api}") for rule in rules), api
    for needed in (
        "$JS.API.STREAM.INFO.ENGAGEMENT",
        "$JS.API.STREAM.MSG.GET.ENGAGEMENT",
        "$JS.API.DIRECT.GET.ENGAGEMENT.engagement.x.survey-response.sr-1",
    ):
        assert any(subject_matches(rule, needed) for rule in rules), needed


@pytest.mark.parametrize("user", ["intake", "survey", "analytics"])
def test_services_subscribe_only_to_their_inbox(user: str) -> None:
    assert allowed(user, "subscribe") == ["_INBOX.>"]


def test_analytics_acks_the_event_log_but_never_writes_it() -> None:
    rules = allowed("analytics", "publish")
    assert any(subject_matches(r, "$JS.ACK.ENGAGEMENT.analytics.1.2.3.4.5") for r in rules)
    assert not any(subject_matches(r, "engagement.x.survey-response.sr-1") for r in rules)


def test_jetstream_fsyncs_every_write_and_the_cluster_has_three_routes() -> None:
    text = _uncommented(NATS_CONF.read_text())
    jetstream = _block(text, text.index("jetstream"))
    assert re.search(r"sync_interval:\s*always", jetstream)
    routes = re.findall(r"nats-route://([\w-]+):6222", _block(text, text.index("cluster")))
    assert sorted(routes) == ["nats-1", "nats-2", "nats-3"]
    assert "include ./accounts.conf" in text


def _nats_server_test(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nats_server_binary(), "-t", "-c", str(NATS_CONF)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_nats_server_accepts_the_config_when_every_password_is_set() -> None:
    env = {**os.environ, "NATS_SERVER_NAME": "nats-1", **{p: "pw-" + p.lower() for p in PASSWORDS}}
    result = _nats_server_test(env)
    assert result.returncode == 0, result.stderr + result.stdout


def test_nats_server_refuses_to_start_without_a_password() -> None:
    env = {**os.environ, "NATS_SERVER_NAME": "nats-1", **dict.fromkeys(PASSWORDS, "pw")}
    del env["SURVEY_NATS_PASSWORD"]
    result = _nats_server_test(env)
    assert result.returncode != 0 and "SURVEY_NATS_PASSWORD" in result.stderr + result.stdout


# --- compose.yaml, read as indented text ---------------------------------------------


def compose_service(name: str) -> str:
    """The text of one entry under ``services:`` (two-space indented keys)."""
    text = COMPOSE.read_text()
    services = text[text.index("\nservices:\n") :]
    match = re.search(rf"\n  {re.escape(name)}:\n((?:    .*\n|\s*\n)+)", services)
    assert match, f"compose.yaml has no service {name!r}"
    return match.group(1)


@pytest.mark.parametrize("service", ["intake", "survey", "analytics"])
def test_each_service_runs_engage_serve_with_its_own_nats_user(service: str) -> None:
    block = compose_service(service)
    assert f'command: ["serve", "{service}"]' in block
    assert "<<: *engage" in block
    url = re.search(r"ENGAGE_NATS_URL:\s*(\S+)", block).group(1)
    assert url.startswith(f"nats://{service}:${{{service.upper()}_NATS_PASSWORD}}@nats-")
    assert "ENGAGE_TOKENS_FILE: /run/secrets/engage_tokens" in block


def test_the_image_runs_engage_and_mounts_the_tokens_secret() -> None:
    text = COMPOSE.read_text()
    anchor = text[text.index("x-engage: &engage") : text.index("\nservices:\n")]
    assert "dockerfile: deploy/Containerfile" in anchor and "secrets: [engage_tokens]" in anchor
    containerfile = (DEPLOY / "Containerfile").read_text()
    assert "FROM python:3.11-slim" in containerfile and "pip install --no-cache-dir ." in containerfile
    assert 'ENTRYPOINT ["engage"]' in containerfile


def test_only_intake_and_analytics_reach_the_database() -> None:
    assert "ENGAGE_DATABASE_URL: postgresql://engage_intake:" in compose_service("intake")
    assert "ENGAGE_DATABASE_URL: postgresql://engage_analytics:" in compose_service("analytics")
    survey = compose_service("survey")
    assert "ENGAGE_DATABASE_URL" not in survey and "networks: [bus]" in survey


def test_three_nats_nodes_each_with_its_own_name_and_storage() -> None:
    for n in (1, 2, 3):
        block = compose_service(f"nats-{n}")
        assert "<<: *nats-node" in block
        assert f"NATS_SERVER_NAME: nats-{n}" in block and f"nats-{n}:/data" in block
    assert "image: nats:" in COMPOSE.read_text()


def test_deploy_uses_only_settings_that_exist() -> None:
    known = {"ENGAGE_" + name.upper() for name in Settings.model_fields}
    used: set[str] = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            used |= set(re.findall(r"\bENGAGE_[A-Z_]+[A-Z]\b", path.read_text()))
    assert used, "no settings found at all"
    assert used <= known, f"not in shared/settings.py: {sorted(used - known)}"
