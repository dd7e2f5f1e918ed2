"""The data-free estimate (edgefree.recover.estimate), its held-out dreams, and --max-drop (edgefree.budget)."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from edgefree.cli import cli
from edgefree.config import (BuildConfig, ChannelPruning, DistillConfig, LatencyTarget, MagnitudePruning,
                             ReconstructConfig, SynthesisConfig)
from edgefree.errors import EdgefreeError, MildTargetError, UnreachableTargetError
from edgefree.pipeline import _milder, held_out_config
from edgefree.recover import prune, synthesize
from edgefree.recover.estimate import advice, features, predict, remedy

TINY = ["--images", "64", "--iterations", "15", "--epochs", "2", "--quiet"]


@pytest.fixture(scope="module")
def held_out(teacher):
    return synthesize(teacher, SynthesisConfig(images=96, batch_size=48, iterations=20, jitter=1), seed=7,
                      progress=False)


def test_teacher_agrees_with_itself_on_every_view(teacher, held_out):
    found = features(teacher.module, teacher.module, held_out, teacher.spec)
    assert found["disagree"] == found["disagree_hard"] == found["disagree_mix"] == found["disagree_class_max"] == 0
    assert found["kl"] == pytest.approx(0.0, abs=1e-5)


def test_a_harder_pruned_student_disagrees_more(teacher, held_out):
    mild, harsh = (features(teacher.module, prune(teacher, MagnitudePruning(s)).model, held_out, teacher.spec)
                   for s in (0.3, 0.95))
    for name in ("disagree", "disagree_hard", "disagree_mix", "kl"):
        assert harsh[name] > mild[name], name


def test_label_misfit_is_minus_the_log_of_the_share_the_teacher_labels_as_their_target(teacher, held_out):
    from edgefree.recover.inversion import SyntheticSet

    with torch.no_grad():
        said = teacher.module.eval()(held_out.images).argmax(1)
    half = torch.where(torch.arange(len(said)) % 2 == 0, said, (said + 1) % 10)  # every other label is wrong
    assert features(teacher.module, teacher.module, SyntheticSet(held_out.images, said), teacher.spec)[
        "label_misfit"] == pytest.approx(0.0)
    assert features(teacher.module, teacher.module, SyntheticSet(held_out.images, half), teacher.spec)[
        "label_misfit"] == pytest.approx(-math.log(0.5), abs=0.03)
    none = SyntheticSet(held_out.images, (said + 1) % 10)  # no dream labelled as its target: counted as one
    assert features(teacher.module, teacher.module, none, teacher.spec)["label_misfit"] == pytest.approx(
        math.log(len(said)))


def test_harder_views_of_signals_keep_their_shape():
    from edgefree.models import InputSpec
    from edgefree.recover.estimate import _harder

    spec = InputSpec(shape=(4, 40), mean=(0.0,) * 4, std=(1.0,) * 4, value_range=(-50.0, 50.0))
    x = torch.arange(2 * 4 * 40, dtype=torch.float32).view(2, 4, 40) / 100
    import edgefree.recover.estimate as estimate

    old, estimate.NOISE_STD = estimate.NOISE_STD, 0.0
    try:
        view = _harder(x, spec, torch.Generator().manual_seed(0))
    finally:
        estimate.NOISE_STD = old
    assert view.shape == x.shape
    # a shift in time, the same for every channel: each channel's samples are consecutive
    diffs = view.diff(dim=-1)
    assert torch.all((diffs == 0) | torch.isclose(diffs, torch.tensor(0.01), atol=1e-4))


@pytest.mark.parametrize("fit, measured, expected", [
    ({"features": ["disagree_hard"], "intercept": -2.0, "coef": [0.5]}, {"disagree_hard": 10.0}, 3.0),
    ({"features": ["disagree_hard"], "intercept": -2.0, "coef": [0.5]}, {"disagree_hard": 1.0}, 0.0),
    ({"features": ["disagree_hard"], "transform": "log1p", "intercept": 0.0, "coef": [2.0]}, {"disagree_hard": 3.0},
     15.0),
])
def test_predict_applies_the_fitted_form_and_never_goes_below_zero(fit, measured, expected):
    assert predict(fit, measured) == pytest.approx(expected)


def test_predict_of_an_envelope_is_the_largest_of_its_parts():
    part = {"transform": "log1p", "intercept": 0.0}
    fit = {"features": ["disagree", "disagree_mix"], "transform": "log1p-max",
           "parts": [{**part, "features": ["disagree"], "coef": [1.0]}, {**part, "features": ["disagree_mix"], "coef": [2.0]}]}
    assert predict(fit, {"disagree": 9.0, "disagree_mix": 1.0}) == pytest.approx(9.0)  # the first part: 9 against 3
    assert predict(fit, {"disagree": 1.0, "disagree_mix": 3.0}) == pytest.approx(15.0)  # the second: 15 against 1
    assert predict(fit, {"disagree": 80.0, "disagree_mix": 80.0}, classes=2) == pytest.approx(50.0)


def test_predict_never_goes_beyond_a_student_at_chance():
    fit = {"features": ["disagree"], "intercept": 0.0, "coef": [2.0]}
    assert predict(fit, {"disagree": 80.0}) == 160.0
    assert predict(fit, {"disagree": 80.0}, classes=10) == pytest.approx(90.0)
    assert predict(fit, {"disagree": 80.0}, classes=2) == pytest.approx(50.0)
    logit = {"features": ["disagree"], "intercept": -5.0, "coef": [0.1], "transform": "logit"}
    assert predict(logit, {"disagree": 50.0}, classes=10) == pytest.approx(45.0)  # half a student at chance
    assert predict(logit, {"disagree": 0.0}, classes=10) < predict(logit, {"disagree": 10.0}, classes=10) < 2.0
    assert predict(logit, {"disagree": 100.0}, classes=2) < 50.0


def test_advice_only_for_a_large_estimate():
    assert advice(2.9, remedy("deepinversion", 2, 40), "a milder --sparsity") is None
    line = advice(7.5, remedy("deepinversion", 2, 40), "a milder --sparsity")
    assert "~7.5" in line and "--max-drop" in line and "--recipe generator" in line and "\n" not in line


def test_the_remedy_fits_the_build():
    assert "--recipe generator" in remedy("deepinversion", 2, 40)  # an image dreamed pixel by pixel
    assert remedy("generator", 2, 40) == "distil longer (--epochs 80)"  # what --recipe thorough adds
    assert remedy("generator", 2, 80) == "distil longer (--epochs 160)"
    assert remedy("deepinversion", 1, 40) == "distil longer (--epochs 80)"  # a signal: the generator did not beat fast


def test_the_large_drop_line_names_the_options_this_build_used(tmp_path):
    def milder(**kwargs):
        return _milder(BuildConfig(model=tmp_path / "t.pt", arch="resnet20-cifar", **kwargs))

    assert milder(prune=(MagnitudePruning(0.75),)) == "a milder --sparsity"
    assert milder(prune=(ChannelPruning(macs_target=0.5), MagnitudePruning(0.5))) == \
        "a larger --macs-target or a milder --sparsity"
    assert milder(prune=(ChannelPruning(ratio=0.3, depth=0.5),)) == "a smaller --channel-ratio or a smaller --depth"
    assert milder(prune=(ChannelPruning(),), latency_target=LatencyTarget(ratio=0.5)) == "a larger --latency-target"
    assert "a larger --latency-target" in advice(9.0, "distil longer (--epochs 80)", "a larger --latency-target")


def test_held_out_dreams_have_their_own_seed_and_fewer_images():
    config = BuildConfig(synthesis=SynthesisConfig(images=2048, batch_size=256), seed=3)
    held = held_out_config(config)
    assert held.seed != config.seed
    assert held.synthesis.images == 256 and held.synthesis.batch_size <= 64 and held.synthesis.shards == 1
    small = held_out_config(BuildConfig(synthesis=SynthesisConfig(images=64), seed=3))
    assert small.synthesis.images == 64


def test_max_drop_is_validated_and_round_trips(tmp_path):
    with pytest.raises(EdgefreeError, match="max_drop"):
        BuildConfig(max_drop=-1.0)
    with pytest.raises(EdgefreeError, match="pruning stage"):
        BuildConfig(max_drop=1.0, prune=())
    from edgefree.config import load_config_file, to_toml

    path = tmp_path / "b.toml"
    path.write_text(to_toml(BuildConfig(max_drop=1.5)))
    assert BuildConfig.from_dict(load_config_file(path)).max_drop == 1.5


def test_channel_pruning_searches_the_macs_target_and_keeps_the_magnitude_stage():
    from edgefree.budget import stages_at

    config = BuildConfig(max_drop=1.0, prune=(ChannelPruning(macs_target=0.5), MagnitudePruning(0.6)))
    assert stages_at(config, 0.3) == (ChannelPruning(macs_target=0.3), MagnitudePruning(0.6))
    assert stages_at(BuildConfig(max_drop=1.0), 0.4) == (MagnitudePruning(0.4),)


def test_with_a_latency_target_the_knob_is_the_sparsity_on_its_widths_or_nothing():
    from edgefree.budget import stages_at, knob

    latency = LatencyTarget(ratio=0.6)
    both = BuildConfig(max_drop=1.0, prune=(ChannelPruning(), MagnitudePruning(0.5)), latency_target=latency)
    assert knob(both) == "sparsity" and stages_at(both, 0.3) == (ChannelPruning(), MagnitudePruning(0.3))
    assert knob(BuildConfig(max_drop=1.0, prune=(ChannelPruning(),), latency_target=latency)) is None
    assert knob(BuildConfig(max_drop=1.0, prune=(ChannelPruning(), MagnitudePruning(0.5)))) == "macs_target"


def test_a_macs_target_the_channel_search_cannot_reach_is_a_candidate_over_the_budget(teacher, held_out, monkeypatch):
    import edgefree.budget as budget
    from edgefree.recover.channels import lowest_macs_kept

    strongest = budget._strongest_macs_target(teacher, ChannelPruning())
    assert strongest >= max(budget.MACS_TARGET[1], lowest_macs_kept(teacher.module, teacher.spec, ChannelPruning()))
    reached = budget.prune_gradually

    def unreachable_below_half(teacher, stages, *args):
        if stages[0].macs_target < 0.5:
            raise UnreachableTargetError(f"--macs-target {stages[0].macs_target:g} cannot be reached: ...")
        return reached(teacher, stages, *args)

    monkeypatch.setattr(budget, "prune_gradually", unreachable_below_half)
    config = BuildConfig(max_drop=100.0, prune=(ChannelPruning(),), reconstruct=ReconstructConfig(images=32))
    found = budget.search_budget(teacher, config, held_out, held_out)
    first, second = found["candidates"][:2]
    assert first["value"] == strongest and first["estimated_drop"] is None
    assert "cannot be reached" in first["unreachable"]
    assert second["value"] > 0.5 and second["estimated_drop"] is not None  # the bisection went milder
    built = [c["value"] for c in found["candidates"] if c["estimated_drop"] is not None]
    assert found["met"] and found["chosen"] == min(built)


def test_a_macs_target_too_mild_to_remove_a_channel_sends_the_search_stronger(teacher, held_out, monkeypatch):
    import edgefree.budget as budget

    def mild_above_half(teacher, stages, *args):
        raise MildTargetError(f"--macs-target {stages[0].macs_target:g} removes no channel from this model: ...")

    monkeypatch.setattr(budget, "prune_gradually", mild_above_half)
    config = BuildConfig(max_drop=1.0, prune=(ChannelPruning(),), reconstruct=ReconstructConfig(images=32))
    found = budget._try(teacher, config, 0.9, held_out, held_out, "cpu", {}, None)
    assert found["too_mild"] and found["estimated_drop"] is None and "removes no channel" in found["unreachable"]

    def candidate(teacher, config, value, *args):  # too mild above 0.5, over the budget below 0.3
        if value > 0.5:
            return {"value": value, "estimated_drop": None, "unreachable": "...", "too_mild": True, "seconds": 0}
        return {"value": value, "estimated_drop": 10.0 if value < 0.3 else 0.5, "seconds": 0}

    monkeypatch.setattr(budget, "_try", candidate)
    monkeypatch.setattr(budget, "_strongest_macs_target", lambda *args: 0.1)
    found = budget.search_budget(teacher, config, held_out, held_out, fit={})
    assert [c["value"] for c in found["candidates"]][:3] == [0.1, 0.55, 0.325]
    assert found["met"] and 0.3 <= found["chosen"] <= 0.5


def test_the_search_with_a_latency_target_needs_its_widths(teacher, held_out):
    from edgefree.budget import search_budget

    config = BuildConfig(max_drop=1.0, prune=(ChannelPruning(), MagnitudePruning()), latency_target=LatencyTarget())
    with pytest.raises(EdgefreeError, match="needs its widths: pass widths"):
        search_budget(teacher, config, held_out, held_out)


def _latency_budget_build(tmp_path, pruning):
    return _budget_build(tmp_path, "--max-drop", "1.0", "--pruning", pruning, "--latency-target", "0.8",
                         "--reconstruct-images", "64")


def test_max_drop_with_a_latency_target_searches_the_sparsity_on_the_targets_widths(tmp_path):
    from edgefree.demo import default_teacher

    result = _latency_budget_build(tmp_path, "channel,magnitude")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    budget, latency = report["budget"], report["latency_target"]
    assert budget["knob"] == "sparsity" and budget["candidates"][0]["value"] == 0.97
    assert latency["target_ratio"] == 0.8 and report["sparsity_target"] == budget["chosen"]
    assert budget["met"] or budget["candidates"][-1]["value"] == 0.0  # missed: the widths alone were tried too
    widths = report["pruning"]["latency"]["layout"]["widths"]  # what the latency target chose, before the search
    removed = {name: len(idxs) for name, op, idxs in report["pruning"]["plan"]["channels"]
               if op == "prune_out_channels"}
    layers = dict(default_teacher().module.named_modules())
    assert widths and all(layers[name].out_channels - removed.get(name, 0) == kept for name, kept in widths.items())
    assert "latency-widths" in report["seconds"] and "budget" in report["seconds"]


@pytest.fixture
def measured_far(monkeypatch):
    """The evaluation data measures every student 40 points below the teacher (evaluated first)."""
    import itertools

    scores = itertools.chain([90.0], itertools.repeat(50.0))
    monkeypatch.setattr("edgefree.pipeline.accuracy", lambda *args: next(scores))


def test_max_drop_with_a_latency_target_alone_checks_its_student_against_the_budget(tmp_path, monkeypatch,
                                                                                      measured_far):
    import edgefree.recover.estimate as estimate

    far = {"features": ["disagree"], "intercept": 5.0, "coef": [1.0], "transform": None, "students": 0,
           "command": "test"}  # every student is estimated at >= 5 points
    monkeypatch.setattr(estimate, "load_fit", lambda path=None: far)
    monkeypatch.setattr("edgefree.pipeline.load_fit", lambda path=None: far)
    result = _latency_budget_build(tmp_path, "channel")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["budget"] is None and report["latency_target"]["target_ratio"] == 0.8
    checked = report["estimate"]["max_drop"]
    assert checked["max_drop"] == 1.0 and checked["met"] is False
    assert checked["measured_met"] is False and report["estimate"]["measured_drop"] == 40.0
    assert "budget: --max-drop 1 checked on the student whose channel widths the latency target chose: estimated ~" \
        in result.output and "points, missed" in result.output
    assert "Checked, not searched" in (tmp_path / "out" / "report.md").read_text()
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1
    assert "--max-drop 1 missed: the student of --latency-target 0.8 is estimated at ~" in warnings[0]


def _budget_build(tmp_path, *extra):
    config = tmp_path / "b.toml"
    config.write_text("export = false\n")  # --max-drop composes with --config
    return CliRunner().invoke(cli, ["build", "--config", str(config), "--out", str(tmp_path / "out"), *TINY, *extra],
                              catch_exceptions=False)


def test_max_drop_builds_the_strongest_candidate_within_the_budget(tmp_path):
    result = _budget_build(tmp_path, "--max-drop", "1.0")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    budget = report["budget"]
    assert budget["knob"] == "sparsity" and 1 <= len(budget["candidates"]) <= 5
    assert budget["candidates"][0]["value"] == 0.97  # the strongest end is tried first
    if budget["met"]:
        within = [c["value"] for c in budget["candidates"] if c["estimated_drop"] <= 1.0]
        assert budget["chosen"] == max(within)
    assert report["sparsity_target"] == budget["chosen"]
    assert report["config"]["max_drop"] == 1.0
    assert f"budget: --max-drop 1 chose sparsity {budget['chosen']:g}" in result.output
    assert "estimated drop ~" in result.output and "(no data used; a rough guide" in result.output
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Budget: an estimated drop of at most 1 point" in md and "## Accuracy drop: estimated without data, and measured" in md
    assert "The measured drop, on the evaluation data, is the figure to trust: here the estimate read" in md


def test_a_budget_that_cannot_be_met_says_so_with_the_closest(tmp_path, monkeypatch, measured_far):
    import edgefree.recover.estimate as estimate

    unreachable = {"features": ["disagree"], "intercept": 5.0, "coef": [1.0], "transform": None, "students": 0,
                   "command": "test"}  # every student is estimated at >= 5 points
    monkeypatch.setattr(estimate, "load_fit", lambda path=None: unreachable)
    monkeypatch.setattr("edgefree.pipeline.load_fit", lambda path=None: unreachable)
    result = _budget_build(tmp_path, "--max-drop", "1.0")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["budget"]["met"] is False
    assert len(report["budget"]["candidates"]) == 5
    closest = min(report["budget"]["candidates"], key=lambda c: c["estimated_drop"])
    assert report["budget"]["chosen"] == closest["value"]
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "--max-drop 1 missed" in warnings[0]
    assert ": none was estimated within it, this one came closest" in result.output
    assert "NO candidate was estimated within the budget" in (tmp_path / "out" / "report.md").read_text()


def test_every_build_estimates_its_students(tmp_path):
    from edgefree.pipeline import build

    report = build(BuildConfig(out=tmp_path / "o", synthesis=SynthesisConfig(images=32, iterations=5),
                               distill=DistillConfig(epochs=1), export=None), progress=False)
    e = report["estimate"]
    assert set(e) >= {"reconstructed", "recovered", "measured_drop", "held_out", "fit", "warnings"}
    assert e["held_out"]["images"] == 32 and e["held_out"]["seed"] != report["seed"]
    assert e["measured_drop"] == pytest.approx(report["accuracy"]["teacher"] - report["accuracy"]["recovered"], abs=0.01)
    assert e["recovered"]["drop"] >= 0 and e["fit"]["students"] >= 15 and "command" not in e["fit"]
    text = (tmp_path / "o" / "report.md").read_text()  # the fit's own provenance, not the command that fitted it
    assert f"fitted on {e['fit']['students']} students of" in text and "fidelity.py --" not in text


def test_max_drop_keeps_the_layers_filter_fn_leaves_dense(tmp_path):
    """The searched stages are the caller's own, so a Python ``filter_fn`` (which no dict carries) still holds."""
    from edgefree.pipeline import build

    dense = "0.0"  # the first convolution

    def keep(module, name):
        return name != dense

    config = BuildConfig(max_drop=100.0, prune=(MagnitudePruning(filter_fn=keep),), out=str(tmp_path / "out"),
                         synthesis=SynthesisConfig(images=64, iterations=15), distill=DistillConfig(epochs=1),
                         reconstruct=ReconstructConfig(images=32), export=None)
    report = build(config, progress=False)
    assert report["budget"]["chosen"] == 0.97  # the strongest end, within a budget of 100 points
    weights = torch.load(tmp_path / "out" / "student.pt", weights_only=True)
    assert (weights[f"{dense}.weight"] != 0).all()
    assert (weights["1.0.weight"] == 0).float().mean() > 0.5  # the others pruned


