"""The backup file format: what goes in comes out, and a file changed in any way is refused.

Every byte of a backup is either checked (magic, header checksum) or authenticated (each
chunk seals the header, its index and its kind), so a flipped byte, a cut, a chunk moved,
dropped or repeated, or the wrong key is refused with one line naming the problem.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.cli import backup_file as bf
from services.cli.backup_file import BackupFileError, Record

KEY = bytes(range(32))
OTHER_KEY = bytes(32)


def records(n: int = 40) -> list[Record]:
    return [
        Record(
            sequence=i + 1,
            time_ns=1_700_000_000_000_000_000 + i,
            subject=f"engagement.shfa-2018.survey-response.sr-{i:04x}",
            headers={"Nats-Msg-Id": f"id-{i}", "Engage-Request": "r" * (i % 3)} if i % 4 else {},
            data=b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 7 % 90)),
        )
        for i in range(n)
    ]


def write(recs: list[Record], key: bytes = KEY, chunk_size: int = 256) -> tuple[bytes, bf.Trailer]:
    sink = io.BytesIO()
    writer = bf.BackupWriter(sink, key, chunk_size=chunk_size)
    for r in recs:
        writer.add(r)
    trailer = writer.finish("ENGAGEMENT")
    return sink.getvalue(), trailer


def read(blob: bytes, key: bytes = KEY) -> tuple[list[Record], bf.Trailer]:
    reader = bf.BackupReader(io.BytesIO(blob), key, "backup.bin")
    out = list(reader.records())
    assert reader.trailer is not None
    return out, reader.trailer


BLOB, TRAILER = write(records())


def chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    """The header and each framed chunk of a backup, as bytes."""
    at, out = bf.HEADER_SIZE, []
    while at < len(blob):
        _, length = struct.unpack_from(">BI", blob, at)
        out.append(blob[at : at + 5 + length])
        at += 5 + length
    return blob[: bf.HEADER_SIZE], out


def test_what_is_written_is_read_back_with_its_trailer() -> None:
    got, trailer = read(BLOB)
    assert got == records()
    assert trailer == TRAILER
    assert (trailer.messages, trailer.first_seq, trailer.last_seq) == (40, 1, 40)
    assert len(chunks(BLOB)[1]) > 5  # records span several chunks, and the trailer is its own


def test_an_empty_log_round_trips() -> None:
    blob, trailer = write([])
    assert read(blob) == ([], trailer)
    assert (trailer.messages, trailer.first_seq, trailer.last_seq) == (0, 0, 0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 5), st.binary(max_size=300), st.dictionaries(st.text(min_size=1), st.text())),
        max_size=30,
    ),
    st.integers(1, 500),
)
def test_any_records_round_trip_through_any_chunk_size(raw: list, chunk_size: int) -> None:
    seq, recs = 0, []
    for step, data, headers in raw:
        seq += step
        recs.append(Record(seq, seq * 1000, f"engagement.p.a.{seq}", headers, data))
    blob, trailer = write(recs, chunk_size=chunk_size)
    assert read(blob) == (recs, trailer)


def test_nothing_readable_is_left_in_the_file() -> None:
    """The subjects, headers and data are encrypted: none of them appears in the file."""
    for r in records():
        assert r.data not in BLOB and r.subject.encode() not in BLOB
    assert b"Nats-Msg-Id" not in BLOB and b"ENGAGEMENT" not in BLOB


def test_the_wrong_key_is_named() -> None:
    with pytest.raises(BackupFileError, match="wrong key"):
        read(BLOB, OTHER_KEY)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_flipped_byte_is_refused(data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(BLOB) - 1), label="position")
    bit = data.draw(st.integers(0, 7), label="bit")
    damaged = bytearray(BLOB)
    damaged[at] ^= 1 << bit
    with pytest.raises(BackupFileError):
        read(bytes(damaged))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(BLOB) - 1))
def test_any_truncation_is_refused(length: int) -> None:
    with pytest.raises(BackupFileError):
        read(BLOB[:length])


def test_a_truncation_between_chunks_says_so() -> None:
    header, parts = chunks(BLOB)
    with pytest.raises(BackupFileError, match=r"truncated: .* without its final chunk"):
        read(header + b"".join(parts[:-1]))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_chunks_moved_dropped_or_repeated_are_refused(data: st.DataObject) -> None:
    """Caught by the chunk's own authentication (its index is sealed in), before any later check."""
    header, parts = chunks(BLOB)
    n = len(parts) - 1  # the data chunks; the final one is its own case below
    how = data.draw(st.sampled_from(["swap", "drop", "repeat"]), label="how")
    i = data.draw(st.integers(0, n - 1), label="i")
    changed, j = list(parts), i
    if how == "swap":
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="j")
        changed[i], changed[j] = changed[j], changed[i]
    elif how == "drop":
        del changed[i]
    else:
        changed.insert(i, parts[i])
    first_wrong = {"swap": min(i, j), "drop": i, "repeat": i + 1}[how]
    with pytest.raises(BackupFileError, match=f"chunk {first_wrong} fails authentication"):
        read(header + b"".join(changed))


