"""Files edgefree reads never run code they carry: `.pt2` programs built here with a payload in every
part that can hold one, cached dreams, a cifar-10-batches-py folder. Each payload, when it runs,
appends to a marker file; the tests first check that plain torch runs it, then that edgefree never does."""

import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.export.pt2_archive._package import PT2ArchiveReader, PT2ArchiveWriter

from edgefree.cli import cli
from edgefree.errors import CheckpointError, DataError
from edgefree.models import create_model
from edgefree.models.program import load_program

TINY = ["--images", "32", "--synth-batch", "32", "--iterations", "5", "--epochs", "1", "--formats", "onnx",
        "--precisions", "fp32", "--bench-runs", "2", "--quiet"]


class Payload:
    """Unpickled, it appends a line to ``marker``: code the file brings along."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'a').write('ran\\n')",)

    def code(self) -> str:  # the same, as Python source (for the parts torch evaluates or executes)
        return f"open({str(self.marker)!r}, 'a').write('ran\\n')"


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _clean_program(path: Path) -> Path:
    model = create_model("digits-cnn").eval()
    program = torch.export.export(model, (torch.randn(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    torch.export.save(program, path)
    return path


def _rewritten(src: Path, dst: Path, *changes) -> Path:
    """``src``'s records, changed by each of ``changes`` (a dict of name -> bytes), written as ``dst``."""
    with PT2ArchiveReader(str(src)) as reader:
        records = {n: reader.read_bytes(n) for n in reader.get_file_names()
                   if not n.startswith(".data/") and n != "byteorder"}  # the writer adds these itself
    for change in changes:
        change(records)
    with PT2ArchiveWriter(str(dst)) as writer:
        for name, blob in records.items():
            writer.write_bytes(name, blob)
    return dst


def _json(records: dict, name: str, edit) -> None:
    value = json.loads(records[name])
    edit(value)
    records[name] = json.dumps(value).encode()


# Every part of a .pt2 that torch.export.load unpickles, evaluates or executes, each with the payload.
def sample_inputs(p):
    return lambda r: r.__setitem__("data/sample_inputs/model.pt", _saved(((p,), {})))


def pickled_weight(p):
    def change(r):
        def edit(config):
            meta = config["config"]["0.0.weight"]
            meta["use_pickle"] = True
            r["data/weights/" + meta["path_name"]] = _saved(p)
        _json(r, "data/weights/model_weights_config.json", edit)
    return change


def _constant(path_name: str, blob: bytes):
    def change(r):
        _json(r, "data/constants/model_constants_config.json", lambda c: c["config"].__setitem__(
            f"c_{path_name}", {"path_name": path_name, "is_param": False, "use_pickle": True, "tensor_meta": None}))
        r[f"data/constants/{path_name}"] = blob
    return change


def pickled_constant(p):
    return _constant("tensor_90", _saved(p))


def opaque_object(p):
    return _constant("opaque_obj_0", pickle.dumps(p))


def torchscript_object(p):
    return _constant("custom_obj_0", _saved(p))


def legacy_weights(p):
    return lambda r: r.__setitem__("data/weights/model.pt", _saved(p))


def legacy_constants(p):
    return lambda r: r.__setitem__("data/constants/model.pt", _saved(p))


def guards_code(p):  # breaks out of the guard function torch generates from it
    guard = f"1 #\n, 'x')\nexec({p.code()!r})\ndef g():\n  (0"
    return lambda r: _json(r, "models/model.json", lambda m: m.__setitem__("guards_code", [guard]))


def shape_expression(p):  # sympy.sympify evaluates it
    def edit(value):
        if isinstance(value, dict):
            for key, item in value.items():
                value[key] = f"exec({p.code()!r})" if key == "expr_str" else item
                edit(item)
        elif isinstance(value, list):
            for item in value:
                edit(item)
    return lambda r: _json(r, "models/model.json", edit)


PICKLED = [sample_inputs, pickled_weight, pickled_constant, opaque_object, legacy_weights, legacy_constants]
EVALUATED = [guards_code, shape_expression]
# TorchScript's own unpickler knows torch's classes only (it refuses the payload), but edgefree loads no custom object
CUSTOM = [torchscript_object]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return _clean_program(tmp_path_factory.mktemp("program") / "digits.pt2")


@pytest.mark.parametrize("part", PICKLED + EVALUATED, ids=lambda f: f.__name__)
def test_each_crafted_part_runs_its_payload_under_plain_torch(part, clean, tmp_path):
    """The archives below are live: torch.export.load (and the module it gives) runs each payload."""
    marker = tmp_path / "marker"
    crafted = _rewritten(clean, tmp_path / "crafted.pt2", part(Payload(marker)))
    try:
        torch.export.load(crafted).module()
    except Exception:  # a broken part fails after its payload ran
        pass
    assert marker.is_file(), f"{part.__name__}: the payload did not run under torch.export.load"


@pytest.mark.parametrize("part", PICKLED[1:] + EVALUATED[1:] + CUSTOM, ids=lambda f: f.__name__)
def test_a_program_with_a_payload_is_refused_in_one_line_and_nothing_runs(part, clean, tmp_path):
    marker = tmp_path / "marker"
    crafted = _rewritten(clean, tmp_path / "crafted.pt2", part(Payload(marker)))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", "--model", str(crafted), "--out", str(out), *TINY])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "which edgefree does not load" in errors[0], result.output
    assert "Traceback" not in result.output
    assert not marker.exists(), f"{part.__name__}: edgefree ran the payload"
    assert not out.exists() and not list(tmp_path.glob(".out*")), "a refused build left files behind"