def test_a_budget_the_estimate_met_and_the_evaluation_data_missed_says_so(teacher, held_out, monkeypatch):
    import edgefree.pipeline as pipeline

    monkeypatch.setattr(pipeline, "estimate", lambda *args: {"drop": 0.5})
    config = BuildConfig(max_drop=1.0)
    found = pipeline._estimates(teacher, config, [("recovered", teacher.module)], held_out,
                                {"teacher": 99.0, "recovered": 79.0}, {"met": True}, {})  # the search met it
    assert found["max_drop"] == {"max_drop": 1.0, "met": True, "measured_met": False}
    [line] = found["warnings"]
    assert line == ("--max-drop 1 missed on the evaluation data: the recovered student lost 20.00 points where the "
                    "estimate read ~0.5: pass a smaller --max-drop (the search then prunes less)")
    unmeasured = pipeline._estimates(teacher, config, [("recovered", teacher.module)], held_out,
                                     {"teacher": None}, {"met": True}, {})
    assert unmeasured["max_drop"]["measured_met"] is None
    assert not [line for line in unmeasured["warnings"] if "--max-drop" in line]


def test_a_budget_the_evaluation_data_met_is_not_warned_missed_by_the_estimate(teacher, held_out, monkeypatch):
    import edgefree.pipeline as pipeline

    monkeypatch.setattr(pipeline, "estimate", lambda *args: {"drop": 2.5})
    students, budget = [("recovered", teacher.module)], {"met": True, "knob": "sparsity", "chosen": 0.5}
    met = pipeline._estimates(teacher, BuildConfig(max_drop=1.0), students, held_out,
                              {"teacher": 99.0, "recovered": 99.0}, budget, {})
    assert met["max_drop"] == {"max_drop": 1.0, "met": False, "measured_met": True} and met["warnings"] == []
    line, few = pipeline._estimates(teacher, BuildConfig(max_drop=1.0), students, held_out, {"teacher": None},
                                    budget, {})["warnings"]  # without evaluation data the estimate is all there is
    assert few.startswith("the estimate rests on 96 held-out dreams") and line.startswith("--max-drop 1 missed: the recovered student is estimated at ~2.5 points")


