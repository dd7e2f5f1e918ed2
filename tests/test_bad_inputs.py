"""Bad inputs, one table: each stops with exit status 2, one `Error:` line, no traceback, and the
folder it would have written (a previous complete build plus a file of the user's) byte for byte
as it was. Then: a build killed midway leaves its --out as it was, and a tampered artifact is
refused by bench, export and flash."""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from edgefree.cli import cli
from edgefree.models import create_model, load_teacher

TINY = ["--images", "32", "--synth-batch", "32", "--iterations", "5", "--epochs", "1", "--formats", "onnx",
        "--precisions", "fp32", "--bench-runs", "2", "--quiet"]
TOOLCHAIN = Path(__file__).resolve().parents[1] / "toolchain"
USER_MODEL = Path(__file__).resolve().parent / "user_model.py"


def folder_hash(folder: Path) -> str:
    """sha256 over every path (hidden ones too), its kind and its bytes: equal means byte for byte equal."""
    h = hashlib.sha256()
    if not folder.exists():
        return "absent"
    if folder.is_file():
        return hashlib.sha256(folder.read_bytes()).hexdigest()
    for path in sorted(folder.rglob("*")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(b"d" if path.is_dir() else path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    """A complete build of the built-in default (ONNX fp32 only, tiny budgets)."""
    out = tmp_path_factory.mktemp("tiny") / "build"
    result = CliRunner().invoke(cli, ["build", "--out", str(out), *TINY], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def _png(size=8, mode="L", color=128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), color if mode == "L" else (color, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path: Path, entries: dict) -> str:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, blob in entries.items():
            z.writestr(name, blob)
    return str(path)


class Files:
    """The inputs of the table, made on first use in a test's folder."""

    def __init__(self, tmp: Path, build: Path):
        self.tmp = tmp
        self.out = tmp / "out"  # a previous complete build, and a file of the user's
        shutil.copytree(build, self.out)
        (self.out / "notes.txt").write_text("mine")
        self.build = self.out  # bench / export / flash read it

    def _model(self, name: str, state) -> str:
        path = self.tmp / name
        torch.save(state, path)
        return str(path)

    def digits(self) -> str:
        return self._model("digits.pt", create_model("digits-cnn").state_dict())

    def mine_in_artifacts(self) -> Path:
        (self.out / "artifacts" / "NOTES.txt").write_text("mine")
        return self.out

    def poisoned(self, value: float) -> str:
        state = create_model("digits-cnn").state_dict()
        next(v for v in state.values() if v.is_floating_point())[0] = value
        return self._model(f"poisoned-{value}.pt", state)

    def no_bn(self) -> str:
        return self._model("nobn.pt", load_teacher(f"{USER_MODEL}:without_batchnorm", input_spec={
            "shape": (3, 16, 16)}).module.state_dict())

    def user_weights(self) -> str:
        return self._model("user.pt", load_teacher(f"{USER_MODEL}:build", input_spec={"shape": (3, 16, 16)})
                           .module.state_dict())

    def program(self, factory: str, dynamic: bool = True) -> str:
        model = load_teacher(f"{USER_MODEL}:{factory}", input_spec={"shape": (3, 16, 16)}).module
        shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic else None
        path = self.tmp / f"{factory}-{dynamic}.pt2"
        torch.export.save(torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=shapes), path)
        return str(path)

    def tensors_list(self) -> str:
        return self._model("list.pt", [torch.zeros(3), torch.ones(2)])

    def text(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def folder(self, name: str = "folder") -> str:
        (self.tmp / name).mkdir(exist_ok=True)
        return str(self.tmp / name)

    def digits_zip(self, name: str = "eval.zip", **entries) -> str:
        base = {f"test/{c}/0.png": _png() for c in range(10)}
        return _zip(self.tmp / name, {**base, **entries})

    def damaged_member_zip(self) -> str:
        path = Path(self.digits_zip("damaged.zip"))
        data = bytearray(path.read_bytes())
        at = data.find(_png()) + 40  # inside the first stored image: its CRC no longer matches
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
        return str(path)

    def key(self, passphrase: str) -> str:
        path = self.tmp / f"key-{len(passphrase)}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
        return str(path)

    def tamper(self, relative: str) -> None:
        with open(self.build / relative, "ab") as f:
            f.write(b"\0")

    def rewrite(self, relative: str, change) -> None:
        """The build's JSON file ``relative`` replaced by ``change(its object)``, its sha256 recorded anew."""
        path = self.build / relative
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
        report = json.loads((self.build / "report.json").read_text())
        if relative in report.get("files", {}):
            report["files"][relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            (self.build / "report.json").write_text(json.dumps(report))

    def onnx(self) -> str:
        manifest = json.loads((self.build / "artifacts" / "manifest.json").read_text())
        return "artifacts/" + manifest["artifacts"][0]["files"][0]["path"]


def B(*args):  # a build into the watched --out, with tiny budgets (the case's options last: they win)
    return lambda f: ["build", "--out", str(f.out), *TINY, *[a(f) if callable(a) else a for a in args]]


def C(*args):  # another command, on the watched build folder
    return lambda f: [a(f) if callable(a) else a for a in args]


def digits_model(*extra):
    return B("--model", lambda f: f.digits(), "--arch", "digits-cnn", *extra)


def user_model(arch, *extra):
    return B("--model", lambda f: f.user_weights(), "--arch", arch, *extra)


def toml(text):
    return lambda f: f.text("build.toml", text)


CASES = {
    # --out
    "out is a file": (lambda f: ["build", "--out", f.text("afile", "x"), *TINY], "is a file, not a folder"),
    "out inside a file": (lambda f: ["build", "--out", f.text("afile", "x") + "/sub", *TINY], "cannot be created"),
    "out holds the user's report.md": (lambda f: ["build", "--out", str(Path(f.folder("mine")) / "."), *TINY],
                                       "which no .edgefree-complete there lists"),
    # --model
    "model missing": (B("--model", lambda f: str(f.tmp / "nope.pt"), "--arch", "digits-cnn"), "does not exist"),
    "model is a folder": (B("--model", lambda f: f.folder(), "--arch", "digits-cnn"), "is a folder, not a file"),
    "model corrupt": (B("--model", lambda f: f.text("bad.pt", b"\x00garbage"), "--arch", "digits-cnn"),
                      "cannot be read as PyTorch weights"),
    "model truncated": (B("--model", lambda f: f.text("cut.pt", Path(f.digits()).read_bytes()[:300]), "--arch",
                          "digits-cnn"), "cannot be read as PyTorch weights"),
    "model is JSON": (B("--model", lambda f: f.text("m.json", '{"weights": [1, 2]}'), "--arch", "digits-cnn"),
                      "is a JSON file"),
    "model is a NumPy array": (B("--model", lambda f: f.text("arr.npy", b"\x93NUMPY\x01\x00v\x00{'descr'"),
                                 "--arch", "digits-cnn"), "is a NumPy array file, not PyTorch weights"),
    "model is a program named .pt": (B("--model", lambda f: shutil.copy(f.program("build"), f.tmp / "program.pt"),
                                       "--arch", "digits-cnn"), "is a torch.export program (torch.export.save)"),
    "model is a list of tensors": (B("--model", lambda f: f.tensors_list(), "--arch", "digits-cnn"),
                                   "not a state_dict"),
    "model has NaN weights": (B("--model", lambda f: f.poisoned(float("nan")), "--arch", "digits-cnn"), "NaN or infinite"),
    "model has inf weights": (B("--model", lambda f: f.poisoned(float("inf")), "--arch", "digits-cnn"), "NaN or infinite"),
    "model of another architecture": (B("--model", lambda f: f.no_bn(), "--arch", "digits-cnn"), "does not fit"),
    "model without --arch": (B("--model", lambda f: f.digits()), "--model needs --arch"),
    "unknown --arch": (B("--model", lambda f: f.digits(), "--arch", "resnet9000"), "unknown architecture"),
    "--model is the student inside --out": (B("--model", lambda f: str(f.out / "student.pt"), "--arch",
                                              "resnet20-cifar"), "this command replaces its student.pt"),
    "model without BatchNorm": (B("--model", lambda f: f.no_bn(), "--arch", f"{USER_MODEL}:without_batchnorm",
                                  "--input-shape", "3x16x16"), "no BatchNorm layers"),
    "--num-classes 0": (digits_model("--num-classes", "0"), "num_classes must be"),
    # teachers of other sources, and their input
    "factory file that fails to import": (user_model(lambda f: f.text("bad.py", "import nosuchmodule\n") + ":build",
                                                     "--input-shape", "3x16x16"), "importing your model file"),
    "factory that raises": (user_model(lambda f: f.text("raises.py", "def build(num_classes=10):\n    raise "
                                                       "ValueError('no model here')\n") + ":build",
                                       "--input-shape", "3x16x16"), "raised ValueError: no model here"),
    "factory the file does not define": (user_model(f"{USER_MODEL}:nope", "--input-shape", "3x16x16"),
                                         "defines no function 'nope' (it defines: build, signal, without_batchnorm)"),
    "factory module that cannot be imported": (user_model("nosuchpackage.models:build", "--input-shape", "3x16x16"),
                                               "importing your model module 'nosuchpackage.models' failed"),
    "factory file that does not exist": (user_model(lambda f: str(f.tmp / "none.py") + ":build"), "does not exist"),
    "forward fails on the declared shape": (user_model(f"{USER_MODEL}:build", "--input-shape", "1x16x16"),
                                            "fails on an input of shape 1x16x16 (a batch of 2)"),
    "factory without --input-shape": (user_model(f"{USER_MODEL}:build"), "pass its shape with --input-shape"),
    "--input-shape that does not parse": (user_model(f"{USER_MODEL}:build", "--input-shape", "3x"), "does not parse"),
    "--mean of the wrong length": (user_model(f"{USER_MODEL}:build", "--input-shape", "3x16x16", "--mean", "0.5,0.5"),
                                   "normalization has 2 mean and 3 std value(s) for an input of 3 channel(s)"),
    "--std that does not parse": (user_model(f"{USER_MODEL}:build", "--input-shape", "3x16x16", "--std", "a,b"),
                                  "--std 'a,b' does not parse"),
    "unknown torchvision model": (B("--model", lambda f: f.digits(), "--arch", "torchvision:nonet"),
                                  "torchvision has no classification model 'nonet'"),
    "program without BatchNorm": (B("--model", lambda f: f.program("without_batchnorm")), "has no BatchNorm layers"),
    "program of a fixed batch": (B("--model", lambda f: f.program("build", dynamic=False)), "fixed batch of 2"),
    "program with --arch": (B("--model", lambda f: f.program("build"), "--arch", "digits-cnn"), "leave out --arch"),
    "--arch without --model": (B("--arch", "digits-cnn"), "pass its weights with --model"),
    # --eval-data
    "eval data missing": (digits_model("--eval-data", lambda f: str(f.tmp / "nope.zip")), "does not exist"),
    "eval data not a zip": (digits_model("--eval-data", lambda f: f.text("e.zip", "not a zip")), "not a readable zip"),
    "eval zip with a damaged member": (digits_model("--eval-data", lambda f: f.damaged_member_zip()), "cannot be read"),
    "eval zip with a non-image": (digits_model("--eval-data", lambda f: f.digits_zip(**{"test/3/x.png": b"no image"})),
                                  "is not a readable image (not an image file Pillow knows)"),
    "a checkpoint as eval data": (digits_model("--eval-data", lambda f: f.digits()), "is a torch.save file"),
    "eval images of the wrong size": (digits_model("--eval-data", lambda f: f.digits_zip(
        "big.zip", **{f"test/{c}/0.png": _png(16) for c in range(10)})), "but the model takes"),
    "eval images of mixed sizes": (digits_model("--eval-data", lambda f: f.digits_zip(**{"test/3/1.png": _png(9)})),
                                   "different sizes"),
    "colour images for a 1-channel model": (digits_model("--eval-data", lambda f: f.digits_zip(
        **{"test/3/1.png": _png(mode="RGB")})), "colour image"),
    "eval data with more classes than the model": (digits_model("--eval-data", lambda f: f.digits_zip(
        **{"test/10/0.png": _png()})), "holds label 10, beyond the model's 10 classes"),
    "eval zip with only a training split": (digits_model("--eval-data", lambda f: _zip(
        f.tmp / "train.zip", {"train/0/0.png": _png()})), "only a training split"),
    "eval folder without images": (digits_model("--eval-data", lambda f: f.folder("empty")), "no images found"),
    # numbers out of range
    "sparsity above 1": (B("--sparsity", "1.5"), "sparsity must be in [0, 1)"),
    "sparsity nan": (B("--sparsity", "nan"), "must be a finite number"),
    "negative seed": (B("--seed", "-1"), "seed must be an integer from 0"),
    "seed too large for the generators": (B("--seed", str(2**40)), "seed must be an integer from 0"),
    "seed beyond int64": (B("--seed", str(2**64)), "BuildConfig.seed must lie within"),
    "zero images": (B("--images", "0"), "images and batch size must be positive"),
    "zero iterations": (B("--iterations", "0"), "iterations must be positive"),
    "zero epochs": (B("--epochs", "0"), "epochs and batch size must be positive"),
    "negative synthesis batch": (B("--synth-batch", "-1"), "images and batch size must be positive"),
    "infinite learning rate": (B("--distill-lr", "inf"), "must be a finite number"),
    "negative reconstruct images": (B("--reconstruct-images", "-5"), "reconstruct images must be >= 0"),
    "negative block steps": (B("--block-steps", "-1"), "reconstruct block steps must be >= 0"),
    "adversarial steps without a generator": (B("--adversarial-steps", "10"), "use it with synthesis method 'generator'"),
    "zero bench runs": (B("--bench-runs", "0"), "bench runs must be from 1 to"),
    "a thousand million bench runs": (B("--bench-runs", "1000000000"), "bench runs must be from 1 to 100000"),
    "more threads than an int holds": (B("--threads", "99999999999999999999"), "BuildConfig.threads must lie within"),
    "more epochs than an int holds": (B("--epochs", "99999999999999999999"), "DistillConfig.epochs must lie within"),
    "latency target above 1": (B("--pruning", "channel", "--latency-target", "1.5"), "latency target must be in (0, 1]"),
    "latency target with magnitude pruning": (B("--pruning", "magnitude", "--latency-target", "0.5"),
                                              "--latency-target chooses channel widths"),
    "unknown recipe": (B("--recipe", "turbo"), "unknown recipe 'turbo'"),
    "unknown target": (B("--target", "toaster"), "unknown target 'toaster'"),
    "a format the target does not run": (B("--target", "jetson-orin-nano", "--formats", "openvino"),
                                         "--formats openvino: target jetson-orin-nano runs onnx, executorch only"),
    "flash for an unknown target": (C("flash", "--host", "pi@127.0.0.1", "--target", "toaster", lambda f: str(f.build)),
                                    "unknown target 'toaster'"),
    "unknown format": (lambda f: ["build", "--out", str(f.out), "--formats", "tflite"], "export formats must be"),
    "unknown precision": (lambda f: ["build", "--out", str(f.out), "--precisions", "fp16"], "export precisions must be"),
    "unknown device": (B("--device", "tpu"), "Invalid value for '--device'"),
    # environment variables
    "bad EDGEFREE_BUILD_SEED": (B(), "EDGEFREE_BUILD_SEED='abc'", {"EDGEFREE_BUILD_SEED": "abc"}),
    "bad EDGEFREE_BUILD_SPARSITY": (B(), "EDGEFREE_BUILD_SPARSITY='high'", {"EDGEFREE_BUILD_SPARSITY": "high"}),
    "EDGEFREE_BUILD_SEED out of range": (B(), "seed must be an integer from 0", {"EDGEFREE_BUILD_SEED": "-3"}),
    # --config / --save-config
    "config file missing": (B("--config", lambda f: str(f.tmp / "none.toml")), "does not exist"),
    "config file not TOML": (B("--config", toml("seed = = 1")), "is not valid TOML"),
    "emulated runs alone without the emulator": (B("--target", "raspberry-pi-4", "--config",
                                                   toml("[bench]\nnative = false\n")),
                                                 "--no-native asks for its emulated runs alone"),
    "config option unknown": (B("--config", toml("sead = 1")), "has no option(s) ['sead'] (sead: did you mean seed?)"),
    "config option spelt as its flag": (B("--config", toml("max-drop = 1")), "did you mean max_drop?"),
    "config table given a number": (B("--config", toml("latency_target = 0.5")),
                                    "write it as the table [latency_target] with ratio = 0.5 below it"),
    "config value of the wrong type": (B("--config", toml('seed = "one"')), "BuildConfig.seed must be an integer"),
    "config stage of the wrong type": (B("--config", toml("[synthesis]\niterations = 1.5")), "must be an integer"),
    "--bench-runs for a bench the config turns off": (B("--config", toml("bench = false"), "--bench-runs", "3"),
                                                      "--bench-runs sets the bench, which the config file turns off"),
    "--bench-runs for a bench a report turns off": (
        B("--config", lambda f: f.text("report.json", '{"config": {"bench": null}}'), "--bench-runs", "3"),
        "--bench-runs sets the bench, which the config file turns off (bench = null)"),
    "--formats for an export the config turns off": (B("--config", toml("export = false")),  # TINY has both
                                                     "--formats, --precisions set the export, which the config file "
                                                     "turns off"),
    "config report.json that is not JSON": (B("--config", lambda f: f.text("report.json", "{oops")), "not valid JSON"),
    "save-config into a .json file": (B("--save-config", lambda f: str(f.tmp / "c.json")), "name the file .toml"),
    "save-config of a model that does not exist": (B("--model", lambda f: str(f.tmp / "none.pt"), "--arch",
                                                     "resnet20-cifar", "--save-config", lambda f: str(f.tmp / "c.toml")),
                                                   "does not exist, so a build of this config would stop there"),
    "an empty --recipe": (B("--recipe", ""), "Invalid value for '--recipe': is empty"),
    "an empty --out": (lambda f: ["build", "--out", "", *TINY], "Invalid value for '--out': is empty"),
    "a text file as --model": (B("--model", lambda f: f.text("notes.pt", "hello"), "--arch", "digits-cnn"),
                               "(it is no torch.save file)"),
    "a folder as a .pt2 program": (B("--model", lambda f: f.folder("prog.pt2")), "prog.pt2 is a folder"),
    "export of an empty build folder name": (lambda f: ["export", ""], "Invalid value for 'BUILD_DIR': is empty"),
    "bench --out empty": (C("bench", lambda f: str(f.build), "--out", ""), "Invalid value for '--out': is empty"),
    "--out at the root": (lambda f: ["build", "--out", "/", *TINY], "is the file system's root"),
    "save-config into a missing folder": (B("--save-config", lambda f: str(f.tmp / "no" / "c.toml")),
                                          "its folder does not exist"),
    "save-config of formats the target does not run": (B("--target", "android-arm64", "--formats", "openvino",
                                                         "--save-config", lambda f: str(f.tmp / "c.toml")),
                                                       "target android-arm64 runs onnx, executorch only"),
    # bench, export, flash on the build folder
    "bench of a folder without a build": (C("bench", lambda f: f.folder("nobuild")), "holds no finished build"),
    "bench of an incomplete build": (lambda f: (f.build / ".edgefree-complete").unlink() or ["bench", str(f.build)],
                                     "holds no complete build"),
    "bench with a tampered artifact": (lambda f: f.tamper(f.onnx()) or ["bench", str(f.build)],
                                       "was changed after it was written"),
    "bench with a tampered student": (lambda f: f.tamper("student.pt") or ["bench", str(f.build)], "student.pt was changed"),
    "bench --model for the built-in default": (C("bench", lambda f: str(f.build), "--model", lambda f: f.digits()),
                                               "leave out --model"),
    "bench --runs 0": (C("bench", lambda f: str(f.build), "--runs", "0"), "bench runs must be from 1 to"),
    "bench --threads 0": (C("bench", lambda f: str(f.build), "--threads", "0"), "bench threads must be from 1 to"),
    "bench --out is a file": (C("bench", lambda f: str(f.build), "--out", lambda f: f.text("afile", "x")),
                              "is a file, not a folder"),
    "bench --out in the build's artifacts": (C("bench", lambda f: str(f.build), "--out",
                                               lambda f: str(f.build / "artifacts")), "lies in the artifacts of the build"),
    "export --out below the build's artifacts": (C("export", lambda f: str(f.build), "--out",
                                                   lambda f: str(f.build / "artifacts" / "sub")),
                                                 "lies in the artifacts of the build"),
    "export --model for the built-in default": (C("export", lambda f: str(f.build), "--model", lambda f: f.digits()),
                                                "leave out --model"),
    "export with a tampered student": (lambda f: f.tamper("student.pt") or ["export", str(f.build)],
                                       "student.pt was changed"),
    "export with tampered dreams": (lambda f: f.tamper("synthetic.pt") or ["export", str(f.build)],
                                    "synthetic.pt was changed"),
    "export of an unknown format": (C("export", lambda f: str(f.build), "--formats", "tflite"), "export formats must be"),
    "export --out into a build folder": (lambda f: shutil.copytree(f.build, f.tmp / "theirs") and [
        "export", str(f.build), "--out", str(f.tmp / "theirs")], "holds a build (report.json)"),
    "bench of another target into the build's folder": (C("bench", lambda f: str(f.build), "--target",
                                                          "raspberry-pi-4", "--no-emulate", "--out",
                                                          lambda f: str(f.build)),
                                                        "whose bench is for its target"),
    "bench --out into another build": (lambda f: shutil.copytree(f.build, f.tmp / "theirs") and [
        "bench", str(f.build), "--out", str(f.tmp / "theirs")], "holds a build (report.json)"),
    "export --out holding the user's manifest.json": (
        lambda f: (Path(f.folder("theirs")) / "manifest.json").write_text("{}") and
        ["export", str(f.build), "--out", str(f.tmp / "theirs")], "which no .edgefree-complete there lists"),
    "flash with a tampered artifact": (lambda f: f.tamper(f.onnx()) or ["flash", str(f.build), "--host", "pi@127.0.0.1"],
                                       "was changed after it was written"),
    "flash with a tampered manifest": (lambda f: f.tamper("artifacts/manifest.json") or
                                       ["flash", str(f.build), "--host", "pi@127.0.0.1"], "manifest.json was changed"),
    "flash --key with a passphrase": (C("flash", lambda f: str(f.build), "--host", "pi@127.0.0.1", "--key",
                                        lambda f: f.key("secret")), "protected by a passphrase"),
    "flash --key that is a public key": (C("flash", lambda f: str(f.build), "--host", "pi@127.0.0.1", "--key",
                                           lambda f: f.key("") + ".pub"), "is not a private key"),
    "flash of a build for an app's target": (
        lambda f: f.rewrite("report.json", lambda r: {**r, "target": {**r["target"], "deploy": "adb"}})
        or ["flash", str(f.build), "--host", "pi@127.0.0.1"], "ship the artifacts with the app instead"),
    "flash for another target": (C("flash", lambda f: str(f.build), "--host", "pi@127.0.0.1", "--target",
                                   "raspberry-pi-4"), "was built for target"),
    "bench of a report without its target": (lambda f: f.rewrite("report.json", lambda r: {**r, "target": "x86-64"})
                                             or ["bench", str(f.build)], "lacks 'target' as edgefree writes it"),
    "export of a report without its model": (lambda f: f.rewrite("report.json", lambda r: {
        k: v for k, v in r.items() if k != "model"}) or ["export", str(f.build)], "lacks 'model'"),
    "flash of a manifest without artifacts": (lambda f: f.rewrite("artifacts/manifest.json", lambda m: {**m, "artifacts": 5})
                                              or ["flash", str(f.build), "--host", "pi@127.0.0.1"], "lacks 'artifacts'"),
    "bench of a manifest whose artifact has no files": (
        lambda f: f.rewrite("artifacts/manifest.json", lambda m: {**m, "artifacts": [
            {k: v for k, v in a.items() if k != "files"} for a in m["artifacts"]]}) or ["bench", str(f.build)],
        "lacks 'files'"),
    "flash --artifacts empty": (C("flash", lambda f: str(f.build), "--host", "pi@127.0.0.1", "--artifacts", ""),
                                "Invalid value for '--artifacts': is empty"),
    "flash --port 70000": (C("flash", lambda f: str(f.build), "--host", "pi@127.0.0.1", "--port", "70000"),
                           "Invalid value for '--port'"),
    "flash --keep-releases 0": (C("flash", lambda f: str(f.build), "--host", "pi@127.0.0.1", "--keep-releases", "0"),
                                "Invalid value for '--keep-releases'"),
}


def test_the_table_has_at_least_40_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", CASES)
def test_bad_input_stops_in_one_line_and_changes_nothing(name, tiny_build, tmp_path):
    make_args, expected, *env = CASES[name]
    if "key" in name and not shutil.which("ssh-keygen"):
        pytest.skip("needs ssh-keygen")
    files = Files(tmp_path, tiny_build)
    args = make_args(files)
    if name == "out holds the user's report.md":
        (tmp_path / "mine" / "report.md").write_text("my own notes")
    watched = {p: folder_hash(p) for p in (files.out, tmp_path / "mine", tmp_path / "theirs")}
    result = CliRunner().invoke(cli, args, env=env[0] if env else None)
    output = result.output
    assert result.exit_code == 2, f"{name}: exit {result.exit_code}\n{output}\n{result.exception!r}"
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    assert expected in errors[0], errors[0]
    assert {p: folder_hash(p) for p in watched} == watched, f"{name} changed a folder"
    assert not list(tmp_path.glob(".*.edgefree-*")), "a staging folder was left behind"


def test_unknown_edgefree_variable_is_warned_about(tmp_path):
    result = CliRunner().invoke(cli, ["models"], env={"EDGEFREE_BUILD_SEEED": "1"})
    assert result.exit_code == 0
    assert "Warning: environment variable EDGEFREE_BUILD_SEEED is not an edgefree setting" in result.output
    assert "did you mean EDGEFREE_BUILD_SEED?" in result.output


def test_grayscale_images_for_an_rgb_model_are_converted_with_a_warning(tmp_path, capsys):
    from edgefree.data import load_eval_data

    spec = load_teacher("resnet20-cifar").spec
    path = _zip(tmp_path / "gray.zip", {"test/cat/0.png": _png(32), "test/dog/0.png": _png(32, "RGB")})
    data = load_eval_data(path, spec)
    assert data.pixels.shape == (2, 3, 32, 32)
    assert "1 of 2 images" in capsys.readouterr().err


def test_tampered_artifact_is_refused_by_bench_export_and_flash(tiny_build, tmp_path):
    files = Files(tmp_path, tiny_build)
    onnx = files.onnx()
    files.tamper(onnx)
    for args in (["bench", str(files.build)], ["flash", str(files.build), "--host", "pi@127.0.0.1"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and f"{files.build / onnx} was changed" in result.output, result.output
    files.tamper("student.pt")  # what export reads; it writes the artifacts anew
    result = CliRunner().invoke(cli, ["export", str(files.build)])
    assert result.exit_code == 2 and f"{files.build / 'student.pt'} was changed" in result.output, result.output


def _build_process(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TOOLCHAIN)}
    return subprocess.Popen([sys.executable, "-c", "from edgefree.cli import main; main()", "build", "--out", str(out),
                             *TINY, *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_interruptible)


def _interruptible():
    """Ctrl-C's default in the child: a shell's background job inherits SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_staged_dreams(parent: Path, process: subprocess.Popen, timeout: float = 300.0) -> None:
    """Until the build's staging folder holds its dreams: synthesis is done, the other stages and the
    publishing are still ahead (a fixed delay would depend on how fast the machine is)."""
    deadline = time.monotonic() + timeout
    while not list(parent.glob(".out.edgefree-stage-*/synthetic.pt")):
        assert process.poll() is None, "the build ended before its dreams were staged: nothing was interrupted"
        assert time.monotonic() < deadline, f"no dreams staged within {timeout:g} s"
        time.sleep(0.02)


def test_killed_build_leaves_out_unchanged_and_the_rerun_succeeds(tiny_build, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_build, out)
    (out / "notes.txt").write_text("mine")
    before = folder_hash(out)
    started = time.monotonic()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):  # once the dreams are staged: publishing is ahead
        process = _build_process(out)
        _wait_for_staged_dreams(tmp_path, process)
        process.send_signal(sig)
        process.wait(timeout=120)
        assert folder_hash(out) == before, f"{sig.name} while the build ran changed --out"
        if sig is not signal.SIGKILL:
            assert not list(tmp_path.glob(".out.edgefree-*")), f"{sig.name} left its staging folder"
            assert process.returncode == 128 + sig.value  # as a shell reports a command its signal ended
            assert f"interrupted ({sig.name}): stopped; no half-written output" in process.stderr.read().decode()
    rerun = _build_process(out)
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read().decode()[-2000:]
    assert (out / "notes.txt").read_text() == "mine" and folder_hash(out) != before
    assert not list(tmp_path.glob(".out.edgefree-*")), "the killed build's staging folder was not removed"
    assert json.loads((out / "report.json").read_text())["synthesis"]["cached"] is True
    assert time.monotonic() - started < 600


def test_a_build_of_two_processes_stops_on_a_signal_as_one_does(tmp_path):
    out = tmp_path / "out"
    for sig in (signal.SIGINT, signal.SIGTERM):  # to the launcher alone, as `timeout -s` and `kill` send it
        process = _build_process(out, "--workers", "2")
        _wait_for_staged_dreams(tmp_path, process)
        process.send_signal(sig)
        process.wait(timeout=120)
        err = process.stderr.read().decode()
        assert process.returncode == 128 + sig.value, err[-2000:]
        assert f"interrupted ({sig.name}): stopped; no half-written output" in err and "Traceback" not in err
        assert not out.exists() and not list(tmp_path.glob(".out.*")), f"{sig.name} left {list(tmp_path.iterdir())}"


# ---------------------------------------------------------------------------------------------------
# Nothing the user had is lost: inputs inside --out, two builds at once, --save-config, runtime logs.
# ---------------------------------------------------------------------------------------------------

def _one_error_line(result, expected: str) -> str:
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert expected in errors[0], errors[0]
    return errors[0]


def _left_beside(tmp_path: Path) -> list[str]:
    """Hidden files a command left beside its output folders (logs, locks, staging folders)."""
    return sorted(p.name for p in tmp_path.glob(".*"))


KEPT = {  # each: the command, what its one error line says; --out and the user's files stay as they were
    "--model is --out's own student.pt (recompressing a build into its folder)": (
        lambda f: ["build", "--out", str(f.out), *TINY, "--model", str(f.out / "student.pt"), "--arch", "digits-cnn"],
        "this command replaces its student.pt"),
    "--eval-data inside an entry of --out the build replaces": (
        lambda f: ["build", "--out", str(f.out), *TINY, "--model", f.digits(), "--arch", "digits-cnn",
                   "--eval-data", _zip(f.out / "artifacts" / "eval.zip",
                                       {f"test/{c}/0.png": _png() for c in range(10)})],
        "this command replaces its artifacts"),
    "--save-config onto an existing file": (
        lambda f: ["build", "--out", str(f.out), "--save-config", f.text("mine.toml", "# my settings\n")],
        "already exists, and edgefree does not overwrite it"),
    "bench of a folder that is not a build": (
        lambda f: ["bench", f.folder("nobuild")], "holds no finished build"),
    "a build over an artifacts/ that holds a file of the user's": (
        lambda f: ["build", "--out", str(f.mine_in_artifacts()), *TINY], "holds NOTES.txt, which edgefree did not write"),
    "export into a build's artifacts/ that holds a file of the user's": (
        lambda f: ["export", str(f.mine_in_artifacts())], "holds NOTES.txt, which edgefree did not write"),
}


@pytest.mark.parametrize("name", KEPT)
def test_what_the_user_had_is_kept(name, tiny_build, tmp_path):
    files = Files(tmp_path, tiny_build)
    args = KEPT[name][0](files)
    (tmp_path / "nobuild" / "mine.txt").parent.mkdir(exist_ok=True)
    (tmp_path / "nobuild" / "mine.txt").write_text("mine")
    watched = {p: folder_hash(p) for p in (files.out, tmp_path / "nobuild", tmp_path / "mine.toml")}
    result = CliRunner().invoke(cli, args)
    _one_error_line(result, KEPT[name][1])
    assert {p: folder_hash(p) for p in watched} == watched, f"{name} changed a file or folder of the user's"
    assert not (tmp_path / "nobuild" / "build.log").exists()
    assert _left_beside(tmp_path) == [], "a refused command left hidden files beside its folder"


def test_an_input_in_a_folder_of_the_users_own_inside_out_is_allowed(tmp_path):
    from edgefree.errors import EdgefreeError
    from edgefree.outfolder import check_inputs_outside

    out = tmp_path / "out"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "teacher.pt").write_bytes(b"x")
    (out / "student.pt").write_bytes(b"x")
    check_inputs_outside(out, {"--model": out / "mine" / "teacher.pt", "--eval-data": "digits"}, ("student.pt",))
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(EdgefreeError, match="replaces its student.pt"):  # --out named through a symbolic link
        check_inputs_outside(tmp_path / "link", {"--model": out / "student.pt"}, ("student.pt",))


def _holder(out: Path) -> subprocess.Popen:
    """Another process holding --out's lock, as a running build does."""
    code = ("import sys, time\nfrom edgefree.outfolder import locked\nwith locked(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(out)], env={**os.environ, "PYTHONPATH": str(TOOLCHAIN)},
                               stdout=subprocess.PIPE, text=True, preexec_fn=_interruptible)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_build_into_the_same_out_is_refused_while_the_first_runs(tiny_build, tmp_path):
    files = Files(tmp_path, tiny_build)
    before = folder_hash(files.out)
    holder = _holder(files.out)
    try:
        error = _one_error_line(CliRunner().invoke(cli, ["build", "--out", str(files.out), *TINY]),
                                "is being written by another edgefree command")
        assert f"pid {holder.pid}" in error, error
        assert folder_hash(files.out) == before
    finally:
        holder.send_signal(signal.SIGINT)  # Ctrl-C: the holder removes its lock on the way out
        holder.wait(timeout=30)
    assert _left_beside(tmp_path) == [], "the lock outlived Ctrl-C"


def test_a_folder_named_through_a_link_is_held_by_the_same_lock(tmp_path):
    from edgefree.errors import EdgefreeError
    from edgefree.outfolder import locked

    (tmp_path / "real").mkdir()
    (tmp_path / "other").symlink_to(tmp_path / "real", target_is_directory=True)
    holder = _holder(tmp_path / "real")
    try:
        with pytest.raises(EdgefreeError, match=f"another edgefree command.*pid {holder.pid}"), locked(tmp_path / "other"):
            pass
    finally:
        holder.send_signal(signal.SIGINT)
        holder.wait(timeout=30)


def test_a_folder_of_the_users_named_artifacts_beside_a_report_of_theirs_is_no_build(tmp_path):
    from edgefree.outfolder import refuse_a_build

    (tmp_path / "report.json").write_text("{}")  # a coverage report, say
    (tmp_path / "artifacts").mkdir()
    refuse_a_build(tmp_path / "artifacts" / "run1", "--out", "`edgefree export`", "pass another folder")


def test_a_killed_builds_lock_does_not_block_the_next(tmp_path):
    from edgefree.outfolder import locked

    out = tmp_path / "out"
    holder = _holder(out)
    holder.kill()  # SIGKILL: the file stays, the system releases the lock
    holder.wait(timeout=30)
    assert _left_beside(tmp_path) == [".out.edgefree-lock"]
    with locked(out):
        assert f"pid {os.getpid()}" in (tmp_path / ".out.edgefree-lock").read_text()
    with pytest.raises(KeyboardInterrupt), locked(tmp_path / "new" / "deeper" / "out"):
        raise KeyboardInterrupt
    assert _left_beside(tmp_path) == [] and not (tmp_path / "new").exists(), "a lock or its folders were left behind"


def test_two_real_builds_into_one_out_one_refused(tiny_build, tmp_path):
    out = tmp_path / "out"
    first = _build_process(out)
    try:
        lock = tmp_path / ".out.edgefree-lock"
        deadline = time.monotonic() + 120
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lock.exists(), "the first build never took the lock"
        error = _one_error_line(CliRunner().invoke(cli, ["build", "--out", str(out), *TINY]), "another edgefree")
        assert f"pid {first.pid}" in error
    finally:
        assert first.wait(timeout=600) == 0, first.stderr.read().decode()[-2000:]
    assert (out / ".edgefree-complete").is_file() and _left_beside(tmp_path) == []


def test_a_failure_after_work_keeps_its_log_where_the_error_says(tmp_path, monkeypatch):
    from edgefree import pipeline
    from edgefree.errors import ExportError

    def failing(*args, **kwargs):
        os.write(1, b"[runtime] the line that explains it\n")  # a runtime writes straight to the descriptor
        raise ExportError("the export failed")

    monkeypatch.setattr(pipeline, "_stages", failing)
    out = tmp_path / "out"
    error = _one_error_line(CliRunner().invoke(cli, ["build", "--out", str(out), *TINY]), "the export failed")
    log = tmp_path / ".out.build.log"
    assert f"(runtime log lines: {log})" in error and "the line that explains it" in log.read_text()
    assert not out.exists()
    # the next build removes the earlier log; a refusal at the door writes no line, so leaves none
    monkeypatch.undo()
    _one_error_line(CliRunner().invoke(cli, ["build", "--out", str(out), *TINY, "--arch", "digits-cnn", "--model",
                                             str(tmp_path / "none.pt")]), "does not exist")
    assert _left_beside(tmp_path) == []
# Options that do not apply, things that cannot be done, and what a sensor model needs: each refused
# before any work in exactly one line (no usage text, no hint lines), --out and the user's files as
# they were. Then the signal model's value range: the default from its normalization, and the
# warning for evaluation signals outside it.

SIGNAL_MODEL = '''from torch import nn


def build(num_classes=2):
    return nn.Sequential(nn.Conv1d(6, 8, 5, 2, 2, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Conv1d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, num_classes))
'''
SIGNAL_MEAN, SIGNAL_STD = (3.0, -1.0, 0.5, 2.0, 0.0, 1.0), (6.0, 4.0, 5.0, 8.0, 2.0, 3.0)  # raw values in tens, not 0..1
SIGNAL_INPUT = ["--input-shape", "6x64", "--mean", ",".join(map(str, SIGNAL_MEAN)),
                "--std", ",".join(map(str, SIGNAL_STD)), "--num-classes", "2"]


class MoreFiles(Files):
    """``Files``, and the inputs of a sensor model; ``build`` None: only those (no watched build)."""

    def __init__(self, tmp: Path, build: Path | None = None):
        if build is not None:
            super().__init__(tmp, build)
        self.tmp = tmp

    def signal_factory(self) -> str:
        return self.text("motion.py", SIGNAL_MODEL) + ":build"

    def signal_weights(self) -> str:
        module = load_teacher(self.signal_factory(), num_classes=2, input_spec={"shape": (6, 64)}).module
        return self._model("motion.pt", module.state_dict())

    def signal_npz(self, name: str = "motion.npz", n: int = 8, labels=None, scale: float = 10.0) -> str:
        import numpy as np

        g = np.random.default_rng(0)
        y = np.asarray(labels if labels is not None else [i % 2 for i in range(n)], dtype=np.int64)
        np.savez(self.tmp / name, x=(scale * g.standard_normal((len(y), 6, 64))).astype(np.float32), y=y)
        return str(self.tmp / name)

    def resnet20(self) -> str:
        return self._model("r20.pt", create_model("resnet20-cifar").state_dict())

    def folder_of(self, classes, size=32) -> str:
        root = Path(self.folder("pets"))
        for name in classes:
            (root / name).mkdir(exist_ok=True)
            (root / name / "0.png").write_bytes(_png(size, "RGB"))
        return str(root)


def signal_model(*extra):
    return B("--model", lambda f: f.signal_weights(), "--arch", lambda f: f.signal_factory(), *SIGNAL_INPUT, *extra)


def user16(*extra):
    return user_model(f"{USER_MODEL}:build", "--input-shape", "3x16x16", *extra)


MORE_CASES = {
    # user code that exits
    "factory that calls sys.exit(0)": (user_model(lambda f: f.text("exits.py", "import sys\n\ndef build(num_classes=10):"
                                                                  "\n    sys.exit(0)\n") + ":build",
                                                  "--input-shape", "3x16x16"), "exited (SystemExit 0)"),
    "--arch builtins:exit": (user_model("builtins:exit", "--input-shape", "3x16x16"), "exited (SystemExit"),
    # options that do not apply
    "--depth with magnitude pruning": (B("--pruning", "magnitude", "--depth", "0.5"),
                                       "--depth is an option of channel pruning"),
    "--channel-ratio with magnitude pruning": (B("--pruning", "magnitude", "--channel-ratio", "0.3"),
                                               "--channel-ratio is an option of channel pruning"),
    "--sparsity with channel pruning": (B("--pruning", "channel", "--sparsity", "0.5"),
                                        "--sparsity is an option of magnitude pruning"),
    "--eval-data with the built-in default": (B("--eval-data", lambda f: f.digits_zip()),
                                              "--eval-data is for a teacher of your own"),
    "--depth on a model without residual blocks": (user16("--pruning", "channel", "--depth", "0.5"),
                                                   "this model has none"),
    "--channel-ratio 0": (B("--pruning", "channel", "--channel-ratio", "0"), "removes nothing"),
    "--round-to as wide as every layer": (B("--pruning", "channel", "--round-to", "64"),
                                          "in steps of --round-to 64, and the widest layer of this model has 64"),
    "--macs-target that cannot be reached": (user16("--pruning", "channel", "--macs-target", "0.01"),
                                             "cannot be reached: removing 95%"),
    "--macs-target too mild to remove a channel": (user16("--pruning", "channel", "--macs-target", "0.99"),
                                                   "removes no channel from this model"),
    "class folders the model does not name": (B("--model", lambda f: f.resnet20(), "--arch", "resnet20-cifar",
                                                "--eval-data", lambda f: f.folder_of(["kitty", "puppy", "boat"])),
                                              "are not classes of the model"),
    # resources
    "dreams larger than the memory": (user_model(f"{USER_MODEL}:build", "--input-shape", "3x2048x2048"),
                                      "GB per process, and this machine has"),
    "a synthesis batch larger than the memory": (user_model(f"{USER_MODEL}:build", "--input-shape", "3x512x512",
                                                            "--images", "2048", "--synth-batch", "2048"),
                                                 "needs about"),
    **({} if torch.cuda.is_available() else {  # a machine with a GPU builds there
        "--device cuda without a GPU": (B("--device", "cuda"), "PyTorch sees no CUDA GPU on this machine")}),
    "--workers beyond the cores": (B("--workers", "100000"), "more processes than this machine's"),
    # numbers checked at the door
    "--std nan": (user16("--std", "nan,1,1"), "not a finite number"),
    "--mean inf": (user16("--mean", "inf,0,0"), "not a finite number"),
    "--std 0": (user16("--std", "0,1,1"), "holds a value <= 0"),
    "a --mean with an empty value": (user16("--mean", "0.5,,0.5"), "--mean '0.5,,0.5' does not parse"),
    "--input-shape 3x1x1": (user_model(f"{USER_MODEL}:build", "--input-shape", "3x1x1"), "has a length of 1"),
    "--value-range that does not parse": (signal_model("--value-range", "5,1"), "--value-range '5,1' does not parse"),
    "--value-range without --model": (B("--value-range", "0,1"), "describe a teacher of your own"),
    "--num-classes without --model": (B("--num-classes", "3"), "describe a teacher of your own"),
    # click's own errors, in one line
    "an unknown option": (B("--nope", "1"), "No such option"),
    "an unknown command": (lambda f: ["buidl"], "No such command 'buidl'"),
    "an option without its value": (B("--model"), "requires an argument. (see `cli build --help`)"),  # cli: the runner's
    # messages that name the real problem
    "a .pt2 that is a state_dict": (B("--model", lambda f: f._model("sd.pt2", create_model("digits-cnn").state_dict())),
                                    "a torch.save file, such as a state_dict, not a program"),
    "--save-config where nothing can be written": (B("--save-config", "/proc/edgefree-i.toml"),
                                                   "(/proc/edgefree-i.toml): check the path, its permissions"),
    "config keys with command-line names": (B("--config", toml("sparsity = 0.5\nepochs = 3\n")),
                                            "sparsity goes in [[prune]]"),
    "--host with a port": (C("flash", lambda f: str(f.build), "--host", "pi@localhost:notaport"), "pass it with --port"),
    "signal labels beyond the model's classes": (signal_model("--eval-data", lambda f: f.signal_npz(labels=[0, 1, 6])),
                                                 "labels 0 to 1): keep only the model's classes"),
    "an empty .npz": (signal_model("--eval-data", lambda f: f.signal_npz("empty.npz", labels=[])), "holds no signals"),
    "an .npz for an image model": (digits_model("--eval-data", lambda f: f.signal_npz()), "is an .npz, which edgefree "
                                                                                         "reads for a signal model"),
}


@pytest.mark.parametrize("name", MORE_CASES)
def test_refused_in_exactly_one_line_before_any_work(name, tiny_build, tmp_path):
    make_args, expected = MORE_CASES[name]
    if "/proc/" in expected and not Path("/proc/self").exists():
        pytest.skip("needs /proc")
    files = MoreFiles(tmp_path, tiny_build)
    args = make_args(files)
    before = {p: folder_hash(p) for p in [files.out, *tmp_path.iterdir()]}
    result = CliRunner().invoke(cli, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, f"{name}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert expected in lines[0], lines[0]
    assert {p: folder_hash(p) for p in before} == before, f"{name} changed a file or folder"
    assert not list(tmp_path.glob(".*.edgefree-*")), "a staging folder was left behind"


def test_a_signal_factory_gets_its_value_range_from_its_normalization(tmp_path, capfd):
    """A Conv1d + BatchNorm1d model of the user's, raw values about -28..35: not (0, 1) as an image."""
    from edgefree.models.spec import SIGNAL_RANGE_STDS

    files = MoreFiles(tmp_path)
    out = tmp_path / "signal-out"
    result = CliRunner().invoke(cli, ["build", "--out", str(out), "--model", files.signal_weights(), "--arch",
                                      files.signal_factory(), *SIGNAL_INPUT, "--eval-data", files.signal_npz(),
                                      *TINY, "--images", "16", "--synth-batch", "16", "--reconstruct-images", "16"])
    assert result.exit_code == 0, result.output
    low = min(m - SIGNAL_RANGE_STDS * s for m, s in zip(SIGNAL_MEAN, SIGNAL_STD))
    high = max(m + SIGNAL_RANGE_STDS * s for m, s in zip(SIGNAL_MEAN, SIGNAL_STD))
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["input"]["value_range"] == pytest.approx([low, high]) and (low, high) == (-38.0, 42.0)
    assert report["model"]["value_range_assumed"] is True
    assert "value range assumed: -38 to 42 (pass --value-range" in result.output
    assert "assumed -38 to 42" in capfd.readouterr().err  # the warning, on the console while the build logs
    from edgefree.recover import SyntheticSet

    dreams = SyntheticSet.load(out / "synthetic.pt").images
    raw = dreams * torch.tensor(SIGNAL_STD).view(1, -1, 1) + torch.tensor(SIGNAL_MEAN).view(1, -1, 1)
    assert raw.min() >= low - 1e-3 and raw.max() <= high + 1e-3 and raw.max() - raw.min() > 2  # not squeezed into 0..1
    assert signal_spec(files, value_range=(-30.0, 40.0)).value_range == (-30.0, 40.0)


def signal_spec(files, **changes):
    return load_teacher(files.signal_factory(), num_classes=2, input_spec={
        "shape": (6, 64), "mean": SIGNAL_MEAN, "std": SIGNAL_STD, **changes}).spec


def test_signals_far_outside_the_value_range_are_warned_about(tmp_path, capsys):
    from edgefree.data import load_eval_data

    files = MoreFiles(tmp_path)
    spec = signal_spec(files, value_range=(-1.0, 1.0))
    data = load_eval_data(files.signal_npz(scale=10.0), spec)
    assert len(data) == 8
    err = capsys.readouterr().err
    assert err.count("lie outside") == 1 and "lie outside the value range -1 to 1" in err and "--value-range" in err
    load_eval_data(files.signal_npz("inside.npz", scale=0.1), spec)
    assert "lie outside" not in capsys.readouterr().err


def test_a_tiny_evaluation_set_is_warned_about(tmp_path, capsys):
    from edgefree.data import FEW_EVAL_ITEMS, load_eval_data

    files = MoreFiles(tmp_path)
    load_eval_data(files.signal_npz(), signal_spec(files))
    assert "holds only 8 signals: each is 12.5 points of top-1" in capsys.readouterr().err
    assert len(load_eval_data("digits", load_teacher("digits-cnn").spec)) >= FEW_EVAL_ITEMS
    assert "holds only" not in capsys.readouterr().err


def test_export_takes_quiet_and_reports_show_one_cost_table(tiny_build, tmp_path):
    from edgefree.report import render_markdown

    files = Files(tmp_path, tiny_build)
    result = CliRunner().invoke(cli, ["export", str(files.build), "--quiet", "--formats", "onnx", "--precisions", "fp32"])
    assert result.exit_code == 0, result.output
    report = json.loads((files.build / "report.json").read_text())
    md = render_markdown(report)
    assert md.count("| model | multiply-adds") == 1 and "## Cost" not in md and md.count("## Pruning and cost") == 1
    channel_only = {**report, "pruning": {**report["pruning"], "stages": [{"kind": "channel", "importance": "l2",
                                                                            "round_to": 8}], "ratio": 0.5}}
    assert "## Sparsity" not in render_markdown(channel_only) and "magnitude ranking" not in render_markdown(channel_only)


def test_a_forward_pass_out_of_memory_names_the_memory_not_the_shape():
    from edgefree.errors import EdgefreeError
    from edgefree.models import InputSpec
    from edgefree.models.teacher import check_forward

    class Hungry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(3)

        def forward(self, x):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 12884901888 bytes")

    with pytest.raises(EdgefreeError, match=r"ran out of memory on an input of shape 3x64x64 \(a batch of 2\)") as caught:
        check_forward(Hungry(), InputSpec((3, 64, 64)), "hungry")
    assert "--input-shape" in str(caught.value) and "fails on" not in str(caught.value)


def test_export_again_keeps_the_builds_formats_and_names_what_it_replaced(tiny_build, tmp_path, monkeypatch):
    import shutil

    import edgefree.export.rebuild as rebuild

    build = tmp_path / "build"
    shutil.copytree(tiny_build, build)
    result = CliRunner().invoke(cli, ["export", str(build), "--quiet", "--precisions", "int8"])
    assert result.exit_code == 0, result.output
    assert "onnx-int8" in result.output and "onnx-fp32 no longer in it" in result.output  # the build's format kept
    seen = []
    monkeypatch.setattr(rebuild, "export_student", lambda student, spec, config, *a, **k: seen.append(config) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        rebuild.reexport(build, rebuild.ExportConfig())
    assert seen[0].formats == ("onnx",) and seen[0].precisions == ("fp32",)  # the build's, not the target's


def test_bench_and_export_check_new_eval_data_against_the_models_outputs(tiny_build, tmp_path, monkeypatch):
    """Evaluation data read by bench (the build's) or given to export is checked as the build checks its own:
    against the number of classes the model scores (a folder per class where folders take labels in sorted
    order)."""
    import edgefree.data
    import edgefree.export.rebuild as rebuild
    from edgefree.errors import DataError

    seen = []

    def stop(source, spec, classes=None):
        seen.append(classes)
        raise DataError("stopped here")

    monkeypatch.setattr(edgefree.data, "load_eval_data", stop)  # bench imports it when it runs
    monkeypatch.setattr(rebuild, "load_eval_data", stop)
    files = Files(tmp_path, tiny_build)
    for command in (["bench", str(files.build)], ["export", str(files.build), "--eval-data", files.digits_zip()]):
        result = CliRunner().invoke(cli, command)
        assert "stopped here" in result.output, result.output
    assert seen == [10, 10]


def test_bench_after_an_export_with_other_precisions_compares_the_teacher_in_them(tiny_build, tmp_path):
    files = Files(tmp_path, tiny_build)
    assert (files.build / "bench.json").is_file()
    exported = CliRunner().invoke(cli, ["export", str(files.build), "--precisions", "fp32,int8", "--quiet"])
    assert exported.exit_code == 0, exported.output
    # the bench measured the artifacts the export replaced: its results go with them, and the user is told
    assert not any((files.build / n).exists() for n in ("bench.json", "bench.md", "bench.png"))
    exported_report = json.loads((files.build / "report.json").read_text())
    assert exported_report["bench"] is None and "bench" not in exported_report["seconds"]
    assert exported_report["out"] == str(files.build)  # a copy of the build: where it is now
    assert exported_report["rerun"] == ["export"] and "| export (`edgefree export`, after the build) |" in (
        files.build / "report.md").read_text()  # the Time table shows the export that made the artifacts
    assert "bench results" in (files.build / "build.log").read_text() and (files.build / "notes.txt").is_file()
    benched = CliRunner().invoke(cli, ["bench", str(files.build), "--runs", "2", "--no-emulate", "--quiet"])
    assert benched.exit_code == 0, benched.output
    benched_report = json.loads((files.build / "report.json").read_text())
    assert benched_report["rerun"] == ["export", "export-teacher", "bench"]  # the bench exported the teacher again
    teacher_export = json.loads((files.build / "bench.json").read_text())["teacher_export"]
    assert benched_report["seconds"]["export-teacher"] == round(teacher_export["seconds"], 2)
    assert "| export-teacher (`edgefree bench`, after the build) |" in (files.build / "report.md").read_text()
    rows = json.loads((files.build / "bench.json").read_text())["native"]["rows"]
    assert {(r["model"], r["precision"]) for r in rows if r["runtime"] == "onnxruntime"} == {
        (m, p) for m in ("teacher", "student") for p in ("fp32", "int8")}


@pytest.mark.parametrize("cache", ["a file", "a file/cache"])
def test_a_cache_that_cannot_be_a_folder_stops_the_build_before_any_work(cache, tmp_path):
    (tmp_path / "a file").write_text("x")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", "--out", str(out), *TINY], env={"EDGEFREE_CACHE": str(tmp_path / cache)})
    _one_error_line(result, "$EDGEFREE_CACHE")
    assert not out.exists() and _left_beside(tmp_path) == []
