"""``flash()``: copy a build's artifacts to a devkit over SSH, verify them there, switch, run.

The device keeps one folder per release and a ``current`` symlink:

    <remote_dir>/releases/<release id>/   manifest.json, runner.py, unpack.py, inputs.npy, artifacts
    <remote_dir>/current -> releases/<release id>

The release id is a hash of what is sent, so flashing the same build again sends
nothing new, and a copy that was cut short resumes. Files arrive through a
``.part`` name, packed forms (``.efpk``) are sent when present and unpacked on the
device, and every file's sha256 is checked there against the manifest. Then
``runner.py`` runs every artifact in the release (the logits of one input, compared
with the build machine's, and the latency), and only then is ``current`` switched
to it (``ln -s`` to a temp name, then ``mv -T``: atomic). So a copy that fails, is
interrupted, or does not run never becomes current.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from shlex import quote

import numpy as np

from edgefree import remote
from edgefree.errors import DeployError, MissingRuntimeError, warn
from edgefree.export.unpack import sha256_file as _sha256
from edgefree.outfolder import absolute, check_out_folder, staged
from edgefree.report import render_markdown
from edgefree.ssh import Device, check_key, split_host
from edgefree.targets import Target, built_target, load_target
from edgefree.verify import read_build, read_manifest, verify_artifacts

PACKAGE = Path(__file__).parent
# The standalone scripts that run on the device (stdlib + numpy + the runtime).
DEVICE_SCRIPTS = {"runner.py": PACKAGE / "bench" / "runner.py", "unpack.py": PACKAGE / "export" / "unpack.py"}


def _device_runner():
    """runner.py, the very file sent to the device, loaded here (by path: it is standalone)."""
    spec = importlib.util.spec_from_file_location("edgefree_device_runner", DEVICE_SCRIPTS["runner.py"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_build(build_dir: Path, target: str | None) -> tuple[dict, dict, Target]:
    """report.json, manifest.json and the target; the target must be the one the build was made for."""
    manifest_path = build_dir / "artifacts" / "manifest.json"
    report = read_build(build_dir, uses=("artifacts/manifest.json",))  # a finished build; the manifest is its own
    if not manifest_path.is_file():
        raise DeployError(f"{build_dir} has no artifacts/manifest.json: the build exported nothing to flash")
    manifest = read_manifest(manifest_path)
    built_for = report["target"]["name"]
    if target not in (None, built_for):
        load_target(target)  # an unknown name is named as such
        raise DeployError(f"{build_dir} was built for target {built_for!r}, not {target!r}: rebuild with "
                          f"--target {target}, or flash it with --target {built_for}")
    profile = built_target(report)
    if profile.deploy == "adb":
        raise DeployError(f"target {profile.name} is deployed inside an app ({profile.deploy_hint or 'adb'}); "
                          "edgefree flash copies to a device that runs Python over SSH (a Raspberry Pi, a Jetson): "
                          "ship the artifacts with the app instead")
    return report, manifest, profile


def _select(manifest: dict, target: Target, names: list[str] | None) -> list[dict]:
    """The manifest's artifacts that the target runs (optionally only ``names``)."""
    known = {a["name"]: a for a in manifest["artifacts"]}
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise DeployError(f"no artifact(s) {unknown} in the manifest; it has {sorted(known)}")
    fits = [a for a in known.values() if a["format"] in target.formats and a["precision"] in target.precisions]
    chosen = [a for a in fits if a["name"] in names] if names else fits
    if not chosen:
        raise DeployError(f"none of the artifacts {names or sorted(known)} is a format/precision that target "
                          f"{target.name!r} runs ({'/'.join(target.formats)}, {'/'.join(target.precisions)})")
    return chosen


def _release_extras(manifest: dict, chosen: list[dict], scratch: Path) -> dict[str, Path]:
    """The files a release holds besides the artifacts: its manifest (only the chosen artifacts, so
    a release's files are exactly its manifest's), one input (the same on both machines) and the scripts."""
    missing = [name for name, path in DEVICE_SCRIPTS.items() if not path.is_file()]
    if missing:
        raise MissingRuntimeError(f"this edgefree install lacks the device script(s) {missing} "
                                  f"(expected in {PACKAGE}): reinstall edgefree")
    (scratch / "manifest.json").write_text(json.dumps({**manifest, "artifacts": chosen}, indent=2))
    np.save(scratch / "inputs.npy", _device_runner().default_inputs(manifest))
    return {"manifest.json": scratch / "manifest.json", "inputs.npy": scratch / "inputs.npy", **DEVICE_SCRIPTS}


