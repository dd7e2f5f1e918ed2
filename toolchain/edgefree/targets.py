"""Target profiles: what we build for (ISA, runtimes, precisions), loaded from ``targets/*.toml``.

*What* we target lives here; *where* it runs (native, QEMU, SSH) lives in bench/ and deploy.
Profiles ship inside the package (``edgefree/targets``); a source checkout reads the
repository's ``targets/`` folder; ``$EDGEFREE_TARGETS`` adds a folder of your own.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from edgefree.errors import TargetError

MAX_THREADS = 1024  # threads per process, of a target, a bench or a build

FORMATS = ("onnx", "openvino", "executorch")
RUNTIME_OF_FORMAT = {"onnx": "onnxruntime", "openvino": "openvino", "executorch": "executorch"}
RUNTIMES = tuple(RUNTIME_OF_FORMAT.values())
PRECISIONS = ("fp32", "int8")
ISAS = ("x86_64", "aarch64")
DEPLOYS = ("local", "ssh", "adb")  # how artifacts reach the device: here, `edgefree flash` over SSH, an app's assets
# What `qemu-aarch64 -cpu help` lists in QEMU 7.2 (Debian bookworm); Cortex-A78AE, for one,
# is not there: such a target names the nearest core with the same instructions.
QEMU_CPUS = ("a64fx", "cortex-a35", "cortex-a53", "cortex-a57", "cortex-a72", "cortex-a76", "max", "neoverse-n1")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    isa: str
    cpu: str
    emulation_cpu: str
    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    threads: int = 1
    memory_mb: int = 0
    deploy: str = "local"
    deploy_hint: str = ""
    accelerator: str = ""
    notes: str = ""
    pruning: tuple[str, ...] = ("magnitude",)  # the default of `edgefree build --pruning` for this target

    def __post_init__(self):
        def check(ok: bool, what: str):
            if not ok:
                raise TargetError(f"target {self.name!r}: {what}")

        check(self.isa in ISAS, f"isa must be one of {ISAS}, got {self.isa!r}")
        check(bool(self.formats) and set(self.formats) <= set(FORMATS), f"formats must be a non-empty subset of {FORMATS}")
        check(bool(self.precisions) and set(self.precisions) <= set(PRECISIONS), f"precisions must be a subset of {PRECISIONS}")
        check(1 <= self.threads <= MAX_THREADS, f"threads must be >= 1 and <= {MAX_THREADS}, got {self.threads}")
        check(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name) is not None,
              "name must be letters, digits, '.', '_' and '-' (it names files and folders)")
        check(self.deploy in DEPLOYS, f"deploy must be one of {DEPLOYS}, got {self.deploy!r}")
        check(self.isa == "x86_64" or bool(self.emulation_cpu), "an aarch64 target needs emulation_cpu (a qemu -cpu model)")
        check(self.isa == "x86_64" or self.emulation_cpu in QEMU_CPUS,
              f"emulation_cpu {self.emulation_cpu!r} is not a QEMU 7.2 CPU model; choose from {QEMU_CPUS}")
        check(self.memory_mb >= 0, "memory_mb must be >= 0 (0: no budget)")
        check(list(self.pruning) in (["magnitude"], ["channel"], ["channel", "magnitude"]),
              f"pruning must be [\"magnitude\"], [\"channel\"] or [\"channel\", \"magnitude\"], got {list(self.pruning)}")

    @property
    def runtimes(self) -> tuple[str, ...]:
        """The runtimes that load this target's formats, in the profile's order."""
        return tuple(RUNTIME_OF_FORMAT[f] for f in self.formats)

    @property
    def emulated(self) -> bool:
        """True when this machine (x86-64) must emulate the target's ISA."""
        return self.isa != "x86_64"

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _folders() -> list[Path]:
    packaged = Path(__file__).parent / "targets"
    checkout = Path(__file__).resolve().parents[2] / "targets"
    extra = [Path(p) for p in os.environ.get("EDGEFREE_TARGETS", "").split(os.pathsep) if p]
    missing = [str(p) for p in extra if not p.is_dir()]
    if missing:
        raise TargetError(f"EDGEFREE_TARGETS names {', '.join(missing)}, which is not a folder: point it at a folder "
                          "of target profiles (*.toml), or unset it")
    return [p for p in (*extra, packaged, checkout) if p.is_dir()]


# what each kind of field of Target takes from a profile, and how to say it
_KINDS = {"str": (lambda v: isinstance(v, str), "a string"),
          "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
          "tuple[str, ...]": (lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v), "a list of strings")}


def _read(path: Path) -> Target:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"target profile {path} is not valid UTF-8 TOML ({exc}): fix or remove it") from exc
    known = {f.name: f for f in fields(Target)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise TargetError(f"target profile {path}: unknown keys {unknown}; known: {sorted(known)}")
    missing = [n for n, f in known.items() if n not in raw and f.default is MISSING]
    if missing:
        raise TargetError(f"target profile {path}: missing keys {missing}")
    for name, value in raw.items():
        accepts, wanted = _KINDS[known[name].type]
        if not accepts(value):
            raise TargetError(f"target profile {path}: {name} must be {wanted}, got {value!r}")
    return _target(raw)


def _target(values: dict) -> Target:
    """A profile from TOML or JSON values (lists become the tuples ``Target`` holds)."""
    return Target(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def list_targets() -> dict[str, Target]:
    """All target profiles by name (the first folder that defines a name wins)."""
    found: dict[str, Target] = {}
    for folder in _folders():
        here: dict[str, Path] = {}
        for path in sorted(folder.glob("*.toml")):
            target = _read(path)
            if target.name in here:
                raise TargetError(f"target profiles {here[target.name]} and {path} are both named {target.name!r}: "
                                  "rename one (a name is one profile)")
            here[target.name] = path
            found.setdefault(target.name, target)
    return found


def built_target(report: dict) -> Target:
    """The profile a build recorded in its ``report.json`` (what bench, export and flash of it use, so a
    profile of one's own works without ``EDGEFREE_TARGETS`` and an edited profile file changes nothing
    built); a report that recorded only the name, that name's profile now."""
    recorded = report["target"]
    known = {f.name for f in fields(Target)}
    try:
        return _target({k: v for k, v in recorded.items() if k in known})
    except (TypeError, TargetError):
        return load_target(recorded["name"])


def load_target(name: str) -> Target:
    """The profile called ``name``; an unknown name lists the known ones.

    Example:
        >>> load_target("android-arm64").isa
        'aarch64'
    """
    targets = list_targets()
    if name not in targets:
        raise TargetError(f"unknown target {name!r}; known targets: {', '.join(sorted(targets))}")
    return targets[name]
