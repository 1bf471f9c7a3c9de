"""A faster reader of the event contract, derived from it: msgspec's speed, pydantic's answers.

Replays and rebuilds read every event ever written, and pydantic's validation was a large part
of their time. msgspec validates the same JSON several times faster, but a second schema
written by hand would drift from :mod:`shared.events`. So nothing here names an event or a
field: at import, :func:`derive` walks the pydantic models (their annotations, their
constraints, their validators) and builds msgspec ``Struct`` types with the same rules, and a
converter that turns a decoded struct back into the very pydantic objects validation makes
(built as ``model_construct`` builds them, with the same fields set), running the contract's
own Python validators (``AfterValidator`` and ``model_validator(mode="after")``) on the way.
A frozen model of categories only (a profile) is read once per distinct text and reused:
a log repeats the same profiles, and building objects in Python is this path's main cost.

It is a fast path, not a second authority. :func:`decode_current` answers only when it is
sure: an event of the current schema version, in the canonical shape the services write.
Whenever msgspec refuses, a validator objects, or the shape is one where the two libraries
could differ (pydantic's lax coercions such as ``"5"`` for 5, times with more than
microsecond digits, which msgspec rounds and pydantic truncates), it returns ``None`` and
the caller asks pydantic, whose answer (the event or its reason) is then the answer. A
property test (``tests/unit/test_fast_decode.py``) checks that whatever this path accepts,
pydantic accepts as the same objects.

A part of the contract this module cannot express raises :class:`NotDerivable` at import of
:data:`FAST` (it is then ``None`` and every event takes pydantic's path); a test keeps it
derivable, so a schema change cannot make replays quietly slower.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from datetime import datetime
from enum import Enum, EnumMeta
from typing import Annotated, Any, Literal, Union

import annotated_types
import msgspec
from pydantic import AfterValidator, BaseModel
from pydantic.fields import FieldInfo

from shared.events import Envelope

Convert = Callable[[Any], Any]

# What a time looks like when a service writes it (pydantic's JSON): RFC 3339, at most
# microseconds, a zone. Anything else (pydantic also takes "2020-01-01T00:00Z", a comma, a
# Unix time, nanoseconds) is left to pydantic rather than risk reading it differently.
_RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})\Z"
# Model settings that change nothing a decoder checks.
_HARMLESS_CONFIG = frozenset({"frozen", "extra", "title"})


class NotDerivable(TypeError):
    """A part of the contract the fast decoder cannot express (the message names it)."""


class Unsure(Exception):
    """The fast path cannot vouch for this event: ask pydantic."""


def _pattern(pattern: str, where: str) -> str:
    """pydantic's regex engine (Rust's) ends ``$`` at the end of the text; Python's ``$`` also
    matches before a final newline. Only a single trailing ``$`` is translated (to ``\\Z``)."""
    body = pattern[:-1] if pattern.endswith("$") and not pattern.endswith("\\$") else pattern
    if "$" in body.replace("\\$", ""):
        raise NotDerivable(f"{where}: a pattern with '$' other than at its end")
    return body + "\\Z" if body is not pattern else pattern


def _meta(metadata: list[Any], where: str) -> tuple[dict[str, Any], list[Convert]]:
    """msgspec constraints for pydantic's, and the field's own after-validators."""
    meta: dict[str, Any] = {}
    checks: list[Convert] = []
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            meta["ge"] = item.ge
        elif isinstance(item, annotated_types.Le):
            meta["le"] = item.le
        elif isinstance(item, annotated_types.Gt):
            meta["gt"] = item.gt
        elif isinstance(item, annotated_types.Lt):
            meta["lt"] = item.lt
        elif isinstance(item, annotated_types.MinLen):
            meta["min_length"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            meta["max_length"] = item.max_length
        elif isinstance(item, AfterValidator):
            if len(inspect.signature(item.func).parameters) != 1:
                raise NotDerivable(f"{where}: a validator that takes pydantic's info")
            checks.append(typing.cast(Convert, item.func))
        elif isinstance(item, FieldInfo):  # Annotated[T, Field(...)] inside a type
            if item.alias or item.validation_alias:
                raise NotDerivable(f"{where}: an alias")
            inner, inner_checks = _meta(item.metadata, where)
            meta.update(inner)
            checks += inner_checks
        elif type(item).__name__ == "_PydanticGeneralMetadata" and set(vars(item)) == {"pattern"}:
            meta["pattern"] = _pattern(item.pattern, where)
        else:
            raise NotDerivable(f"{where}: the constraint {type(item).__name__}")
    return meta, checks


def _str_like(tp: Any) -> bool:
    return typing.get_origin(tp) is Literal or (isinstance(tp, type) and issubclass(tp, Enum))


class _Deriver:
    """Walks the pydantic types once, keeping one Struct and one converter per model."""

    def __init__(self) -> None:
        self.structs: dict[type[BaseModel], Any] = {}
        self.converters: dict[type[BaseModel], Convert] = {}

    def type_of(self, tp: Any, metadata: list[Any], where: str) -> tuple[Any, Convert | None]:
        """The msgspec type for a pydantic annotation, and how to turn its value into pydantic's."""
        meta, checks = _meta(metadata, where)
        origin = typing.get_origin(tp)
        if origin is Annotated:
            inner, *more = typing.get_args(tp)
            return self.type_of(inner, [*more, *metadata], where)
        if origin in (Union, types.UnionType):
            if checks:
                raise NotDerivable(f"{where}: a validator on a union")
            return self._union(typing.get_args(tp), meta, where)
        out: Any
        convert: Convert | None
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if meta:
                raise NotDerivable(f"{where}: a constraint on a model")
            struct, build = self.model(tp), self.converters[tp]
            if _is_choice(tp):
                out, convert = msgspec.Raw, _remembered(msgspec.json.Decoder(struct), build)
            else:
                out, convert = struct, build
        elif tp is datetime:
            if meta:
                raise NotDerivable(f"{where}: a constraint on a time")
            out, convert = Annotated[str, msgspec.Meta(pattern=_RFC3339)], datetime.fromisoformat
        elif origin is list:
            (item,) = typing.get_args(tp)
            item_type, item_convert = self.type_of(item, [], where + "[]")
            out = list[item_type]  # type: ignore[valid-type]  # a type built at run time from the contract
            convert = None if item_convert is None else _each(item_convert)
        elif origin is dict:
            key, value = typing.get_args(tp)
            key_type, key_convert = self.type_of(key, [], where + "{key}")
            value_type, value_convert = self.type_of(value, [], where + "{}")
            if key_convert is not None or value_convert is not None:
                raise NotDerivable(f"{where}: a mapping whose keys or values need converting")
            out, convert = dict[key_type, value_type], None  # type: ignore[valid-type]  # built from the contract
        elif tp in (str, int, bool, type(None)) or _str_like(tp):
            out, convert = tp, None
        else:
            raise NotDerivable(f"{where}: the type {tp!r}")
        if meta:
            out = Annotated[out, msgspec.Meta(**meta)]
        if checks:
            convert = _then(convert, checks)
        return out, convert

    def _union(self, members: tuple[Any, ...], meta: dict[str, Any], where: str) -> tuple[Any, Convert | None]:
        # msgspec takes at most one text-like type in a union; pydantic's `Region | Literal["declined"]`
        # is read as one Literal of every code, then each code looked up as pydantic would give it.
        text = [m for m in members if _str_like(m)]
        rest = [m for m in members if not _str_like(m)]
        converts: list[Convert | None] = []
        out_members: list[Any] = []
        for member in rest:
            member_type, member_convert = self.type_of(member, [], where)
            if member is not type(None) and meta:
                member_type = Annotated[member_type, msgspec.Meta(**meta)]
            out_members.append(member_type)
            converts.append(member_convert)
        if any(c is not None for c in converts):
            raise NotDerivable(f"{where}: a union of types that need converting")
        if len(text) > 1:
            table: dict[Any, Any] = {None: None}
            for member in text:
                values: list[Any] = [*member] if isinstance(member, EnumMeta) else list(typing.get_args(member))
                for value in values:
                    code = value.value if isinstance(value, Enum) else value
                    if code in table:
                        raise NotDerivable(f"{where}: a code in two members of a union")
                    table[code] = value
            codes = tuple(k for k in table if k is not None)
            out_members.append(Literal[codes])
            return Union[tuple(out_members)], table.__getitem__  # noqa: UP007 - a union built from a tuple at run time
        out_members += text
        return Union[tuple(out_members)], None  # noqa: UP007 - a union built from a tuple at run time

    def model(self, model: type[BaseModel], tag: tuple[str, str] | None = None) -> Any:
        """The struct for ``model`` (tagged with ``tag``: the field and its value), and its converter."""
        if model in self.structs:
            return self.structs[model]
        name = model.__name__
        config = model.model_config
        if set(config) - _HARMLESS_CONFIG or config.get("extra", "ignore") not in ("forbid", "ignore"):
            raise NotDerivable(f"{name}: its model settings")
        decorators = model.__pydantic_decorators__
        if decorators.validators or decorators.field_validators or decorators.root_validators:
            raise NotDerivable(f"{name}: a field validator")
        afters = []
        for dec in decorators.model_validators.values():
            if dec.info.mode != "after":
                raise NotDerivable(f"{name}: a model validator that is not mode='after'")
            afters.append(dec.func)
        if model.__pydantic_post_init__ is not None or model.__private_attributes__ or model.__pydantic_root_model__:
            raise NotDerivable(f"{name}: post-init, private attributes or a root model")
        fields = list(model.model_fields.items())
        if tag is not None and fields[0][0] != tag[0]:
            raise NotDerivable(f"{name}: a union tag that is not the first field")
        struct_fields: list[tuple[str, Any]] = []
        converts: list[tuple[str, Convert]] = []
        convert: Convert | None
        for field, info in fields:
            where = f"{name}.{field}"
            if info.alias or info.validation_alias:
                raise NotDerivable(f"{where}: an alias")
            if tag is not None and field == tag[0]:  # the union's tag: msgspec reads it to choose the struct
                continue
            if info.discriminator is not None:
                if not isinstance(info.discriminator, str) or info.metadata:
                    raise NotDerivable(f"{where}: a discriminator other than a field's name")
                field_type, convert = self.tagged_union(typing.get_args(info.annotation), info.discriminator, where)
            else:
                field_type, convert = self.type_of(info.annotation, info.metadata, where)
            # Every field is required here, those with defaults too: the services write them all,
            # and an event that leaves one out is pydantic's to read (with its default, unset).
            struct_fields.append((field, field_type))
            if convert is not None:
                converts.append((field, convert))
        forbid = config.get("extra") == "forbid"
        if tag is not None:
            struct = msgspec.defstruct(name, struct_fields, tag_field=tag[0], tag=tag[1], forbid_unknown_fields=forbid)
        else:
            struct = msgspec.defstruct(name, struct_fields, forbid_unknown_fields=forbid)
        self.structs[model] = struct
        self.converters[model] = _builder(model, tag, converts, afters)
        return struct

    def tagged_union(self, members: tuple[Any, ...], field: str, where: str) -> tuple[Any, Convert]:
        """pydantic's discriminated union as msgspec's tagged one, and a converter per member."""
        structs: dict[Any, Convert] = {}
        for member in members:
            if not (isinstance(member, type) and issubclass(member, BaseModel)) or field not in member.model_fields:
                raise NotDerivable(f"{where}: a union member that is not a model with the tag")
            tags = typing.get_args(member.model_fields[field].annotation)
            if len(tags) != 1 or not isinstance(tags[0], str):
                raise NotDerivable(f"{where}: a member without one text tag")
            struct = self.model(member, (field, tags[0]))
            structs[struct] = self.converters[member]
        by_struct = structs.__getitem__
        return Union[tuple(structs)], lambda value: by_struct(type(value))(value)  # noqa: UP007 - built from a tuple


