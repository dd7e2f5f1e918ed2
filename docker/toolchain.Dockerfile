# The edgefree toolchain on x86-64, with the pinned dependencies of pyproject.toml:
#
#   docker build --platform linux/amd64 -f docker/toolchain.Dockerfile -t edgefree .
#   docker run --rm -v "$PWD:/work" edgefree                                 # edgefree build --out edgefree-out
#   docker run --rm -v "$PWD:/work" edgefree build --model teacher.pt --arch resnet20-cifar --target raspberry-pi-4
#   docker run --rm -v "$PWD:/work" -v "$HOME/.ssh:/root/.ssh:ro" edgefree flash --host pi@raspberrypi.local edgefree-out
#
# PyPI's x86-64 torch wheel is the CUDA build (large; it runs on the CPU). To get PyTorch's CPU-only
# wheels instead, pass --build-arg PIP_EXTRA_INDEX_URL=<PyTorch's CPU wheel index>.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM --platform=linux/amd64 ${PYTHON_IMAGE}
ARG PIP_EXTRA_INDEX_URL=
WORKDIR /opt/edgefree
COPY pyproject.toml README.md ./
COPY targets targets
COPY toolchain toolchain
RUN PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL}" pip install --no-cache-dir . && edgefree --version
# the demo teacher, synthetic-image and data caches live with the user's files, not in the image
ENV EDGEFREE_CACHE=/work/.edgefree-cache
WORKDIR /work
ENTRYPOINT ["edgefree"]
CMD ["build", "--out", "edgefree-out"]
