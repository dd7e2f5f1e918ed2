"""Does dreaming in shards recover as well as one chain? ResNet-20, the `fast` recipe's synthesis.

Dreams the same number of images as one warm-started chain (``--shards 1``) and as shards of
whole batches (``--shards 2`` ...), refits the 75%-pruned ResNet-20 on each set by least
squares, and measures the refit's top-1 on CIFAR-10 test images (no distillation, so the
dreams' quality is what differs), with the synthesis steps and seconds each cost.

    python benchmarks/synthesis_shards.py --shared ../shared --images 512 --synth-batch 128

Writes ``results/synthesis_shards.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from provenance import describe, run_record

HERE = Path(__file__).resolve().parent


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--synth-batch", type=int, default=256)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes (none when --results points elsewhere)."""
    return ["synthesis_shards.json", "synthesis_shards.md"] if args.results.resolve() == (HERE / "results").resolve() else []


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    checkpoint = args.shared / "models" / "resnet20_cifar10jpeg.pt"
    if not checkpoint.is_file():
        sys.exit(f"needs the shared ResNet-20 teacher: {checkpoint} not found (pass --shared)")
    from edgefree.config import MagnitudePruning, ReconstructConfig, recipe
    from edgefree.data import LabeledImages, load_eval_data
    from edgefree.evaluate import accuracy
    from edgefree.machine import machine_info
    from edgefree.models import load_teacher
    from edgefree.recover import prune, reconstruct, synthesize

    teacher = load_teacher("resnet20-cifar", checkpoint)
    test = load_eval_data(str(args.shared / "data" / "cifar10-jpeg" / "test.zip"), teacher.spec)
    test = LabeledImages(test.pixels[:args.eval_images], test.labels[:args.eval_images], test.name)
    pruned = prune(teacher, MagnitudePruning(sparsity=0.75))
    rows = []
    for shards in args.shards:
        config = recipe("fast").synthesis.replace(images=args.images, batch_size=args.synth_batch, shards=shards)
        started = time.perf_counter()
        dreams = synthesize(teacher, config, seed=0, progress=False)
        seconds = time.perf_counter() - started
        refit = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=args.images), progress=False)
        rows.append({"shards": dreams.stats["shards"], "steps": dreams.stats["steps"], "synthesis_seconds": round(seconds, 1),
                     "bn_loss_last": round(dreams.stats["bn_loss_last"], 4),
                     "teacher_agreement": round(dreams.stats["teacher_agreement"], 4),
                     "refit_top1": round(accuracy(refit.model, test, teacher.spec), 2)})
        print(json.dumps(rows[-1]), flush=True)
    run = run_record(__file__, argv, [checkpoint, args.shared / "data" / "cifar10-jpeg" / "test.zip"])
    result = {"benchmark_command": run["command"], "run": run,
              "images": args.images, "eval_images": len(test), "teacher_top1": round(accuracy(teacher.module, test, teacher.spec), 2),
              "pruned_top1": round(accuracy(pruned.model, test, teacher.spec), 2), "rows": rows, "machine": machine_info()}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / "synthesis_shards"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    lines = ["# Synthesis in shards against one chain: ResNet-20, `fast` synthesis, 75% pruned, refit only", "",
             f"Produced by `{result['benchmark_command']}`: {args.images} dreams in batches of {args.synth_batch}, refit on all of them, top-1 on the "
             f"first {len(test)} CIFAR-10 test images (teacher {result['teacher_top1']}, pruned {result['pruned_top1']}). "
             + describe(run),
             "", "| shards | steps | synthesis s | BN loss (last step, mean over batches) | teacher agreement | refit top-1 |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['shards']} | {r['steps']} | {r['synthesis_seconds']} | {r['bn_loss_last']} | {r['teacher_agreement']} "
              f"| {r['refit_top1']} |" for r in rows]
    m = result["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, shared with other jobs: seconds are noisy.", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
