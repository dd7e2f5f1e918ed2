#!/usr/bin/env bash
# Build docker/arm64-runtime.Dockerfile with podman where no registry can be reached, and
# optionally run an artifact bundle in it under QEMU (binfmt):
#
#   docker/build-arm64-podman.sh [ARTIFACTS_DIR [RUNNER ARGS...]]
#   e.g. docker/build-arm64-podman.sh edgefree-out/artifacts --artifacts onnx-fp32,openvino-fp32 --runs 5
#
# The base image is the Debian arm64 root and the aarch64 wheels that edgefree.bench.emulator_setup
# prepares for the QEMU bench (mmdebstrap + pip --platform), imported with `podman import`.
# Needs (root): podman runc qemu-user-static binfmt-support, and binfmt_misc with qemu-aarch64 enabled:
#   mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64
# Environment: PYTHON (with edgefree installed; default .venv/bin/python), IMAGE (the tag),
# EDGEFREE_ARM64_RUNTIMES (default onnxruntime,openvino; add executorch for ~1 GB more),
# EDGEFREE_ARM64_CPU (the QEMU core, default cortex-a72 as on a Raspberry Pi 4).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
IMAGE=${IMAGE:-localhost/edgefree-arm64-runtime}
RUNTIMES=${EDGEFREE_ARM64_RUNTIMES:-onnxruntime,openvino}
CPU=${EDGEFREE_ARM64_CPU:-cortex-a72}
BUNDLE=${1:-}

die() { echo "build-arm64-podman: $*" >&2; exit 2; }
command -v podman >/dev/null || die "podman not found: apt-get install -y podman runc"
binfmt=/proc/sys/fs/binfmt_misc/qemu-aarch64
[[ -f $binfmt ]] && grep -q '^enabled' $binfmt \
  || die "no qemu-aarch64 binfmt handler: apt-get install -y qemu-user-static binfmt-support; mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64"
# Inside a container the handler must be opened by the kernel beforehand (flag F, qemu-user-static).
grep -q '^flags:.*F' $binfmt || die "the qemu-aarch64 binfmt handler lacks the F flag: install qemu-user-static (not qemu-user-binfmt) and re-enable it"

# The arm64 root, the wheels and a fake /proc/cpuinfo for the chosen core (QEMU passes the host's
# x86 one through, and onnxruntime hangs on it), shared with the QEMU bench.
paths=$("$PYTHON" - "$RUNTIMES" "$CPU" <<'EOF'
import sys
from edgefree.bench import emulator_setup as setup

runtimes, cpu = sys.argv[1].split(","), sys.argv[2]
home = setup.default_home()
setup.require_tools("mmdebstrap")
setup.make_root(home, setup.DEFAULT_MIRROR)
setup.install_runtimes(home, runtimes, list((setup.prepared(home) or {}).get("runtimes", {})))
print(home, setup.cpu_view(home, cpu), " ".join(setup.ROOT_ENTRIES))
EOF
)
read -r HOME_DIR VIEW ROOT_ENTRIES <<<"$(tail -n1 <<<"$paths")"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
executorch_from=$HOME_DIR
if [[ $RUNTIMES != *executorch* ]]; then executorch_from=$work; mkdir "$work/site-executorch"; fi
# shellcheck disable=SC2086  # ROOT_ENTRIES: the root's top-level folders, one word each
tar -C "$HOME_DIR/root" -cf - $ROOT_ENTRIES | podman import --arch arm64 - localhost/edgefree-arm64-python:bookworm
tar -cf - -C "$HOME_DIR" site -C "$executorch_from" site-executorch | podman import --arch arm64 - localhost/edgefree-arm64-wheels
podman build --arch arm64 -f docker/arm64-runtime.Dockerfile -t "$IMAGE" \
  --build-arg RUNTIME_BASE=localhost/edgefree-arm64-python:bookworm --build-arg WHEELS=localhost/edgefree-arm64-wheels .
echo "built $IMAGE"

if [[ -n $BUNDLE ]]; then
  [[ -f $BUNDLE/manifest.json ]] || die "$BUNDLE has no manifest.json (pass a build's artifacts/ folder)"
  shift
  (($#)) || set -- --runs 5 --warmup 1
  # --ulimit: podman's default open-files limit is above this sandbox's hard limit; runc then fails
  podman run --rm --arch arm64 --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 -e QEMU_CPU="$CPU" \
    -v "$VIEW/proc/cpuinfo:/proc/cpuinfo:ro" -v "$(realpath "$BUNDLE"):/bundle" "$IMAGE" \
    --manifest /bundle/manifest.json --out /bundle/results/arm64-podman.json "$@"
  echo "wrote $BUNDLE/results/arm64-podman.json (emulated $CPU: its timings are not device timings)"
fi
