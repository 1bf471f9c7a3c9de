"""The shipped NATS deployment on loopback: three nats-server nodes running deploy/nats/ as it is,
with only ports and paths templated, TLS certificates made now (trustme) and NKeys made by
`engage nkey`, the way deploy/README.md tells an operator to make them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import trustme
from nats.aio.client import Client

from services.cli.embedded import _wait_for_port, free_port, nats_server_binary
from shared.bus import connect_options
from shared.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NODES = ("nats-1", "nats-2", "nats-3")
USERS = ("admin", "intake", "survey", "analytics")


def engage(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `engage` command line as an operator would (a fresh process)."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def templated(text: str, replacements: list[tuple[str, str, int]]) -> str:
    """``text`` with each (old, new) replaced exactly the expected number of times, or an AssertionError.

    So the file the tests run is the shipped one: were a port or path to move, the template
    would no longer match and the test says so instead of running something else.
    """
    for old, new, times in replacements:
        found = text.count(old)
        assert found == times, f"deploy/nats/nats-server.conf: expected {old!r} {times} time(s), found {found}"
        text = text.replace(old, new)
    return text


@dataclass
class Node:
    name: str
    client: int
    route: int
    monitor: int
    home: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.client}"


@dataclass
class Cluster:
    """Three nodes from deploy/nats/, their CA, and every identity's NKey."""

    root: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    seeds: dict[str, Path] = field(default_factory=dict)
    public: dict[str, str] = field(default_factory=dict)
    ca_file: Path = Path()
    ca: Any = None

    @property
    def url(self) -> str:
        """The seed list of every node, as services are given it."""
        return ",".join(node.url for node in self.nodes.values())

    def settings(self, who: str, **overrides: Any) -> Settings:
        given = {"nats_url": self.url, "nats_nkey_seed_file": self.seeds[who], "nats_ca_file": self.ca_file}
        return Settings(**{**given, **overrides})

    def env(self, who: str) -> dict[str, str]:
        """The environment a service (or the streams job) runs with: its own seed, the CA, every node."""
        return {
            "ENGAGE_NATS_URL": self.url,
            "ENGAGE_NATS_NKEY_SEED_FILE": str(self.seeds[who]),
            "ENGAGE_NATS_CA_FILE": str(self.ca_file),
            "ENGAGE_STREAM_REPLICAS": "3",
        }

    async def connect(self, who: str, *, node: str | None = None, **kwargs: Any) -> Client:
        """A client with ``who``'s identity (to one node, or to the seed list)."""
        servers = [self.nodes[node].url] if node else [n.url for n in self.nodes.values()]
        options = {**connect_options(self.settings(who), who), **kwargs}
        return await nats.connect(servers, **options)

    def make(self) -> None:
        """Certificates, NKeys and each node's config: the operator's steps of deploy/README.md."""
        tls = self.root / "tls"
        tls.mkdir(parents=True)
        self.ca = trustme.CA()
        cert = self.ca.issue_cert(*NODES, "localhost", "127.0.0.1")
        self.ca_file = tls / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_pem.write_to_path(str(tls / "server-key.pem"))
        cert.private_key_and_cert_chain_pem.write_to_path(str(tls / "server.pem"))
        seeds = self.root / "seeds"
        seeds.mkdir()
        for who in USERS:
            made = engage("nkey", "--out", str(seeds / f"{who}.nk"))
            assert made.returncode == 0, made.stderr
            self.seeds[who], self.public[who] = seeds / f"{who}.nk", made.stdout.strip()
            assert re.fullmatch(r"U[A-Z2-7]{55}", self.public[who]), made.stdout
        for name in NODES:
            self.nodes[name] = Node(name, free_port(), free_port(), free_port(), self.root / name)
        shipped = (DEPLOY / "nats" / "nats-server.conf").read_text()
        for node in self.nodes.values():
            node.home.mkdir()
            (node.home / "accounts.conf").write_bytes((DEPLOY / "nats" / "accounts.conf").read_bytes())
            (node.home / "nats-server.conf").write_text(
                templated(
                    shipped,
                    [
                        ("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{node.client}", 1),
                        ("http: 127.0.0.1:8222", f"http: 127.0.0.1:{node.monitor}", 1),
                        ("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{node.route}", 1),
                        ('"/etc/nats/tls/', f'"{tls}/', 6),
                        ('store_dir: "/data/jetstream"', f'store_dir: "{node.home / "jetstream"}"', 1),
                        *[
                            (f"nats-route://{n}:6222", f"nats-route://127.0.0.1:{self.nodes[n].route}", 1)
                            for n in NODES
                        ],
                    ],
                )
            )

    def node_env(self, name: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NATS_SERVER_NAME": name,
            **{f"{who.upper()}_NKEY": key for who, key in self.public.items()},
        }

    def start(self, name: str) -> None:
        node = self.nodes[name]
        log = node.home / "nats.log"
        with log.open("ab") as out:
            node.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(node.home / "nats-server.conf")],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.node_env(name),
            )
        _wait_for_port(node.client, node.proc, log)

    def healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.nodes[name].monitor}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.healthy(n) for n in self.nodes if self.nodes[n].proc is not None):
                return
            time.sleep(0.2)
        logs = {n: (node.home / "nats.log").read_text()[-1500:] for n, node in self.nodes.items()}
        raise AssertionError(f"the cluster did not become healthy in {timeout:.0f} s: {logs}")

    def kill(self, name: str) -> None:
        """SIGKILL: the node dies as in a power cut, with no goodbye to its peers."""
        proc = self.nodes[name].proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.nodes[name].proc = None

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None:
                node.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=10)
                if node.proc.poll() is None:
                    node.proc.kill()
                node.proc = None


@contextlib.contextmanager
def running_cluster(root: Path) -> Iterator[Cluster]:
    cluster = Cluster(root)
    cluster.make()
    try:
        for name in NODES:
            cluster.start(name)
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
