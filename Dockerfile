# The localfaas daemon as an image. Build it with `scripts/build-daemon-image.sh` (it prepares
# the context: the pinned dependencies of requirements.lock and localfaas itself installed for
# the image's Python and the engine's architecture, so the build needs no network).
#
# Run it with the host's Docker socket, the state dir mounted at the SAME path as on the host
# (Docker resolves the secret bind mounts the daemon asks for on the host) and host networking
# (replicas publish their ports on the host's 127.0.0.1):
#   docker run -d --name localfaas --network host \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/localfaas:/var/lib/localfaas localfaas/daemon:latest
ARG BASE_IMAGE=python:3.12-slim-bookworm
FROM ${BASE_IMAGE}
COPY site/ /opt/localfaas/site/
RUN python3 -m compileall -q /opt/localfaas/site || true
ENV PYTHONPATH=/opt/localfaas/site \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOCALFAAS_STATE_DIR=/var/lib/localfaas \
    LOCALFAAS_HOST=127.0.0.1 \
    LOCALFAAS_PORT=8080
VOLUME ["/var/lib/localfaas"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LOCALFAAS_PORT', '8080'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "runtime.cli"]
CMD ["up"]
