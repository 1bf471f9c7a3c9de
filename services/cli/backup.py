"""`engage backup`, `engage restore` and `engage backup-key`: the event log, kept safe elsewhere.

``engage backup --out FILE`` reads stream ENGAGEMENT (as the analytics NATS user) through a
throw-away pull consumer, up to the last sequence it holds when the backup starts, and
writes every message (subject, headers, stream sequence, stored time, data) to an
encrypted, checksummed file (:mod:`services.cli.backup_file`). Services may keep writing
meanwhile; what they store after the start goes into the next backup.

``engage restore FILE`` checks the whole file first, then loads it (as the admin NATS user)
into an event log that holds nothing, each message with its own headers and at its own
sequence, and rebuilds the read models from it. JetStream stamps each restored message
with the time of the restore: no answer of analytics reads that time (counts, as-of views
and releases use the events' own ``occurred_at``, freshness their ``recorded_at``), so
the restored answers are the original ones.

The backup is the log and only the log: intake's contact details live in intake's own
table, never on the log, so they are never in a backup.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from services.cli.options import DataDirOption, NatsUrlOption
from shared.errors import EngageError
from shared.logging import configure_logging
from shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from services.cli.backup_file import Record, Trailer

# NATS, the reader and cryptography are imported by the functions that use them: registering
# these commands must not slow every other `engage` command down.

console = Console(stderr=True)
IN_FLIGHT = 1000  # restore: messages published and not yet acknowledged, at most

KeyFileOption = Annotated[
    Path,
    typer.Option(
        "--key-file",
        envvar="ENGAGE_BACKUP_KEY_FILE",
        show_default=False,
        help="The backup key (made by `engage backup-key`; keep it apart from the backups).",
    ),
]


def _settings(data_dir: Path | None) -> Settings:
    settings = load_settings(**({"data_dir": data_dir} if data_dir is not None else {}))
    configure_logging(settings.log_format, "warning")
    return settings


def _bar(what: str) -> Progress:
    return Progress(
        TextColumn(what),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


# -- commands ------------------------------------------------------------------------------------


def backup_key(
    out: Annotated[Path, typer.Option(help="Where to write the new key (never overwritten).")],
) -> None:
    """Make a backup key: 32 random bytes (base64) in a file only its owner can read."""
    from services.cli import backup_file

    backup_file.write_key_file(out)
    console.print(
        f"wrote a new backup key to {out} (mode 0600). Keep a copy apart from the backups: "
        "without it no backup can be read, and with it anyone can read them."
    )


def backup(
    out: Annotated[Path, typer.Option(help="The backup file to write (never overwritten).")],
    key_file: KeyFileOption,
    nats_url: NatsUrlOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write the whole event log (stream ENGAGEMENT) to an encrypted, checksummed file."""
    from services.cli.replay import nats_url_of

    settings = _settings(data_dir)
    run_backup(settings, out, key_file, nats_url_of(nats_url, settings))


