"""Parity: an artifact's logits against the PyTorch student's, on the same inputs, and the gate.

fp32 artifacts must reproduce the student's logits: max |difference| <= ``fp32_atol``.
INT8 artifacts change the numbers by design, so they are gated on top-1 agreement with
the fp32 student (>= ``int8_min_agreement``); their max |difference| is reported.
"""

from __future__ import annotations

import numpy as np

from edgefree.config import ExportConfig


def run_batch1(predict, inputs: np.ndarray) -> np.ndarray:
    """Logits of every input, run one at a time (artifacts are exported for batch 1)."""
    return np.concatenate([predict(np.ascontiguousarray(x[None])) for x in inputs])


def run_batched(predict, inputs: np.ndarray, batch: int, progress=None) -> np.ndarray:
    """Logits of every input, ``batch`` at a time; the last chunk is padded to ``batch`` (static shapes).

    ``progress``, a tqdm bar or None, advances by the inputs of each chunk.
    """
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        outputs.append(np.asarray(predict(np.ascontiguousarray(padded)))[:len(chunk)])
        if progress is not None:
            progress.update(len(chunk))
    return np.concatenate(outputs)


def compare(outputs: np.ndarray, reference: np.ndarray) -> dict:
    """Max |logit difference| and the fraction of inputs whose top-1 class is the same."""
    return {"max_abs_diff": float(np.abs(outputs - reference).max()),
            "top1_agreement": float((outputs.argmax(1) == reference.argmax(1)).mean())}


def gate(precision: str, figures: dict, config: ExportConfig) -> dict:
    """The rule for ``precision`` and whether ``figures`` meet it: ``{"rule", "passed"}``."""
    if precision == "fp32":
        return {"rule": f"max_abs_diff <= {config.fp32_atol:g}",
                "passed": figures["max_abs_diff"] <= config.fp32_atol}
    return {"rule": f"top1_agreement >= {config.int8_min_agreement:g}",
            "passed": figures["top1_agreement"] >= config.int8_min_agreement}
