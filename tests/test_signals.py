"""1-D sensor signals (Conv1d + BatchNorm1d over N x C x L) through every stage, on the zoo's
``signal-cnn1d`` with random weights: synthesis, magnitude and channel pruning, refit, distillation,
export with parity on ONNX / OpenVINO / ExecuTorch, the device runner's inputs, evaluation data,
the contact sheet. Budgets are tiny: these check shapes and plumbing, not recovered accuracy
(``benchmarks/signal_recovery.py`` measures that on a trained teacher)."""

import numpy as np
import pytest
import torch
from torch import nn

from edgefree.bench import runner
from edgefree.config import (ChannelPruning, DistillConfig, ExportConfig, MagnitudePruning, ReconstructConfig,
                             SynthesisConfig)
from edgefree.data import LabeledSignals, load_eval_data
from edgefree.errors import DataError, EdgefreeError
from edgefree.evaluate import accuracy
from edgefree.export import export_student
from edgefree.models import InputSpec, load_teacher
from edgefree.recover import distill, prune, reconstruct, synthesize
from edgefree.recover.inversion import SyntheticSet, random_view, mirrors
from edgefree.recover.prune import sparsity_report
from edgefree.recover.synthesize import save_contact_sheet

TINY = SynthesisConfig(images=32, batch_size=16, iterations=4, jitter=8, warm_start=0.5, tv_l2_weight=0.01,
                       shards=1)


@pytest.fixture(scope="module")
def teacher():
    """signal-cnn1d with random weights and BatchNorm statistics of random signals (a few train-mode passes)."""
    torch.manual_seed(0)
    teacher = load_teacher("signal-cnn1d", num_classes=2)
    teacher.module.train()
    with torch.no_grad():
        for seed in range(4):
            teacher.module(teacher.spec.example_inputs(32, seed)[0])
    teacher.module.eval()
    return teacher


@pytest.fixture(scope="module")
def dreams(teacher):
    return synthesize(teacher, TINY, progress=False)


@pytest.fixture(scope="module")
def eval_npz(teacher, tmp_path_factory):
    """40 raw signals in the sensor's units, labelled by the teacher itself (so accuracy is known: 100%)."""
    spec = teacher.spec
    raw = torch.rand(40, *spec.shape, generator=torch.Generator().manual_seed(1)) * 300 + 700
    with torch.no_grad():
        labels = teacher.module(spec.normalize(raw)).argmax(1)
    path = tmp_path_factory.mktemp("signals") / "eval.npz"
    np.savez(path, x=raw.numpy(), y=labels.numpy(), class_names=np.asarray(spec.class_names))
    return path


def test_the_zoo_model_is_1d_with_a_signal_spec(teacher):
    spec = teacher.spec
    assert spec.shape == (4, 510) and spec.rank == 1 and spec.value_range == (0.0, 1650.0)
    assert any(isinstance(m, nn.BatchNorm1d) for m in teacher.module.modules())
    low, high = spec.bounds()
    assert low.shape == (1, 4, 1) and torch.all(low < high)
    assert teacher.module(*spec.example_inputs(3)).shape == (3, 2)


def test_synthesis_dreams_signals_within_the_value_range(teacher, dreams):
    spec = teacher.spec
    assert tuple(dreams.images.shape) == (32, 4, 510) and torch.isfinite(dreams.images).all()
    low, high = spec.bounds()
    assert torch.all(dreams.images >= low - 1e-5) and torch.all(dreams.images <= high + 1e-5)
    curve = dreams.stats["bn_loss_curves"][0]
    assert curve[-1] < curve[0]  # the BatchNorm statistics move towards the stored ones


def test_signals_are_shifted_in_time_not_mirrored_by_default():
    g = torch.Generator().manual_seed(0)
    signal = torch.arange(20.0).view(1, 1, 20)
    config = SynthesisConfig(jitter=3)
    assert not mirrors(config, 1) and mirrors(config, 2)
    assert mirrors(SynthesisConfig(flip=True), 1) and not mirrors(SynthesisConfig(flip=False), 2)
    views = [random_view(signal, config, g) for _ in range(20)]
    # each view is the signal rolled by up to 3 samples either way, never reversed
    assert all(any(torch.equal(v, signal.roll(s, -1)) for s in range(-3, 4)) for v in views)
    assert len({tuple(v.flatten().tolist()) for v in views}) > 1


def test_the_dream_generator_draws_signals_in_the_sensor_range(teacher, tmp_path):
    config = SynthesisConfig(method="generator", images=32, batch_size=16, iterations=40, lr=0.01, jitter=8,
                             bn_weight=10.0)
    generated = synthesize(teacher, config, seed=0, progress=False)
    assert generated.images.shape == (32, 4, 510)
    assert generated.stats["bn_loss_last"] < 0.8 * generated.stats["bn_loss_first"]  # it learns the statistics
    raw = teacher.spec.denormalize(generated.images)  # the sensor's units, within value_range
    low, high = teacher.spec.value_range
    assert raw.min() >= low - 1e-3 and raw.max() <= high + 1e-3 and raw.std() > 0
    fresh = generated.generator.sample(teacher.spec, generated.labels, torch.Generator().manual_seed(1))
    assert fresh.shape == generated.images.shape and not torch.equal(fresh, generated.images)
    generated.save(tmp_path / "set.pt")
    again = SyntheticSet.load(tmp_path / "set.pt").generator.sample(teacher.spec, generated.labels,
                                                                    torch.Generator().manual_seed(1))
    assert torch.equal(again, fresh)


