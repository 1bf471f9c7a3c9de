"""One settings tree for every service, read from ``ENGAGE_*`` environment variables.

Built once in an app factory or the CLI and passed down; nothing connects at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigError
from shared.ids import PROCESS_ID_PATTERN

Scope = Literal["intake:write", "survey:write", "coverage:read", "analyst:read", "metrics:read", "admin"]


class TokenSpec(BaseModel):
    """A bearer token and what it may do."""

    token: str = Field(min_length=16, description="The secret a client sends as `Authorization: Bearer ...`.")
    scopes: list[Scope] = Field(min_length=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENGAGE_", extra="ignore")

    process_id: str = Field("shfa-2018", pattern=PROCESS_ID_PATTERN, description="Default process.")
    nats_url: str | None = Field(
        None,
        description="NATS server(s), comma-separated (a cluster: every node); unset means the embedded nats-server.",
    )
    nats_nkey_seed_file: Path | None = Field(
        None, description="This service's NKey seed (a file only it can read): how it proves who it is to NATS."
    )
    nats_ca_file: Path | None = Field(
        None, description="CA certificate(s) that signed the NATS servers' certificates; set, every connection is TLS."
    )
    database_url: str | None = Field(None, description="PostgreSQL DSN; unset means the embedded PostgreSQL.")
    data_dir: Path = Field(Path(".engage"), description="Where the embedded servers keep their data.")
    host: str = Field("127.0.0.1", description="Interface the HTTP services listen on.")
    intake_port: int = Field(8701, ge=0, le=65535)
    survey_port: int = Field(8702, ge=0, le=65535)
    analytics_port: int = Field(8703, ge=0, le=65535)
    embedded_nats_port: int = Field(4233, ge=0, le=65535, description="Port of the embedded nats-server.")
    stream_name: str = Field("ENGAGEMENT", pattern=r"^[A-Z][A-Z0-9_]*$")
    dedupe_window_seconds: int = Field(
        86_400, ge=1, description="How long a repeated event id (an idempotency key) is recognised."
    )
    stream_replicas: int = Field(1, ge=1, le=5, description="JetStream replicas of each stream (3 in a cluster).")
    publish_timeout_seconds: float = Field(5.0, gt=0)
    consumer_name: str = Field("analytics", pattern=r"^[A-Za-z0-9_-]+$")
    batch_size: int = Field(1000, ge=1, le=10_000, description="Events per projection transaction, at most.")
    tokens: dict[str, TokenSpec] = Field(default_factory=dict, description="Inline tokens, JSON.")
    tokens_file: Path | None = Field(None, description="JSON file of tokens, as written by `engage up`.")
    timezone: str = Field("America/Chicago", description="Local time zone: days and weeks are counted in it.")
    plans: list[Path] = Field(
        default_factory=list, description="Plan files (TOML), comma-separated; none means the shipped plans."
    )
    sources_file: Path | None = Field(
        None,
        description="TOML listing the survey platforms that push submissions (KoboToolbox, REDCap, webhooks): "
        "each source's kind, mapping file and where its secrets are (env var or file, never inline).",
    )
    small_cell_k: int = Field(
        5, ge=2, le=50, description="Coordinators' counts are rounded to multiples of k; below k reads `<k`."
    )
    release_every: int | None = Field(
        None,
        ge=2,
        le=10_000,
        description="Coordinators' numbers move once this many participants have changed (at least k; default k).",
    )
    as_of_concurrency: int = Field(
        1, ge=1, le=64, description="As-of questions analytics answers at once; one more is refused (429, retry)."
    )
    write_rate: float = Field(50.0, gt=0, le=100_000, description="Writes per second each token may sustain.")
    write_burst: int = Field(
        500, ge=1, le=1_000_000, description="Writes a token may make at once before the rate applies."
    )
    backup_key_file: Path | None = Field(
        None, description="The key of `engage backup` and `engage restore` (made by `engage backup-key`)."
    )
    # ---- alerts: announced status changes to coordinators (services.analytics.alerts) ----
    alert_webhooks: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Outgoing webhook URLs, comma-separated (Slack incoming webhooks, Teams connectors): secrets, "
        "checked when analytics starts (services.analytics.alerts), never shown.",
    )
    smtp_url: SecretStr | None = Field(
        None,
        description="SMTP server for alert e-mail: smtp://user:pass@host:port (add ?starttls=true), or smtps://.",
    )
    alert_email_from: str | None = Field(None, description="The From address of alert e-mail.")
    alert_email_to: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Alert e-mail recipients, comma-separated."
    )
    public_url: str = Field(
        "http://127.0.0.1:8703", description="Analytics' public base URL: alerts link to the dashboard under it."
    )

    @field_validator("alert_webhooks", "alert_email_to", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    # ---- end of alerts ----
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("plans", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone (use an IANA name such as America/Chicago)") from exc
        return value

    @model_validator(mode="after")
    def _release_at_least_k(self) -> Self:
        if self.release_every is not None and self.release_every < self.small_cell_k:
            raise ValueError(
                f"release_every ({self.release_every}) must be at least small_cell_k ({self.small_cell_k}): "
                "fewer changes between two releases would let one person's answers be worked out"
            )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def every(self) -> int:
        """Participants changed between two coordinator releases."""
        return self.release_every or self.small_cell_k

    def all_tokens(self) -> dict[str, TokenSpec]:
        """Inline tokens plus those in ``tokens_file``."""
        found = dict(self.tokens)
        if self.tokens_file is not None:
            try:
                raw = orjson.loads(self.tokens_file.read_bytes())
                for name, spec in raw.items():
                    found[name] = TokenSpec.model_validate(spec)
            except (OSError, orjson.JSONDecodeError, AttributeError, ValidationError) as exc:
                raise ConfigError(f"ENGAGE_TOKENS_FILE={str(self.tokens_file)!r}: cannot be read: {exc}") from exc
        return found


def load_settings(**overrides: object) -> Settings:
    """Read settings; a bad value raises ConfigError naming the variable, value and reason."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # pydantic checks the values, and says which is wrong
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = "ENGAGE_" + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{key}={err.get('input')!r}: {err['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from exc
