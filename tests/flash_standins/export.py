"""Test stand-in for the export stage: student.pt -> artifacts/ (ONNX fp32, packed, manifest.json).

Used by tests/test_flash.py only until `edgefree build` writes artifacts/ itself.
"""

import hashlib
import json
from pathlib import Path

import torch

from edgefree.export.packing import pack_file
from edgefree.models import create_model


def _describe(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def export_standin(build_dir: Path) -> None:
    report = json.loads((build_dir / "report.json").read_text())
    model = create_model(report["model"]["arch"])
    model.load_state_dict(torch.load(build_dir / "student.pt"))
    model.eval()
    out = build_dir / "artifacts"
    out.mkdir(exist_ok=True)
    onnx_path = out / "student-fp32.onnx"
    torch.onnx.export(model, (torch.zeros(1, *report["model"]["input"]["shape"]),), str(onnx_path),
                      dynamo=False, input_names=["x"], output_names=["logits"])
    pack_file(onnx_path)
    dense, packed = _describe(onnx_path), _describe(out / "student-fp32.onnx.efpk")
    files = [{"path": onnx_path.name, **dense, "packed_path": onnx_path.name + ".efpk",
              "packed_bytes": packed["bytes"], "packed_sha256": packed["sha256"]}]
    artifact = {"name": "onnx-fp32", "format": "onnx", "precision": "fp32", "runtime": "onnxruntime",
                "files": files, "entry": onnx_path.name, "bytes": dense["bytes"], "packed_bytes": packed["bytes"],
                "batch": 1, "parity": {}, "accuracy": None, "runtime_versions": {"onnxruntime": "1.32.0"}}
    manifest = {"schema": 1, "model": {"arch": report["model"]["arch"], "input": report["model"]["input"]},
                "artifacts": [artifact], "versions": {}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
