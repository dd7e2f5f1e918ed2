"""Hashes of tensors, for cache keys and integrity checks: bytes as stored, of any dtype (bfloat16 too)."""

import hashlib

import numpy as np
import torch


def tensor_bytes(tensor: torch.Tensor) -> np.ndarray:
    """``tensor``'s values as raw bytes in C order, on the CPU (``.numpy()`` refuses bfloat16; a byte view never
    does).

    Example:
        >>> bytes(tensor_bytes(torch.ones(2, dtype=torch.bfloat16)))
        b'\\x80?\\x80?'
    """
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def state_sha256(state: dict[str, torch.Tensor], ordered: bool = False) -> "hashlib._Hash":
    """A sha256 fed each entry's name and bytes, in ``state``'s order (by name where ``ordered``)."""
    h = hashlib.sha256()
    for name, tensor in (sorted(state.items()) if ordered else state.items()):
        h.update(name.encode())
        h.update(tensor_bytes(tensor))
    return h