def test_a_distillation_that_undid_the_refit_says_so(teacher, held_out, monkeypatch):
    import copy

    import edgefree.pipeline as pipeline

    refit, distilled = teacher.module, copy.deepcopy(teacher.module)
    monkeypatch.setattr(pipeline, "estimate", lambda t, model, *args: {"drop": 3.8 if model is refit else 38.1})
    students = [("reconstructed", refit), ("recovered", distilled)]
    config = BuildConfig(distill=DistillConfig(epochs=1, lr=0.01))
    estimated = pipeline._estimates(teacher, config, students, held_out, {"teacher": None}, None, {})["warnings"]
    assert ("distillation left the student worse than the refit before it (estimated drop ~3.8 -> ~38.1 points); the "
            "student written is the distilled one: distil longer (--epochs 10) or at a lower rate (--distill-lr "
            "0.001)") in estimated
    measured = {"teacher": 99.0, "reconstructed": 98.0, "recovered": 97.5}  # the evaluation data says it did not
    assert not any(line.startswith("distillation left") for line in pipeline._estimates(
        teacher, config, students, held_out, measured, None, {})["warnings"])
    worse = {"teacher": 99.0, "reconstructed": 98.0, "recovered": 90.0}  # and here that it did: the data wins
    assert any(line.startswith("distillation left the student worse than the refit before it (top-1 98.00% -> "
                               "90.00% on the evaluation data)") for line in pipeline._estimates(
        teacher, config, students, held_out, worse, None, {})["warnings"])


