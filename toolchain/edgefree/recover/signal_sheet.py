"""The contact sheet of dreamed signals: one row per class, a few dreams each, every channel a trace.

Signals are drawn in the sensor's units (denormalized), their channels stacked with an offset so
they do not overlap, the classes' names on the left: the signal counterpart of the image grid in
``edgefree.recover.synthesize.save_contact_sheet``.
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_signal_sheet(dreams, spec, path: str | Path, per_class: int = 4) -> None:
    """A PNG: one row per class of ``dreams`` (normalized N x C x L), ``per_class`` dreams across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = int(dreams.labels.max()) + 1
    low, high = spec.value_range
    raw = spec.denormalize(dreams.images).clamp(low, high)
    spread = torch.quantile(raw.transpose(0, 1).reshape(spec.shape[0], -1)[:, :1_000_000], torch.tensor([0.01, 0.99]), dim=1)
    step = 1.2 * float((spread[1] - spread[0]).max()) or 1.0  # channel offset: the traces stay apart
    fig, axes = plt.subplots(classes, per_class, figsize=(2.6 * per_class, 1.2 + 0.35 * spec.shape[0] * classes),
                             squeeze=False, sharex=True, sharey=True)
    for c in range(classes):
        picked = raw[dreams.labels == c][:per_class]
        name = spec.class_names[c] if c < len(spec.class_names) else str(c)
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center")
        for k, ax in enumerate(axes[c]):
            ax.set_yticks([])
            if k < len(picked):
                for channel, trace in enumerate(picked[k]):
                    ax.plot(trace.numpy() - channel * step, linewidth=0.6)
            else:
                ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("sample")
    fig.suptitle(f"dreamed signals ({spec.shape[0]} channels x {spec.shape[1]} samples), one row per class",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
