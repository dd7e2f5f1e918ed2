"""``edgefree build``: the whole pipeline on your model, or on the built-in default."""

from pathlib import Path

import click

from edgefree.cli.export import FORMATS_HELP, PRECISIONS_HELP, comma_list, report_export


def _opt(*names, **kw):
    return click.option(*names, show_envvar=True, **kw)


@click.command()
@_opt("--target", default="x86-64", help="Target profile (see `edgefree targets`).")
@_opt("--model", type=click.Path(path_type=Path), help="Teacher checkpoint (state_dict). Omit for the built-in default.")
@_opt("--arch", help="Architecture of --model (see `edgefree models`).")
@_opt("--num-classes", type=int, default=10, help="Classes of --model.")
@_opt("--eval-data", help="Held-out evaluation set: zip, ImageFolder dir, cifar-10-batches-py dir, or 'digits'.")
@_opt("--sparsity", type=float, default=0.75, help="Fraction of conv/linear weights to prune (global magnitude).")
@_opt("--keep-first-last-dense", is_flag=True, help="Do not prune the first and last layer.")
@_opt("--recipe", default=None, help="Recipe: 'fast' (default for --model), 'thorough' (fast's dreams, twice the distillation), 'paper' (the published 200 fp32 steps per batch), 'generator' (a generator trained on the teacher, new images every epoch), 'demo' (built-in default).")
@_opt("--images", type=int, help="Synthetic images (overrides the recipe).")
@_opt("--iterations", type=int, help="Synthesis steps per batch; with a generator recipe, its training steps (overrides the recipe).")
@_opt("--synth-batch", type=int, help="Synthesis batch size (overrides the recipe).")
@_opt("--bf16/--fp32", "bf16", default=None, help="Synthesize and distil in bfloat16 autocast, or in fp32 "
      "[default: the recipe's; 'fast' uses bf16 where the hardware has it natively, fp32 elsewhere].")
@_opt("--reconstruct-images", type=int, help="Dreams used to refit each pruned layer to the teacher's outputs "
      "before distillation; 0 skips it (overrides the recipe).")
@_opt("--epochs", type=int, help="Distillation epochs.")
@_opt("--distill-lr", type=float, help="Distillation learning rate.")
@_opt("--formats", callback=comma_list, help=FORMATS_HELP)
@_opt("--precisions", callback=comma_list, help=PRECISIONS_HELP)
@_opt("--bench-runs", type=int, help="A fixed count of timed runs per runtime in the bench stage (after 10 "
      "warm-up) [default: runs until the p50 is stable within 2%, 20 to 2000 runs].")
@_opt("--emulate/--no-emulate", default=True, help="Bench an aarch64 target's artifacts under qemu-aarch64 too "
      "(when `edgefree emulator setup` ran).")
@_opt("--out", type=click.Path(path_type=Path), default=Path("edgefree-out"), help="Output folder.")
@_opt("--seed", type=int, default=0, help="Seed for every random choice.")
@_opt("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", help="Where to compute.")
@_opt("--quiet", is_flag=True, help="No progress bars.")
def build(target, model, arch, num_classes, eval_data, sparsity, keep_first_last_dense, recipe, images,
          iterations, synth_batch, bf16, reconstruct_images, epochs, distill_lr, formats, precisions, bench_runs, emulate, out, seed, device,
          quiet):
    """Prune, synthesize, reconstruct, distill (and evaluate) a teacher; write the student and a report to --out."""
    from edgefree.cli.bench import report_bench
    from edgefree.config import DEFAULT_RECIPE, DEMO_RECIPE, BenchConfig, BuildConfig, ExportConfig, PruneConfig
    from edgefree.config import recipe as named_recipe
    from edgefree.pipeline import build as run_build
    from edgefree.targets import load_target

    load_target(target)  # fail fast, before any work, on an unknown target
    recipe = recipe or (DEFAULT_RECIPE if model else DEMO_RECIPE)
    chosen = named_recipe(recipe)
    config = BuildConfig(
        target=target, out=out, model=model, arch=arch, num_classes=num_classes, eval_data=eval_data,
        seed=seed, device=device, recipe=recipe,
        prune=PruneConfig(sparsity=sparsity, keep_first_last_dense=keep_first_last_dense),
        synthesis=chosen.synthesis.replace(images=images, iterations=iterations, batch_size=synth_batch, bf16=bf16),
        reconstruct=chosen.reconstruct.replace(images=reconstruct_images),
        distill=chosen.distill.replace(epochs=epochs, lr=distill_lr, bf16=bf16),
        export=ExportConfig(formats=formats, precisions=precisions),
        bench=BenchConfig(runs=bench_runs, emulate=emulate),
    )
    report = run_build(config, progress=not quiet)
    acc = report["accuracy"]
    if acc["teacher"] is not None:
        click.echo(f"accuracy: teacher {acc['teacher']:.2f}%  pruned {acc['pruned']:.2f}%  "
                   f"recovered {acc['recovered']:.2f}%  (sparsity {100 * report['sparsity']:.1f}%)")
    report_export(report["export"])
    report_bench(report["bench"])
    click.echo(f"wrote {out / 'report.md'}, {out / 'report.json'}, {out / 'student.pt'}, {out / 'artifacts'}/")
