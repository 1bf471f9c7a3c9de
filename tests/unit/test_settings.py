"""Settings: ENGAGE_* variables, and errors that name the key, the value and the reason."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import load_settings


def test_defaults_describe_the_embedded_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ENGAGE_NATS_URL", "ENGAGE_DATABASE_URL", "ENGAGE_PROCESS_ID"):
        monkeypatch.delenv(key, raising=False)
    s = load_settings()
    assert s.nats_url is None and s.database_url is None and s.process_id == "shfa-2018"
    assert s.small_cell_k == 5


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGE_SMALL_CELL_K", "11")
    assert load_settings().small_cell_k == 11


def test_a_bad_value_names_the_variable_the_value_and_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGE_INTAKE_PORT", "eighty")
    with pytest.raises(ConfigError, match=r"ENGAGE_INTAKE_PORT='eighty': Input should be a valid integer"):
        load_settings()


def test_an_unreadable_tokens_file_is_named(tmp_path) -> None:
    bad = tmp_path / "tokens.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="ENGAGE_TOKENS_FILE"):
        load_settings(tokens_file=bad).all_tokens()
