"""The shapes of identifiers every part of engage agrees on, spelled out once."""

from __future__ import annotations

import re
from typing import Final

PROCESS_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{1,39}$"
"""An engagement process's id, e.g. ``shfa-2018``: lower-case letters, digits and hyphens."""

PROCESS_ID: Final = re.compile(PROCESS_ID_PATTERN)