def test_a_program_with_every_part_crafted_at_once_is_refused_and_nothing_runs(clean, tmp_path):
    marker = tmp_path / "marker"
    payload = Payload(marker)
    crafted = _rewritten(clean, tmp_path / "crafted.pt2", *(part(payload) for part in PICKLED + EVALUATED + CUSTOM))
    with pytest.raises(CheckpointError, match="which edgefree does not load"):
        load_program(crafted)
    assert not marker.exists()


def test_names_and_attribute_paths_that_would_become_code_are_refused(clean, tmp_path):
    marker = tmp_path / "marker"
    code = f"exec({Payload(marker).code()!r})"

    def rename(old: bytes, new: str):
        encoded = json.dumps(new).encode()
        return lambda r: r.__setitem__("models/model.json", r["models/model.json"].replace(old, encoded))

    for change, refused in ((rename(b'"p_0_0_weight"', f"p={code}"), "a name"),
                            (rename(b'"0.0.weight"', f'0.0.w")+{code}+("'), "an attribute path")):
        crafted = _rewritten(clean, tmp_path / "crafted.pt2", change)
        with pytest.raises(CheckpointError, match=refused):
            load_program(crafted)
    assert not marker.exists()


def test_an_arbitrary_callable_in_the_graph_is_refused(clean, tmp_path):
    marker = tmp_path / "marker"

    def system_call(r):
        def edit(m):
            relu = next(n for n in m["graph_module"]["graph"]["nodes"] if n["target"] == "torch.ops.aten.relu_.default"
                        or n["target"] == "torch.ops.aten.relu.default")
            relu["target"] = "torch.os.system"
            relu["inputs"] = [{"name": "command", "arg": {"as_string": f"echo ran >> {marker}"}, "kind": 1}]
        _json(r, "models/model.json", edit)

    with pytest.raises(CheckpointError, match="not an allowed operator"):
        load_program(_rewritten(clean, tmp_path / "crafted.pt2", system_call))
    assert not marker.exists()


def test_a_program_with_payloads_in_its_sample_inputs_and_guards_builds_and_benches_without_running_them(clean,
                                                                                                         tmp_path):
    """edgefree reads neither the sample inputs nor the guards: such a program is as good as a clean one."""
    marker = tmp_path / "marker"
    crafted = _rewritten(clean, tmp_path / "teacher.pt2", sample_inputs(Payload(marker)), guards_code(Payload(marker)))
    out = tmp_path / "out"
    built = CliRunner().invoke(cli, ["build", "--model", str(crafted), "--out", str(out), *TINY])
    assert built.exit_code == 0, built.output
    benched = CliRunner().invoke(cli, ["bench", str(out), "--runs", "2", "--quiet"])
    assert benched.exit_code == 0, benched.output
    assert not marker.exists(), "edgefree ran the payload of the sample inputs"
    module, shape = load_program(clean)
    x = torch.randn(3, 1, 8, 8)
    # the program as torch itself loads it (this file is our own, clean), computed the same
    assert shape == (1, 8, 8) and torch.allclose(module(x), torch.export.load(clean).module()(x), atol=1e-6)


def test_cached_dreams_with_a_payload_are_dreamed_again_without_running_it(tmp_path, capsys):
    from edgefree.config import BuildConfig, SynthesisConfig
    from edgefree.demo import default_teacher
    from edgefree.pipeline import _fingerprint, synthesize_cached
    from edgefree.recover import SyntheticSet

    marker = tmp_path / "marker"
    config = BuildConfig(out=tmp_path / "out", cache=str(tmp_path / "dreams"),
                         synthesis=SynthesisConfig(images=8, batch_size=8, iterations=2))
    teacher = default_teacher()
    cached = tmp_path / "dreams" / f"synthetic-{_fingerprint(teacher, config)}.pt"
    cached.parent.mkdir()
    cached.write_bytes(_saved({"images": Payload(marker), "labels": torch.zeros(8)}))
    dreams = synthesize_cached(teacher, config, None, progress=False)
    assert len(dreams) == 8 and not marker.exists()
    assert "cannot be read" in capsys.readouterr().err
    assert len(SyntheticSet.load(cached)) == 8  # the new dreams replaced the unreadable entry


def test_a_cifar_batches_folder_with_a_payload_is_refused_without_running_it(tmp_path):
    from edgefree.data import load_eval_data
    from edgefree.models import load_teacher

    marker = tmp_path / "marker"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("test_batch", "batches.meta"):
        (folder / name).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_eval_data(folder, load_teacher("resnet20-cifar").spec)
    assert not marker.exists()


def test_a_pruning_plan_names_only_torch_prunings_two_operations():
    """replay calls the pruner's method of the plan's name: any other name is refused before it is looked up."""
    from edgefree.errors import EdgefreeError
    from edgefree.recover.prune import PrunePlan

    good = {"channels": [["0.0", "prune_out_channels", [1, 2]]], "removed_blocks": []}
    assert PrunePlan.from_json(good).channels == [("0.0", "prune_out_channels", [1, 2])]
    with pytest.raises(EdgefreeError, match=r"unknown operation\(s\) \['__init__'\]"):
        PrunePlan.from_json({"channels": [["0.0", "__init__", [1]]], "removed_blocks": []})
