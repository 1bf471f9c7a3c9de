"""The form's own settings, from ``ENGAGE_SURVEY_FORM_*`` variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class FormSettings(BaseSettings):
    """Where the quick exit goes, how old a form may be, how fast forms may come in."""

    model_config = SettingsConfigDict(env_prefix="ENGAGE_SURVEY_FORM_", extra="ignore")

    exit_url: str = Field(
        "https://www.google.com/",
        pattern=r"^https?://[^\s\"'<>]+$",
        description="Where the quick exit leaves to: a neutral site.",
    )
    min_seconds: float = Field(2.0, ge=0, description="A form sent sooner than this after it was shown is refused.")
    max_age_seconds: float = Field(2 * 3600, gt=0, description="A form older than this is refused (sent again).")
    secret: SecretStr | None = Field(
        None, description="Key of the forms' tokens; unset means a random one per process (share it between replicas)."
    )
    rate: float = Field(5.0, gt=0, description="Forms per second all participants together may send, sustained.")
    burst: int = Field(50, ge=1, description="Forms that may come in at once.")
