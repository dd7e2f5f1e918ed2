"""Sparsity-aware packing: a pruned artifact ships smaller than a dense one.

``pack_file(path)`` writes ``<path>.efpk`` in the format that the standalone
``unpack.py`` (beside this module, copied to devices) reads back bit for bit. The
packer tries each word size (4 bytes: fp32 weights; 1 byte: int8 weights and
anything unaligned) and keeps the smaller result.
"""

from __future__ import annotations

import hashlib
import lzma
from pathlib import Path

import numpy as np

from edgefree.errors import EdgefreeError
from edgefree.export.unpack import HEADER, MAGIC, VERSION, WORD_SIZES, unpack_bytes

# Literal contexts off (lc=lp=pb=0): byte planes and bitmasks have no text-like byte-to-byte
# structure, so lzma's literal model only costs bits on them.
_LZMA = [{"id": lzma.FILTER_LZMA2, "preset": 9, "lc": 0, "lp": 0, "pb": 0}]


def _encode(data: bytes, word: int) -> bytes:
    n_words = len(data) // word
    words = np.frombuffer(data, np.uint8, n_words * word).reshape(n_words, word)
    # a zero word may carry a sign bit: pruning by multiplication leaves -0.0 for negative weights
    nonzero = words[:, :-1].any(axis=1) | (words[:, -1] & 0x7F).astype(bool)
    signs = words[~nonzero, -1] >> 7
    # byte planes: byte k of every kept word side by side, so lzma sees runs of similar bytes
    planes = np.ascontiguousarray(words[nonzero].T)
    raw = np.packbits(nonzero).tobytes() + np.packbits(signs).tobytes() + planes.tobytes() + data[n_words * word:]
    payload = lzma.compress(raw, check=lzma.CHECK_NONE, filters=_LZMA)  # unpack checks the sha256 instead
    return HEADER.pack(MAGIC, VERSION, word, len(data), len(payload), hashlib.sha256(data).digest()) + payload


def pack_bytes(data: bytes) -> bytes:
    """The smallest packed form of ``data`` over the word sizes unpack.py knows.

    Example:
        >>> packed = pack_bytes(bytes(4000) + b"edge")
        >>> len(packed) < 200 and unpack_bytes(packed) == bytes(4000) + b"edge"
        True
    """
    return min((_encode(data, word) for word in WORD_SIZES), key=len)


def pack_file(path: Path) -> Path:
    """Write ``<path>.efpk`` next to ``path`` and return its path.

    The packed bytes are unpacked again before they are written: a packed file that
    would not rebuild the original exactly is never shipped.
    """
    path = Path(path)
    data = path.read_bytes()
    packed = pack_bytes(data)
    if unpack_bytes(packed) != data:
        raise EdgefreeError(f"packing {path} did not round-trip bit for bit; this is a bug in edgefree")
    dest = path.with_name(path.name + ".efpk")
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(packed)
    tmp.replace(dest)
    return dest
