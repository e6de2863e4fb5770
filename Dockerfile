# One image for both halves of oomdump:
#   webhook:  python -m webhook   (runs as the image's non-root user 65532)
#   watcher:  python -m sidecar   (injected by the webhook; runs as root and privileged
#                                  through the pod's securityContext, to read every
#                                  process's /proc and cgroup files)
#   certs:    python -m certs     (init container and reconcile loop of the webhook pod)
# Build: docker build -t ghcr.io/oomdump/oomdump:0.1.0 .

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY oomdump ./oomdump
COPY webhook ./webhook
COPY sidecar ./sidecar
COPY certs ./certs
RUN pip install --no-cache-dir --no-compile --prefix=/install .

FROM python:3.11-slim
# The root filesystem is read-only in the pods: no .pyc writes, and logs unbuffered.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
RUN python -m compileall -q /usr/local/lib/python3.11/site-packages \
    && groupadd --system --gid 65532 oomdump \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin oomdump \
    && python -c "import webhook, sidecar, certs, oomdump"
USER 65532:65532
EXPOSE 8443
CMD ["python", "-m", "webhook"]
