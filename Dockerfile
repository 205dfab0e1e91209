# One Dockerfile, four images; every image installs from the same wheels stage:
#
#   target        image                            what it holds
#   operator      ghcr.io/visionfleet/operator     the operator (kopf) and kubectl-vision; nothing of the
#                                                  compile program, the monitor or the e2e harness
#   compile       ghcr.io/visionfleet/compile      the compile Job for CPU classes (ONNX Runtime, OpenVINO + NNCF)
#   compile-gpu   ghcr.io/visionfleet/compile-gpu  the compile Job for NVIDIA GPU classes: TensorRT from
#                                                  NVIDIA's TensorRT image (TENSORRT_BASE, Python 3.12), torch
#                                                  from PyPI with its CUDA libraries; the driver comes from
#                                                  the node, through the NVIDIA container runtime
#   monitor       ghcr.io/visionfleet/monitor      the drift monitor sidecar (alibi-detect), detector bbsd-ks
#   monitor-mmd   ghcr.io/visionfleet/monitor-mmd  the same with torch (CPU wheels from TORCH_INDEX_URL),
#                                                  alibi-detect's backend for detector mmd
#
#   docker build --target operator -t ghcr.io/visionfleet/operator:0.1.0 .
#
# Each component is its own distribution (contract/, operator/, compiler_jobs/, monitors/) and shares
# only visionfleet-contract with the others. Base images are build arguments, pinned by version to the
# public defaults; production builds pin them by digest too (--build-arg PYTHON=…@sha256:…). Without
# Docker, `visionfleet-fleet images` builds the same targets with buildah on a Debian base made by
# debootstrap (docs/operating.md). Nothing here carries a registry proxy's certificate: a build that
# needs one mounts it (and a pip.conf naming it) at build time only.
#
# Every image runs as 65532:65532 with a read-only root filesystem: HOME is /tmp (an emptyDir in the
# pod specs), bytecode is compiled at build time and never written at run time (files that parse only
# on a newer Python, such as torch's py312_intrinsics, are skipped: nothing imports them on 3.11).
ARG PYTHON=docker.io/library/python:3.11.10-slim-bookworm
# TensorRT's Python bindings are not installable from PyPI (its tensorrt-cu12-libs there is a stub that
# downloads from pypi.nvidia.com), so the GPU image starts from NVIDIA's TensorRT image: 25.10 ships
# TensorRT 10.13 on CUDA 13 with Python 3.12 (the 24.x images ship Python 3.10, below the project's 3.11).
ARG TENSORRT_BASE=nvcr.io/nvidia/tensorrt:25.10-py3

# -- the shared build stage: one wheel per component ------------------------------------------------
FROM ${PYTHON} AS wheels
WORKDIR /src
COPY contract/ contract/
COPY operator/ operator/
COPY compiler_jobs/ compiler_jobs/
COPY monitors/ monitors/
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --quiet --disable-pip-version-check "setuptools>=77" wheel \
 && /opt/build/bin/pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
      --wheel-dir /wheels ./contract ./operator ./compiler_jobs ./monitors

# -- one virtualenv per image: its component's wheel and the contract's, given by file (never a
#    same-named package from an index), and their dependencies from the index ------------------------
FROM ${PYTHON} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY --from=wheels /wheels /wheels
RUN python3 -m venv /opt/visionfleet

FROM venv AS operator-venv
RUN /opt/visionfleet/bin/pip install --quiet /wheels/visionfleet_contract-*.whl /wheels/visionfleet-[0-9]*.whl \
 && /opt/visionfleet/bin/python -m compileall -q -x 'py31[2-9]' /opt/visionfleet/lib \
 && /opt/visionfleet/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/visionfleet/bin/python -c "import visionfleet.handlers"

FROM venv AS compile-venv
RUN /opt/visionfleet/bin/pip install --quiet "$(ls /wheels/visionfleet_contract-*.whl)[reference]" \
      "$(ls /wheels/visionfleet_compile-*.whl)[openvino]" \
 && /opt/visionfleet/bin/python -m compileall -q -x 'py31[2-9]' /opt/visionfleet/lib \
 && /opt/visionfleet/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/visionfleet/bin/visionfleet-compile --help >/dev/null

