"""The backup file: the event log, encrypted and checksummed, in chunks.

Layout (every integer big-endian)::

    header   magic "ENGAGEBK" | version u16 | file id (16 random bytes) | chunk size u32
             | key check (16 bytes) | CRC-32 of the above u32                      (50 bytes)
    chunk    kind u8 (0 data, 1 final) | length u32 | AES-256-GCM ciphertext + tag
    ...
    final    the trailer (JSON), as the one chunk of kind 1; nothing may follow it

The trailer also keeps analytics' rounding secret (see ``Trailer``): it is no one's data,
but without it a restored analytics would round coordinators' counts afresh.

The key file holds 32 random bytes (base64). Each file derives its own keys from it with
HKDF-SHA256, salted with the file id: the chunk key, and the key check stored in the
header (so a wrong key is told apart from a damaged file). Under a chunk key used by one
file only, a chunk's nonce is its index (96 bits), so no nonce repeats. Each chunk
authenticates the header, its index and its kind as associated data: a chunk changed,
moved, dropped or repeated, or a final chunk cut off, fails to open, and so does a file
whose header was altered.

The data chunks' plaintext (``chunk size`` bytes each, the last one shorter) is a run of
records, which may span chunks: one stored message each, with its stream sequence, the
time JetStream stored it, its subject, its headers and its data exactly as stored. The
trailer counts the records, names their first and last sequences and holds the SHA-256
of the whole plaintext of records; a reader checks all of it.

A backup holds the log and nothing else: no intake contact detail is ever on the log,
so none is in a backup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import EngageError

MAGIC = b"ENGAGEBK"
VERSION = 1
CHUNK_SIZE = 1 << 20  # plaintext bytes per data chunk
KEY_BYTES = 32
_HEADER = struct.Struct(">8sH16sI16s")
HEADER_SIZE = _HEADER.size + 4  # with its CRC-32
_FRAME = struct.Struct(">BI")  # kind, ciphertext length
_AAD = struct.Struct(">QB")  # chunk index, kind
_RECORD = struct.Struct(">QQHII")  # sequence, stored time (ns), subject, headers and data lengths
TAG = 16
DATA, FINAL = 0, 1
MAX_CHUNK_SIZE = 16 << 20
MAX_TRAILER = 64 << 10  # plaintext bytes of the trailer, at most


class BackupFileError(EngageError):
    """The backup or its key cannot be used: the message names the file and the problem."""


@dataclass(frozen=True)
class Record:
    """One stored message of the log, as JetStream held it."""

    sequence: int
    time_ns: int  # when JetStream stored it (nanoseconds since the epoch, UTC)
    subject: str
    headers: dict[str, str]
    data: bytes


class Trailer(BaseModel):
    """What the backup holds, written last and checked by every reader."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = Field(description="The file format's version.")
    stream: str = Field(description="The stream backed up.")
    messages: int = Field(ge=0, description="Records in the file.")
    first_seq: int = Field(ge=0, description="The first record's stream sequence (0: no records).")
    last_seq: int = Field(ge=0, description="The last record's stream sequence (0: no records).")
    plaintext_bytes: int = Field(ge=0, description="Bytes of records before encryption.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the records' plaintext, hex.")
    made_at: datetime = Field(description="When the backup finished.")
    rounding_secret: str | None = Field(
        None,
        description="Analytics' rounding secret (base64), kept in PostgreSQL, not on the log: with it a restore "
        "gives coordinators the same rounded numbers as before. None when the backup could not read it.",
    )


# -- keys ----------------------------------------------------------------------------------------


def new_key_text() -> str:
    """A fresh key, as a key file holds it: 32 random bytes in base64, one line."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n"


def write_key_file(path: Path) -> None:
    """Make a key file at ``path``, readable by its owner only; never overwrite one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupFileError(
            f"--out {path}: already exists; a key is never overwritten (its backups need it)"
        ) from None
    except OSError as exc:
        raise BackupFileError(f"--out {path}: cannot be written ({exc.strerror or exc})") from None
    with os.fdopen(fd, "w") as out:
        out.write(new_key_text())
        out.flush()
        os.fsync(out.fileno())


