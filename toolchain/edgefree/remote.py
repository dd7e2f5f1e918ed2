"""What ``deploy.flash`` does on the device, over a ``ssh.Device``: probe, verify, run, switch.

The checks run as small Python programs piped to the device's interpreter, so the
device needs nothing but Python, numpy and the runtimes (no sha256sum, no jq).
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from shlex import quote

import numpy as np

from edgefree.errors import DeployError, MissingRuntimeError
from edgefree.export.unpack import sha256_file
from edgefree.ssh import Device
from edgefree.targets import Target

# Runs on the device (stdin to its python): the python, the CPU and which modules import. Each module is
# imported in a process of its own: a wheel built for a newer CPU dies of SIGILL as it imports, which would
# take the whole probe with it.
_PROBE = """
import json, platform, signal, subprocess, sys
IMPORT = (
    "import importlib, importlib.metadata, sys\\n"
    "module = importlib.import_module(sys.argv[1])\\n"
    "try:\\n"
    "    print(importlib.metadata.version(sys.argv[1]))\\n"
    "except importlib.metadata.PackageNotFoundError:\\n"
    "    print(getattr(module, '__version__', 'unknown'))\\n")
found, missing = {}, {}
for name in sys.argv[1:]:
    done = subprocess.run([sys.executable, "-c", IMPORT, name], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if done.returncode == 0:
        found[name] = done.stdout.strip().splitlines()[-1]
    elif done.returncode < 0:
        how = signal.Signals(-done.returncode).name
        missing[name] = how + (": this CPU lacks instructions its wheel was built for" if how == "SIGILL" else "")
    else:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        missing[name] = lines[-1] if lines else "exit status %d" % done.returncode
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "found": found, "missing": missing}))
"""

# Runs on the device in the release folder: each file's state, and (with "unpack")
# packed files rebuilt by unpack.py and checked again. Prints {path: state}.
# unpack.py's sha256_file is sent as source: the first check runs before unpack.py is on the device.
_VERIFY = inspect.getsource(sha256_file) + """
import hashlib, json, os, sys
files, rebuild = json.loads(sys.argv[1]), sys.argv[2] == "unpack"
sys.dont_write_bytecode = True  # no __pycache__ in a release: its files are exactly the manifest's
sha = sha256_file
def state(f):
    if os.path.isfile(f["path"]) and sha(f["path"]) == f["sha256"]:
        return "ok"
    packed = f.get("packed_path")
    if not (packed and os.path.isfile(packed)):
        return "missing" if not os.path.exists(f["path"]) else "sha256 differs from the manifest"
    if sha(packed) != f["packed_sha256"]:
        return "packed file's sha256 differs from the manifest"
    if not rebuild:
        return "packed"
    sys.path.insert(0, os.getcwd())
    from unpack import unpack
    try:
        unpack(packed, f["path"] + ".part")
    except Exception as exc:
        return f"unpack failed: {exc}"
    if sha(f["path"] + ".part") != f["sha256"]:
        return "unpacked file's sha256 differs from the manifest"
    os.replace(f["path"] + ".part", f["path"])
    os.remove(packed)
    return "ok"
print(json.dumps({f["path"]: state(f) for f in files}))
"""


def probe(device: Device, python: str, target: Target, chosen: list[dict], strict: bool = True) -> dict:
    """The device's CPU, python and runtime versions; a wrong ISA is an error, and so is a missing runtime
    (``strict`` False: only when it lacks the runtime of every chosen artifact; ``missing`` names them)."""
    modules = ["numpy", *sorted({a["runtime"] for a in chosen})]  # runtime names are module names
    out = device.run(f"{python} - {' '.join(modules)}", stdin=_PROBE, check=False).stdout
    if not out.strip():
        raise MissingRuntimeError(f"`{python}` does not run on {device.where}: install python3 there "
                                  "(or point --remote-python at the interpreter to use)")
    probe = json.loads(out)
    if probe["machine"] != target.isa:
        raise DeployError(f"{device.where} reports machine {probe['machine']}, but target {target.name!r} is "
                          f"{target.isa}: flash a build for that device's target")
    runtimes = {a["runtime"] for a in chosen}
    if probe["missing"] and (strict or "numpy" in probe["missing"] or runtimes <= set(probe["missing"])):
        raise MissingRuntimeError(f"the device's python ({python} on {device.where}) cannot import "
                                  + "; ".join(f"{m} ({why})" for m, why in probe["missing"].items())
                                  + f". {install_hint(python, probe['missing'], chosen)}")
    return probe


def install_hint(python: str, missing, chosen: list[dict]) -> str:
    """How to install the ``missing`` modules on the device, at the versions ``chosen`` were exported with."""
    built_with = {a["runtime"]: a.get("runtime_versions", {}).get(a["runtime"], "") for a in chosen}
    release = {m: re.match(r"[\d.]*\d", built_with.get(m, "")) for m in missing}  # 2026.4.1-22982-...
    hint = " ".join(f"{m}=={v.group()}" if v else m for m, v in release.items())
    return (f"Install it there: {python} -m pip install {hint} (where that python refuses it, as Raspberry Pi OS's "
            f"does: python3 -m venv --system-site-packages ~/edgefree-venv && ~/edgefree-venv/bin/pip install {hint}, "
            f"then flash with "
            "--remote-python ~/edgefree-venv/bin/python)")


def verify(device: Device, python: str, release: str, files: list[dict], rebuild: bool) -> dict:
    """Each file's state on the device: ``ok``, ``packed`` (only when not ``rebuild``) or what is wrong."""
    keys = ("path", "sha256", "packed_path", "packed_sha256")
    spec = json.dumps([{k: f[k] for k in keys if k in f} for f in files])
    mode = "unpack" if rebuild else "check"
    return json.loads(device.run(f"cd {quote(release)} && {python} - {quote(spec)} {mode}", stdin=_VERIFY).stdout)