def _is_choice(model: type[BaseModel]) -> bool:
    """A frozen model of categories only (a profile): few distinct values, each a pure function of its JSON."""

    def categorical(tp: Any) -> bool:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            return all(isinstance(m, annotated_types.BaseMetadata | FieldInfo) for m in tp.__metadata__) and (
                categorical(typing.get_args(tp)[0])
            )
        if origin in (Union, types.UnionType, list):
            return all(categorical(arg) for arg in typing.get_args(tp))
        return tp is type(None) or _str_like(tp)

    decorators = model.__pydantic_decorators__
    return (
        model.model_config.get("frozen", False)
        and not decorators.model_validators
        and all(not info.metadata and categorical(info.annotation) for info in model.model_fields.values())
    )


def _remembered(decoder: msgspec.json.Decoder[Any], build: Convert, limit: int = 4096) -> Convert:
    """``build(decoder.decode(raw))``, once per distinct text: a replay meets the same profiles again and
    again, and the frozen model made the first time is the one pydantic would make every time."""
    seen: dict[bytes, Any] = {}

    def convert(raw: msgspec.Raw) -> Any:
        key = bytes(raw)
        made = seen.get(key)
        if made is None:
            if len(seen) >= limit:
                seen.clear()
            made = seen[key] = build(decoder.decode(key))
        return made

    return convert


