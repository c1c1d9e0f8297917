"""The Docker create body of one replica: a pure function of the request, table-tested.

Everything a replica may do is decided here, in one place, so a reviewer can read the whole
hardening at once: no capabilities, no privilege escalation, a non-root user, bounded memory,
pids and logs, the port published on loopback only. Never privileged, never host networking,
never the Docker socket.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from typing import Any

from runtime.models import WATCHDOG_CONTAINER_PORT, FunctionSpec
from runtime.provider.base import ReplicaRequest
from runtime.provider.resources import runtime_resources

LABEL_MANAGED = "com.localfaas.managed"
LABEL_INSTANCE = "com.localfaas.instance"
LABEL_FUNCTION = "com.localfaas.function"
LABEL_NAMESPACE = "com.localfaas.namespace"
LABEL_GENERATION = "com.localfaas.generation"
# Annotations are not Docker concepts; they ride along as labels under our prefix (faasd does
# the same with com.openfaas.annotations.) so `docker inspect` shows the whole deployment.
ANNOTATION_LABEL_PREFIX = "com.localfaas.annotation."

WATCHDOG_PORT = f"{WATCHDOG_CONTAINER_PORT}/tcp"
SECRETS_MOUNT = "/var/openfaas/secrets"
# The user a replica runs as when its image would run as root. High, so it matches no account
# in the image or on the host.
FALLBACK_USER = "10001:10001"
DEFAULT_PIDS_LIMIT = 512
TMPFS_OPTIONS = "rw,noexec,nosuid,size=64m"
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = "3"
# Docker's container name limit is 128 characters; the random suffix keeps names unique.
MAX_CONTAINER_NAME = 128
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def container_name(spec: FunctionSpec, suffix: str | None = None) -> str:
    """`lf-<ns>-<name>-<6 random chars>`, cut to Docker's limit (labels carry the identity)."""
    suffix = suffix or "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(6))
    base = f"lf-{spec.namespace}-{spec.name}"[: MAX_CONTAINER_NAME - len(suffix) - 1]
    return f"{base.rstrip('-')}-{suffix}"


def is_root_user(user: str | None) -> bool:
    """Docker's `User` (`name`, `uid`, `uid:gid`, empty) names root? Empty means root."""
    if not user:
        return True
    who = user.split(":", 1)[0].strip()
    return who in ("", "0", "root")


def replica_labels(spec: FunctionSpec, *, instance_id: str, generation: int) -> dict[str, str]:
    labels: dict[str, str] = dict(spec.labels)
    for key, value in spec.annotations.items():
        labels[ANNOTATION_LABEL_PREFIX + key] = value
    # Ours go last so a user label can never impersonate another instance or function.
    labels.update(
        {
            LABEL_MANAGED: "true",
            LABEL_INSTANCE: instance_id,
            LABEL_FUNCTION: spec.name,
            LABEL_NAMESPACE: spec.namespace,
            LABEL_GENERATION: str(generation),
        }
    )
    return labels


def _env(spec: FunctionSpec, defaults: Mapping[str, str]) -> list[str]:
    env = {**defaults, **spec.env_vars}
    if spec.env_process is not None:
        # envProcess is the documented way to set the watchdog's command; it wins over an
        # `fprocess` in envVars, as in OpenFaaS.
        env["fprocess"] = spec.env_process
    return [f"{key}={value}" for key, value in env.items()]


def container_config(
    request: ReplicaRequest,
    *,
    instance_id: str,
    image_user: str | None,
    host_cpus: int | None = None,
    pids_limit: int = DEFAULT_PIDS_LIMIT,
) -> dict[str, Any]:
    """The body of `POST /containers/create` for one replica of ``request.spec``.

    ``image_user`` is the image's configured `User` (from image inspect); ``host_cpus`` caps
    the cpu limit. Raises InvalidSpec (naming the field) for a bad quantity.
    """
    spec = request.spec
    resources = runtime_resources(spec, host_cpus=host_cpus)
    host_config: dict[str, Any] = {
        # Ephemeral port on loopback only: the daemon reaches replicas through it, and nothing
        # outside the host can reach a function except through the gateway.
        "PortBindings": {WATCHDOG_PORT: [{"HostIp": "127.0.0.1", "HostPort": ""}]},
        "ExtraHosts": ["gateway:host-gateway"],
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "PidsLimit": pids_limit,
        "Memory": resources.memory_bytes,
        # Without this Docker adds as much swap again as the limit, so the limit would not be
        # the limit. (Ignored with a warning where the kernel has no swap accounting.)
        "MemorySwap": resources.memory_bytes,
        # The daemon's reconciler replaces dead replicas. A Docker restart policy would fight
        # it: a restarted container keeps its old generation during rolling updates, restarts a
        # replica the scaler just stopped, and hides crash loops from our `die` events.
        "RestartPolicy": {"Name": "no"},
        # json-file, explicitly: `/system/logs` reads Docker's log API, which needs a driver
        # that can be read back, whatever the engine's default is; bounded so a chatty
        # function cannot fill the disk.
        "LogConfig": {
            "Type": "json-file",
            "Config": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILES},
        },
        # The watchdog is PID 1 and reaps its children itself.
        "Init": False,
        "Privileged": False,
        "NetworkMode": "bridge",
    }
    if resources.memory_reservation_bytes is not None:
        host_config["MemoryReservation"] = resources.memory_reservation_bytes
    if resources.nano_cpus is not None:
        host_config["NanoCpus"] = resources.nano_cpus
    if resources.cpu_shares is not None:
        host_config["CpuShares"] = resources.cpu_shares
    if spec.read_only_root_filesystem:
        host_config["ReadonlyRootfs"] = True
        # Functions still need scratch space (Python, temp files); noexec keeps it data only.
        host_config["Tmpfs"] = {"/tmp": TMPFS_OPTIONS}
    if request.secrets_dir is not None:
        host_config["Binds"] = [f"{request.secrets_dir}:{SECRETS_MOUNT}:ro"]
    if request.secrets_gid is not None:
        # The secret files are root:<gid> 0440: this group is how the non-root user reads them.
        host_config["GroupAdd"] = [str(request.secrets_gid)]

    return {
        "Image": spec.image,
        "Env": _env(spec, request.default_env),
        "Labels": replica_labels(spec, instance_id=instance_id, generation=request.generation),
        "ExposedPorts": {WATCHDOG_PORT: {}},
        "User": FALLBACK_USER if is_root_user(image_user) else image_user,
        "HostConfig": host_config,
    }


def labels_match(labels: Mapping[str, str] | None, instance_id: str) -> bool:
    """Is a container with these labels one of this instance's replicas?"""
    if not labels:
        return False
    return labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_INSTANCE) == instance_id
