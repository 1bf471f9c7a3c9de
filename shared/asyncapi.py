"""The AsyncAPI document of the bus, generated from the contract itself.

The contract lives in code (``shared.events``, ``shared.status_events``, ``shared.bus``), and
a hand-written description of it would drift. So this module declares, on a throw-away
FastStream ``NatsBroker`` that never connects, one publisher per kind of subject with the
contract's own models as schemas, asks FastStream for the AsyncAPI 3.0 document, and adds
what FastStream cannot know: the headers, the channel parameters and the plain-words
descriptions. Subjects come from ``subject_for`` and ``CommunityStatusChanged.subject``,
the aggregates from ``AGGREGATE_OF``, the event types from the ``Payload`` union and the
streams from ``stream_configs``, so a change to the contract changes the document.

``docs/asyncapi.json`` is this document, committed; a unit test fails when it is stale.
Regenerate it with ``python -m shared.asyncapi > docs/asyncapi.json``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import operator
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from nats.js.api import StreamConfig
from pydantic import BaseModel, Field, create_model

from shared.bus import stream_configs
from shared.events import AGGREGATE_OF, SCHEMA_VERSION, Envelope, Payload, subject_for
from shared.settings import Settings
from shared.status_events import CommunityStatusChanged

REGENERATE = "python -m shared.asyncapi > docs/asyncapi.json"
DOCUMENT_PATH = "docs/asyncapi.json"
STATUS_CHANNEL = "status-changes"
DEADLETTER_CHANNEL = "dead-letters"

# Header names the publishing code writes as literals; the contract has no constants for them, so a
# unit test scans the code and checks that each one is described here.
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
ENGAGE_TYPE = "Engage-Type"


def payload_types() -> list[type[BaseModel]]:
    """Every payload model of the contract's discriminated union, in the union's order."""
    union = get_args(Payload)[0]  # Annotated[Union[...], Field(discriminator="type")]
    return list(get_args(union))


def event_type(model: type[BaseModel]) -> str:
    """The ``type`` a payload model writes (its discriminator value)."""
    value = model.model_fields["type"].default
    if not isinstance(value, str):
        raise TypeError(f"{model.__name__} has no default `type` to discriminate by")
    return value


def aggregates() -> dict[str, tuple[str, list[type[BaseModel]]]]:
    """aggregate -> (payload field naming its id, payload models), from ``AGGREGATE_OF``.

    Refuses a payload type without an aggregate, or an aggregate whose events name their id
    by different fields: both would give events a subject the document cannot describe.
    """
    found: dict[str, tuple[str, list[type[BaseModel]]]] = {}
    for model in payload_types():
        name = event_type(model)
        if name not in AGGREGATE_OF:
            raise ValueError(f"{name} is in the Payload union but not in AGGREGATE_OF")
        aggregate, id_field = AGGREGATE_OF[name]
        known_field, models = found.setdefault(aggregate, (id_field, []))
        if known_field != id_field:
            raise ValueError(f"{aggregate}: its events name their id by both {known_field} and {id_field}")
        models.append(model)
    return found


def _camel(name: str) -> str:
    return "".join(part.title() for part in re.split(r"[-_]", name))


def envelope_for(aggregate: str, models: Sequence[type[BaseModel]]) -> type[BaseModel]:
    """The Envelope as it is on one aggregate's subjects: with only that aggregate's payloads."""
    names = ", ".join(event_type(m) for m in models)
    union = functools.reduce(operator.or_, models)
    payload = (union, Field(discriminator="type")) if len(models) > 1 else (union, ...)
    return create_model(
        f"{_camel(aggregate)}Event",
        __base__=Envelope,
        __doc__=f"One event about one {aggregate.replace('-', ' ')}: the envelope around one payload of type {names}.",
        payload=payload,
    )


def _stream_of(subject: str, streams: Sequence[StreamConfig]) -> StreamConfig:
    """The stream that stores ``subject`` (matched on its first token, as the streams are declared)."""
    first = subject.split(".", 1)[0]
    for stream in streams:
        if any(pattern.split(".", 1)[0] == first for pattern in stream.subjects or ()):
            return stream
    raise ValueError(f"no stream stores {subject}")


def _dedupe_window(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600} h" if whole % 3600 == 0 else f"{whole} s"


def _stream_words(stream: StreamConfig) -> str:
    """``stream NAME (subjects `x.>`, what it holds)``, from the stream's own declaration."""
    subjects = ", ".join(f"`{s}`" for s in stream.subjects or ())
    holds = (stream.description or "").rstrip(".")
    return f"stream {stream.name} (subjects {subjects}, {holds[:1].lower()}{holds[1:]})"


