"""Prepare the arm64 environment that ``emulation.run()`` executes in, from Debian and PyPI packages.

Under ``cache_dir("arm64")`` or ``$EDGEFREE_ARM64_HOME`` (the recipe of the qemu-arm64 notes):

* ``root/``: Debian bookworm arm64 with Python 3.11, extracted by mmdebstrap (no package
  scripts run, so no binfmt, chroot or container is needed);
* ``cpus/<model>/``: a view of that root per QEMU CPU model with a fake ``/proc/cpuinfo``
  and ``midr_el1`` naming that core: QEMU 7.2 passes the host's x86 ``/proc/cpuinfo``
  through, onnxruntime's cpuinfo parser crashes on it, and ``qemu-aarch64 -L VIEW``
  redirects every absolute path that exists in VIEW;
* ``site/`` (+ ``site-executorch/``): aarch64 wheels installed by pip with ``--target``;
* ``plugin/libicount.so``: icount.c built against ``qemu-plugin.h`` from Debian's qemu source;
* ``setup.json``: what was prepared, written last (present means ready).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgefree.cache import arm64_home
from edgefree.errors import EmulationError, MissingRuntimeError
from edgefree.targets import RUNTIMES

SUITE = "bookworm"  # its python3.11 matches the cp311 aarch64 wheels
PYTHON = "3.11"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOT_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1")
ROOT_ENTRIES = ("bin", "etc", "lib", "sbin", "usr", "var")  # not dev/tmp: those stay the host's
HOST_PACKAGES = ("qemu-user", "mmdebstrap", "gcc", "libc6-dev")
TOOLS = {"qemu-aarch64": "qemu-user", "mmdebstrap": "mmdebstrap", "gcc": "gcc libc6-dev", "apt-get": "apt"}
# PyPI's aarch64 torch is CPU-only up to 2.10 (2.11+ pulls ~3 GB of CUDA wheels); ExecuTorch
# 1.1.0's runtime links that torch and loads .pte files written by executorch 1.5.1 on x86.
EXECUTORCH_STACK = ("torch==2.10.0", "executorch==1.1.0")
EXECUTORCH_PURE_DEPS = ("typing_extensions", "sympy", "mpmath", "networkx", "filelock", "jinja2", "markupsafe",
                        "fsspec", "flatbuffers", "packaging", "pyyaml", "tabulate", "ruamel.yaml")
# pip does not fill gaps between platform tags: name every manylinux_2_N, or it silently
# picks old releases (openvino 2023.1 with only two tags).
PLATFORMS = [f"manylinux_2_{n}_aarch64" for n in range(17, 37)] + ["manylinux2014_aarch64"]


@dataclass(frozen=True)
class ArmCpu:
    """What a fake /proc/cpuinfo says about a core: MIDR fields and the kernel's feature names."""

    part: int
    variant: int
    revision: int
    features: str

    @property
    def midr(self) -> int:
        return 0x41 << 24 | self.variant << 20 | 0xF << 16 | self.part << 4 | self.revision


_V8 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82 = _V8 + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
# The QEMU 7.2 CPU models a target may name (qemu-aarch64 -cpu help), with Arm's part numbers.
ARM_CPUS = {
    "cortex-a35": ArmCpu(0xD04, 0, 2, _V8), "cortex-a53": ArmCpu(0xD03, 0, 4, _V8),
    "cortex-a57": ArmCpu(0xD07, 1, 3, _V8), "cortex-a72": ArmCpu(0xD08, 0, 3, _V8),
    "cortex-a76": ArmCpu(0xD0B, 4, 1, _V82), "neoverse-n1": ArmCpu(0xD0C, 3, 1, _V82 + " ssbs"),
}


def default_home() -> Path:
    """``$EDGEFREE_ARM64_HOME``, else ``cache_dir("arm64")``."""
    return arm64_home(create=True)


def not_prepared(home: Path) -> str:
    """Why emulation cannot run in ``home``, and how to prepare it (or where else to look)."""
    return (f"the arm64 environment in {home} is not prepared: run `edgefree emulator setup` (it prepares "
            "$EDGEFREE_ARM64_HOME, else the cache's arm64 folder; set EDGEFREE_ARM64_HOME to one prepared elsewhere)")


