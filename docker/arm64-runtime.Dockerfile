# The arm64 runtime for edgefree bundles: Python 3.11, numpy, onnxruntime, OpenVINO and the
# ExecuTorch runtime, with runner.py and unpack.py; runs an `edgefree build`'s artifacts/.
#
#   docker buildx build --platform linux/arm64 -f docker/arm64-runtime.Dockerfile -t edgefree-arm64 --load .
#   docker run --rm --platform linux/arm64 -v "$PWD/edgefree-out/artifacts:/bundle" edgefree-arm64 \
#       --manifest /bundle/manifest.json --runs 20 --out /bundle/results/arm64.json
#
# On an x86 machine that needs binfmt + QEMU (docker run --privileged --rm tonistiigi/binfmt --install arm64);
# emulated timings say nothing about a device. Without a registry, docker/build-arm64-podman.sh builds
# the same image from a local Debian arm64 root (RUNTIME_BASE) and locally fetched wheels (WHEELS).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_BASE=${PYTHON_IMAGE}
ARG WHEELS=wheels

# aarch64 wheels fetched by pip on the build machine's own platform: no emulated pip.
FROM --platform=$BUILDPLATFORM ${PYTHON_IMAGE} AS wheels
COPY docker/arm64-requirements.txt docker/arm64-executorch.txt /tmp/
# pip does not fill gaps between platform tags: name every manylinux_2_N (else it picks old releases).
RUN set -e; tags="--platform manylinux2014_aarch64"; \
    for n in $(seq 17 36); do tags="$tags --platform manylinux_2_${n}_aarch64"; done; \
    pick="--only-binary=:all: --python-version 3.11 --implementation cp $tags --no-cache-dir"; \
    pip install $pick --target /site -r /tmp/arm64-requirements.txt; \
    pip install $pick --no-deps --target /site-executorch -r /tmp/arm64-executorch.txt

FROM ${WHEELS} AS chosen-wheels

FROM --platform=linux/arm64 ${RUNTIME_BASE}
COPY --from=chosen-wheels /site /opt/edgefree/site
COPY --from=chosen-wheels /site-executorch /opt/edgefree/site-executorch
COPY toolchain/edgefree/bench/runner.py toolchain/edgefree/export/unpack.py /opt/edgefree/
ENV PYTHONPATH=/opt/edgefree/site-executorch:/opt/edgefree/site PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /bundle
ENTRYPOINT ["python3.11", "/opt/edgefree/runner.py"]
CMD ["--manifest", "/bundle/manifest.json", "--out", "/bundle/results/arm64.json"]
