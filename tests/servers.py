"""Serving apps for real in tests: an app under uvicorn in this process, or a service as its own process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from services.cli.embedded import free_port
from tests.polling import eventually, eventually_sync


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` under uvicorn on a free local port (an open event stream needs a real server)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, timeout_graceful_shutdown=1)
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()  # it stopped before it started: raise its error
        return server.started

    await eventually(started, what=f"uvicorn to listen on port {port}", timeout=30, interval=0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=10)


class Service:
    """One service run as `engage serve NAME`, the way a deployment runs it."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path, port: int | None = None) -> None:
        self.name, self.port = name, port or free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")},
            **env,
            f"ENGAGE_{name.upper()}_PORT": str(self.port),
            "ENGAGE_LOG_FORMAT": "json",
        }
        self.log = log_dir / f"{name}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0, *, ready: bool = True) -> Service:
        """Start the service and wait until /health answers 200 (``ready``) or answers at all."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "serve", self.name],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def health() -> int:
            assert proc.poll() is None, f"{self.name} exited: {self.log.read_text()[-2000:]}"
            return httpx.get(f"{self.url}/health", timeout=1).status_code

        try:
            eventually_sync(
                health,
                lambda status: status == 200 or not ready,
                what=f"{self.name} to answer /health",
                timeout=timeout,
                interval=0.1,
                ignoring=(httpx.HTTPError,),
            )
        except AssertionError as failed:
            if proc.poll() is None:  # still running but never healthy: its log says why
                failed.add_note(self.log.read_text()[-2000:])
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