def require_tools(*names: str) -> None:
    """Fail with the apt-get line that installs the missing host tools."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        packages = " ".join(dict.fromkeys(TOOLS[n] for n in missing))
        raise MissingRuntimeError(f"{', '.join(missing)} not found: apt-get install -y --no-install-recommends "
                                  f"{packages} (arm64 emulation needs {' '.join(HOST_PACKAGES)})")


def prepared(home: Path) -> dict | None:
    """The ``setup.json`` record of a prepared environment, or None."""
    stamp = Path(home) / "setup.json"
    return json.loads(stamp.read_text()) if stamp.is_file() else None


def plugin_path(home: Path) -> Path:
    return Path(home) / "plugin" / "libicount.so"


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-6:])
        raise EmulationError(f"{what} failed (exit {done.returncode}): {' '.join(command[:4])} ...\n{tail}")
    return done.stdout


def _fresh(path: Path) -> Path:
    """An empty ``<path>.partial`` to build into; renamed over ``path`` only once complete."""
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def _publish(partial: Path, path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)


def make_root(home: Path, mirror: str) -> Path:
    root = home / "root"
    if not (root / "usr/bin/python3.11").exists():
        partial = _fresh(root)
        _run(["mmdebstrap", "--arch=arm64", "--variant=extract", f"--include={','.join(ROOT_PACKAGES)}",
              SUITE, str(partial), mirror], f"mmdebstrap of a Debian {SUITE} arm64 root from {mirror}")
        _publish(partial, root)
    return root


def _cpuinfo(cpu: ArmCpu, cores: int = 2) -> str:
    stanza = ("processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
              "CPU architecture: 8\nCPU variant\t: {v:#x}\nCPU part\t: {p:#05x}\nCPU revision\t: {r}\n\n")
    return "".join(stanza.format(i=i, f=cpu.features, v=cpu.variant, p=cpu.part, r=cpu.revision)
                   for i in range(cores))


def cpu_view(home: Path, model: str) -> Path:
    """The root as seen by a ``model`` core: symlinks to ``root/`` plus its own cpuinfo files."""
    view = Path(home) / "cpus" / model
    if (view / "proc/cpuinfo").exists():
        return view
    cpu = ARM_CPUS[model]
    partial = _fresh(view)
    for entry in ROOT_ENTRIES:
        (partial / entry).symlink_to(Path("../../root") / entry)
    (partial / "proc").mkdir()
    (partial / "proc/cpuinfo").write_text(_cpuinfo(cpu))
    for core in range(2):  # OpenVINO reads the MIDR here and warns without it
        regs = partial / f"sys/devices/system/cpu/cpu{core}/regs/identification"
        regs.mkdir(parents=True)
        (regs / "midr_el1").write_text(f"0x{cpu.midr:016x}\n")
    _publish(partial, view)
    return view


def _pip_target(target: Path, packages: list[str], deps: bool = True) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
               *[arg for tag in PLATFORMS for arg in ("--platform", tag)], "--target", str(target), *packages]
    _run(command + ([] if deps else ["--no-deps"]), f"pip install of aarch64 wheels {' '.join(packages)}")


def _pin(name: str) -> str:
    """``name==<this machine's version>``, so parity compares like with like; unpinned if not installed here."""
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def install_runtimes(home: Path, runtimes: list[str], installed: list[str]) -> list[str]:
    """aarch64 wheels of ``runtimes`` (the host's versions, so parity compares like with like)."""
    wanted = sorted(set(runtimes) | set(installed))
    python_side = [r for r in wanted if r != "executorch"]
    if set(python_side) - set(installed) or not (home / "site").is_dir():
        pins = [_pin(name) for name in ["numpy", *python_side]]
        partial = _fresh(home / "site")
        _pip_target(partial, pins)
        _publish(partial, home / "site")
    if "executorch" in wanted and not (home / "site-executorch").is_dir():
        partial = _fresh(home / "site-executorch")
        _pip_target(partial, list(EXECUTORCH_STACK), deps=False)  # with deps pip trips on coremltools markers
        _pip_target(partial, list(EXECUTORCH_PURE_DEPS), deps=False)
        _publish(partial, home / "site-executorch")
    return wanted


