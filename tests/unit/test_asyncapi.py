"""The AsyncAPI document describes the contract as it is, and the committed copy is not stale."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from shared.asyncapi import DOCUMENT_PATH, REGENERATE, asyncapi_document, render
from shared.events import AGGREGATE_OF, Payload, subject_for
from shared.status_events import CommunityStatusChanged

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD_MODELS: list[type[BaseModel]] = list(get_args(get_args(Payload)[0]))


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi_document()


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (a local JSON pointer) until a node without one."""
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, leaf value) in the document; the path holds the keys."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")
    else:
        yield path, node


def channel_at(doc: dict[str, Any], address: str) -> dict[str, Any]:
    found = [c for c in doc["channels"].values() if c["address"] == address]
    addresses = [c["address"] for c in doc["channels"].values()]
    assert len(found) == 1, f"{len(found)} channels for {address}; the document has {addresses}"
    return found[0]


def message_of(doc: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
    (message,) = channel["messages"].values()
    return resolve(doc, message)


def test_committed_document_is_what_the_generator_makes_now() -> None:
    committed = ROOT / DOCUMENT_PATH
    assert committed.exists(), f"{DOCUMENT_PATH} is missing; generate it with `{REGENERATE}`"
    assert committed.read_text(encoding="utf-8") == render(asyncapi_document(), "json"), (
        f"{DOCUMENT_PATH} is stale: the contract changed since it was generated. Regenerate it with `{REGENERATE}`"
    )


def test_it_is_an_asyncapi_3_document_whose_references_all_resolve(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"].startswith("3.")
    refs = [(path, value) for path, value in walk(doc) if path.endswith("/$ref")]
    assert refs
    for path, ref in refs:
        try:
            resolve(doc, {"$ref": ref})
        except KeyError:
            pytest.fail(f"{path}: {ref} points nowhere")
    keys = {key for section in doc["components"].values() for key in section}
    bad = {key for key in keys if not re.fullmatch(r"[A-Za-z0-9.\-_]+", key)}
    assert not bad, f"AsyncAPI 3.0 component keys must match [A-Za-z0-9.-_]+: {bad}"


def test_the_union_is_all_the_events_with_an_aggregate() -> None:
    assert {m.model_fields["type"].default for m in PAYLOAD_MODELS} == set(AGGREGATE_OF)


@pytest.mark.parametrize("model", PAYLOAD_MODELS, ids=lambda m: m.__name__)
def test_every_event_type_appears_on_its_subject_with_its_payload_fields(
    doc: dict[str, Any], model: type[BaseModel]
) -> None:
    name = model.model_fields["type"].default
    schema = doc["components"]["schemas"].get(name)
    assert schema is not None, f"{name} is not in the document's schemas"
    assert set(schema["properties"]) == set(model.model_fields), f"{name}: fields differ from the contract"
    for field, info in model.model_fields.items():
        if info.description:
            assert schema["properties"][field].get("description") == info.description, f"{name}.{field}"

    aggregate, id_field = AGGREGATE_OF[name]
    channel = channel_at(doc, subject_for("{process_id}", aggregate, f"{{{id_field}}}"))
    envelope = resolve(doc, message_of(doc, channel)["payload"])
    payload = envelope["properties"]["payload"]
    options = payload.get("oneOf", [payload])
    assert {"$ref": f"#/components/schemas/{name}"} in options, f"{name} is not a payload on {channel['address']}"


@pytest.mark.parametrize("aggregate", sorted({a for a, _ in AGGREGATE_OF.values()}))
def test_every_aggregate_subject_pattern_appears_with_its_headers(doc: dict[str, Any], aggregate: str) -> None:
    id_field = next(f for a, f in AGGREGATE_OF.values() if a == aggregate)
    channel = channel_at(doc, subject_for("{process_id}", aggregate, f"{{{id_field}}}"))
    assert "ENGAGEMENT" in channel["description"]
    message = message_of(doc, channel)
    assert message["contentType"] == "application/json"
    headers = message["headers"]
    assert {"Nats-Msg-Id", "Engage-Type"} <= set(headers["required"])
    assert "Nats-Expected-Last-Subject-Sequence" in headers["properties"]
    assert "event id" in headers["properties"]["Nats-Msg-Id"]["description"]
    envelope = resolve(doc, message["payload"])
    assert {"event_id", "type", "process_id", "payload"} <= set(envelope["required"])


def test_every_parameter_of_an_address_is_described(doc: dict[str, Any]) -> None:
    for key, channel in doc["channels"].items():
        named = set(re.findall(r"\{([^}]+)\}", channel["address"]))
        assert named, f"{key}: {channel['address']} has no parameters"
        assert set(channel.get("parameters", {})) == named, key
        assert all(p["description"] for p in channel["parameters"].values()), key


def test_status_changes_appear(doc: dict[str, Any]) -> None:
    template = CommunityStatusChanged.model_construct(
        process_id="{process_id}", dimension="{dimension}", category="{category}"
    ).subject
    channel = channel_at(doc, template)
    assert "ENGAGEMENT_STATUS" in channel["description"]
    message = message_of(doc, channel)
    schema = resolve(doc, message["payload"])
    assert set(schema["properties"]) == set(CommunityStatusChanged.model_fields)
    assert message["headers"]["required"] == ["Nats-Msg-Id"]
    assert "correlationId" not in message  # published without FastStream's correlation header


def test_dead_letters_appear_as_raw_bytes_with_their_headers(doc: dict[str, Any]) -> None:
    channel = channel_at(doc, "deadletter.{original_subject}")
    assert "ENGAGEMENT_DEADLETTER" in channel["description"]
    message = message_of(doc, channel)
    assert message["contentType"] == "application/octet-stream"
    assert resolve(doc, message["payload"])["format"] == "binary"
    required = set(message["headers"]["required"])
    assert {"Nats-Msg-Id", "Engage-Reason", "Engage-Original-Subject", "Engage-Original-Sequence"} <= required


def test_every_header_the_code_sets_is_documented(doc: dict[str, Any]) -> None:
    """Header names are literals in the publishing code: one added there must be described here too."""
    documented = {
        name
        for message in doc["components"]["messages"].values()
        for name in message.get("headers", {}).get("properties", {})
    }
    set_in_code: dict[str, str] = {}
    for file in [*(ROOT / "services").rglob("*.py"), *(ROOT / "shared").glob("*.py")]:
        if file.name == "asyncapi.py":
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            is_str = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_str and re.fullmatch(r"(Nats|Engage)-[A-Za-z-]+", node.value):
                set_in_code[node.value] = str(file.relative_to(ROOT))
    assert set_in_code, "found no header names in the code; has the scan gone blind?"
    missing = {name: where for name, where in set_in_code.items() if name not in documented}
    assert not missing, f"headers set in code but not in the document: {missing}"


def test_no_example_of_a_person(doc: dict[str, Any]) -> None:
    """The document describes fields; it shows no name, phone number, e-mail or address."""
    email = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
    phone = re.compile(r"\(?\b\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b")
    street = re.compile(r"\b\d+ [A-Z][a-z]+ (St|Street|Ave|Avenue|Rd|Road|Blvd|Lane|Ln|Dr|Drive)\b")
    for path, value in walk(doc):
        assert "/example" not in path, f"{path}: an example in the document"
        for text in (path, value) if isinstance(value, str) else (path,):
            for what, pattern in (("e-mail", email), ("phone number", phone), ("street address", street)):
                assert not pattern.search(text), f"{path}: looks like a {what}: {text[:80]!r}"


def test_the_json_rendering_round_trips(doc: dict[str, Any]) -> None:
    assert json.loads(render(doc, "json")) == doc