def _headers(always: dict[str, str], sometimes: dict[str, str] | None = None) -> dict[str, Any]:
    """A headers schema from header name -> what it means; NATS headers are strings."""
    described = {**always, **(sometimes or {})}
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": words} for name, words in described.items()},
        "required": list(always),
    }


def _field_description(model: type[BaseModel], field: str) -> str:
    """A field's description as its JSON schema gives it (an ``Annotated`` alias carries its own)."""
    prop = model.model_json_schema()["properties"][field]
    description = prop.get("description", "")
    if not isinstance(description, str):
        raise TypeError(f"{model.__name__}.{field} has no description")
    return description


@dataclass(frozen=True)
class _Channel:
    """What the document says about one kind of subject, beyond what FastStream generates."""

    title: str
    address: str
    schema: Any
    description: str
    parameters: dict[str, str]
    message_name: str
    summary: str
    content_type: str
    headers: dict[str, Any]
    correlation_header: bool


def _channels(settings: Settings) -> list[_Channel]:
    streams = stream_configs(settings)
    window = _dedupe_window(float(settings.dedupe_window_seconds))
    channels: list[_Channel] = []

    event_headers = _headers(
        {
            MSG_ID: (
                "The event id (`event_id`): JetStream stores a repeated id once within the dedupe window "
                f"({window} by default), so a retried publish is harmless."
            ),
            ENGAGE_TYPE: "The payload's `type`, so a reader can route without parsing the body.",
        },
        {
            EXPECTED_LAST_SUBJECT_SEQUENCE: (
                "Optimistic concurrency: the stream sequence of the last event on this subject that the writer "
                "saw (0: the aggregate must be new). JetStream refuses the write if anyone else wrote to the "
                "subject since (error 10071), and the service answers 409."
            ),
            "Nats-Expected-Last-Subject-Sequence-Subject": (
                "With the one above on a new aggregate: the subjects that sequence is checked on, "
                "`engagement.*.<aggregate>.<id>`, so no process already has the aggregate."
            ),
            "correlation_id": "The envelope's `correlation_id`, which FastStream also sends as a header.",
            "Engage-Request": (
                "A survey response's request fingerprint (a SHA-256 of its route and body): a retry with the "
                "same Idempotency-Key and another body is told apart from the original and refused (409)."
            ),
        },
    )
    process_words = _field_description(Envelope, "process_id")
    for aggregate, (id_field, models) in aggregates().items():
        address = _template_subject(aggregate, id_field)
        stream = _stream_of(address, streams)
        names = ", ".join(f"`{event_type(m)}`" for m in models)
        spoken = aggregate.replace("-", " ")
        channels.append(
            _Channel(
                title=f"{aggregate}-events",
                address=address,
                schema=envelope_for(aggregate, models),
                description=(
                    f"Every event about one {spoken}, on {_stream_words(stream)}. Event types: {names}. "
                    f"The last token is the payload's `{id_field}`: one subject per {spoken}, so a writer can make "
                    f"a write conditional on nobody else having written to this {spoken} since "
                    f"(`{EXPECTED_LAST_SUBJECT_SEQUENCE}`). A service answers its client only after JetStream "
                    "has stored the event (PubAck)."
                ),
                parameters={"process_id": process_words, id_field: _field_description(models[0], id_field)},
                message_name=f"{_camel(aggregate)}Event",
                summary=f"An event about one {spoken}: {names}.",
                content_type="application/json",
                headers=event_headers,
                correlation_header=True,
            )
        )

    status_address = _template_status_subject()
    status_stream = _stream_of(status_address, streams)
    channels.append(
        _Channel(
            title=STATUS_CHANNEL,
            address=status_address,
            schema=CommunityStatusChanged,
            description=(
                "A community's status against the plan's target changed (under-reached, watch, on track), as "
                f"analytics judged it after the projection moved. On {_stream_words(status_stream)}. It is kept off "
                "the event log, so the projector never reads what it writes. Announced at least once: an exact "
                f"repeat carries the same `{MSG_ID}` and JetStream drops it. It carries ratios and how many more "
                "people are needed, never counts of participants."
            ),
            parameters={
                "process_id": process_words,
                "dimension": _field_description(CommunityStatusChanged, "dimension"),
                "category": _field_description(CommunityStatusChanged, "category"),
            },
            message_name="CommunityStatusChanged",
            summary="A community became under-reached, reached (on track), or went on watch.",
            content_type="application/json",
            headers=_headers(
                {
                    MSG_ID: (
                        "The change's `event_id`: an exact repeat of an announcement carries the same "
                        "id, and JetStream stores it once."
                    )
                }
            ),
            correlation_header=False,
        )
    )

    deadletter_stream = next(
        s
        for s in streams
        if s.name != settings.stream_name and any(p.startswith("deadletter.") for p in s.subjects or ())
    )
    prefix = (deadletter_stream.subjects or [""])[0].removesuffix(">")
    event_log = next(s for s in streams if s.name == settings.stream_name)
    channels.append(
        _Channel(
            title=DEADLETTER_CHANNEL,
            address=f"{prefix}{{original_subject}}",
            schema=bytes,
            description=(
                f"An event analytics could not read (not JSON, not a valid event, or a schema version newer than "
                f"the reader), parked so the rest of its batch goes on. On {_stream_words(deadletter_stream)}. The "
                "body is the original message's bytes, unchanged; the headers say why and where it came from."
            ),
            parameters={
                "original_subject": (
                    f"The subject the event was read from on stream {event_log.name}, "
                    "e.g. `engagement.shfa-2018.interview.iv-3f9c01`; it spans several tokens."
                )
            },
            message_name="UnreadableEvent",
            summary="The raw bytes of an event that could not be read, with the reason.",
            content_type="application/octet-stream",
            headers=_headers(
                {
                    MSG_ID: "`dlq-<stream>-<sequence>` of the original, so a redelivery parks it once.",
                    "Engage-Reason": (
                        "Why it could not be read: field paths and reasons, never the input values "
                        "(one line, at most 1000 characters)."
                    ),
                    "Engage-Original-Subject": "The subject it was read from.",
                    "Engage-Original-Sequence": f"Its sequence on stream {event_log.name}.",
                }
            ),
            correlation_header=False,
        )
    )
    return channels


