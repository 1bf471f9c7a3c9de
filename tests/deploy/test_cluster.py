"""The deploy tier: the shipped deploy/ files, run on loopback as an operator would run them.

Three nats-server nodes from deploy/nats/ (ports and paths templated, nothing else changed),
TLS certificates made now, NKeys made by `engage nkey`, the streams made by the streams job's
own command (`engage streams --replicas 3`, as admin), PostgreSQL set up by
deploy/postgres/init.sql, and the three services, each with its own identity and role.

It checks: the streams are R3 and stay R3 once every service has started; every row of
deploy/README.md's permission matrix, both ways; a plaintext client, an unknown identity,
a client trusting another CA and a rogue route are refused; killing the stream's leader
during writes loses no acknowledged write and writes resume; the services' migrations and
`engage rebuild` succeed under their roles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import pytest
import trustme
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import ServiceUnavailableError

from services.cli.embedded import _wait_for_port, free_port, nats_server_binary
from tests.conftest import TOKENS
from tests.deploy.cluster import DEPLOY, USERS, Cluster, engage, running_cluster
from tests.deploy.postgres import Deployment, deployed
from tests.polling import eventually
from tests.servers import Service

T = TypeVar("T")

pytestmark = [pytest.mark.deploy, pytest.mark.integration, pytest.mark.timeout(900)]
STREAMS = ("ENGAGEMENT", "ENGAGEMENT_DEADLETTER", "ENGAGEMENT_STATUS")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster, and its streams as the compose `streams` job makes them."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        made = engage("streams", "--replicas", "3", env=running.env("admin"))
        assert made.returncode == 0, made.stderr
        running.streams_output = made.stdout + made.stderr  # type: ignore[attr-defined]  # kept for the first test
        yield running


@dataclass
class Stack:
    services: dict[str, Service]
    db: Deployment


@pytest.fixture(scope="module")
async def stack(cluster: Cluster, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """intake, survey and analytics as `engage serve`, each with its own NKey and PostgreSQL role."""
    logs = tmp_path_factory.mktemp("services")
    tokens = logs / "tokens.json"
    tokens.write_text(json.dumps({name: spec.model_dump() for name, spec in TOKENS.items()}))
    async with deployed(postgres_url) as db:
        common = {"ENGAGE_TOKENS_FILE": str(tokens), "ENGAGE_WRITE_RATE": "10000", "ENGAGE_WRITE_BURST": "100000"}
        services = {
            "intake": Service("intake", {**cluster.env("intake"), **common, "ENGAGE_DATABASE_URL": db.intake}, logs),
            "survey": Service("survey", {**cluster.env("survey"), **common}, logs),
            "analytics": Service(
                "analytics", {**cluster.env("analytics"), **common, "ENGAGE_DATABASE_URL": db.analytics}, logs
            ),
        }
        try:
            for service in services.values():
                await asyncio.to_thread(service.start, 90)
            yield Stack(services, db)
        finally:
            for service in services.values():
                service.stop()


async def replicas(cluster: Cluster) -> dict[str, tuple[int, int]]:
    """Each stream's (configured replicas, replicas that are current), as the admin sees them."""
    nc = await cluster.connect("admin")
    try:
        out = {}
        for name in STREAMS:
            info = await nc.jetstream().stream_info(name)
            peers = info.cluster.replicas or [] if info.cluster else []
            out[name] = (info.config.num_replicas or 1, 1 + sum(1 for p in peers if p.current))
        return out
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def all_current(cluster: Cluster) -> None:
    """Every stream R3 with three current replicas (a replica may lag for a moment under load)."""
    await eventually(
        lambda: replicas(cluster),
        lambda got: got == dict.fromkeys(STREAMS, (3, 3)),
        what="every stream to have three current replicas",
        timeout=30,
    )


def test_the_streams_job_makes_every_stream_with_three_replicas(cluster: Cluster) -> None:
    said = cluster.streams_output  # type: ignore[attr-defined]  # set by the fixture
    for name in STREAMS:
        assert f"{name}: created with 3 replica(s)" in said
    again = engage("streams", "--replicas", "3", env=cluster.env("admin"))
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already as engage expects") == 3, again.stderr
    # The same command with a service's identity is refused, in one line.
    denied = engage("streams", "--replicas", "1", env=cluster.env("analytics"))
    assert denied.returncode == 2 and "Traceback" not in denied.stderr, denied.stderr
    assert len(denied.stderr.strip().splitlines()) == 1, denied.stderr