def read_key_file(path: Path) -> bytes:
    """The 32-byte key in ``path``; BackupFileError naming --key-file and the reason."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise BackupFileError(f"--key-file {path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        text = ""
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise BackupFileError(
            f"--key-file {path}: not a backup key (32 random bytes in base64; make one with `engage backup-key`)"
        )
    return key


def key_readable_by_others(path: Path) -> bool:
    """Whether anyone but the owner may read the key file."""
    try:
        return bool(path.stat().st_mode & 0o077)
    except OSError:
        return False


@dataclass(frozen=True)
class _Keys:
    chunk: AESGCM
    check: bytes


def _derive(key: bytes, file_id: bytes) -> _Keys:
    material = HKDF(algorithm=hashes.SHA256(), length=48, salt=file_id, info=b"engage backup v1").derive(key)
    return _Keys(AESGCM(material[:32]), material[32:])


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


# -- records -------------------------------------------------------------------------------------


def encode_record(record: Record) -> bytes:
    subject = record.subject.encode()
    headers = orjson.dumps(record.headers) if record.headers else b""
    head = _RECORD.pack(record.sequence, record.time_ns, len(subject), len(headers), len(record.data))
    return head + subject + headers + record.data


def _decode_records(buffer: bytearray, name: str) -> tuple[list[Record], int]:
    """The whole records at the start of ``buffer``, and how many bytes they took."""
    out: list[Record] = []
    at, size = 0, len(buffer)
    view = memoryview(buffer)
    while size - at >= _RECORD.size:
        sequence, time_ns, n_subject, n_headers, n_data = _RECORD.unpack_from(view, at)
        end = at + _RECORD.size + n_subject + n_headers + n_data
        if end > size:
            break
        start = at + _RECORD.size
        try:
            subject = bytes(view[start : start + n_subject]).decode()
            raw_headers = bytes(view[start + n_subject : start + n_subject + n_headers])
            headers = orjson.loads(raw_headers) if raw_headers else {}
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            raise BackupFileError(
                f"{name}: a record after sequence {out[-1].sequence if out else '?'} is malformed"
            ) from None
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise BackupFileError(f"{name}: the record of sequence {sequence} has malformed headers")
        out.append(Record(sequence, time_ns, subject, headers, bytes(view[start + n_subject + n_headers : end])))
        at = end
    view.release()
    return out, at


# -- writing -------------------------------------------------------------------------------------


@dataclass
class BackupWriter:
    """Writes a backup to ``sink``: ``add`` each record in log order, then ``finish``."""

    sink: BinaryIO
    key: bytes
    chunk_size: int = CHUNK_SIZE
    _header: bytes = field(init=False)
    _keys: _Keys = field(init=False)
    _buffer: bytearray = field(init=False, default_factory=bytearray)
    _index: int = field(init=False, default=0)
    _digest: hashlib._Hash = field(init=False, default_factory=hashlib.sha256)
    _bytes: int = field(init=False, default=0)
    messages: int = field(init=False, default=0)
    first_seq: int = field(init=False, default=0)
    last_seq: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ValueError("a backup key is 32 bytes")
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1 to {MAX_CHUNK_SIZE} bytes")
        file_id = secrets.token_bytes(16)
        self._keys = _derive(self.key, file_id)
        head = _HEADER.pack(MAGIC, VERSION, file_id, self.chunk_size, self._keys.check[:16])
        self._header = head + struct.pack(">I", zlib.crc32(head))
        self.sink.write(self._header)

    def add(self, record: Record) -> None:
        if record.sequence <= self.last_seq:
            raise ValueError(f"records must come in log order: {record.sequence} after {self.last_seq}")
        raw = encode_record(record)
        self._digest.update(raw)
        self._bytes += len(raw)
        self._buffer += raw
        self.messages += 1
        self.first_seq = self.first_seq or record.sequence
        self.last_seq = record.sequence
        while len(self._buffer) >= self.chunk_size:
            self._chunk(DATA, bytes(self._buffer[: self.chunk_size]))
            del self._buffer[: self.chunk_size]

    def finish(self, stream: str, rounding_secret: bytes | None = None) -> Trailer:
        if self._buffer:
            self._chunk(DATA, bytes(self._buffer))
            self._buffer.clear()
        trailer = Trailer(
            format=VERSION,
            stream=stream,
            messages=self.messages,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            plaintext_bytes=self._bytes,
            sha256=self._digest.hexdigest(),
            made_at=datetime.now(UTC),
            rounding_secret=base64.b64encode(rounding_secret).decode() if rounding_secret is not None else None,
        )
        self._chunk(FINAL, trailer.model_dump_json().encode())
        self.sink.flush()
        return trailer

    def _chunk(self, kind: int, plaintext: bytes) -> None:
        sealed = self._keys.chunk.encrypt(_nonce(self._index), plaintext, self._header + _AAD.pack(self._index, kind))
        self.sink.write(_FRAME.pack(kind, len(sealed)) + sealed)
        self._index += 1


# -- reading -------------------------------------------------------------------------------------


def _read_exact(source: BinaryIO, n: int) -> bytes:
    out = source.read(n)
    return out if out is not None else b""


@dataclass
class BackupReader:
    """Reads a backup: ``records()`` yields every record in order, checking everything on the way;
    once it is exhausted, ``trailer`` is the checked trailer. Any problem is a BackupFileError."""

    source: BinaryIO
    key: bytes
    name: str
    trailer: Trailer | None = field(init=False, default=None)
    chunk_size: int = field(init=False, default=0)
    _header: bytes = field(init=False, default=b"")
    _keys: _Keys | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        header = _read_exact(self.source, HEADER_SIZE)
        if header[: len(MAGIC)] != MAGIC:
            raise BackupFileError(f"{self.name}: not an engage backup (it does not start with {MAGIC.decode()})")
        if len(header) < HEADER_SIZE:
            raise BackupFileError(f"{self.name}: truncated: the file ends inside its header")
        _, version, file_id, chunk_size, check = _HEADER.unpack_from(header)
        if struct.unpack_from(">I", header, _HEADER.size)[0] != zlib.crc32(header[: _HEADER.size]):
            raise BackupFileError(f"{self.name}: damaged: its header fails its checksum")
        if version != VERSION:
            raise BackupFileError(f"{self.name}: backup format version {version}; this engage reads version {VERSION}")
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise BackupFileError(f"{self.name}: damaged: its header gives an impossible chunk size ({chunk_size})")
        keys = _derive(self.key, file_id)
        if not secrets.compare_digest(keys.check[:16], check):
            raise BackupFileError(f"{self.name}: wrong key: this backup was not made with the key in --key-file")
        self._header, self._keys, self.chunk_size = header, keys, chunk_size

    def _chunks(self) -> Iterator[tuple[int, bytes]]:
        assert self._keys is not None  # set by __post_init__, which raises otherwise
        index = 0
        while True:
            frame = _read_exact(self.source, _FRAME.size)
            if len(frame) < _FRAME.size:
                raise BackupFileError(
                    f"{self.name}: truncated: the file ends after chunk {index - 1} without its final chunk (trailer)"
                    if not frame
                    else f"{self.name}: truncated: the file ends inside chunk {index}"
                )
            kind, length = _FRAME.unpack(frame)
            limit = self.chunk_size if kind == DATA else MAX_TRAILER
            if kind not in (DATA, FINAL) or not TAG <= length <= limit + TAG:
                raise BackupFileError(f"{self.name}: damaged: chunk {index} has an impossible kind or length")
            sealed = _read_exact(self.source, length)
            if len(sealed) < length:
                raise BackupFileError(f"{self.name}: truncated: the file ends inside chunk {index}")
            try:
                plaintext = self._keys.chunk.decrypt(_nonce(index), sealed, self._header + _AAD.pack(index, kind))
            except InvalidTag:
                raise BackupFileError(
                    f"{self.name}: damaged: chunk {index} fails authentication (changed, moved, dropped or repeated)"
                ) from None
            if kind == FINAL and self.source.read(1):
                raise BackupFileError(f"{self.name}: damaged: bytes follow its final chunk")
            yield kind, plaintext
            if kind == FINAL:
                return
            index += 1

    def records(self) -> Iterator[Record]:
        digest, size, count, first, last = hashlib.sha256(), 0, 0, 0, 0
        buffer = bytearray()
        for kind, plaintext in self._chunks():
            if kind == FINAL:
                if buffer:
                    raise BackupFileError(f"{self.name}: damaged: the last record is cut off before the trailer")
                self.trailer = self._check_trailer(plaintext, digest.hexdigest(), size, count, first, last)
                return
            digest.update(plaintext)
            size += len(plaintext)
            buffer += plaintext
            found, used = _decode_records(buffer, self.name)
            del buffer[:used]
            for record in found:
                if record.sequence <= last:
                    raise BackupFileError(f"{self.name}: damaged: sequence {record.sequence} comes after {last}")
                count, first, last = count + 1, first or record.sequence, record.sequence
                yield record

    def _check_trailer(self, raw: bytes, sha: str, size: int, count: int, first: int, last: int) -> Trailer:
        try:
            trailer = Trailer.model_validate_json(raw)
        except ValidationError:
            raise BackupFileError(f"{self.name}: damaged: its trailer cannot be read") from None
        found = {"messages": count, "first_seq": first, "last_seq": last, "plaintext_bytes": size, "sha256": sha}
        for name, value in found.items():
            if getattr(trailer, name) != value:
                raise BackupFileError(
                    f"{self.name}: damaged: the trailer's {name} is {getattr(trailer, name)}, the records give {value}"
                )
        return trailer


def read_backup(path: Path, key: bytes) -> Iterator[Record]:
    """Every record of the backup at ``path``, checked; ``BackupFileError`` on any problem."""
    try:
        source = path.open("rb")
    except OSError as exc:
        raise BackupFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with source:
        yield from BackupReader(source, key, str(path)).records()


def check_backup(path: Path, key: bytes) -> Trailer:
    """Read the whole backup at ``path`` and check it; its trailer."""
    try:
        source = path.open("rb")
    except OSError as exc:
        raise BackupFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with source:
        reader = BackupReader(source, key, str(path))
        for _ in reader.records():
            pass
        assert reader.trailer is not None  # records() ends only after checking the trailer
        return reader.trailer