def _template_subject(aggregate: str, id_field: str) -> str:
    """An aggregate's subject as an AsyncAPI address, built by the contract's own ``subject_for``."""
    return subject_for("{process_id}", aggregate, f"{{{id_field}}}")


def _template_status_subject() -> str:
    """The status subject as an AsyncAPI address, built by ``CommunityStatusChanged.subject`` itself."""
    fields: dict[str, Any] = {"process_id": "{process_id}", "dimension": "{dimension}", "category": "{category}"}
    placeholder = CommunityStatusChanged.model_construct(**fields)  # only the fields the subject is made of
    return placeholder.subject


def _description(settings: Settings) -> str:
    streams = "; ".join(_stream_words(s) for s in stream_configs(settings))
    return (
        "How engage's services talk over NATS JetStream, generated from the contract in `shared/` "
        f"(regenerate with `{REGENERATE}`). Streams: {streams}. Every stream keeps its messages on file "
        f"and stores a repeated `{MSG_ID}` once within the dedupe window "
        f"({_dedupe_window(float(settings.dedupe_window_seconds))} by default, `ENGAGE_DEDUPE_WINDOW_SECONDS`); "
        f"the event log's name is set by `ENGAGE_STREAM_NAME`. Events are at schema version {SCHEMA_VERSION}; "
        "older versions are brought forward by `shared/upcasting.py` before validation. No message carries a "
        "name, phone number, e-mail or address: participants are opaque references (`p-` and random "
        "characters), and answers are categories."
    )