def test_contact_sheet_plots_one_row_of_traces_per_class(teacher, dreams, tmp_path):
    from PIL import Image

    path = tmp_path / "synthetic.png"
    save_contact_sheet(dreams, teacher.spec, path)
    with Image.open(path) as sheet:
        width, height = sheet.size
        colours = len(set(sheet.convert("RGB").get_flattened_data()))
    assert width > height and colours > 10  # a plot of lines, not a blank image


def test_magnitude_pruning_refit_and_distillation_on_signals(teacher, dreams):
    pruned = prune(teacher, MagnitudePruning(sparsity=0.75))
    refit = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=32, batch_size=16), progress=False)
    student = distill(teacher, refit, dreams, DistillConfig(epochs=2, batch_size=16, mixup=0.4, feature_weight=1.0),
                      progress=False)
    weights = dict(student.model.named_parameters())
    assert all(torch.all(weights[name][mask == 0] == 0) for name, mask in pruned.masks.items())  # masks hold
    assert sparsity_report(pruned.model)["overall"] == pytest.approx(0.75, abs=0.01)
    assert all(np.isfinite(student.stats["loss_per_epoch"]))
    x = dreams.images[:8]
    with torch.no_grad():
        gap = [(m(x) - teacher.module(x)).pow(2).mean().item() for m in (pruned.model, refit.model)]
    assert gap[1] < gap[0]  # the least-squares refit brings the student's logits back towards the teacher's


def test_channel_pruning_of_conv1d_layers(teacher, dreams):
    student = prune(teacher, ChannelPruning(ratio=0.5, round_to=8))
    convs = [(m.out_channels, t.out_channels) for m, t in zip(student.model.modules(), teacher.module.modules())
             if isinstance(m, nn.Conv1d)]
    assert any(kept < full for kept, full in convs) and all(kept % 8 == 0 for kept, _ in convs)
    bns = [m.num_features for m in student.model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns == [kept for kept, _ in convs]
    refit = reconstruct(teacher, student, dreams, ReconstructConfig(images=32, batch_size=16), progress=False)
    assert refit.model(dreams.images[:4]).shape == (4, 2)
    distilled = distill(teacher, refit, dreams, DistillConfig(epochs=1, batch_size=16, feature_weight=1.0),
                        progress=False)
    assert distilled.model(dreams.images[:4]).shape == (4, 2)


def test_signal_eval_data_keeps_raw_values_and_normalizes_them(teacher, eval_npz):
    spec = teacher.spec
    data = load_eval_data(eval_npz, spec)
    assert isinstance(data, LabeledSignals) and len(data) == 40 and data.values.dtype == torch.float32
    raw = torch.from_numpy(np.load(eval_npz)["x"])
    assert torch.equal(data.values, raw)  # sensor units as given: not scaled like pixels
    assert torch.allclose(data.normalized(spec, slice(2, 5)), spec.normalize(raw[2:5]))
    assert accuracy(teacher.module, data, teacher.spec) == 100.0


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 4, 100), np.float32), "y": np.zeros(3, np.int64)}, "are \\(4, 100\\).*takes \\(4, 510\\)"),
    ({"signals": np.zeros((3, 4, 510), np.float32)}, "not the arrays x and y"),
    ({"x": np.zeros((3, 4, 510), np.float32), "y": np.zeros(3, np.float32)}, "one integer label"),
    ({"x": np.full((3, 4, 510), np.nan, np.float32), "y": np.zeros(3, np.int64)}, "NaN"),
    ({"x": np.zeros((3, 4, 510), np.float32), "y": np.zeros(3, np.int64), "class_names": np.asarray(["a", "b"])},
     "relabel"),
])
def test_bad_signal_eval_data_is_one_clear_error(teacher, tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_eval_data(path, teacher.spec)


def test_a_signal_model_wants_an_npz_not_images(teacher, tmp_path):
    with pytest.raises(DataError, match="not an .npz file: a signal model"):
        load_eval_data("digits", teacher.spec)
    with pytest.raises(DataError, match="nope.npz does not exist: check the path"):
        load_eval_data(tmp_path / "nope.npz", teacher.spec)


def test_the_device_runner_makes_inputs_of_the_manifests_shape(teacher):
    spec = teacher.spec
    x = runner.default_inputs({"model": {"input": spec.to_dict()}}, count=2)
    assert x.shape == (2, 4, 510) and x.dtype == np.float32
    raw = x * np.asarray(spec.std, np.float32).reshape(1, -1, 1) + np.asarray(spec.mean, np.float32).reshape(1, -1, 1)
    assert raw.min() >= -1e-2 and raw.max() <= 1650 + 1e-2 and raw.max() > 1000  # the sensor's range, not [0, 1]


def test_export_with_parity_on_every_runtime(teacher, dreams, eval_npz, tmp_path):
    student = prune(teacher, MagnitudePruning(sparsity=0.75)).model
    data = load_eval_data(eval_npz, teacher.spec)
    manifest = export_student(student, teacher.spec, ExportConfig(precisions=("fp32",), check_images=16, calibration_images=16),
                              tmp_path / "artifacts", dreams, data, arch="signal-cnn1d")
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "openvino", "executorch"}
    assert manifest["failed"] == [] and manifest["model"]["input"]["shape"] == [4, 510]
    for artifact in manifest["artifacts"]:
        assert artifact["parity"]["passed"] and artifact["parity"]["max_abs_diff"] < 1e-4
        assert artifact["accuracy"] == pytest.approx(manifest["reference"]["accuracy"], abs=0.01)
    ran = runner.run(tmp_path / "artifacts" / "manifest.json", tmp_path / "run.json", runs=2, warmup=1)
    for name, entry in ran["artifacts"].items():  # the device runner, on its own default signal input
        assert entry["error"] is None and entry["latency_ms"], name
        assert np.load(tmp_path / entry["outputs_npy"]).shape == (1, 2)