def run_runner(device: Device, python: str, release: str, names: list[str], runs: int, warmup: int,
                   threads: int, fetch_to: Path) -> dict:
    """runner.py in the release on the device; its results (and logits, into ``fetch_to``) come back."""
    out = "results/run.json"
    command = (f"cd {quote(release)} && {python} runner.py --manifest manifest.json --artifacts "
               f"{quote(','.join(names))} --inputs inputs.npy --runs {runs} --warmup {warmup} --threads {threads} "
               f"--out {out}")
    ran = device.run(command, check=False)  # exit 1 when an artifact failed: its error is in the result
    try:
        results = json.loads(device.sftp.open(f"{release}/{out}").read())["artifacts"]
    except FileNotFoundError:
        raise DeployError(f"on {device.where} runner.py wrote no result (exit {ran.returncode}): "
                          f"{ran.stderr.strip()[-2000:]}") from None
    failed = {name: r["error"] for name, r in results.items() if r["error"]}
    if failed:
        raise DeployError(f"on {device.where} the runner failed, `current` is unchanged: "
                          + "; ".join(f"{name}: {error}" for name, error in failed.items()))
    for name, r in results.items():  # outputs_npy is named relative to the result file
        r["logits"] = np.load(device.download(f"{release}/results/{r['outputs_npy']}", fetch_to / f"{name}.npy"))
    return results


def switch(device: Device, root: str, release_id: str) -> None:
    """Point ``current`` at the release atomically: a new symlink renamed over the old one.

    The release is first marked as flashed (``.flashed``, its time renewed at every switch to it):
    ``prune_releases`` ranks releases by that mark.
    """
    temp, target = f".current-{release_id}.tmp", f"releases/{release_id}"
    device.run(f"cd {quote(root)} && touch {quote(target)}/.flashed && ln -sfn {quote(target)} {quote(temp)} "
               f"&& mv -T {quote(temp)} current")
    if device.sftp.readlink(f"{root}/current") != target:
        raise DeployError(f"on {device.where}, {root}/current does not point at {target} after the switch")


def prune_releases(device: Device, root: str, current: str, keep: int) -> tuple[list[str], str | None]:
    """Delete all but the ``keep`` most recently flashed releases (``current`` always stays).

    A release counts once it became current: ``switch`` marks it (``.flashed``), and releases rank
    by that mark. Unmarked folders (a copy that failed midway, resumed by the next flash) and
    anything not named like a release id are left alone. Best effort: the switch has already
    happened, so a failure is returned, not raised. Returns the deleted ids and the error, if any.
    """
    releases = quote(f"{root}/releases")
    listed = device.run(f"cd {releases} && ls -1t -- */.flashed", check=False).stdout.split()
    ids = [path.split("/")[0] for path in listed if re.fullmatch(r"[0-9a-f]{16}/\.flashed", path)]
    old = [name for name in ids if name != current][keep - 1:]
    if not old:
        return [], None
    done = device.run(f"cd {releases} && rm -rf -- " + " ".join(quote(name) for name in old), check=False)
    error = (done.stderr.strip()[-500:] or f"exit {done.returncode}") if done.returncode else None
    return old, error
