"""structlog, configured once: console renderer on a terminal, JSON lines otherwise.

Logs carry ids and counts, never what a participant said about themselves or how to
reach them. ``redact`` is the last line of defence: it drops fields that could hold
contact details or profile answers, and masks anything shaped like an e-mail address
or a phone number, whoever logged it (our code, uvicorn, FastStream).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from shared.profile import DIMENSIONS

FORBIDDEN_KEYS = frozenset(
    {
        "name",
        "full_name",
        "first_name",
        "last_name",
        "phone",
        "email",
        "address",
        "contact",
        "contacts",
        "profile",
        "profiles",
        "notes",
        "body",
        "payload",
        *DIMENSIONS,
    }
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# North American numbers in their usual spellings, and international ones written with "+".
# Deliberately not "any run of digits": dates, times, ports and addresses must survive.
_PHONE = re.compile(
    r"(?<![\w.:/-])(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?![\w.:/-])"
    r"|\+\d{1,3}[\s.-]?\d[\d\s.-]{6,14}\d"
)


def scrub(text: str) -> str:
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))


def redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key.lower() in FORBIDDEN_KEYS:
            event[key] = "[redacted]"
        elif isinstance(event[key], str):
            event[key] = scrub(event[key])
    return event


def _not_tls_eof_noise(record: logging.LogRecord) -> bool:
    # asyncio warns on every TLS connection nats-py closes ("returning true from eof_received() has
    # no effect when using ssl"): nothing is wrong, and a warning on each close would hide real ones.
    return "eof_received()" not in record.getMessage()


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Route structlog and the standard library through one redacting renderer."""
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared_processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("asyncio").addFilter(_not_tls_eof_noise)
    for noisy in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(noisy).handlers[:] = []
        logging.getLogger(noisy).propagate = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
