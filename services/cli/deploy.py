"""The deploy-time commands: `engage nkey` (an identity for NATS) and `engage streams` (the log's
streams, as the admin identity makes them). deploy/README.md shows both; tests/deploy runs them."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import nkeys
from nats.errors import Error as NatsError

from shared.bus import apply_streams, close_nats, connect_nats
from shared.errors import ConfigError, EngageError
from shared.settings import Settings


def new_nkey(out: Path) -> str:
    """Write a new user NKey seed to ``out`` (mode 0600, never over an existing file); return its public key."""
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    public: str = nkeys.from_seed(bytearray(seed)).public_key.decode()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise EngageError(f"--out {out}: already exists; a seed is never overwritten (remove it first)") from None
    except OSError as exc:
        raise EngageError(f"--out {out}: cannot be written ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as file:
        file.write(seed + b"\n")
    return public


async def streams(settings: Settings) -> list[str]:
    """Create the streams that are missing and bring the others to engage's configuration, as admin."""
    try:
        nc = await connect_nats(settings, "admin", connect_timeout=5, max_reconnect_attempts=1, error_cb=_quiet)
    except (TimeoutError, NatsError, OSError) as exc:
        raise EngageError(f"NATS does not answer ({type(exc).__name__}: {exc}); check ENGAGE_NATS_URL") from None
    try:
        async with asyncio.timeout(60):
            return await apply_streams(nc.jetstream(), settings)
    except TimeoutError:
        why = nc.last_error
        raise EngageError(
            "the streams could not be changed in time"
            + (f" ({why}): is ENGAGE_NATS_NKEY_SEED_FILE the admin identity's seed?" if why else "")
        ) from None
    except (NatsError, ConfigError) as exc:
        raise EngageError(str(exc)) from None
    finally:
        await close_nats(nc)


async def _quiet(_: Exception) -> None:
    return None  # reported as one line by the caller, never as a logged traceback
