#!/usr/bin/env bash
# Builds the daemon image (top-level Dockerfile) offline. Usage: scripts/build-daemon-image.sh [TAG]
# Uses LOCALFAAS_BASE_IMAGE (default python:3.12-slim-bookworm) and the project's .venv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || { echo "error: $python not found; run ./dev setup first" >&2; exit 1; }
exec "$python" -m runtime.build.daemon_image "$@"
