"""The project's own errors, few and named once; each edge maps them (HTTP, CLI, bus)."""


class EngageError(Exception):
    """Base of every error engage raises on purpose."""


class ConfigError(EngageError):
    """A setting or plan file is wrong; the message names the key, the value and the reason."""


class ConflictError(EngageError):
    """The request is valid but contradicts the aggregate's current state (HTTP 409)."""


class NotFoundError(EngageError):
    """The aggregate does not exist (HTTP 404)."""


class EventTooLarge(EngageError):
    """The event would be larger than the log takes; nothing was stored (HTTP 413)."""


class PublishError(EngageError):
    """The event log did not confirm a write (HTTP 503): nothing will be stored later, and a
    retry with the answer's Idempotency-Key stores it at most once."""


class ServerUnavailable(PublishError):
    """A server a write needs (e.g. intake's PostgreSQL) did not answer; the write did not happen (HTTP 503)."""
