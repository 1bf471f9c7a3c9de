"""Options several `engage` commands take, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

NatsUrlOption = Annotated[
    str | None,
    typer.Option(
        help="NATS (default ENGAGE_NATS_URL, else the one servers.json in the data dir names, else `engage up`'s port)."
    ),
]
StreamOption = Annotated[str | None, typer.Option(help="The log's stream (default ENGAGE_STREAM_NAME).")]
AnalyticsUrlOption = Annotated[
    str | None, typer.Option(help="Analytics' URL (default: ENGAGE_HOST and ENGAGE_ANALYTICS_PORT).")
]
TokensFileOption = Annotated[
    Path | None, typer.Option(help="Tokens file written by `engage up` (default: tokens.json in ENGAGE_DATA_DIR).")
]
DataDirOption = Annotated[
    Path | None, typer.Option(help="The folder of `engage up` (default ENGAGE_DATA_DIR, else .engage/).")
]
