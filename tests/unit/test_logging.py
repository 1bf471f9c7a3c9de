"""Logs carry ids, never contact details or profile answers."""

from __future__ import annotations

import io
import logging

import orjson
import pytest
import structlog

from shared.logging import configure_logging, get_logger, scrub


@pytest.mark.parametrize(
    ("text", "contact", "expected"),
    [
        ("call 612-703-9227", "612-703-9227", "call [phone]"),
        ("+1 612 555 0142", "+1 612 555 0142", "[phone]"),
        ("6125550142", "6125550142", "[phone]"),
        ("(612) 555-0142", "(612) 555-0142", "[phone]"),
        ("write to jane@example.org", "jane@example.org", "write to [email]"),
        ("+44 20 7946 0958", "+44 20 7946 0958", "[phone]"),
    ],
)
def test_contact_details_are_masked_in_any_message(text: str, contact: str, expected: str) -> None:
    """The contact detail in the message is gone and the mask stands in its place, the rest kept."""
    assert contact in text  # unscrubbed, the detail is there to find
    masked = scrub(text)
    assert contact not in masked
    assert masked == expected


@pytest.mark.parametrize(
    "text", ["http://127.0.0.1:8701", "2026-11-22T05:52:17.847389Z", "sequence 42", "iv-3f9c0a1b2c3d4e5f6a7b"]
)
def test_addresses_times_and_ids_are_not_mistaken_for_phone_numbers(text: str) -> None:
    assert scrub(text) == text


def test_forbidden_fields_are_redacted_and_contacts_masked_whoever_logs_them() -> None:
    """Through structlog and through the standard library alike."""
    stream = io.StringIO()
    configure_logging("json", "info")
    logging.getLogger().handlers[0].stream = stream
    get_logger("t").info(
        "scheduled",
        interview_id="iv-0123456789",
        name="Jane Q. Example",
        region="northeast",
        note="reach her at jane@example.org",
    )
    logging.getLogger("uvicorn.error").info("callback 612-555-0142")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["interview_id"] == "iv-0123456789"
    assert lines[0]["name"] == "[redacted]" and lines[0]["region"] == "[redacted]"
    assert lines[0]["note"] == "reach her at [email]"
    assert lines[1]["event"] == "callback [phone]"
    structlog.reset_defaults()
