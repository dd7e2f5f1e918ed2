"""The data owner's side: train torchvision's MobileNetV3-small on CIFAR-10 (JPEG q75 copy) at 32x32.

This script, and only this one among the MobileNet benchmarks, reads training data: it plays the
owner of a phone model who trains a depthwise-separable classifier and hands over the weights
alone. ``edgefree build --arch torchvision:mobilenet_v3_small --input-shape 3x32x32`` then
compresses those weights without any of that data (``benchmarks/mobilenet_recovery.py``).

The network is torchvision's, unchanged (``num_classes=10``, ImageNet normalization, the
default of a torchvision teacher), so the build needs no code of ours. It trains seeded, with
SGD (Nesterov), a one-cycle schedule, random crops (4-pixel padding) and mirroring, in
channels-last memory (depthwise convolutions train several times faster that way on CPU), and
writes a plain state_dict where you say, plus its top-1 on the 10,000 test images:

    python benchmarks/train_mobilenet_teacher.py --shared ../shared --out /tmp/mobilenet_v3_small.pt
    # -> the weights, and results/mobilenet_teacher.{json,md}
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from tqdm import tqdm

from edgefree.machine import machine_info
from edgefree.models.spec import InputSpec
from provenance import describe, run_record

HERE = Path(__file__).resolve().parent
ARCH = "torchvision:mobilenet_v3_small"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_split(archive_path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one split as uint8 (N, 3, 32, 32) and their labels, in CIFAR-10's class order."""
    with zipfile.ZipFile(archive_path) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg") and n.split("/")[0] == split)
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB"))
                           for n in tqdm(names, desc=f"decode {split}", unit="img", mininterval=2)])
    labels = torch.tensor([CLASSES.index(n.split("/")[-2]) for n in names])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels


def augment(pixels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random 32x32 crop of each image padded by 4 pixels (zeros), mirrored with probability 1/2."""
    n, _, h, w = pixels.shape
    padded = F.pad(pixels, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (n,), generator=g), torch.randint(0, 9, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, 3, h, w + 8)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, 3, h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def as_input(pixels: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    return spec.normalize(pixels.float() / 255.0).contiguous(memory_format=torch.channels_last)


def train(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, spec: InputSpec, seed: int,
          epochs: int, batch: int, lr: float) -> nn.Module:
    """SGD (Nesterov, momentum 0.9, weight decay 4e-5 on weights only) with a one-cycle schedule."""
    g = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 4e-5}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=lr, momentum=0.9, nesterov=True)
    steps_per_epoch = len(labels) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=g)[: steps_per_epoch * batch].split(batch)
        bar = tqdm(order, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", mininterval=5)
        for idx in bar:
            loss = F.cross_entropy(model(as_input(augment(pixels[idx], g), spec)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval()


@torch.no_grad()
def top1(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, spec: InputSpec) -> float:
    model.eval()
    hits = sum(int((model(as_input(p, spec)).argmax(1) == y).sum()) for p, y in zip(pixels.split(500), labels.split(500)))
    return 100.0 * hits / len(labels)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--out", type=Path, required=True, help="where the state_dict goes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="mobilenet_teacher", type=_file_name,
                        help="results/<OUTPUT>.{json,md}, to keep the records of several teachers apart")
    return parser


def _file_name(name: str) -> str:
    if not name or Path(name).name != name or name.endswith((".json", ".md")):
        raise argparse.ArgumentTypeError(f"{name!r}: give a file name without folder or suffix")
    return name


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes."""
    return [f"{args.output}.json", f"{args.output}.md"]


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    data = args.shared / "data" / "cifar10-jpeg"
    if not (data / "train.zip").is_file():
        raise SystemExit(f"no CIFAR-10 training split at {data / 'train.zip'}: pass --shared, the folder holding data/")
    run = run_record(__file__, argv, [data / "train.zip", data / "test.zip"])

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = InputSpec((3, 32, 32))  # a torchvision teacher's default normalization: ImageNet's
    train_x, train_y = read_split(data / "train.zip", "train")
    test_x, test_y = read_split(data / "test.zip", "test")
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=len(CLASSES))
    model = model.to(memory_format=torch.channels_last)
    started = time.perf_counter()
    model = train(model, train_x, train_y, spec, args.seed, args.epochs, args.batch, args.lr)
    seconds = time.perf_counter() - started
    model = model.to(memory_format=torch.contiguous_format)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    record = {
        "command": run["command"], "run": run, "arch": ARCH, "input_shape": [3, 32, 32],
        "data": "CIFAR-10 (JPEG q75 copy)", "seed": args.seed, "epochs": args.epochs, "batch": args.batch,
        "lr": args.lr, "threads": args.threads, "weights": str(args.out), "bytes": args.out.stat().st_size,
        "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "train_images": len(train_y), "test_images": len(test_y),
        "train_accuracy": top1(model, train_x, train_y, spec), "test_accuracy": top1(model, test_x, test_y, spec),
        "train_seconds": round(seconds, 1), "machine": machine_info(),
    }
    (HERE / "results" / f"{args.output}.json").write_text(json.dumps(record, indent=2) + "\n")
    m = record["machine"]
    (HERE / "results" / f"{args.output}.md").write_text("\n".join([
        "# The MobileNet teacher: torchvision MobileNetV3-small on CIFAR-10 at 32x32", "",
        f"Made by `{record['command']}` ({args.epochs} epochs, batch {args.batch}, seed {args.seed}, "
        f"{args.threads} threads, {record['train_seconds']} s), the data owner's side: the only MobileNet code "
        "that reads the training split. " + describe(run), "",
        f"- data: {record['data']}, {record['train_images']:,} training and {record['test_images']:,} test images",
        "- network: torchvision's `mobilenet_v3_small(num_classes=10)`, unchanged (its stride-2 stem and "
        "stages take 32x32 down to 1x1), ImageNet normalization",
        f"- top-1 on the training split (no augmentation): {record['train_accuracy']:.2f}%",
        f"- top-1 on the test split: **{record['test_accuracy']:.2f}%**",
        f"- weights: `{record['weights']}`, {record['bytes']:,} bytes, sha256 `{record['sha256']}`", "",
        f"Machine: {m.get('cpu', '?')}, torch {m.get('versions', {}).get('torch', '?')}", ""]))
    print(json.dumps({k: record[k] for k in ("train_accuracy", "test_accuracy", "train_seconds")}))


if __name__ == "__main__":
    main()
