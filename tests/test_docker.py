"""docker/: the arm64 image's pinned requirements are the toolchain's."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"


def _requirements(name: str) -> list[str]:
    lines = (DOCKER / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_image_pins_are_the_toolchains():
    """The arm64 image runs what the toolchain exported with (pyproject) and what the QEMU bench measured."""
    from edgefree.bench import emulator_setup

    pinned = dict(re.match(r"([\w.-]+)==(.+)", dep).groups()
                  for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
                  if "==" in dep)
    assert _requirements("arm64-requirements.txt") == [f"{n}=={pinned[n]}" for n in ("numpy", "onnxruntime",
                                                                                     "openvino")]
    assert _requirements("arm64-executorch.txt") == [*emulator_setup.EXECUTORCH_STACK,
                                                     *emulator_setup.EXECUTORCH_PURE_DEPS]
