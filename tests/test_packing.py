"""Sparsity-aware packing: bit-exact round trips, a standalone unpack.py, and the size it buys."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgefree.export import unpack as unpack_module
from edgefree.export.packing import pack_bytes, pack_file
from edgefree.export.unpack import UnpackError, unpack, unpack_bytes

UNPACK_PY = Path(unpack_module.__file__)


def _sparse_floats(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n).astype(np.float32)
    w[rng.random(n) < 0.75] = 0.0
    w[:7] = -0.0  # pruning by multiplication leaves negative zeros: they must come back as they were
    return w.tobytes()


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\x80", b"abc", bytes(5), bytes([0, 0, 0, 0x80, 1]), os.urandom(1001), os.urandom(4096),
    _sparse_floats(1), _sparse_floats(12_345), _sparse_floats(12_345) + b"\x01\x02\x03",  # not a multiple of 4
    bytes(3) + _sparse_floats(999),  # floats at an odd offset
], ids=lambda d: f"{len(d)}B")
def test_round_trip_is_bit_exact(data):
    assert unpack_bytes(pack_bytes(data)) == data


def test_negative_zero_keeps_its_sign():
    data = np.array([-0.0, 0.0, 1.5, -0.0], np.float32).tobytes()
    restored = np.frombuffer(unpack_bytes(pack_bytes(data)), np.float32)
    assert np.signbit(restored).tolist() == [True, False, False, True]


def test_pack_file_writes_efpk_that_unpacks_to_the_same_file(tmp_path):
    original = tmp_path / "weights.bin"
    original.write_bytes(_sparse_floats(5001) + b"\x07")
    packed = pack_file(original)
    assert packed.name == "weights.bin.efpk"
    unpack(str(packed), str(tmp_path / "restored.bin"))
    assert (tmp_path / "restored.bin").read_bytes() == original.read_bytes()


def _pruned_weights(teacher) -> list[torch.Tensor]:
    from edgefree.config import MagnitudePruning
    from edgefree.recover import prune
    from edgefree.recover.prune import prunable_weights

    return list(prunable_weights(prune(teacher, MagnitudePruning(sparsity=0.75)).model).values())


def _symmetric_int8(w: torch.Tensor) -> bytes:
    """Per-channel symmetric int8, as the exporters quantize: a zero weight stays exactly zero."""
    scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
    return torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))).to(torch.int8).numpy().tobytes()


def test_75_percent_sparse_weights_pack_small_enough(teacher):
    weights = [w.detach() for w in _pruned_weights(teacher)]
    dense_fp32 = b"".join(w.numpy().tobytes() for w in weights)
    int8 = b"".join(_symmetric_int8(w) for w in weights)
    assert len(dense_fp32) / len(pack_bytes(dense_fp32)) >= 3.5
    assert len(dense_fp32) / len(pack_bytes(int8)) >= 10


def test_damaged_files_are_refused():
    packed = pack_bytes(_sparse_floats(2000))
    with pytest.raises(UnpackError, match="truncated"):
        unpack_bytes(packed[:-10])
    with pytest.raises(UnpackError, match="EFPK"):
        unpack_bytes(b"PK\x03\x04" + packed[4:])
    flipped = bytearray(packed)
    flipped[-20] ^= 0xFF
    with pytest.raises(UnpackError):
        unpack_bytes(bytes(flipped))


def test_unpack_py_is_standalone():
    tree = ast.parse(UNPACK_PY.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "hashlib", "lzma", "os", "struct", "sys", "numpy"}


def test_unpack_py_runs_as_a_script_away_from_the_package(tmp_path):
    device = tmp_path / "device"
    device.mkdir()
    shutil.copy(UNPACK_PY, device / "unpack.py")
    original = _sparse_floats(3001)
    (device / "w.efpk").write_bytes(pack_bytes(original))
    run = subprocess.run([sys.executable, "unpack.py", "w.efpk", "w.bin"], cwd=device, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (device / "w.bin").read_bytes() == original

    (device / "bad.efpk").write_bytes(b"not packed")
    run = subprocess.run([sys.executable, "unpack.py", "bad.efpk", "bad.bin"], cwd=device, capture_output=True, text=True)
    assert run.returncode == 1 and "EFPK" in run.stderr
    assert not (device / "bad.bin").exists()
