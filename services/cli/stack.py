"""`engage up`: the embedded servers and the three services as child processes.

nats-server and PostgreSQL come from their wheels and keep their data under one folder
(unless ENGAGE_NATS_URL / ENGAGE_DATABASE_URL name servers to use). Each service runs in
a process of its own, exactly as `engage serve NAME` runs it in a real deployment.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from services.cli.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from shared.errors import ConfigError
from shared.settings import Settings

SERVICES = ("intake", "survey", "analytics")
SERVERS_FILE = "servers.json"
LOCAL_TOKENS = {
    "intake": ["intake:write"],
    "survey": ["survey:write"],
    "coordinator": ["coverage:read"],
    "analyst": ["coverage:read", "analyst:read"],
}


def with_local_servers(settings: Settings) -> Settings:
    """``settings``, with the servers a running `engage up` uses wherever ENGAGE_* names none."""
    if settings.nats_url and settings.database_url:
        return settings
    try:
        found = orjson.loads((settings.data_dir / SERVERS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise ConfigError(
            f"no servers given: set ENGAGE_NATS_URL and ENGAGE_DATABASE_URL, or run `engage up` "
            f"(it records its servers in {settings.data_dir / SERVERS_FILE})"
        ) from None
    return settings.model_copy(
        update={
            "nats_url": settings.nats_url or found.get("nats_url"),
            "database_url": settings.database_url or found.get("database_url"),
        }
    )


def local_tokens(path: Path) -> Path:
    """Create (once) a file of random local tokens, readable only by this user."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tokens = {name: {"token": secrets.token_urlsafe(24), "scopes": scopes} for name, scopes in LOCAL_TOKENS.items()}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(tokens, option=orjson.OPT_INDENT_2))
    return path


@dataclass
class Stack:
    settings: Settings
    nats: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def start_servers(self) -> None:
        s = self.settings
        data = s.data_dir.resolve()
        data.mkdir(parents=True, exist_ok=True)
        nats_url = s.nats_url
        if not nats_url:
            self.nats = EmbeddedNats(data / "nats", port=s.embedded_nats_port)
            nats_url = self.nats.start()
        database_url = s.database_url
        if not database_url:
            self.postgres = EmbeddedPostgres(data / "postgres")
            database_url = self.postgres.start()
        tokens_file = s.tokens_file or (None if s.tokens else local_tokens(data / "tokens.json"))
        self.env = {"ENGAGE_NATS_URL": nats_url, "ENGAGE_DATABASE_URL": database_url}
        # So that `engage rebuild`, `replay` and `export` find the servers this `up` runs.
        (data / SERVERS_FILE).write_bytes(orjson.dumps({"nats_url": nats_url, "database_url": database_url}))
        if tokens_file:
            self.env["ENGAGE_TOKENS_FILE"] = str(tokens_file)

    def start_services(self, timeout: float = 60.0) -> None:
        s = self.settings
        log_dir = s.data_dir.resolve() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            port = getattr(s, f"{name}_port") or free_port()
            env = {**os.environ, **self.env, f"ENGAGE_{name.upper()}_PORT": str(port), "ENGAGE_LOG_FORMAT": "json"}
            with (log_dir / f"{name}.log").open("ab") as out:
                self.children[name] = subprocess.Popen(
                    [sys.executable, "-m", "services.cli.main", "serve", name],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.urls[name] = f"http://{s.host}:{port}"
        deadline = time.monotonic() + timeout
        for name, url in self.urls.items():
            while True:
                proc = self.children[name]
                if proc.poll() is not None:
                    raise ConfigError(f"{name} exited with code {proc.returncode}; see {log_dir / (name + '.log')}")
                try:
                    if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ConfigError(f"{name} did not become healthy at {url}; see {log_dir / (name + '.log')}")
                time.sleep(0.1)

    def exited(self) -> str | None:
        """The name of a service that has stopped on its own, if any."""
        return next((n for n, p in self.children.items() if p.poll() is not None), None)

    def stop(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.children.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.children.clear()
        if self.nats:
            self.nats.stop()
        if self.postgres:
            self.postgres.stop()
