"""The sources file (``ENGAGE_SOURCES_FILE``): which platforms may push submissions, and how each proves it.

TOML, one table per source, keyed by the name its routes use::

    [sources.kobo-2018]
    kind = "kobo"
    mapping = "kobo-2018.toml"             # relative to this file
    username = "engage"
    password = { env = "KOBO_PASSWORD" }   # a secret: an environment variable ...

    [sources.redcap-2018]
    kind = "redcap"
    mapping = "redcap-2018.toml"
    project_id = "4021"
    api_url = "https://redcap.example.org/api/"
    api_token = { file = "secrets/redcap-token" }        # ... or a file (relative to this file)
    trigger_secret = { env = "REDCAP_TRIGGER_SECRET" }

    [sources.forms]
    kind = "webhook"
    mapping = "forms.toml"
    secret = { env = "FORMS_WEBHOOK_SECRET" }           # whsec_<base64>

Secrets are never written in the file itself. Everything is read and checked once, when the
survey service starts; a problem stops it with the source, the key and the reason.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.survey.sources.mapping import SourceMapping, load_mapping
from shared.errors import ConfigError
from shared.plan import Plan

_FROZEN = ConfigDict(frozen=True, extra="forbid")
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class SecretRef(BaseModel):
    """Where a secret is: an environment variable or a file, never the sources file itself."""

    model_config = _FROZEN
    env: str | None = Field(None, min_length=1)
    file: Path | None = None

    def read(self, base: Path, at: str) -> str:
        if (self.env is None) == (self.file is None):
            raise ConfigError(f"{at}: give exactly one of env or file")
        if self.env is not None:
            value = os.environ.get(self.env, "")
            if not value.strip():
                raise ConfigError(f"{at}.env = {self.env!r}: that environment variable is not set")
            return value.strip()
        path = base / (self.file or Path())
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{at}.file = {str(self.file)!r}: cannot read it ({exc.strerror or exc})") from None
        if not value:
            raise ConfigError(f"{at}.file = {str(self.file)!r}: is empty")
        return value


class _Source(BaseModel):
    model_config = _FROZEN
    mapping: Path = Field(description="The mapping file, relative to the sources file.")


class KoboSpec(_Source):
    kind: Literal["kobo"]
    username: str = Field(min_length=1)
    password: SecretRef


class RedcapSpec(_Source):
    kind: Literal["redcap"]
    project_id: str = Field(min_length=1, description="The REDCap project whose triggers are accepted.")
    api_url: str = Field(pattern=r"^https?://", description="REDCap's API URL (…/api/).")
    api_token: SecretRef
    trigger_secret: SecretRef


class WebhookSpec(_Source):
    kind: Literal["webhook"]
    secret: SecretRef
    tolerance_seconds: int = Field(300, ge=1, le=3600, description="Replay window, both directions.")


class SourcesFile(BaseModel):
    model_config = _FROZEN
    sources: dict[Name, Annotated[KoboSpec | RedcapSpec | WebhookSpec, Field(discriminator="kind")]] = Field(
        default_factory=dict
    )


@dataclass(frozen=True)
class Source:
    """One configured source, its secrets read and its mapping checked."""

    name: str
    kind: Literal["kobo", "redcap", "webhook"]
    mapping: SourceMapping
    secret: bytes  # kobo: the password; redcap: the trigger secret; webhook: the signing key
    username: str = ""
    project_id: str = ""
    api_url: str = ""
    api_token: str = ""
    tolerance_seconds: int = 300


def webhook_key(secret: str, at: str) -> bytes:
    """The signing key of a Standard Webhooks secret, ``whsec_<base64>``."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{at}: not a Standard Webhooks secret (whsec_ followed by base64)") from None


def load_sources(path: Path | None, plans: dict[str, Plan], default_process: str) -> dict[str, Source]:
    """The sources of ``path`` (none when unset); ConfigError naming the file, the source and the problem."""
    if path is None:
        return {}
    where = f"ENGAGE_SOURCES_FILE={str(path)!r}"
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    try:
        parsed = SourcesFile.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{where}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    base = Path(path).parent
    out: dict[str, Source] = {}
    for name, spec in parsed.sources.items():
        at = f"{where}: sources.{name}"
        mapping = load_mapping(base / spec.mapping, None)
        process = mapping.process_id or default_process
        load_mapping(base / spec.mapping, plans.get(process))  # against its plan, now that it is known
        if isinstance(spec, KoboSpec):
            out[name] = Source(
                name, "kobo", mapping, spec.password.read(base, f"{at}.password").encode(), spec.username
            )
        elif isinstance(spec, RedcapSpec):
            if mapping.instrument is None:
                raise ConfigError(f"{at}.mapping: a REDCap mapping names its instrument (instrument = ...)")
            out[name] = Source(
                name,
                "redcap",
                mapping,
                spec.trigger_secret.read(base, f"{at}.trigger_secret").encode(),
                project_id=spec.project_id,
                api_url=spec.api_url,
                api_token=spec.api_token.read(base, f"{at}.api_token"),
            )
        else:
            key = webhook_key(spec.secret.read(base, f"{at}.secret"), f"{at}.secret")
            out[name] = Source(name, "webhook", mapping, key, tolerance_seconds=spec.tolerance_seconds)
    return out