def test_the_final_chunk_dropped_or_repeated_is_refused() -> None:
    header, parts = chunks(BLOB)
    with pytest.raises(BackupFileError, match="without its final chunk"):
        read(header + b"".join(parts[:-1]))
    with pytest.raises(BackupFileError, match="bytes follow its final chunk"):
        read(header + b"".join(parts) + parts[-1])
    with pytest.raises(BackupFileError, match="fails authentication"):  # a final chunk where a data chunk was
        read(header + b"".join(parts[:-2]) + parts[-1] + parts[-2])


def test_a_chunk_from_another_backup_with_the_same_key_is_refused() -> None:
    """Each file has its own chunk key: chunks cannot be spliced between backups."""
    other, _ = write(records())
    header, parts = chunks(BLOB)
    _, other_parts = chunks(other)
    with pytest.raises(BackupFileError, match="chunk 1 fails authentication"):
        read(header + parts[0] + other_parts[1] + b"".join(parts[2:]))


def test_bytes_after_the_final_chunk_are_refused() -> None:
    with pytest.raises(BackupFileError, match="bytes follow its final chunk"):
        read(BLOB + b"\x00")


@pytest.mark.parametrize(
    "blob", [b"", b"{}", b'{"sequence": 1, "event": {}}\n', b"\x1f\x8b\x08\x00" + bytes(60), b"PK\x03\x04" + bytes(80)]
)
def test_a_file_of_another_format_is_named_as_such(blob: bytes) -> None:
    with pytest.raises(BackupFileError, match="not an engage backup"):
        read(blob)


def test_a_later_format_version_is_named() -> None:
    head = bytearray(BLOB[: bf.HEADER_SIZE - 4])
    head[8:10] = (2).to_bytes(2, "big")
    crc = struct.pack(">I", zlib.crc32(bytes(head)))
    with pytest.raises(BackupFileError, match="format version 2; this engage reads version 1"):
        read(bytes(head) + crc + BLOB[bf.HEADER_SIZE :])


def test_records_must_come_in_log_order() -> None:
    writer = bf.BackupWriter(io.BytesIO(), KEY)
    writer.add(records()[1])
    with pytest.raises(ValueError, match="log order"):
        writer.add(records()[0])


def test_a_key_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "backup.key"
    bf.write_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = bf.read_key_file(path)
    assert len(key) == 32
    before = path.read_bytes()
    with pytest.raises(BackupFileError, match="already exists"):
        bf.write_key_file(path)
    assert path.read_bytes() == before
    second = tmp_path / "second.key"
    bf.write_key_file(second)
    assert bf.read_key_file(second) != key  # random each time


@pytest.mark.parametrize("text", ["", "not base64!", "aGVsbG8=", "A" * 200])
def test_a_key_file_that_is_not_a_key_is_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "k"
    path.write_text(text)
    with pytest.raises(BackupFileError, match=r"--key-file .*: not a backup key"):
        bf.read_key_file(path)


def engage(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "300", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cwd=cwd,
        timeout=60,
    )


def test_engage_restore_refuses_a_bad_file_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    """Checked before any server is asked: nothing can be written (no NATS runs here)."""
    key, other = tmp_path / "k", tmp_path / "other"
    assert engage("backup-key", "--out", str(key), cwd=tmp_path).returncode == 0
    assert engage("backup-key", "--out", str(other), cwd=tmp_path).returncode == 0
    refused_again = engage("backup-key", "--out", str(key), cwd=tmp_path)
    assert refused_again.returncode == 2 and "already exists" in refused_again.stderr
    blob, _ = write(records(), key=bf.read_key_file(key))
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    files = {
        "wrong key": (blob, other),
        "fails authentication": (bytes(flipped), key),
        "truncated": (blob[: len(blob) - 9], key),
        "not an engage backup": (b'{"sequence":1}\n', key),
    }
    for problem, (content, key_file) in files.items():
        path = tmp_path / "backup.bin"
        path.write_bytes(content)
        done = engage("restore", str(path), "--key-file", str(key_file), "--data-dir", str(tmp_path), cwd=tmp_path)
        assert done.returncode == 2, (problem, done.stderr)
        assert "Traceback" not in done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and problem in lines[0], (problem, done.stderr)