# --- the permission matrix ----------------------------------------------------------------------------------------


def matrix() -> list[tuple[str, str, str, bool]]:
    """deploy/README.md's permission matrix: (identity, does, on, may)."""
    text = (DEPLOY / "README.md").read_text()
    section = text.split("## Permission matrix", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| (publish|subscribe|request) \| `([^`]+)` \| (yes|no) \|$", section, re.M)
    assert len(rows) >= 60, f"deploy/README.md's permission matrix has {len(rows)} rows"
    return [(who, does, on, may == "yes") for who, does, on, may in rows]


def request_body(subject: str, current: dict[str, Any]) -> bytes:
    """A well-formed request for each JetStream API the matrix names, so an allowed one gets an answer."""
    if ".CONSUMER.CREATE." in subject:
        stream, name = subject.split(".")[4:6]
        config = {"name": name, "ack_policy": "none", "inactive_threshold": 10_000_000_000, "mem_storage": True}
        return json.dumps({"stream_name": stream, "config": config}).encode()
    if ".STREAM.CREATE." in subject:
        return json.dumps({"name": subject.rsplit(".", 1)[1], "subjects": ["rogue.>"], "storage": "memory"}).encode()
    if ".STREAM.UPDATE." in subject:
        return json.dumps(current[subject.rsplit(".", 1)[1]]).encode()
    if subject.endswith((".MSG.GET.ENGAGEMENT", ".MSG.GET.ENGAGEMENT_STATUS", ".MSG.DELETE.ENGAGEMENT")):
        return b'{"seq": 1}'
    if subject == "$JS.API.DIRECT.GET.ENGAGEMENT":
        return b'{"seq": 1}'
    return b""


async def attempt(nc: Client, errors: list[str], does: str, on: str, body: bytes) -> bool:
    """Whether ``nc`` may do it: allowed, or refused with a permissions violation naming ``on``."""
    denial = f'"{on}"'.lower()  # nats-py reports the server's -ERR in lower case

    def refused() -> bool:
        return any("permissions violation" in e.lower() and denial in e.lower() for e in errors)

    if does == "request":
        try:
            await nc.request(on, body, timeout=2)
            return True
        except NatsError:
            pass
    elif does == "publish":
        await nc.publish(on, body or b"{}")
        await nc.flush()
    else:
        sub = await nc.subscribe(on)
        await nc.flush()
    for _ in range(20):
        if refused():
            return False
        await asyncio.sleep(0.05)
    if does == "subscribe":
        await sub.unsubscribe()
    if does == "request":
        raise AssertionError(f"{on}: neither answered nor refused")
    return True


async def test_every_row_of_the_permission_matrix_holds(cluster: Cluster) -> None:
    admin = await cluster.connect("admin")
    current = {}
    for name in STREAMS:
        config = (await admin.jetstream().stream_info(name)).config.as_dict()
        current[name] = config
    await admin.close()
    rows = matrix()

    async def check(who: str) -> list[str]:
        errors: list[str] = []

        async def seen(exc: Exception) -> None:
            errors.append(str(exc))

        wrong = []
        nc = await cluster.connect(who, error_cb=seen)
        try:
            for identity, does, on, may in rows:
                if identity == who:
                    got = await attempt(nc, errors, does, on, request_body(on, current))
                    if got != may:
                        wrong.append(f"{who} {does} {on}: {'allowed' if got else 'refused'}, the matrix says {may}")
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
        return wrong

    # Each identity on a connection of its own, all at once.
    wrong = [line for lines in await asyncio.gather(*(check(who) for who in USERS)) for line in lines]
    assert {who for who, *_ in rows} == set(USERS)
    assert not wrong, "\n".join(wrong)
    # And the log keeps what it holds even for the identity that may do everything.
    nc = await cluster.connect("admin")
    try:
        purge = await nc.request("$JS.API.STREAM.PURGE.ENGAGEMENT", b"", timeout=5)
        delete = await nc.request("$JS.API.STREAM.MSG.DELETE.ENGAGEMENT", b'{"seq": 1}', timeout=5)
    finally:
        await nc.close()
    assert "purge not permitted" in purge.data.decode()
    assert "delete not permitted" in delete.data.decode()


# --- who may connect at all ------------------------------------------------------------------------------------------


async def refused_connection(servers: list[str], **options: Any) -> str:
    """Why a connection is refused (it must be)."""
    why: list[str] = []

    async def seen(exc: Exception) -> None:
        why.append(f"{type(exc).__name__}: {exc}")

    try:
        nc = await nats.connect(
            servers, connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0, error_cb=seen, **options
        )
    except (NatsError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc} {why}"
    await nc.close()
    raise AssertionError(f"{servers} accepted the connection")


async def test_plaintext_unknown_identities_and_other_cas_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    node = next(iter(cluster.nodes.values()))
    plain = f"nats://127.0.0.1:{node.client}"
    assert await refused_connection([plain])  # no TLS: refused before anything is sent
    ok_tls = cluster.settings("intake")
    from shared.bus import connect_options

    tls = connect_options(ok_tls, "intake")["tls"]
    no_identity = await refused_connection([node.url], tls=tls)
    assert "authorization" in no_identity.lower(), no_identity
    stranger = tmp_path / "stranger.nk"
    made = engage("nkey", "--out", str(stranger))
    assert made.returncode == 0
    unknown = await refused_connection([node.url], tls=tls, nkeys_seed_str=stranger.read_text().strip())
    assert "authorization" in unknown.lower(), unknown
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    other = connect_options(cluster.settings("intake", nats_ca_file=other_ca), "intake")
    untrusted = await refused_connection([node.url], **other)
    assert "certificate" in untrusted.lower(), untrusted
    # The right identity, for contrast, connects.
    nc = await cluster.connect("intake", node=node.name)
    assert nc.is_connected
    await nc.close()


def routez(cluster: Cluster, name: str) -> list[str]:
    body = httpx.get(f"http://127.0.0.1:{cluster.nodes[name].monitor}/routez", timeout=5).json()
    return sorted({str(route.get("remote_name") or route.get("remote_id")) for route in body.get("routes") or []})


@contextlib.contextmanager
def rogue_server(home: Path, route_to: int, tls: str) -> Iterator[int]:
    """A nats-server someone starts on the network, pointing a route at the cluster."""
    home.mkdir()
    port, route = free_port(), free_port()
    conf = home / "rogue.conf"
    conf.write_text(
        f"server_name: rogue\nlisten: 127.0.0.1:{port}\n"
        f"cluster {{ name: engage\n listen: 127.0.0.1:{route}\n{tls}\n routes: [nats-route://127.0.0.1:{route_to}] }}\n"
    )
    log = home / "rogue.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, log)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_rogue_route_is_refused_and_receives_nothing(cluster: Cluster, tmp_path: Path) -> None:
    first = next(iter(cluster.nodes))
    before = routez(cluster, first)
    other = trustme.CA()
    cert = other.issue_cert("rogue", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "rogue.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "rogue-key.pem"))
    other.cert_pem.write_to_path(str(tmp_path / "rogue-ca.pem"))
    signed_by_another_ca = (
        f' tls {{ cert_file: "{tmp_path / "rogue.pem"}"\n key_file: "{tmp_path / "rogue-key.pem"}"\n'
        f' ca_file: "{tmp_path / "rogue-ca.pem"}"\n insecure: true }}'
    )
    for label, tls in (("plaintext", ""), ("another CA", signed_by_another_ca)):
        with rogue_server(tmp_path / label.replace(" ", "-"), cluster.nodes[first].route, tls) as port:
            spy = await nats.connect(f"nats://127.0.0.1:{port}")
            listening = await spy.subscribe(">")
            await spy.flush()
            await asyncio.sleep(3)  # several route attempts
            writer = await cluster.connect("admin", node=first)
            await writer.publish("engagement.rogue-check.interview.x", b"secret")
            await writer.flush()
            await writer.close()
            with contextlib.suppress(TimeoutError, NatsError):
                heard = await listening.next_msg(timeout=1)
                raise AssertionError(f"the {label} rogue received {heard.subject}: {heard.data!r}")
            await spy.close()
            assert routez(cluster, first) == before, f"the {label} rogue joined: {routez(cluster, first)}"
            said = (tmp_path / label.replace(" ", "-") / "rogue.log").read_text()
            assert "rogue" not in " ".join(before)
            assert re.search(r"(?i)tls|certificate|handshake|eof|closed", said), said[-1500:]


# --- the services as deployed ----------------------------------------------------------------------------------------


async def coverage(stack: Stack, who: str = "analyst") -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{stack.services['analytics'].url}/coverage",
            params={"process": "shfa-2018"},
            headers={"Authorization": f"Bearer {TOKENS[who].token}"},
            timeout=10,
        )
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def participants(body: dict[str, Any]) -> int:
    shown = body["participants"]
    return int(shown["value"] if isinstance(shown, dict) else shown)


async def test_services_run_with_their_own_identities_and_keep_the_streams_r3(cluster: Cluster, stack: Stack) -> None:
    await all_current(cluster)
    async with httpx.AsyncClient() as client:
        for name in ("intake", "survey", "analytics"):
            ready = await client.get(f"{stack.services[name].url}/health/ready", timeout=5)
            assert ready.status_code == 200, (name, ready.text)
        before = participants(await coverage(stack))
        survey = await client.post(
            f"{stack.services['survey'].url}/responses",
            json={"profile": {"region": "central"}},
            headers={"Authorization": f"Bearer {TOKENS['survey'].token}"},
        )
        assert survey.status_code == 201, survey.text
        interview = await client.post(
            f"{stack.services['intake'].url}/interviews",
            json={"format": "phone", "scheduled_for": "2030-01-01T10:00:00Z"},
            headers={"Authorization": f"Bearer {TOKENS['intake'].token}"},
        )
        assert interview.status_code == 201, interview.text
        done = await client.post(
            f"{stack.services['intake'].url}/interviews/{interview.json()['interview_id']}/complete",
            json={"participants": [{"profile": {"region": "northeast"}}]},
            headers={"Authorization": f"Bearer {TOKENS['intake'].token}"},
        )
        assert done.status_code == 200, done.text
    await eventually(
        lambda: coverage(stack), lambda body: participants(body) == before + 2, what="both to be counted", timeout=30
    )
    await all_current(cluster)


async def test_engage_rebuild_runs_under_the_analytics_role_and_identity(cluster: Cluster, stack: Stack) -> None:
    counted = participants(await coverage(stack))
    env = {**cluster.env("analytics"), "ENGAGE_DATABASE_URL": stack.db.analytics}
    rebuilt = engage("rebuild", env=env, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert participants(await coverage(stack)) == counted


async def test_engage_backup_runs_as_analytics_and_holds_the_whole_log(
    cluster: Cluster, stack: Stack, tmp_path: Path
) -> None:
    from services.cli.backup_file import check_backup, read_key_file

    key, out = tmp_path / "backup.key", tmp_path / "engage.backup"
    made = engage("backup-key", "--out", str(key))
    assert made.returncode == 0, made.stderr
    async with httpx.AsyncClient() as client:
        written = await client.post(
            f"{stack.services['survey'].url}/responses",
            json={"profile": {"region": "central"}},
            headers={"Authorization": f"Bearer {TOKENS['survey'].token}"},
        )
    assert written.status_code == 201, written.text
    admin = await cluster.connect("admin")
    last = (await admin.jetstream().stream_info("ENGAGEMENT")).state.last_seq
    await admin.close()
    env = {**cluster.env("analytics"), "ENGAGE_DATABASE_URL": stack.db.analytics, "ENGAGE_BACKUP_KEY_FILE": str(key)}
    backed_up = engage("backup", "--out", str(out), env=env, timeout=300)
    assert backed_up.returncode == 0, backed_up.stderr
    trailer = check_backup(out, read_key_file(key))
    assert trailer.first_seq == 1 and trailer.last_seq >= last and trailer.messages == trailer.last_seq
    assert trailer.rounding_secret is not None  # read under the analytics role
    # The survey identity may not read the log: the same command is refused in one line.
    denied = engage("backup", "--out", str(tmp_path / "no.backup"), env={**env, **cluster.env("survey")}, timeout=120)
    assert denied.returncode != 0 and "Traceback" not in denied.stderr, denied.stderr


async def settled(read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, asked again while the cluster answers that JetStream is temporarily unavailable."""
    return await eventually(
        read, lambda _: True, what="the cluster to answer", timeout=30, ignoring=(ServiceUnavailableError,)
    )


async def test_killing_the_stream_leader_during_writes_loses_no_acknowledged_write(
    cluster: Cluster, stack: Stack
) -> None:
    """Through the survey service, as clients write: a write the failover interrupts is a 503 with an
    Idempotency-Key, never a 500, and retrying it stores it once."""
    admin = await cluster.connect("admin")
    js = admin.jetstream()
    start_seq = (await js.stream_info("ENGAGEMENT")).state.last_seq
    counted_before = participants(await coverage(stack))
    total, acked, retries = 600, [], 0
    ack_times: list[float] = []
    answers: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(total):
        queue.put_nowait(n)
    url = f"{stack.services['survey'].url}/responses"
    headers = {"Authorization": f"Bearer {TOKENS['survey'].token}"}

    async def writer(client: httpx.AsyncClient) -> None:
        nonlocal retries
        while not queue.empty():
            n = queue.get_nowait()
            key = {"Idempotency-Key": f"leader-kill-{n}-{start_seq}"}
            deadline = time.monotonic() + 90
            while True:
                try:
                    answer = await client.post(url, json={"profile": {"region": "central"}}, headers={**headers, **key})
                except httpx.TransportError:
                    answer = None
                if answer is not None:
                    answers[answer.status_code] += 1
                    if answer.status_code == 201:
                        break
                    assert answer.status_code == 503, (answer.status_code, answer.text)
                    assert answer.headers["Idempotency-Key"] == key["Idempotency-Key"]
                retries += 1
                assert time.monotonic() < deadline, "writes did not resume within 90 s"
                await asyncio.sleep(0.2)
            acked.append((answer.json()["response_id"], answer.json()["sequence"]))
            ack_times.append(time.monotonic())

    async with httpx.AsyncClient(timeout=15) as client:
        writers = [asyncio.create_task(writer(client)) for _ in range(4)]
        await eventually(lambda: asyncio.sleep(0, len(acked)), lambda n: n >= total // 4, what="writes to start")
        leader = (await js.stream_info("ENGAGEMENT")).cluster.leader  # type: ignore[union-attr]  # a clustered stream
        assert leader in cluster.nodes, leader
        killed_at, acked_at_kill = time.monotonic(), len(acked)
        await asyncio.to_thread(cluster.kill, leader)
        await asyncio.gather(*writers)
    after_kill = sorted(t for t in ack_times if t > killed_at)
    # How long writes stopped: the longest stretch without an acknowledgement from the kill on.
    gap = max((b - a for a, b in zip([killed_at, *after_kill], after_kill, strict=False)), default=float("inf"))
    # Just after a failover the cluster may still answer 503 "temporarily unavailable" to a read.
    info = await settled(lambda: js.stream_info("ENGAGEMENT"))
    stored_ids, stored_at = set(), set()
    for seq in range(start_seq + 1, info.state.last_seq + 1):
        msg = await settled(lambda seq=seq: js.get_msg("ENGAGEMENT", seq))
        stored_ids.add((msg.headers or {}).get("Nats-Msg-Id"))
        stored_at.add((msg.subject.rsplit(".", 1)[1], msg.seq))
    stored = info.state.last_seq - start_seq
    await admin.close()
    counted = await eventually(
        lambda: coverage(stack),
        lambda body: participants(body) - counted_before >= total,
        what="analytics to count every acknowledged write",
        timeout=120,
    )
    print(
        f"\nleader kill ({leader}) during writes: acknowledged {len(acked)} (of them {len(acked) - acked_at_kill} "
        f"after the kill), stored {stored} ({len(stored_ids)} distinct), "
        f"counted {participants(counted) - counted_before}; "
        f"{retries} retried requests (answers {dict(answers)}); "
        f"no acknowledgement for {gap:.2f} s at most after the kill"
    )
    assert len(set(acked)) == total
    assert set(acked) <= stored_at and stored == len(stored_ids) == total  # each acknowledged one where it said
    assert participants(counted) - counted_before == total
    assert len(acked) - acked_at_kill > 0 and gap < 60
    # The node comes back and catches up: three current replicas again.
    await asyncio.to_thread(cluster.start, leader)
    await asyncio.to_thread(cluster.wait_healthy)
    await eventually(
        lambda: replicas(cluster),
        lambda got: got == dict.fromkeys(STREAMS, (3, 3)),
        what="the restarted node to catch up",
        timeout=60,
    )
