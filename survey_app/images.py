"""Blinded image delivery: opaque per-participant tokens and equal-size PNG bodies.

Tokens. Every image URL a participant receives is ``/i/<token>``, where the token names
(trial index, side, item id) for that participant only: the index and side are masked
with a key stream derived from the participant id, the item id with one derived from
(participant, index, side) (each mask is used for exactly one value, so nothing about the
item shows), and a 128-bit HMAC over (participant, index, side, item) makes tokens
unforgeable. The participant id itself comes from the signed session cookie, so a token is
useless to anybody else and the same item gets unrelated tokens for different people,
trials and sides (a swapped repeat does not repeat a URL). Decoding needs no database.

Sizes. PNG sizes differ with content: a flat validation fill compresses far better than a
method's output, so the byte counts of a pair could tell a validation trial from a compared
pair. Every image of one photo is therefore sent with the same length: before ``IEND`` a
private ancillary chunk (``hrPd``, ignored by decoders: the pixels are untouched, still
lossless) pads it to the largest file of that photo plus one chunk header. Both sides of
every trial then have the same ``Content-Length``, for compared and validation pairs alike.
What is left is the image content itself, which a person sees anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
PAD_TYPE = b"hrPd"
SIDES = ("left", "right")
_BLOB = struct.Struct(">IBI16s")  # masked index, masked side, masked item id, mac
_READ = 1 << 16


class BadToken(ValueError):
    """A token that this server did not issue for this participant."""


def token_key(secret: str) -> bytes:
    """The image-token key, derived from the app secret (a new secret voids old URLs)."""
    return hmac.new(secret.encode(), b"hrbench image token v1", hashlib.sha256).digest()


def _stream(key: bytes, label: bytes, *parts: int) -> bytes:
    msg = label + b"".join(struct.pack(">Q", p) for p in parts)
    return hmac.new(key, msg, hashlib.sha256).digest()


def _mac(key: bytes, pid: int, index: int, side: int, item_id: int) -> bytes:
    return _stream(key, b"mac", pid, index, side, item_id)[:16]


def make_token(key: bytes, pid: int, index: int, side: str, item_id: int) -> str:
    """The opaque token for ``item_id`` shown on ``side`` of trial ``index`` to ``pid``."""
    s = SIDES.index(side)
    head = _stream(key, b"head", pid)
    body = _stream(key, b"item", pid, index, s)
    blob = _BLOB.pack(
        index ^ int.from_bytes(head[:4], "big"),
        s ^ head[4],
        item_id ^ int.from_bytes(body[:4], "big"),
        _mac(key, pid, index, s, item_id),
    )
    return urlsafe_b64encode(blob).decode().rstrip("=")


def read_token(key: bytes, pid: int, token: str) -> tuple[int, str, int]:
    """``(index, side, item_id)`` of a token issued to ``pid``; :class:`BadToken` otherwise."""
    if len(token) != 34:
        raise BadToken("wrong length")
    try:
        blob = urlsafe_b64decode(token + "==")
    except ValueError:
        raise BadToken("not base64") from None
    # One spelling per token: no second URL (padding bits, other side bytes) for one image.
    if len(blob) != _BLOB.size or urlsafe_b64encode(blob).decode().rstrip("=") != token:
        raise BadToken("not a token")
    m_index, m_side, m_item, mac = _BLOB.unpack(blob)
    head = _stream(key, b"head", pid)
    index = m_index ^ int.from_bytes(head[:4], "big")
    s = m_side ^ head[4]
    if s not in (0, 1):
        raise BadToken("bad side")
    item_id = m_item ^ int.from_bytes(_stream(key, b"item", pid, index, s)[:4], "big")
    if not hmac.compare_digest(mac, _mac(key, pid, index, s, item_id)):
        raise BadToken("bad signature")
    return index, SIDES[s], item_id


@dataclass(frozen=True)
class PaddedPng:
    """How to send one PNG file at a fixed length (see the module docstring)."""

    path: Path
    body: int  # bytes of the file before its IEND chunk
    pad: int  # data bytes of the padding chunk
    crc: int  # CRC of the padding chunk (type + zero bytes)

    @property
    def length(self) -> int:
        return self.body + 12 + self.pad + len(IEND)

    def chunks(self) -> Iterator[bytes]:
        """The padded file, in pieces (the file is read lazily)."""
        with open(self.path, "rb") as f:
            left = self.body
            while left:
                piece = f.read(min(_READ, left))
                if not piece:
                    raise OSError(f"{self.path}: shorter than when the server started")
                left -= len(piece)
                yield piece
        yield struct.pack(">I", self.pad) + PAD_TYPE
        zeros = bytes(min(self.pad, _READ))
        left = self.pad
        while left:
            n = min(left, _READ)
            yield zeros[:n]
            left -= n
        yield struct.pack(">I", self.crc) + IEND


def _zero_crc(n: int) -> int:
    crc = zlib.crc32(PAD_TYPE)
    zeros = bytes(min(n, _READ))
    while n:
        k = min(n, _READ)
        crc = zlib.crc32(zeros[:k], crc)
        n -= k
    return crc & 0xFFFFFFFF


def equal_size_plan(groups: dict[str, list[Path]]) -> dict[Path, PaddedPng]:
    """Padding for every file so that all files of one group have the same length.

    Raises ``ValueError`` naming a file that does not end with a PNG ``IEND`` chunk.
    """
    out: dict[Path, PaddedPng] = {}
    for paths in groups.values():
        sizes = {}
        for p in paths:
            size = p.stat().st_size
            with open(p, "rb") as f:
                f.seek(max(0, size - len(IEND)))
                if size < 8 + len(IEND) or f.read() != IEND:
                    raise ValueError(f"{p}: not a PNG file ending with IEND; recreate the study")
            sizes[p] = size
        target = max(sizes.values())
        for p, size in sizes.items():
            pad = target - size
            out[p] = PaddedPng(p, size - len(IEND), pad, _zero_crc(pad))
    return out