def _plan(build_dir: Path, chosen: list[dict], extras: dict[str, Path]) -> tuple[str, list[dict]]:
    """The release id and the files to put on the device, each checked here first.

    Each entry: ``path`` (on the device, relative to the release), ``sha256``, ``bytes``,
    ``send`` (local file to upload: the packed form when there is one) and ``remote``
    (its name on the device), plus ``packed_path``/``packed_sha256`` when packed.
    """
    artifacts = build_dir / "artifacts"
    files = [{"path": name, "sha256": _sha256(p), "bytes": p.stat().st_size, "send": p, "remote": name}
             for name, p in extras.items()]
    for artifact in chosen:
        for f in artifact["files"]:
            if any(f["path"] == known["path"] for known in files):  # a file two artifacts share goes once
                continue
            packed = f.get("packed_path") and artifacts / f["packed_path"]
            entry = {"path": f["path"], "sha256": f["sha256"], "bytes": f["bytes"]}
            if packed and packed.is_file():
                entry.update(packed_path=f["packed_path"], packed_sha256=f["packed_sha256"], send=packed,
                             remote=f["packed_path"])
            else:
                entry.update(send=artifacts / f["path"], remote=f["path"])
            want = entry.get("packed_sha256", entry["sha256"])
            if not entry["send"].is_file() or _sha256(entry["send"]) != want:
                raise DeployError(f"{entry['send']} is missing or differs from manifest.json: rebuild {build_dir}")
            files.append(entry)
    release = hashlib.sha256(json.dumps([(f["path"], f["sha256"]) for f in files]).encode()).hexdigest()[:16]
    return release, files


def _reference(build_dir: Path, inputs: Path, names: list[str], threads: int, scratch: Path) -> dict:
    """The same inputs through the same runner here, on the build machine: logits to compare with."""
    out = scratch / "reference" / "result.json"
    results = _device_runner().run(build_dir / "artifacts" / "manifest.json", out, names, np.load(inputs), runs=1,
                                   warmup=0, threads=threads)["artifacts"]
    return {name: np.load(out.parent / r["outputs_npy"]) for name, r in results.items() if not r["error"]}


def _compare(device_results: dict, reference: dict) -> dict:
    """Per artifact: latency, top-1 and the largest logit difference from the build machine (None: not run here)."""
    summary = {}
    for name, r in device_results.items():
        if not np.isfinite(r["logits"]).all():
            raise DeployError(f"{name} produced non-finite logits on the device, `current` is unchanged")
        diff = float(np.abs(r["logits"] - reference[name]).max()) if name in reference else None
        summary[name] = {"latency_ms": r["latency_ms"], "top1": r["top1"], "max_abs_diff_vs_build_machine": diff,
                         "runtime_version": r["runtime_version"]}
    return summary


class _Laps(dict):
    """Seconds per stage, each measured from the end of the previous one."""

    def __init__(self):
        super().__init__()
        self.started = self.last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self[stage], self.last = round(now - self.last, 3), now


def _write_record(build_dir: Path, report: dict, record: dict) -> None:
    """flash.json, and report.md rendered again with its flash section: both or neither (outfolder)."""
    with staged(build_dir, replace=False) as folder:
        (folder / "flash.json").write_text(json.dumps(record, indent=2))
        (folder / "report.md").write_text(render_markdown({**report, "flash": record}))


def _runnable(chosen: list[dict], probe: dict, python: str, manifest: dict, build_dir: Path, scratch: Path):
    """The chosen artifacts whose runtime the device's python imports, as (artifacts, names, release id, files),
    with one line naming those left behind and how to flash them too."""
    kept = [a for a in chosen if a["runtime"] not in probe["missing"]]
    left = [a["name"] for a in chosen if a["runtime"] in probe["missing"]]
    warn(f"the device's python cannot import {', '.join(probe['missing'])}: flashing {', '.join(a['name'] for a in kept)} "
         f"without {', '.join(left)}. {remote.install_hint(python, probe['missing'], chosen)} to flash those too, "
         "or name what to flash with --artifacts")
    return kept, [a["name"] for a in kept], *_plan(build_dir, kept, _release_extras(manifest, kept, scratch))


def _release(device: Device, python: str, root: str, release_id: str, files: list[dict], laps: _Laps) -> dict:
    """Send what the device lacks into its release folder and verify it there; returns what was sent."""
    release = f"{root}/releases/{release_id}"
    folders = sorted({f"{release}/{Path(f['remote']).parent}" for f in files})
    device.run("mkdir -p " + " ".join(quote(f) for f in folders))
    present = remote.verify(device, python, release, files, rebuild=False)
    missing = [f for f in files if present[f["path"]] not in ("ok", "packed")]
    sent = sum(device.upload(f["send"], f"{release}/{f['remote']}") for f in missing)
    laps("copy")
    bad = {path: state for path, state in remote.verify(device, python, release, files, rebuild=True).items()
           if state != "ok"}
    if bad:
        raise DeployError(f"release {release} failed verification on the device, `current` is unchanged: "
                          + "; ".join(f"{p}: {s}" for p, s in bad.items()))
    laps("verify")
    return {"files": len(missing), "bytes": sent, "files_already_there": len(files) - len(missing),
            "bundle_bytes_unpacked": sum(f["bytes"] for f in files)}