def _host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise EmulationError("cannot tell the host's Debian release from /etc/os-release (needed for qemu's source)")


def plugin_header(home: Path, mirror: str) -> Path:
    """``qemu-plugin.h`` of the host's qemu, from Debian's source package (a private deb-src list)."""
    src = home / "plugin" / "src"
    header = home / "plugin" / "qemu-plugin.h"
    if header.exists():
        return header
    (src / "lists/partial").mkdir(parents=True, exist_ok=True)
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    (src / "deb-src.sources").write_text(
        f"Types: deb-src\nURIs: {mirror}\nSuites: {_host_codename()}\nComponents: main\n"
        + (f"Signed-By: {keyring}\n" if keyring.exists() else ""))
    apt = ["apt-get", "-q", "-o", f"Dir::Etc::SourceList={src / 'deb-src.sources'}", "-o", "Dir::Etc::SourceParts=/dev/null",
           "-o", f"Dir::State::Lists={src / 'lists'}", "-o", "APT::Sandbox::User=root"]
    _run(apt + ["update"], "apt-get update of a private deb-src list")
    _run(apt + ["source", "--download-only", "qemu"], "download of Debian's qemu source package", cwd=src)
    tarball = next(src.glob("qemu_*.orig.tar.*"), None)
    if tarball is None:
        raise EmulationError(f"Debian's qemu source in {src} has no orig tarball")
    _run(["tar", "-xf", str(tarball), "-C", str(src), "--wildcards", "*/include/qemu/qemu-plugin.h"],
         "extracting qemu-plugin.h")
    shutil.copy(next(src.glob("*/include/qemu/qemu-plugin.h")), header)
    shutil.rmtree(src)  # 24 MB of source and 20 MB of package lists, for one header
    return header


def build_plugin(home: Path, mirror: str) -> Path:
    header = plugin_header(home, mirror)
    out = plugin_path(home)
    _run(["gcc", "-shared", "-fPIC", "-O2", "-I", str(header.parent), str(Path(__file__).with_name("icount.c")),
          "-o", str(out)], "building the icount QEMU plugin")
    return out


def setup(runtimes=("onnxruntime", "openvino"), home: Path | None = None, mirror: str = DEFAULT_MIRROR,
          log=print) -> dict:
    """Prepare (or complete) the arm64 environment; returns what ``setup.json`` records.

    Usage (downloads an arm64 root and wheels)::

        setup(["onnxruntime"])
    """
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        raise EmulationError(f"unknown runtime(s) {unknown} for arm64; known: {', '.join(RUNTIMES)}")
    require_tools(*TOOLS)
    home = Path(home or default_home())
    before = prepared(home) or {}
    log(f"arm64 root ({SUITE}, python {PYTHON}) in {home / 'root'}")
    make_root(home, mirror)
    for model in ARM_CPUS:
        cpu_view(home, model)
    log(f"aarch64 wheels for {', '.join(sorted(set(runtimes) | set(before.get('runtimes', {}))))}")
    wanted = install_runtimes(home, list(runtimes), list(before.get("runtimes", {})))
    log("icount plugin")
    build_plugin(home, mirror)
    record = {
        "suite": SUITE, "python": PYTHON, "mirror": mirror, "cpus": sorted(ARM_CPUS),
        "qemu": _run(["qemu-aarch64", "--version"], "qemu-aarch64 --version").splitlines()[0],
        "runtimes": {r: _guest_version(home, r) for r in wanted},
    }
    (home / "setup.json").write_text(json.dumps(record, indent=2))
    return record


def _guest_version(home: Path, runtime: str) -> str:
    site = home / ("site-executorch" if runtime == "executorch" else "site")
    found = next(site.glob(f"{runtime}-*.dist-info"), None)
    return found.name.removeprefix(f"{runtime}-").removesuffix(".dist-info") if found else "missing"