def restore(
    file: Annotated[Path, typer.Argument(help="A file written by `engage backup`.")],
    key_file: KeyFileOption,
    no_rebuild: Annotated[
        bool, typer.Option("--no-rebuild", help="Load the log only; rebuild the read models later.")
    ] = False,
    nats_url: NatsUrlOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Load a backup into an empty event log, each event at its own sequence, then rebuild the read models."""
    from services.cli.replay import nats_url_of

    settings = _settings(data_dir)
    settings = settings.model_copy(update={"nats_url": nats_url_of(nats_url, settings)})
    run_restore(settings, file, key_file, rebuild=not no_rebuild)


# -- backup --------------------------------------------------------------------------------------


async def _connect(settings: Settings, who: str, url: str) -> Client:
    """Connect once as ``who``, failing fast with one line instead of retrying forever."""
    from nats.errors import Error as NatsError

    from services.cli.stack import shown
    from shared.bus import connect_nats

    async def quiet(_: Exception) -> None:
        return None  # connection errors become the EngageError below, not a logged traceback

    try:
        return await connect_nats(
            settings, who, url, connect_timeout=3, max_reconnect_attempts=1, reconnect_time_wait=0.2, error_cb=quiet
        )
    except (TimeoutError, NatsError, OSError) as exc:
        raise EngageError(
            f"NATS at {shown(url)} does not answer ({type(exc).__name__}): is it running, "
            "or --nats-url / ENGAGE_NATS_URL set?"
        ) from None


def stored_time_ns(msg: Msg) -> int:
    """When JetStream stored the message (ns since the epoch), from its ack subject."""
    tokens = msg.reply.split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending> (v1), or with domain and account hash
    return int(tokens[7] if len(tokens) == 9 else tokens[9])


async def log_records(
    nc: Client, stream: str, first: int, last: int, batch: int = 2000
) -> AsyncGenerator[list[Record], None]:
    """Batches of the stored messages from ``first`` through ``last``, in order, as records:
    subject, headers, sequence, stored time and data exactly as the stream holds them."""
    from services.analytics.reading.reader import stream_sequence
    from services.analytics.reading.replay import message_batches
    from services.cli.backup_file import Record

    async for msgs in message_batches(nc, stream, first, last, batch, name_prefix="backup"):
        yield [
            Record(stream_sequence(msg), stored_time_ns(msg), msg.subject, dict(msg.headers or {}), msg.data)
            for msg in msgs
        ]


@dataclass
class BackupResult:
    trailer: Trailer
    gaps: list[tuple[int, int]]  # (first missing, last missing) sequences inside the backed-up range
    seconds: float


async def backup_stream(
    nc: Client,
    stream: str,
    sink: BinaryIO,
    key: bytes,
    progress: Callable[[int, int, int], None] | None = None,
    rounding_secret: bytes | None = None,
) -> BackupResult:
    """Back up ``stream`` up to its last sequence now into ``sink``; ``progress(reached, first, last)``."""
    from nats.js.errors import NotFoundError as JsNotFound

    from services.cli import backup_file

    try:
        info = await nc.jetstream().stream_info(stream)
    except JsNotFound:
        raise EngageError(f"stream {stream}: not on that NATS server; nothing to back up") from None
    first, last = (info.state.first_seq, info.state.last_seq) if info.state.messages else (1, 0)
    started = time.perf_counter()
    writer = backup_file.BackupWriter(sink, key)
    gaps: list[tuple[int, int]] = []
    expected = first
    async for records in log_records(nc, stream, first, last):
        for record in records:
            if record.sequence != expected:
                gaps.append((expected, record.sequence - 1))
            expected = record.sequence + 1
            writer.add(record)
        if progress is not None:
            progress(records[-1].sequence, first, last)
    trailer = writer.finish(stream, rounding_secret)
    if trailer.last_seq != last:
        raise EngageError(f"stream {stream}: the backup stopped at sequence {trailer.last_seq}, short of {last}")
    return BackupResult(trailer, gaps, time.perf_counter() - started)


async def read_rounding_secret(settings: Settings) -> tuple[bytes | None, str | None]:
    """Analytics' rounding secret from its database (ENGAGE_DATABASE_URL, else `engage up`'s), or why not."""
    import asyncpg

    from services.cli.stack import recorded_servers, shown

    dsn = settings.database_url
    if not dsn:
        found = recorded_servers(settings.data_dir, ("database_url",))
        dsn = found["database_url"] if found else None
    if not dsn:
        return None, "no ENGAGE_DATABASE_URL"
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return None, f"PostgreSQL at {shown(dsn)} does not answer: {type(exc).__name__}"
    try:
        secret = await conn.fetchval("SELECT secret FROM analytics.rounding_secret WHERE id = 1")
    except asyncpg.UndefinedTableError:
        secret = None
    finally:
        await conn.close()
    return (bytes(secret), None) if secret else (None, "analytics has not made one yet")


async def keep_rounding_secret(dsn: str, trailer: Trailer) -> str | None:
    """Put the backup's rounding secret into the read models' database; a warning if it keeps another one."""
    import base64

    from services.analytics.store import schema as db_schema

    if trailer.rounding_secret is None:
        return "the backup holds no rounding secret: coordinators' rounded numbers may differ by one rounding step"
    wanted = base64.b64decode(trailer.rounding_secret)
    pool = await db_schema.open_pool(dsn, max_size=2)
    try:
        await db_schema.migrate(pool)
        await pool.execute(
            "INSERT INTO rounding_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING", wanted
        )
        kept = await pool.fetchval("SELECT secret FROM rounding_secret WHERE id = 1")
    finally:
        await pool.close()
    if bytes(kept) != wanted:
        return (
            "the database keeps a rounding secret of its own, not the backup's: coordinators' rounded numbers "
            "may differ by one rounding step (restore into an empty database to keep them)"
        )
    return None


def _new_file(out: Path) -> tuple[Path, BinaryIO]:
    if out.exists() or out.is_symlink():
        raise EngageError(f"--out {out}: already exists; a backup never overwrites a file (give a new name)")
    if not out.parent.is_dir():
        raise EngageError(f"--out {out}: folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise EngageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return tmp, os.fdopen(fd, "wb")


def run_backup(settings: Settings, out: Path, key_file: Path, url: str) -> BackupResult:
    """The `engage backup` command: the log to ``out``, written to a temporary file and linked in at the end."""
    from nats.errors import Error as NatsError

    from services.cli import backup_file

    key = backup_file.read_key_file(key_file)
    if backup_file.key_readable_by_others(key_file):
        console.print(f"warning: --key-file {key_file}: others may read it (chmod 600 it)", highlight=False)
    stream = settings.stream_name
    secret, why = asyncio.run(read_rounding_secret(settings))
    if why is not None:
        console.print(
            f"warning: analytics' rounding secret is not in this backup ({why}): restored, coordinators' rounded "
            "numbers may differ from today's by one rounding step",
            highlight=False,
        )
    tmp, sink = _new_file(out)
    try:
        with _bar("backing up") as bar:
            task = bar.add_task("backup", total=1, completed=0)

            def progress(reached: int, first: int, last: int) -> None:
                bar.update(task, completed=reached - first + 1, total=last - first + 1)

            async def work() -> BackupResult:
                nc = await _connect(settings, "analytics", url)
                try:
                    return await backup_stream(nc, stream, sink, key, progress, secret)
                except (TimeoutError, NatsError) as exc:
                    raise EngageError(f"reading stream {stream} failed ({type(exc).__name__}); try again") from None
                finally:
                    await nc.close()

            result = asyncio.run(work())
        sink.flush()
        os.fsync(sink.fileno())
        sink.close()
        os.link(tmp, out)  # never replaces a file that appeared meanwhile
    except FileExistsError:
        raise EngageError(f"--out {out}: appeared while the backup ran; the backup was not kept") from None
    except OSError as exc:
        raise EngageError(f"--out {out}: writing failed ({exc.strerror or exc})") from None
    finally:
        sink.close()
        tmp.unlink(missing_ok=True)
    t = result.trailer
    span = f"sequences {t.first_seq:,}-{t.last_seq:,}" if t.messages else "no events"
    console.print(
        f"backed up {t.messages:,} events of stream {stream} ({span}: the last one stored when the backup "
        f"started; later events go into the next backup) to {out} in {result.seconds:.1f} s; "
        f"SHA-256 of the events {t.sha256[:16]}…",
        highlight=False,
    )
    for low, high in result.gaps:
        console.print(
            f"warning: sequences {low:,}-{high:,} are missing from the log (deleted before it was protected): "
            "`engage restore` refuses a backup with gaps, since it cannot store them again at the same sequences",
            highlight=False,
        )
    return result


# -- restore -------------------------------------------------------------------------------------


@dataclass
class Checked:
    """What the first pass over a backup found."""

    trailer: Trailer
    gap: tuple[int, int] | None  # the first run of missing sequences
    repeated_id: tuple[int, int] | None  # (sequence, earlier sequence) of the first repeated Nats-Msg-Id


def check_file(path: Path, key: bytes, progress: Callable[[int, int], None] | None = None) -> Checked:
    """Read and check the whole backup before anything is written; note what a restore could not reproduce."""
    from services.cli.backup_file import BackupReader

    try:
        source = path.open("rb")
    except OSError as exc:
        raise EngageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    size = path.stat().st_size
    gap: tuple[int, int] | None = None
    repeated: tuple[int, int] | None = None
    ids: dict[bytes, int] = {}
    previous = 0
    with source:
        reader = BackupReader(source, key, str(path))
        for n, record in enumerate(reader.records()):
            if previous and record.sequence != previous + 1 and gap is None:
                gap = (previous + 1, record.sequence - 1)
            previous = record.sequence
            msg_id = record.headers.get("Nats-Msg-Id")
            if msg_id is not None and repeated is None:
                digest = hashlib.blake2b(msg_id.encode(), digest_size=12).digest()
                if digest in ids:
                    repeated = (record.sequence, ids[digest])
                ids[digest] = record.sequence
            if progress is not None and n % 5000 == 0:
                progress(source.tell(), size)
        assert reader.trailer is not None  # records() ends only after checking the trailer
    if progress is not None:
        progress(size, size)
    return Checked(reader.trailer, gap, repeated)


async def prepare_stream(js: JetStreamContext, settings: Settings, trailer: Trailer) -> None:
    """Refuse a log that holds anything; create the missing streams (the log at the backup's first sequence)."""
    from nats.js.errors import NotFoundError as JsNotFound

    from shared.bus import ensure_streams, stream_configs

    name = settings.stream_name
    first = trailer.first_seq or 1
    try:
        info = await js.stream_info(name)
    except JsNotFound:
        if first > 1:  # the backed-up log began past 1 (purged before it was protected): begin there too
            config = stream_configs(settings)[0]
            config.first_seq = first
            await js.add_stream(config)
    else:
        state = info.state
        if state.messages:
            raise EngageError(
                f"stream {name} already holds {state.messages:,} events (sequences {state.first_seq:,}-"
                f"{state.last_seq:,}): restore loads a backup into an empty event log only; nothing was written"
            )
        if (state.last_seq or 0) + 1 != first:
            raise EngageError(
                f"stream {name} is empty but its next sequence is {(state.last_seq or 0) + 1:,}, and the backup's "
                f"first is {first:,}: delete the stream (admin NATS user) and restore again; nothing was written"
            )
    await ensure_streams(js, settings)


async def publish_records(
    nc: Client, records: AsyncIterator[Record], progress: Callable[[int], None] | None = None
) -> int:
    """Publish ``records`` in order, up to ``IN_FLIGHT`` unacknowledged; each PubAck must name the record's
    own sequence. Returns how many were stored; EngageError at the first that was not stored where it was."""
    import orjson

    prefix = nc.new_inbox()
    window = asyncio.Semaphore(IN_FLIGHT)
    problems: list[str] = []
    stored = 0

    async def on_ack(msg: Msg) -> None:
        nonlocal stored
        seq = int(msg.subject.rsplit(".", 1)[1])
        window.release()
        if msg.headers and msg.headers.get("Status"):
            problems.append(
                f"sequence {seq}: NATS answered {msg.headers['Status']} {msg.headers.get('Description', '')}"
            )
            return
        try:
            ack = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            problems.append(f"sequence {seq}: the PubAck cannot be read")
            return
        if "error" in ack:
            problems.append(f"sequence {seq}: refused ({ack['error'].get('description', ack['error'])})")
        elif ack.get("duplicate"):
            problems.append(f"sequence {seq}: taken as a duplicate of sequence {ack.get('seq')} (same Nats-Msg-Id)")
        elif ack.get("seq") != seq:
            problems.append(f"sequence {seq}: stored at sequence {ack.get('seq')} (another client is writing)")
        else:
            stored += 1

    async def acquire() -> None:
        try:
            async with asyncio.timeout(30):
                await window.acquire()
        except TimeoutError:
            raise EngageError("restore stopped: NATS acknowledged nothing for 30 s") from None

    sub = await nc.subscribe(prefix + ".*", cb=on_ack)
    sent = 0
    try:
        async for record in records:
            if problems:
                break
            await acquire()
            headers = record.headers or None
            await nc.publish(record.subject, record.data, reply=f"{prefix}.{record.sequence}", headers=headers)
            sent += 1
            if progress is not None and sent % 1000 == 0:
                progress(sent)
        for _ in range(IN_FLIGHT):  # every PubAck is in once the whole window is free again
            await acquire()
    finally:
        await sub.unsubscribe()
    if problems:
        raise EngageError(
            f"restore stopped at {problems[0]}; {stored:,} events were stored: delete the streams "
            "(admin NATS user), make sure nothing else writes, and restore again"
        )
    if progress is not None:
        progress(sent)
    return stored


async def file_records(path: Path, key: bytes) -> AsyncGenerator[Record, None]:
    from services.cli import backup_file

    for record in backup_file.read_backup(path, key):
        yield record


def run_restore(settings: Settings, path: Path, key_file: Path, *, rebuild: bool = True) -> int:
    """The `engage restore` command: check the file, refuse a log that holds anything, publish, rebuild."""
    from nats.errors import Error as NatsError

    from services.cli import backup_file
    from services.cli.stack import postgres_answers, shown, with_local_servers

    key = backup_file.read_key_file(key_file)
    with _bar("checking the backup") as bar:
        task = bar.add_task("check", total=max(path.stat().st_size if path.is_file() else 1, 1), completed=0)
        checked = check_file(path, key, lambda done, size: bar.update(task, completed=done, total=size))
    trailer = checked.trailer
    if checked.gap is not None:
        low, high = checked.gap
        raise EngageError(
            f"{path}: sequences {low:,}-{high:,} are missing from the backed-up log, and a restore cannot leave "
            "a gap where they were (the log denies deletes); nothing was written"
        )
    if checked.repeated_id is not None:
        seq, earlier = checked.repeated_id
        raise EngageError(
            f"{path}: sequence {seq:,} repeats the Nats-Msg-Id of sequence {earlier:,}; restored within the dedupe "
            "window it would be dropped as a duplicate; nothing was written"
        )
    if rebuild:
        settings = with_local_servers(settings)
        dsn = settings.database_url or ""
        if (why := asyncio.run(postgres_answers(dsn))) is not None:
            raise EngageError(f"PostgreSQL at {shown(dsn)} does not answer ({why}); nothing was written")
    url = settings.nats_url or ""
    started = time.perf_counter()

    async def work() -> int:
        nc = await _connect(settings, "admin", url)
        try:
            js = nc.jetstream()
            await prepare_stream(js, settings, trailer)
            with _bar("restoring") as bar:
                task = bar.add_task("restore", total=trailer.messages)
                stored = await publish_records(nc, file_records(path, key), lambda n: bar.update(task, completed=n))
            info = await js.stream_info(settings.stream_name)
            if info.state.messages != trailer.messages or (
                trailer.messages and info.state.last_seq != trailer.last_seq
            ):
                raise EngageError(
                    f"stream {settings.stream_name} holds {info.state.messages:,} events up to sequence "
                    f"{info.state.last_seq:,} after the restore, the backup {trailer.messages:,} up to "
                    f"{trailer.last_seq:,}: another client wrote meanwhile; delete the streams and restore again"
                )
            return stored
        except (TimeoutError, NatsError) as exc:
            raise EngageError(f"restoring into NATS at {shown(url)} failed ({type(exc).__name__}: {exc})") from None
        finally:
            await nc.close()

    stored = asyncio.run(work())
    span = f"sequences {trailer.first_seq:,}-{trailer.last_seq:,}" if trailer.messages else "no events"
    console.print(
        f"restored {stored:,} events ({span}, each at its own sequence, with its own headers) into stream "
        f"{settings.stream_name} in {time.perf_counter() - started:.1f} s. JetStream stamped them with the time "
        "of the restore; no answer uses that time (events carry their own occurred_at and recorded_at).",
        highlight=False,
    )
    if rebuild:
        from services.cli.rebuild import run as run_rebuild

        if (warning := asyncio.run(keep_rounding_secret(settings.database_url or "", trailer))) is not None:
            console.print(f"warning: {warning}", highlight=False)

        run_rebuild(settings)
    else:
        console.print(
            "read models not rebuilt (--no-rebuild): run `engage rebuild` before analytics answers; the backup's "
            "rounding secret was not put into the database (a restore that rebuilds does that)",
            highlight=False,
        )
    return stored