def flash(build_dir: Path, host: str, *, target: str | None = None, port: int = 22, key: Path | None = None,
          known_hosts: Path | None = None, accept_new_host_key: bool = False, remote_dir: str = "~/edgefree",
          remote_python: str = "python3", artifacts: list[str] | None = None, runs: int = 50,
          warmup: int = 5, keep_releases: int = 3) -> dict:
    """Copy a build's artifacts to a device over SSH, verify, switch ``current``, run; record the results.

    Args:
        build_dir: an ``edgefree build`` output folder (with ``artifacts/manifest.json``).
        host: ``user@host`` of the device.
        target: the target profile; default and only accepted value: the one the build was made for.
        port, key, known_hosts: SSH port, private key file, known_hosts file (default ``~/.ssh/known_hosts``).
        accept_new_host_key: trust a host missing from known_hosts and record its key (a changed key is
            always refused).
        remote_dir: folder on the device holding ``releases/`` and ``current``.
        remote_python: the device's python command (may carry a prefix, e.g. ``env X=1 python3``).
        artifacts: artifact names to send (default: every artifact the target runs whose runtime the device's
            python imports, the others named in a warning; named ones must all run there).
        runs, warmup: timed and untimed inferences per artifact on the device.
        keep_releases: releases kept on the device after the switch, the current one included
            (older ones are deleted; >= 1).

    Returns:
        The record also written to ``build_dir/flash.json`` (and as a section of ``report.md``).

    Usage, with a device on the network::

        flash(Path("edgefree-out"), "pi@raspberrypi.local", accept_new_host_key=True)
    """
    if keep_releases < 1:
        raise DeployError(f"keep_releases must be >= 1 (the current release stays), got {keep_releases}")
    laps = _Laps()
    build_dir = absolute(build_dir)
    check_key(key)
    split_host(host)  # a malformed --host is refused before anything is read or sent
    report, manifest, profile = _read_build(build_dir, target)
    chosen = _select(manifest, profile, artifacts)
    verify_artifacts(manifest, build_dir / "artifacts", chosen)  # before any connection
    check_out_folder(build_dir, ("flash.json", "report.md"))
    names, threads = [a["name"] for a in chosen], profile.threads
    with tempfile.TemporaryDirectory(prefix="edgefree-flash-") as scratch_dir:
        scratch = Path(scratch_dir)
        extras = _release_extras(manifest, chosen, scratch)
        release_id, files = _plan(build_dir, chosen, extras)
        with Device(host, port, key, known_hosts, accept_new_host_key) as device:
            laps("connect")
            python = device.quote(remote_python)
            try:
                probe = remote.probe(device, python, profile, chosen, strict=artifacts is not None)
                if probe["missing"]:  # by default: what the device can run, the rest named
                    chosen, names, release_id, files = _runnable(chosen, probe, python, manifest, build_dir, scratch)
                root = device.path(remote_dir)
                laps("probe")
                sent = _release(device, python, root, release_id, files, laps)
                ran = remote.run_runner(device, python, f"{root}/releases/{release_id}", names, runs, warmup, threads,
                                     scratch)
                laps("run")
                results = _compare(ran, _reference(build_dir, extras["inputs.npy"], names, threads, scratch))
                laps("reference")
                remote.switch(device, root, release_id)
                laps("switch")
                removed, prune_error = remote.prune_releases(device, root, release_id, keep_releases)
                laps("prune")
            except device.link_errors as exc:  # the link died or the device refused a file operation
                raise DeployError(f"flashing to {device.where} stopped midway ({type(exc).__name__}: {exc}); "
                                  "`current` still points where it did unless the switch completed. Flash "
                                  "again: files already on the device are kept") from exc
    record = {
        "schema": 1, "flashed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": device.where, "target": profile.name, "release": release_id,
        "release_dir": f"{root}/releases/{release_id}", "current": f"{root}/current",
        "device": {"machine": probe["machine"], "python": probe["python"], "modules": probe["found"]},
        "sent": sent, "releases_removed": removed, "releases_prune_error": prune_error,
        "run": {"runs": runs, "warmup": warmup, "threads": threads, "batch": 1},
        "artifacts": results,
        "seconds": {**laps, "total": round(time.perf_counter() - laps.started, 3)},
    }
    _write_record(build_dir, report, record)
    return record
