import dataclasses
import zipfile

import numpy as np
import pytest
from PIL import Image

from edgefree.data import load_eval_data
from edgefree.errors import DataError
from edgefree.models import load_teacher

SPEC = load_teacher("resnet20-cifar").spec


def _png(color, size=32):
    import io

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in entries.items():
            z.writestr(name, blob)
    return path


def test_zip_in_shared_layout_picks_the_test_split(tmp_path):
    path = _zip(tmp_path / "c.zip", {"test/cat/0.png": _png((255, 0, 0)), "test/airplane/0.png": _png((0, 0, 255)),
                                     "test/airplane/1.png": _png((0, 0, 255)), "train/cat/9.png": _png((1, 1, 1))})
    data = load_eval_data(path, SPEC)
    assert data.pixels.shape == (3, 3, 32, 32)
    # labels follow the model's class order (airplane=0, cat=3), not the zip's
    assert sorted(data.labels.tolist()) == [0, 0, 3]
    assert data.pixels[data.labels == 3][0, 0].float().mean() == 255  # the red cat, not the train image


def test_image_folder(tmp_path):
    for cls, color in (("a", (0, 0, 0)), ("b", (255, 255, 255))):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(_png(color))
    unnamed = dataclasses.replace(SPEC, class_names=())  # a model without class names: folders sorted
    data = load_eval_data(tmp_path, unnamed)
    assert data.labels.tolist() == [0, 1]
    assert np.allclose(data.normalized(unnamed)[1].mean(0), ((1 - 0.456) / 0.224), atol=0.3)
    with pytest.raises(DataError, match=r"class folders \['a', 'b'\] .* are not classes of the model"):
        load_eval_data(tmp_path, SPEC)  # CIFAR's names: a and b are none of them


def test_folders_of_a_model_without_class_names_need_one_per_class_or_their_labels_as_names(tmp_path):
    unnamed = dataclasses.replace(SPEC, class_names=())
    for cls in ("cat", "dog", "frog"):
        (tmp_path / "named" / cls).mkdir(parents=True)
        (tmp_path / "named" / cls / "x.png").write_bytes(_png((0, 0, 0)))
    assert load_eval_data(tmp_path / "named", unnamed, classes=3).labels.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match=r"3 class folders for a model of 10 classes .*\(cat = 0, dog = 1, frog = 2\)"):
        load_eval_data(tmp_path / "named", unnamed, classes=10)  # a subset, sorted: labels the model never meant
    for cls in ("0", "2", "10"):
        (tmp_path / "numbered" / cls).mkdir(parents=True)
        (tmp_path / "numbered" / cls / "x.png").write_bytes(_png((0, 0, 0)))
    assert load_eval_data(tmp_path / "numbered", unnamed, classes=11).labels.tolist() == [0, 2, 10]


def test_training_split_only_is_refused(tmp_path):
    path = _zip(tmp_path / "t.zip", {"train/cat/0.png": _png((0, 0, 0))})
    with pytest.raises(DataError, match="only a training split"):
        load_eval_data(path, SPEC)


def test_wrong_image_size_is_named(tmp_path):
    path = _zip(tmp_path / "s.zip", {"test/cat/0.png": _png((0, 0, 0), size=16)})
    with pytest.raises(DataError, match=r"\(3, 16, 16\).*\(3, 32, 32\)"):
        load_eval_data(path, SPEC)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_eval_data(tmp_path / "missing.zip", SPEC)


def test_corrupt_zip_is_named(tmp_path):
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        load_eval_data(tmp_path / "junk.zip", SPEC)


def test_incomplete_cifar_batches_folder_is_named(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_eval_data(tmp_path, SPEC)


def test_digits_held_out_split():
    data = load_eval_data("digits", load_teacher("digits-cnn").spec)
    assert len(data) == 360 and data.pixels.shape[1:] == (1, 8, 8)


def test_shared_cifar_test_split(shared):
    data = load_eval_data(shared / "data" / "cifar10-jpeg" / "test.zip", SPEC)
    assert len(data) == 10_000
    assert np.bincount(data.labels.numpy()).tolist() == [1000] * 10