def test_an_estimate_on_few_held_out_dreams_says_how_far_it_can_be_trusted(teacher, held_out, monkeypatch):
    import edgefree.pipeline as pipeline

    monkeypatch.setattr(pipeline, "estimate", lambda *args: {"drop": 0.5})
    students = [("recovered", teacher.module)]
    [line] = pipeline._estimates(teacher, BuildConfig(), students, held_out, {"teacher": None}, None, {})["warnings"]
    assert line.startswith("the estimate rests on 96 held-out dreams") and "about +-5 points" in line
    measured = pipeline._estimates(teacher, BuildConfig(), students, held_out, {"teacher": 99.0, "recovered": 99.0},
                                   None, {})
    assert measured["warnings"] == []  # the evaluation data measured the drop: no guess to qualify


@pytest.mark.parametrize("options, refused", [
    (["--max-drop", "1", "--sparsity", "0.5"], "--sparsity would be overridden"),
    (["--max-drop", "1", "--pruning", "channel", "--channel-ratio", "0.3"], "--channel-ratio would be overridden"),
    (["--max-drop", "1", "--pruning", "channel,magnitude", "--macs-target", "0.5"], "--macs-target would be"),
])
def test_max_drop_refuses_an_option_that_sets_what_it_searches(tmp_path, options, refused):
    result = CliRunner().invoke(cli, ["build", "--out", str(tmp_path / "o"), *options])
    assert result.exit_code == 2 and refused in result.output, result.output


