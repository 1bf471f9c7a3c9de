"""`engage up`: the embedded servers and the three services as child processes.

nats-server and PostgreSQL come from their wheels and keep their data under one folder
(unless ENGAGE_NATS_URL / ENGAGE_DATABASE_URL name servers to use). Each service runs in
a process of its own, exactly as `engage serve NAME` runs it in a real deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import nats
import orjson

from services.cli.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from shared.errors import ConfigError
from shared.logging import get_logger
from shared.settings import Settings

SERVICES = ("intake", "survey", "analytics")
SERVERS_FILE = "servers.json"
LOCAL_TOKENS = {
    "intake": ["intake:write"],
    "survey": ["survey:write"],
    "coordinator": ["coverage:read"],
    "analyst": ["coverage:read", "analyst:read"],
    "monitoring": ["metrics:read"],  # a Prometheus scraper's: /metrics only
}


def shown(url: str) -> str:
    """``url`` as it may be printed or logged: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def nats_answers(url: str, timeout: float = 2.0, **options: Any) -> str | None:
    """None if a NATS server at ``url`` (comma-separated for a cluster: any one) answers, else why not.

    ``options`` are nats-py's (``shared.bus.connect_options``): a server that requires TLS and an
    NKey answers only a client that has them.
    """
    servers = [part.strip() for part in url.split(",") if part.strip()]
    seen: list[Exception] = []

    async def quiet(exc: Exception) -> None:
        seen.append(exc)  # the reason becomes one line of our own, never nats-py's logged traceback

    try:
        # One try per server (nats-py counts the first connect as a reconnect, hence 1), then give up.
        nc = await asyncio.wait_for(
            nats.connect(
                servers,
                connect_timeout=timeout,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=quiet,
                **options,
            ),
            (timeout + 0.5) * 2 * max(len(servers), 1),
        )
    except Exception as exc:  # noqa: BLE001 - any failure means "does not answer"; the caller says which
        return _why(seen[-1] if seen else exc)
    await nc.close()
    return None


async def postgres_answers(dsn: str, timeout: float = 3.0) -> str | None:
    """None if PostgreSQL at ``dsn`` accepts a connection, else why not."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means "does not answer"; the caller says which
        return _why(exc)
    await conn.close()
    return None


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def recorded_servers(data_dir: Path, needed: tuple[str, ...] = ("nats_url", "database_url")) -> dict[str, str] | None:
    """The servers a running `engage up` recorded in ``data_dir``, checked: None if there is no record.

    A record whose servers do not answer was left by an `engage up` that is gone: ConfigError
    names the file and the server, in one line.
    """
    path = data_dir / SERVERS_FILE
    try:
        found = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({type(exc).__name__}); delete it and run `engage up`") from None
    if not isinstance(found, dict) or not all(isinstance(found.get(k), str) for k in ("nats_url", "database_url")):
        raise ConfigError(f"{path}: is not a record of `engage up`'s servers; delete it and run `engage up`")
    servers: dict[str, str] = {k: found[k] for k in ("nats_url", "database_url")}
    checks: dict[str, Callable[[str], Coroutine[Any, Any, str | None]]] = {
        "nats_url": nats_answers,
        "database_url": postgres_answers,
    }
    for key in needed:
        if asyncio.run(checks[key](servers[key])) is not None:
            raise ConfigError(
                f"{path} names {shown(servers[key])}, which does not answer: "
                "is `engage up` running? (delete the file if not)"
            )
    return servers


def with_local_servers(settings: Settings) -> Settings:
    """``settings``, with the servers a running `engage up` uses wherever ENGAGE_* names none."""
    if settings.nats_url and settings.database_url:
        return settings
    found = recorded_servers(
        settings.data_dir, tuple(k for k in ("nats_url", "database_url") if not getattr(settings, k))
    )
    if found is None:
        raise ConfigError(
            f"no servers given: set ENGAGE_NATS_URL and ENGAGE_DATABASE_URL, or run `engage up` "
            f"(it records its servers in {settings.data_dir / SERVERS_FILE})"
        )
    return settings.model_copy(
        update={
            "nats_url": settings.nats_url or found["nats_url"],
            "database_url": settings.database_url or found["database_url"],
        }
    )


def local_nats_url(settings: Settings) -> str:
    """ENGAGE_NATS_URL, else the one a running `engage up` recorded in the data dir, else the embedded port."""
    if settings.nats_url:
        return settings.nats_url
    found = recorded_servers(settings.data_dir, ("nats_url",))
    return found["nats_url"] if found else f"nats://127.0.0.1:{settings.embedded_nats_port}"


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
            # `engage up` is the operator of its own server: it brings streams an older engage
            # made to today's configuration (`engage streams`), which services only check.
            asyncio.run(_apply_streams(s.model_copy(update={"nats_url": nats_url})))
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


async def _apply_streams(settings: Settings) -> None:
    from shared.bus import apply_streams, close_nats, connect_nats

    nc = await connect_nats(settings, "admin")
    try:
        await apply_streams(nc.jetstream(), settings)
    finally:
        await close_nats(nc)


# What each service connects to when it starts, by setting.
NEEDS = {"intake": ("nats_url", "database_url"), "survey": ("nats_url",), "analytics": ("nats_url", "database_url")}
BACKOFF_FIRST, BACKOFF_MOST = 0.5, 15.0


async def wait_until_answering(
    servers: dict[str, str], stop: asyncio.Event, nats_options: dict[str, Any] | None = None
) -> bool:
    """Try each server until all answer, backing off between tries; False if ``stop`` is set first.

    Each failed try is one log line (which server, why, the try's number, when the next
    comes), never a traceback; a stop cuts the wait short at once.
    """
    checks: dict[str, Callable[[str], Coroutine[Any, Any, str | None]]] = {
        "nats_url": functools.partial(nats_answers, **(nats_options or {})),
        "database_url": postgres_answers,
    }
    log = get_logger("engage.serve")
    delay, attempt = BACKOFF_FIRST, 0
    while not stop.is_set():
        attempt += 1
        waiting = None
        for key, url in servers.items():
            why = await _unless_stopped(checks[key](url), stop)
            if stop.is_set():
                return False
            if why is not None:
                waiting = (key, url, why)
                break
        if waiting is None:
            if attempt > 1:
                log.info("servers_answer", servers=[shown(u) for u in servers.values()], attempts=attempt)
            return True
        key, url, why = waiting
        log.warning(
            "server_unreachable",
            server="nats" if key == "nats_url" else "postgresql",
            url=shown(url),
            error=why,
            attempt=attempt,
            retry_in=delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, BACKOFF_MOST)
    return False


async def _unless_stopped(check: Awaitable[str | None], stop: asyncio.Event) -> str | None:
    trying = asyncio.ensure_future(check)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({trying, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for task in (trying, stopping):
        task.cancel()
    return None if stop.is_set() or trying.cancelled() else trying.result()