def build_broker(settings: Settings | None = None) -> NatsBroker:
    """A broker that is never connected: only its declared publishers matter, to FastStream's generator."""
    settings = settings or _default_settings()
    server = f"nats://127.0.0.1:{settings.embedded_nats_port}"
    broker = NatsBroker(
        server,
        specification_url=server,
        protocol_version=None,
        description="The nats-server `engage up` starts locally; elsewhere `ENGAGE_NATS_URL` names the servers.",
        logger=None,
    )
    for channel in _channels(settings):
        broker.publisher(channel.address, schema=channel.schema, title=channel.title, description=channel.description)
    return broker


def _default_settings() -> Settings:
    """The shipped defaults, ignoring ``ENGAGE_*`` variables: the document must not depend on who runs it."""
    return Settings.model_construct()


def _rename_keys(doc: dict[str, Any], section: str, rename: Callable[[str], str]) -> None:
    """Rename ``components.<section>`` keys and every ``$ref`` to them.

    FastStream names messages ``<channel>:Message``, but AsyncAPI 3.0 allows only letters, digits,
    ``.``, ``-`` and ``_`` in component keys, and validators refuse the colon.
    """
    table = doc["components"].get(section, {})
    renamed = {old: rename(old) for old in table}
    doc["components"][section] = {renamed[old]: value for old, value in table.items()}
    prefix = f"#/components/{section}/"

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix):
                node["$ref"] = prefix + renamed.get(ref.removeprefix(prefix), ref.removeprefix(prefix))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(doc)


def asyncapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every event and subject, as a JSON-ready dict, in a stable order."""
    settings = settings or _default_settings()
    channels = _channels(settings)
    spec = AsyncAPI(
        build_broker(settings),
        title="engage event bus",
        version=str(SCHEMA_VERSION),
        description=_description(settings),
        schema_version="3.0.0",
    ).to_specification()
    doc: dict[str, Any] = spec.to_jsonable()
    if not str(doc.get("asyncapi", "")).startswith("3."):
        raise RuntimeError(f"FastStream produced AsyncAPI {doc.get('asyncapi')}, not 3.0")

    messages = doc["components"]["messages"]
    for channel in channels:
        entry = doc["channels"][channel.title]
        entry["parameters"] = {name: {"description": words} for name, words in channel.parameters.items()}
        message_key = entry["messages"]["Message"]["$ref"].rsplit("/", 1)[1]
        message = messages[message_key]
        message.update(
            name=channel.message_name,
            title=channel.message_name,
            summary=channel.summary,
            contentType=channel.content_type,
            headers=channel.headers,
        )
        if not channel.correlation_header:
            message.pop("correlationId", None)
        doc["operations"][channel.title]["summary"] = channel.summary
    for server in doc.get("servers", {}).values():
        if not server.get("pathname"):
            server.pop("pathname", None)

    _rename_keys(doc, "messages", lambda key: key.replace(":", "."))
    _rename_keys(doc, "schemas", lambda key: key.replace(":", "."))
    # Publishers come back in no promised order: put channels in the contract's order, components by name.
    order = [c.title for c in channels]
    doc["channels"] = {key: doc["channels"][key] for key in order}
    doc["operations"] = {key: doc["operations"][key] for key in order}
    for section in ("messages", "schemas"):
        doc["components"][section] = dict(sorted(doc["components"][section].items()))
    return doc


def render(doc: dict[str, Any], fmt: str = "json") -> str:
    """The document as text. YAML needs PyYAML, which engage does not depend on; JSON is the committed form."""
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        try:
            yaml = importlib.import_module("yaml")  # optional: imported by name so it is no dependency
        except ImportError as exc:
            raise SystemExit("--format yaml needs PyYAML (pip install pyyaml); --format json needs nothing") from exc
        text: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)
        return text
    raise ValueError(f"unknown format {fmt!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shared.asyncapi [--format json|yaml]``: print the document."""
    parser = argparse.ArgumentParser(prog="python -m shared.asyncapi", description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--format", choices=("json", "yaml"), default="json")
    args = parser.parse_args(argv)
    sys.stdout.write(render(asyncapi_document(), args.format))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