def test_max_drop_from_a_file_or_the_environment_refuses_them_too(tmp_path):
    config = tmp_path / "b.toml"
    config.write_text("max_drop = 1.0\n")
    result = CliRunner().invoke(cli, ["build", "--config", str(config), "--out", str(tmp_path / "o"),
                                      "--sparsity", "0.3"])
    assert result.exit_code == 2 and f"max_drop = 1 in {config} chooses the sparsity itself" in result.output
    result = CliRunner().invoke(cli, ["build", "--out", str(tmp_path / "o"), "--max-drop", "1"],
                                env={"EDGEFREE_BUILD_SPARSITY": "0.5"}, auto_envvar_prefix="EDGEFREE")
    assert result.exit_code == 2 and "$EDGEFREE_BUILD_SPARSITY would be overridden" in result.output, result.output


def test_max_drop_on_channel_then_magnitude_takes_the_magnitude_sparsity(tmp_path):
    result = CliRunner().invoke(cli, ["build", "--out", str(tmp_path / "o"), "--max-drop", "1", "--pruning",
                                      "channel,magnitude", "--sparsity", "0.3", "--save-config",
                                      str(tmp_path / "c.toml")])
    assert result.exit_code == 0, result.output
    assert "sparsity = 0.3" in (tmp_path / "c.toml").read_text()  # the search sets the MACs target only


def test_a_search_candidates_warnings_are_not_printed(capsys):
    from edgefree.errors import muted_warnings, warn

    with muted_warnings():
        warn("a trial student's problem")
    warn("the build's own")
    assert capsys.readouterr().err == "Warning: the build's own\n"


def test_a_large_estimate_the_evaluation_data_contradicts_is_not_advised_on(teacher, held_out, monkeypatch):
    import edgefree.pipeline as pipeline

    monkeypatch.setattr(pipeline, "estimate", lambda *args: {"drop": 9.0})
    students = [("recovered", teacher.module)]
    small = pipeline._estimates(teacher, BuildConfig(), students, held_out, {"teacher": 99.0, "recovered": 98.5},
                                None, {})
    assert small["warnings"] == []  # measured 0.5 points: the guess gives way
    for scores in ({"teacher": None}, {"teacher": 99.0, "recovered": 90.0}):  # no data, or a large measured drop
        line, *few = pipeline._estimates(teacher, BuildConfig(), students, held_out, scores, None, {})["warnings"]
        assert line.startswith("the estimated drop (~9.0 points) is large: prune less")
        assert len(few) == (scores["teacher"] is None)  # and, with nothing measured, how firm the estimate is
