"""Throughput of synthesis, refit and distillation over processes (torch.distributed, gloo) for ResNet-20.

Runs the three stages, as a build runs them, at 1 process x 1 thread, 2 processes x 1 thread
and 1 process x 2 threads (each started through torchrun's launcher, as ``--workers`` does)
and reports images per second per stage for the job as a whole (the stage's images over the
slowest rank's wall time, communication included), plus each rank's own rate.

    python benchmarks/distributed_scaling.py --shared ../shared                  # small budget
    python benchmarks/distributed_scaling.py --shared ../shared --images 1024 --epochs 4

Writes ``results/distributed_scaling.{json,md}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from provenance import describe, run_record

HERE = Path(__file__).resolve().parent
ARCH, CHECKPOINT = "resnet20-cifar", "resnet20_cifar10jpeg.pt"
SETUPS = [(1, 1), (2, 1), (1, 2)]  # (processes, threads per process)
GOALS = {"synthesize": 1.8, "distill": 1.6}  # 2 x 1 over 1 x 1


def _stages(checkpoint: str, args: dict, threads: int) -> dict:
    """One rank's part: the three stages, timed between barriers. Returns the job's and this rank's rates."""
    import torch

    from edgefree import distributed
    from edgefree.config import MagnitudePruning, ReconstructConfig, recipe
    from edgefree.models import load_teacher
    from edgefree.recover import distill, prune, reconstruct, synthesize

    with distributed.session(threads=threads) as (world, _device):
        teacher = load_teacher(ARCH, checkpoint)
        pruned = prune(teacher, MagnitudePruning(sparsity=0.75))
        fast = recipe("fast")  # the default recipe's settings at a small budget
        synthesis = fast.synthesis.replace(images=args["images"], batch_size=args["synth_batch"],
                                           iterations=args["iterations"], first_iterations=args["first_iterations"],
                                           shards=args["shards"])
        refit_config = ReconstructConfig(images=args["images"], batch_size=args["synth_batch"])
        kd = fast.distill.replace(epochs=args["epochs"])
        seconds, cpu = {}, {}

        def timed(stage, run):
            distributed.sum_over_ranks(0.0)  # every rank starts together
            started, cpu_started = time.perf_counter(), time.process_time()
            result = run()
            cpu[stage] = time.process_time() - cpu_started  # this rank's CPU seconds, all its threads
            distributed.sum_over_ranks(0.0)
            seconds[stage] = time.perf_counter() - started
            return result

        dreams = timed("synthesize", lambda: synthesize(teacher, synthesis, seed=0, progress=False))
        refit = timed("reconstruct", lambda: reconstruct(teacher, pruned, dreams, refit_config, progress=False))
        distilled = timed("distill", lambda: distill(teacher, refit, dreams, kd, seed=0, progress=False))
        images = {"synthesize": len(dreams), "reconstruct": refit_config.images, "distill": kd.epochs * len(dreams)}
        shares = {"synthesize": dreams.stats["rank"]["images"],  # this rank's images per stage
                  "reconstruct": sum(map(len, distributed.rank_batches(dreams.images, refit_config.batch_size))),
                  "distill": kd.epochs * distributed.EpochBatches(len(dreams), kd.batch_size, None).per_rank}
        busy = {"synthesize": dreams.stats["rank"]["seconds"], "reconstruct": refit.stats["seconds"],
                "distill": distilled.stats["seconds"]}
        ranks = distributed.all_gather({**{k: round(shares[k] / busy[k], 2) for k in shares},
                                        **{f"{k}_per_cpu_s": round(shares[k] / cpu[k], 2) for k in shares}})
        return {"processes": world.size, "threads": torch.get_num_threads(),
                "images_per_s": {s: round(images[s] / seconds[s], 2) for s in seconds},
                "seconds": {s: round(v, 2) for s, v in seconds.items()}, "rank_images_per_s": ranks,
                "dreams_sha256": hashlib.sha256(dreams.images.numpy().tobytes()).hexdigest()[:16],
                "bn_loss_last": round(dreams.stats["bn_loss_last"], 4),
                "teacher_agreement": round(dreams.stats["teacher_agreement"], 4)}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--synth-batch", type=int, default=64)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--first-iterations", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    return parser


