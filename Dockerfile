# One image for both halves of oomdump:
#   webhook:  python -m webhook   (runs as the image's non-root user 65532)
#   watcher:  python -m sidecar   (injected by the webhook; runs as root and privileged
#                                  through the pod's securityContext, to read every
#                                  process's /proc and cgroup files)
#   certs:    python -m certs     (init container and reconcile loop of the webhook pod)
# Build: docker build -t ghcr.io/oomdump/oomdump:0.1.0 .
# PYTHON_IMAGE is any image with python3 (>= 3.11) and its venv module, e.g. a Debian one
# where no registry is reachable (tests/node builds one from Debian packages).
# The install is a venv in /opt/oomdump: the same layout on every base, whether its Python
# lives in /usr/local (python:*-slim) or /usr (Debian's python3).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY oomdump ./oomdump
COPY webhook ./webhook
COPY sidecar ./sidecar
COPY certs ./certs
RUN python3 -m venv /opt/oomdump \
    && /opt/oomdump/bin/pip install --no-cache-dir --no-compile .

FROM ${PYTHON_IMAGE}
# The root filesystem is read-only in the pods: no .pyc writes, and logs unbuffered.
# The venv's bin comes first, so `python` is the venv's wherever the base keeps its own.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/oomdump/bin:$PATH
COPY --from=build /opt/oomdump /opt/oomdump
RUN python -m compileall -q /opt/oomdump/lib \
    && groupadd --system --gid 65532 oomdump \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin oomdump \
    && python -c "import webhook, sidecar, certs, oomdump"
USER 65532:65532
EXPOSE 8443
CMD ["python", "-m", "webhook"]