def test_spec_round_trips_with_its_value_range():
    spec = InputSpec((12, 1000), mean=(0.0,) * 12, std=(2.0,) * 12, value_range=(-5.0, 5.0))
    again = InputSpec(**{k: tuple(v) for k, v in spec.to_dict().items()})
    assert again == spec and again.rank == 1
    with pytest.raises(EdgefreeError, match="value range"):
        InputSpec((1, 10), mean=(0.0,), std=(1.0,), value_range=(1.0, 1.0))


def test_thorough_dreams_a_signal_teacher_as_fast_does(teacher, tmp_path):
    from edgefree.config import BuildConfig, recipe
    from edgefree.pipeline import build

    torch.save(teacher.module.state_dict(), tmp_path / "t.pt")
    given = recipe("thorough").synthesis.replace(images=32, batch_size=16, iterations=2)
    report = build(BuildConfig(out=tmp_path / "o", model=tmp_path / "t.pt", arch="signal-cnn1d", num_classes=2,
                               recipe="thorough", synthesis=given, reconstruct=ReconstructConfig(images=16),
                               distill=DistillConfig(epochs=1), prune=(MagnitudePruning(0.5),), export=None,
                               cache=tmp_path / "cache"), progress=False)
    assert report["synthesis"]["method"] == "deepinversion" and report["synthesis"]["images"] == 32
    assert report["config"]["synthesis"]["warm_start"] == recipe("fast").synthesis.warm_start
    assert report["recipe_overrides"]["synthesis"] == {"images": 32, "batch_size": 16, "iterations": 2,
                                                        "first_iterations": 2}


def test_a_crop_scale_resizes_a_random_crop_of_at_least_that_share_back_to_the_input_size():
    from edgefree.errors import EdgefreeError
    from edgefree.recover.inversion import crop_size

    for sizes in ((32, 32), (16, 40), (7, 3)):  # every share and aspect: inside the image, at least that share
        for share in (0.05, 0.25, 0.5, 0.87, 0.99, 1.0):
            for aspect in (3 / 4, 1.0, 4 / 3):
                crop = crop_size(sizes, share, aspect)
                assert all(1 <= c <= n for c, n in zip(crop, sizes)), (sizes, share, aspect, crop)
                assert crop[0] * crop[1] >= share * sizes[0] * sizes[1] - 1e-9, (sizes, share, aspect, crop)
    assert crop_size((32, 32), 1.0, 4 / 3) == (32, 32) and crop_size((40,), 0.5, 1.0) == (20,)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 16, 16, generator=g)
    config = SynthesisConfig(jitter=0, flip=False, crop_scale=0.25)
    views = [random_view(image, config, g) for _ in range(10)]
    assert all(v.shape == image.shape and not torch.equal(v, image) for v in views)  # each a crop, enlarged
    signal = torch.arange(40.0).view(1, 1, 40)
    stretched = [random_view(signal, SynthesisConfig(jitter=0, crop_scale=0.5), g) for _ in range(10)]
    # each a piece of at least 20 samples stretched back to 40, still in time order
    assert all(v.shape == signal.shape and (v.diff(dim=-1) > 0).all() for v in stretched)
    assert sum(not torch.equal(v, signal) for v in stretched) >= 5
    assert torch.equal(random_view(image, SynthesisConfig(jitter=0, flip=False), g), image)  # 1: no crop
    with pytest.raises(EdgefreeError, match="crop_scale"):
        SynthesisConfig(crop_scale=0.0)
