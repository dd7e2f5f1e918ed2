"""Train the built-in default teacher once and write the weights that ship inside the package.

The digits CNN plays the model owner's part: it is trained here, on the 80% training split of
scikit-learn's 8x8 digits (which the recovery pipeline never reads), seeded, and saved as a
plain state_dict to ``toolchain/edgefree/models/digits-cnn.pt``. Every ``edgefree build``
without ``--model`` loads that file, so the teacher and the pruned accuracy of the default
build are the same on every CPU. Run it again only to change the default teacher:

    python benchmarks/make_digits_teacher.py     # writes the weights and results/digits_teacher.{json,md}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgefree.data import digits_split, load_eval_data
from edgefree.demo import DEMO_ARCH, DEMO_EVAL, WEIGHTS
from edgefree.evaluate import accuracy
from edgefree.machine import machine_info
from edgefree.models import create_model
from edgefree.models.tiny import DIGITS_SPEC
from provenance import describe, digits_files, run_record

HERE = Path(__file__).resolve().parent


def train(model: nn.Module, seed: int, epochs: int) -> nn.Module:
    """AdamW with a one-cycle schedule, batches of 64, one-pixel shifts as augmentation."""
    pixels, labels = digits_split("train")
    x = DIGITS_SPEC.normalize(torch.from_numpy(pixels).float() / 255.0)
    y = torch.from_numpy(labels).long()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(y) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            # one-pixel shifts: cheap augmentation that suits 8x8 strokes
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            batch = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="where the weights go (default: inside the package)")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes."""
    return ["digits_teacher.json", "digits_teacher.md"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    run = run_record(__file__, argv, digits_files()[1:])  # the data; the weights are what it writes
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    model = train(create_model(DEMO_ARCH), args.seed, args.epochs)
    seconds = time.perf_counter() - started
    torch.save(model.state_dict(), args.out)
    held_out = accuracy(model, load_eval_data(DEMO_EVAL, DIGITS_SPEC), DIGITS_SPEC)
    record = {
        "command": run["command"], "run": run, "arch": DEMO_ARCH, "seed": args.seed, "epochs": args.epochs,
        "weights": str(args.out.resolve().relative_to(HERE.parent)) if args.out.resolve().is_relative_to(HERE.parent)
        else str(args.out),
        "bytes": args.out.stat().st_size, "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "held_out_accuracy": held_out, "train_seconds": round(seconds, 1), "machine": machine_info(),
    }
    (HERE / "results" / "digits_teacher.json").write_text(json.dumps(record, indent=2) + "\n")
    m = record["machine"]
    (HERE / "results" / "digits_teacher.md").write_text("\n".join([
        "# The built-in digits teacher", "", f"Made by `{run['command']}` ({args.epochs} epochs, seed {args.seed}, "
        f"80% training split of scikit-learn's digits). " + describe(run), "",
        "| weights | bytes | sha256 | held-out top-1 % (360 images) | training s |", "|---|---|---|---|---|",
        f"| `{record['weights']}` | {record['bytes']:,} | `{record['sha256'][:16]}...` | {held_out:.2f} | {seconds:.1f} |",
        "", f"Machine: {m['cpu']} ({m['cores']} cores); " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]))
    print(f"wrote {args.out} ({record['bytes']:,} bytes): held-out top-1 {held_out:.2f}%")


if __name__ == "__main__":
    main()
