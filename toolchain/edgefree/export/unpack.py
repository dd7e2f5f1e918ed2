"""Rebuild a file packed by edgefree (``.efpk``) bit for bit.

STANDALONE: the standard library and numpy only (no edgefree, no torch), so it can be
copied to a device next to the packed artifacts and run there:

    python unpack.py student-fp32.onnx.data.efpk student-fp32.onnx.data

A packed file is a header, then an lzma stream. The original file is seen as words of
``word`` bytes (4 for fp32 weights, 1 for int8 ones); a word whose bits are all zero but
for the top bit of its last byte (the sign of a little-endian float: +0.0 and -0.0) is a
*zero word*. The stream holds a bitmask of the other words (``np.packbits``), the top
bits of the zero words (so -0.0 comes back as -0.0), the other words split into byte
planes (byte 0 of every word, then byte 1, ...: the sign/exponent bytes of floats sit
together and compress well), then the bytes after the last whole word. Pruned weights
are zero words, so a file with 75% zeros packs to about a quarter of its size. The
runtime still loads and computes the dense file: packing saves storage and transfer,
not time.

Header (little endian): magic ``EFPK``, version (u8), word size (u8), 2 pad bytes,
original size (u64), payload size (u64), sha256 of the original (32 bytes). Unpacking
checks the size and the sha256, so a damaged file is never mistaken for the original.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import struct
import sys

import numpy as np

MAGIC = b"EFPK"
VERSION = 1
HEADER = struct.Struct("<4sBB2xQQ32s")
WORD_SIZES = (4, 1)


def sha256_file(path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks (the one hash of every device-side check)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class UnpackError(ValueError):
    """The packed file is damaged, truncated, or not an edgefree packed file."""


def unpack_bytes(packed: bytes) -> bytes:
    """The original bytes of a packed file's content; raises UnpackError if they do not check out."""
    if len(packed) < HEADER.size or packed[:4] != MAGIC:
        raise UnpackError("not an edgefree packed file (no EFPK header)")
    _, version, word, size, payload_size, digest = HEADER.unpack_from(packed)
    if version != VERSION or word not in WORD_SIZES:
        raise UnpackError(f"packed with format version {version}, word size {word}: this unpack.py reads "
                          f"version {VERSION}, word sizes {WORD_SIZES}; use the unpack.py of that build")
    payload = packed[HEADER.size:]
    if len(payload) != payload_size:
        raise UnpackError(f"payload is {len(payload)} bytes, the header says {payload_size}: the file is truncated")
    try:
        raw = lzma.decompress(payload)
    except lzma.LZMAError as exc:
        raise UnpackError(f"the compressed payload is damaged ({exc})") from exc
    n_words = size // word
    mask_bytes = (n_words + 7) // 8
    if len(raw) < mask_bytes:
        raise UnpackError("the payload is shorter than its bitmask: the file is damaged")
    mask = np.unpackbits(np.frombuffer(raw, np.uint8, mask_bytes), count=n_words).astype(bool)
    nonzero = int(mask.sum())
    sign_bytes = (n_words - nonzero + 7) // 8
    planes_at = mask_bytes + sign_bytes
    if len(raw) != planes_at + nonzero * word + size % word:
        raise UnpackError("the payload does not hold as many words as its bitmask says: the file is damaged")
    words = np.zeros((n_words, word), np.uint8)
    signs = np.unpackbits(np.frombuffer(raw, np.uint8, sign_bytes, offset=mask_bytes), count=n_words - nonzero)
    words[~mask, word - 1] = signs << 7
    words[mask] = np.frombuffer(raw, np.uint8, nonzero * word, offset=planes_at).reshape(word, nonzero).T
    original = words.tobytes() + raw[planes_at + nonzero * word:]
    if len(original) != size or hashlib.sha256(original).digest() != digest:
        raise UnpackError("the rebuilt file does not match the original's size and sha256")
    return original


def unpack(packed_path: str, dest_path: str) -> None:
    """Rebuild ``dest_path`` from ``packed_path``; the destination appears only once it checks out."""
    with open(packed_path, "rb") as f:
        original = unpack_bytes(f.read())
    tmp = f"{dest_path}.unpacking"
    with open(tmp, "wb") as f:
        f.write(original)
    os.replace(tmp, dest_path)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python unpack.py IN.efpk OUT", file=sys.stderr)
        return 2
    try:
        unpack(argv[0], argv[1])
    except (OSError, UnpackError) as exc:
        print(f"unpack: {argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
