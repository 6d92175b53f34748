"""TensorBoard event files written directly, without TensorFlow or the ``tensorboard`` package.

An event file is a sequence of TFRecords (TensorFlow ``record_writer.cc``): ``uint64 length``,
``uint32 masked_crc32c(length bytes)``, ``data``, ``uint32 masked_crc32c(data)``, all little-endian;
masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8 mod 2³². Each record's data is an ``Event``
protocol buffer (``tensorflow/core/util/event.proto``): ``wall_time`` (1, double), ``step`` (2,
int64), ``file_version`` (3, string, first event ``brain.Event:2``) or ``summary`` (5, message);
``Summary.value`` (1, repeated) holds ``Value{tag (1, string), simple_value (2, float)}``.
CRC32C is the Castagnoli CRC (reflected polynomial 0x82F63B78, RFC 3720 §B.4).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterable

_CASTAGNOLI = 0x82F63B78
_MASK_DELTA = 0xA282EAD8


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CASTAGNOLI if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, table-driven (one lookup per byte)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The CRC TFRecords store: rotated right by 15 bits plus a constant (so CRCs of CRCs are not trivial)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord around ``data``."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 as protobuf writes it: two's complement, ten bytes
    out = bytearray()
    while True:
        bits, n = n & 0x7F, n >> 7
        out.append(bits | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, *, file_version: str | None = None,
          scalars: Iterable[tuple[str, float]] = ()) -> bytes:
    """An ``Event`` message: the file-version header, or a summary of scalar values (tag, value)."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
    if file_version is not None:
        return out + _bytes_field(3, file_version.encode())
    values = b"".join(_bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value))
                      for tag, value in scalars)
    return out + _bytes_field(5, values)


class EventWriter:
    """Writes ``events.out.tfevents.<time>.ablab`` in ``folder``: the version header, then scalars."""

    def __init__(self, folder: Path, wall_time: float):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"events.out.tfevents.{int(wall_time):010d}.ablab"
        self._file: BinaryIO = open(self.path, "wb")
        self._file.write(record(event(wall_time, 0, file_version="brain.Event:2")))

    def scalar(self, tag: str, value: float, step: int, wall_time: float) -> None:
        self._file.write(record(event(wall_time, step, scalars=[(tag, value)])))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
