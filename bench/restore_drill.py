"""Benchmark: the restore drill, timed: write a log, back it up, wipe everything, restore it, rebuild.

Starts a throw-away nats-server (fsyncing every write, as deployed) and PostgreSQL (from
the wheels), publishes N events (the mixed workload of ``bench.catchup``), reads the stream
with a raw nats-py ordered consumer (the baseline, measured in the same run), then times:
  - ``engage backup``'s work: the log read and written to an encrypted file,
  - the wipe: the nats-server stopped and a new one started on an empty folder, a new database,
  - the restore: the whole file checked (decrypted and verified) before anything is written,
    then every event published at its own sequence,
  - the rebuild of the read models from the restored log.
Prints each step's time and events/s, and each rate against the baseline.

    python -m bench.restore_drill --events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats

from bench.catchup import print_figures, publish, raw_read, workload
from services.analytics.engine.rebuild import rebuild
from services.cli import backup as backing
from services.cli import backup_file
from services.cli.embedded import EmbeddedNats, EmbeddedPostgres
from shared.logging import configure_logging
from shared.settings import Settings


async def drill(n: int, tmp: Path) -> dict[str, tuple[float, int]]:
    """Each step's (seconds, events); ``raw`` is the baseline."""
    times: dict[str, tuple[float, int]] = {}
    postgres = EmbeddedPostgres(tmp / "pg", delete_on_stop=True)
    dsn = postgres.start()
    first = EmbeddedNats(tmp / "nats-1")
    second = EmbeddedNats(tmp / "nats-2")
    try:
        url = first.start()
        settings = Settings(nats_url=url, database_url=dsn)
        print(f"generating and publishing {n:,} events…", flush=True)
        start = time.perf_counter()
        rate = await publish(url, settings, workload(n))
        times["write (1000 in flight)"] = (n / rate, n)
        raw = await raw_read(url, settings, n)
        times["raw ordered consumer (baseline)"] = (n / raw, n)

        key = backup_file.new_key_text()
        key_file, out = tmp / "backup.key", tmp / "log.backup"
        key_file.write_text(key)
        nc = await nats.connect(url)
        start = time.perf_counter()
        with out.open("wb") as sink:
            result = await backing.backup_stream(nc, settings.stream_name, sink, backup_file.read_key_file(key_file))
        times["backup"] = (time.perf_counter() - start, result.trailer.messages)
        await nc.close()
        print(f"backup: {out.stat().st_size / 1e6:,.1f} MB for {n:,} events", flush=True)

        start = time.perf_counter()
        first.stop()
        fresh_url = second.start()
        admin = await asyncpg.connect(dsn)
        await admin.execute('CREATE DATABASE "restored"')
        await admin.close()
        fresh = Settings(nats_url=fresh_url, database_url=urlunsplit(urlsplit(dsn)._replace(path="/restored")))
        times["wipe (new nats-server, new database)"] = (time.perf_counter() - start, 0)

        key_bytes = backup_file.read_key_file(key_file)
        start = time.perf_counter()
        checked = await asyncio.to_thread(backing.check_file, out, key_bytes)
        times["restore: check the whole file"] = (time.perf_counter() - start, checked.trailer.messages)
        nc = await nats.connect(fresh_url)
        start = time.perf_counter()
        await backing.prepare_stream(nc.jetstream(), fresh, checked.trailer)
        stored = await backing.publish_records(nc, backing.file_records(out, key_bytes))
        times["restore: publish"] = (time.perf_counter() - start, stored)
        await nc.close()

        start = time.perf_counter()
        rebuilt = await rebuild(fresh)
        times["rebuild"] = (time.perf_counter() - start, rebuilt.events)
    finally:
        first.stop()
        second.stop()
        postgres.stop()
    return times


async def main(n: int) -> None:
    configure_logging("json", "warning")
    with tempfile.TemporaryDirectory(prefix="engage-bench-") as tmp:
        times = await drill(n, Path(tmp))
    baseline = times["raw ordered consumer (baseline)"]
    raw_rate = baseline[1] / baseline[0]
    figures = {}
    for step, (seconds, events) in times.items():
        rate = events / seconds if seconds else 0.0
        figures[step] = (
            f"{seconds:>7.1f} s  {rate:>9,.0f} events/s  (÷ baseline {rate / raw_rate:.2f})"
            if events
            else f"{seconds:>7.1f} s"
        )
    print(f"\n{n:,} events")
    print_figures(figures, indent="  ")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().events))