def written(args) -> list[str]:
    """The files under benchmarks/results/ that this command writes (none when --results points elsewhere)."""
    return ["distributed_scaling.json", "distributed_scaling.md"] if args.results.resolve() == (HERE / "results").resolve() else []


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    checkpoint = args.shared / "models" / CHECKPOINT
    if not checkpoint.is_file():
        sys.exit(f"needs the shared ResNet-20 teacher: {checkpoint} not found (pass --shared)")
    from edgefree import distributed
    from edgefree.machine import machine_info

    budget = {k: getattr(args, k) for k in ("images", "synth_batch", "shards", "first_iterations", "iterations", "epochs")}
    runs = []
    for processes, threads in SETUPS:
        print(f"{processes} process(es) x {threads} thread(s) ...", flush=True)
        started = time.perf_counter()
        load = os.getloadavg()[0]  # other jobs on the machine: what the cores already had to do
        run = distributed.launch(_stages, str(checkpoint.resolve()), budget, threads, workers=processes, threads=threads)
        run["wall_s"] = round(time.perf_counter() - started, 1)
        run["load_average_before"], run["load_average_after"] = round(load, 2), round(os.getloadavg()[0], 2)
        print(json.dumps(run), flush=True)
        runs.append(run)
    base, two = runs[0]["images_per_s"], runs[1]["images_per_s"]
    speedup = {s: round(two[s] / base[s], 2) for s in base}
    run = run_record(__file__, argv, [checkpoint])
    result = {"benchmark_command": run["command"], "run": run,
              "arch": ARCH, "budget": budget, "runs": runs, "speedup_2x1_over_1x1": speedup,
              "speedup_1x2_over_1x1": {s: round(runs[2]["images_per_s"][s] / base[s], 2) for s in base},
              "goals": {s: {"goal": g, "measured": speedup[s], "met": speedup[s] >= g} for s, g in GOALS.items()},
              "same_dreams_1_and_2_processes": runs[0]["dreams_sha256"] == runs[1]["dreams_sha256"],
              "machine": machine_info()}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / "distributed_scaling"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    stem.with_suffix(".md").write_text(_markdown(result))
    print(f"wrote {stem}.json and .md")


def _markdown(r: dict) -> str:
    b = r["budget"]
    lines = [f"# Distributed scaling: {r['arch']} on CPU (gloo)", "",
             f"Produced by `{r['benchmark_command']}`: the default recipe's synthesis at {b['images']} images "
             f"(batches of {b['synth_batch']}, {b['shards']} shards, {b['first_iterations']} + {b['iterations']} steps), "
             f"the refit on them, {b['epochs']} epochs of feature distillation. Images per second of the job per stage "
             "(the stage's images over its wall time, communication included); each process started by torchrun's "
             "launcher. " + describe(r["run"]), "",
             "| processes x threads | synthesize img/s | reconstruct img/s | distill img/s | per-rank img/s (s / r / d) "
             "| per-rank img per CPU-second (s / r / d) | load average before / after |",
             "|---|---|---|---|---|---|---|"]
    for run in r["runs"]:
        per = "; ".join(f"{x['synthesize']:.1f} / {x['reconstruct']:.1f} / {x['distill']:.1f}" for x in run["rank_images_per_s"])
        per_cpu = "; ".join(f"{x['synthesize_per_cpu_s']:.1f} / {x['reconstruct_per_cpu_s']:.1f} / "
                            f"{x['distill_per_cpu_s']:.1f}" for x in run["rank_images_per_s"])
        rates = run["images_per_s"]
        lines.append(f"| {run['processes']} x {run['threads']} | {rates['synthesize']:.1f} | {rates['reconstruct']:.1f} "
                     f"| {rates['distill']:.1f} | {per} | {per_cpu} | {run['load_average_before']} / "
                     f"{run['load_average_after']} |")
    s, t = r["speedup_2x1_over_1x1"], r["speedup_1x2_over_1x1"]
    lines += ["", "| speed-up over 1 x 1 | synthesize | reconstruct | distill |", "|---|---|---|---|",
              f"| 2 processes x 1 thread | {s['synthesize']}x | {s['reconstruct']}x | {s['distill']}x |",
              f"| 1 process x 2 threads | {t['synthesize']}x | {t['reconstruct']}x | {t['distill']}x |", ""]
    lines += [f"- goal {name}: 2 x 1 at least {g['goal']}x 1 x 1: measured {g['measured']}x, "
              f"{'met' if g['met'] else 'NOT met'}" for name, g in r["goals"].items()]
    lines += [f"- the synthetic set at 1 and 2 processes: {'identical bit for bit' if r['same_dreams_1_and_2_processes'] else 'DIFFERENT'}",
              "- images per CPU-second show the work each rank did for its images: where they hold at 2 x 1 and the "
              "wall-clock rate does not, the cores were busy with other jobs (load average over 2 on 2 cores), "
              "not with communication.",
              "- the refit's least-squares solves are repeated on every rank (only the Gram sums are shared), so it "
              "scales less than the other stages at this small image count.", ""]
    m = r["machine"]
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores, shared with other jobs while this ran: timings are noisy. "
              + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if k in ("torch", "edgefree")), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