def _each(convert: Convert) -> Convert:
    return lambda items: [convert(item) for item in items]


def _then(convert: Convert | None, checks: list[Convert]) -> Convert:
    """``convert``, then each check on its result, in order (as pydantic runs after-validators)."""
    steps = ([convert] if convert is not None else []) + checks
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps
        return lambda value: second(first(value))
    if len(steps) == 3:
        first, second, third = steps
        return lambda value: third(second(first(value)))

    def run(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return run


def _builder(
    model: type[BaseModel],
    tag: tuple[str, str] | None,
    converts: list[tuple[str, Convert]],
    afters: list[Callable[[Any], Any]],
) -> Convert:
    """struct -> the pydantic model validation would have made, with the same fields set.

    It does what ``model_construct`` does for a model without aliases, extra fields, post-init
    or private attributes (:meth:`_Deriver.model` checked that), without looking each field up
    again: that lookup was most of the fast path's time.
    """
    asdict = msgspec.structs.asdict
    new = model.__new__
    setattr_ = object.__setattr__
    every = set(model.model_fields)
    steps = tuple(converts)
    checks = tuple(afters)
    tag_field, tag_value = tag if tag is not None else ("", "")

    def build(struct: Any) -> BaseModel:
        if tag is None:
            values = asdict(struct)
        else:  # the tag first, where pydantic has it
            values = {tag_field: tag_value}
            values.update(asdict(struct))
        for field, convert in steps:
            values[field] = convert(values[field])
        made = new(model)
        setattr_(made, "__dict__", values)
        setattr_(made, "__pydantic_fields_set__", every.copy())
        setattr_(made, "__pydantic_extra__", None)
        setattr_(made, "__pydantic_private__", None)
        for check in checks:
            if check(made) is not made:
                raise Unsure  # a validator that replaces the model: leave it to pydantic
        return made

    return build


class FastDecoder:
    """Decodes ``model``'s JSON with msgspec into ``model``'s pydantic objects, or raises."""

    def __init__(self, model: type[BaseModel]) -> None:
        deriver = _Deriver()
        self.model = model
        struct = deriver.model(model)
        self.build = deriver.converters[model]
        self.converters = deriver.converters
        try:
            self.decoder = msgspec.json.Decoder(struct)
        except TypeError as exc:  # msgspec's own refusal, e.g. a union it cannot tell apart
            raise NotDerivable(f"{model.__name__}: {exc}") from None

    def __call__(self, data: bytes) -> Any:
        return self.build(self.decoder.decode(data))


def _derive() -> FastDecoder | None:
    try:
        return FastDecoder(Envelope)
    except NotDerivable:
        return None


# The envelope's fast decoder, or None when the contract holds something it cannot express.
FAST = _derive()


def decode_current(data: bytes, version: int) -> Envelope | None:
    """The event in ``data`` if the fast path is sure of it and it is at ``version``; else None."""
    if FAST is None:
        return None
    try:
        event = FAST(data)
    except Exception:  # noqa: BLE001 - any doubt, whatever its kind, is pydantic's to settle
        return None
    return event if type(event) is Envelope and event.schema_version == version else None