# --system-site-packages: the base image's tensorrt package is part of the virtualenv. An Ubuntu base
# without python3-venv (no ensurepip) gets the virtualenv's pip from the base's own pip.
FROM ${TENSORRT_BASE} AS compile-gpu-venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY --from=wheels /wheels /wheels
RUN { python3 -m venv --system-site-packages /opt/visionfleet \
      || { python3 -m venv --without-pip --system-site-packages /opt/visionfleet \
           && python3 -m pip --python /opt/visionfleet/bin/python install --quiet pip; }; } \
 && /opt/visionfleet/bin/pip install --quiet "$(ls /wheels/visionfleet_contract-*.whl)[reference]" \
      "$(ls /wheels/visionfleet_compile-*.whl)[tensorrt]" \
 && /opt/visionfleet/bin/python -m compileall -q -x 'py31[2-9]' /opt/visionfleet/lib \
 && /opt/visionfleet/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/visionfleet/bin/visionfleet-compile --help >/dev/null

# The default detector, bbsd-ks, needs no torch: the sidecar in every Triton pod stays small.
FROM venv AS monitor-venv
RUN /opt/visionfleet/bin/pip install --quiet "$(ls /wheels/visionfleet_contract-*.whl)[reference]" \
      "$(ls /wheels/visionfleet_monitor-*.whl)" \
 && /opt/visionfleet/bin/python -m compileall -q -x 'py31[2-9]' /opt/visionfleet/lib \
 && /opt/visionfleet/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/visionfleet/bin/visionfleet-monitor --help >/dev/null

# Detector mmd: torch's CPU wheels (the index PyPI's CUDA build would otherwise come from is 4 GB larger).
FROM venv AS monitor-mmd-venv
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN /opt/visionfleet/bin/pip install --quiet ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      "$(ls /wheels/visionfleet_contract-*.whl)[reference]" "$(ls /wheels/visionfleet_monitor-*.whl)[mmd]" \
 && /opt/visionfleet/bin/python -m compileall -q -x 'py31[2-9]' /opt/visionfleet/lib \
 && /opt/visionfleet/bin/pip uninstall --quiet --yes pip setuptools \
 && /opt/visionfleet/bin/visionfleet-monitor --help >/dev/null

# -- the images: the base plus one virtualenv (pip and setuptools removed); no build tools, no wheels,
#    no RUN -----------------------------------------------------------------------------------------
FROM ${PYTHON} AS operator
LABEL org.opencontainers.image.title="visionfleet-operator" \
      org.opencontainers.image.source="https://github.com/visionfleet/visionfleet" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=operator-venv /opt/visionfleet /opt/visionfleet
ENV PATH=/opt/visionfleet/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
# Numeric, so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["visionfleet-operator"]
CMD ["--all-namespaces", "--liveness=http://0.0.0.0:8081/healthz"]

FROM ${PYTHON} AS compile
LABEL org.opencontainers.image.title="visionfleet-compile" \
      org.opencontainers.image.source="https://github.com/visionfleet/visionfleet" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=compile-venv /opt/visionfleet /opt/visionfleet
ENV PATH=/opt/visionfleet/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 65532:65532
# The operator passes the request in VISIONFLEET_COMPILE_REQUEST and runs `compile`; the result goes
# to the termination message (/dev/termination-log).
ENTRYPOINT ["visionfleet-compile"]
CMD ["compile"]

FROM ${TENSORRT_BASE} AS compile-gpu
LABEL org.opencontainers.image.title="visionfleet-compile-gpu" \
      org.opencontainers.image.source="https://github.com/visionfleet/visionfleet" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=compile-gpu-venv /opt/visionfleet /opt/visionfleet
ENV PATH=/opt/visionfleet/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
ENTRYPOINT ["visionfleet-compile"]
CMD ["compile"]

FROM ${PYTHON} AS monitor
LABEL org.opencontainers.image.title="visionfleet-monitor" \
      org.opencontainers.image.source="https://github.com/visionfleet/visionfleet" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=monitor-venv /opt/visionfleet /opt/visionfleet
# numba and matplotlib (alibi-detect's dependencies) want writable cache dirs: /tmp is an emptyDir.
ENV PATH=/opt/visionfleet/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    NUMBA_CACHE_DIR=/tmp MPLCONFIGDIR=/tmp
USER 65532:65532
EXPOSE 8010
# No ENTRYPOINT: the operator sets the sidecar's command (visionfleet-monitor) and its arguments.
CMD ["visionfleet-monitor", "--help"]

FROM ${PYTHON} AS monitor-mmd
LABEL org.opencontainers.image.title="visionfleet-monitor-mmd" \
      org.opencontainers.image.source="https://github.com/visionfleet/visionfleet" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=monitor-mmd-venv /opt/visionfleet /opt/visionfleet
ENV PATH=/opt/visionfleet/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    NUMBA_CACHE_DIR=/tmp MPLCONFIGDIR=/tmp
USER 65532:65532
EXPOSE 8010
CMD ["visionfleet-monitor", "--help"]
