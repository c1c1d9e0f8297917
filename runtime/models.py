"""Values that cross the daemon's seams: what a user deploys and what a replica is.

`FunctionSpec.from_json` is the one place a FunctionDeployment body is validated; `to_json`
echoes exactly what was deployed (OpenFaaS clients compare fields with nil, so empty optional
fields are omitted, while labels and annotations are always objects).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runtime.errors import InvalidSpec
from runtime.names import DEFAULT_NAMESPACE, check_name

# The port the watchdog listens on inside every replica.
WATCHDOG_CONTAINER_PORT = 8080


@dataclass(frozen=True)
class Resources:
    memory: str | None = None
    cpu: str | None = None

    @classmethod
    def from_json(cls, raw: object, where: str) -> Resources | None:
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise InvalidSpec(f'{where} must be an object like {{"memory": "128Mi", "cpu": "0.5"}}')
        values: dict[str, str | None] = {}
        for key in ("memory", "cpu"):
            value = raw.get(key)
            if value is not None and not isinstance(value, str | int | float):
                raise InvalidSpec(f'{where}.{key} must be a string like "128Mi"')
            values[key] = None if value in (None, "") else str(value)
        if values["memory"] is None and values["cpu"] is None:
            return None
        return cls(**values)

    def to_json(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.memory is not None:
            out["memory"] = self.memory
        if self.cpu is not None:
            out["cpu"] = self.cpu
        return out


def _str_map(raw: object, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidSpec(f"{where} must be an object of strings")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
            raise InvalidSpec(f"{where}.{key} must be a string")
        out[key] = (
            value
            if isinstance(value, str)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
    return out


def _str_list(raw: object, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise InvalidSpec(f"{where} must be a list of strings")
    return tuple(raw)


@dataclass(frozen=True)
class FunctionSpec:
    """A function as deployed (OpenFaaS FunctionDeployment), validated."""

    name: str
    image: str
    namespace: str = DEFAULT_NAMESPACE
    env_process: str | None = None
    env_vars: Mapping[str, str] = field(default_factory=dict)
    constraints: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    limits: Resources | None = None
    requests: Resources | None = None
    read_only_root_filesystem: bool = False

    @property
    def qualified_name(self) -> str:
        return f"{self.name}.{self.namespace}"

    @classmethod
    def from_json(cls, body: object, default_namespace: str = DEFAULT_NAMESPACE) -> FunctionSpec:
        if not isinstance(body, Mapping):
            raise InvalidSpec("request body must be a JSON object (a FunctionDeployment)")
        # Unknown fields are ignored, as the OpenFaaS gateway (Go's encoding/json) does, so
        # newer clients that send more fields keep working.
        name = check_name(body.get("service"), "service")
        image = body.get("image")
        if not isinstance(image, str) or not image.strip():
            raise InvalidSpec("image is required")
        if any(c.isspace() for c in image):
            raise InvalidSpec(f"image {image!r} is invalid: it contains white space")
        namespace = body.get("namespace") or default_namespace
        check_name(namespace, "namespace")
        env_process = body.get("envProcess")
        if env_process is not None and not isinstance(env_process, str):
            raise InvalidSpec("envProcess must be a string")
        read_only = body.get("readOnlyRootFilesystem", False)
        if not isinstance(read_only, bool):
            raise InvalidSpec("readOnlyRootFilesystem must be true or false")
        secrets = _str_list(body.get("secrets"), "secrets")
        for secret in secrets:
            check_name(secret, "secret name")
        return cls(
            name=name,
            image=image,
            namespace=namespace,
            env_process=env_process or None,
            env_vars=_str_map(body.get("envVars"), "envVars"),
            constraints=_str_list(body.get("constraints"), "constraints"),
            secrets=secrets,
            labels=_str_map(body.get("labels"), "labels"),
            annotations=_str_map(body.get("annotations"), "annotations"),
            limits=Resources.from_json(body.get("limits"), "limits"),
            requests=Resources.from_json(body.get("requests"), "requests"),
            read_only_root_filesystem=read_only,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "image": self.image, "namespace": self.namespace}
        if self.env_process is not None:
            out["envProcess"] = self.env_process
        if self.env_vars:
            out["envVars"] = dict(self.env_vars)
        if self.constraints:
            out["constraints"] = list(self.constraints)
        if self.secrets:
            out["secrets"] = list(self.secrets)
        out["labels"] = dict(self.labels)
        out["annotations"] = dict(self.annotations)
        if self.limits is not None:
            out["limits"] = self.limits.to_json()
        if self.requests is not None:
            out["requests"] = self.requests.to_json()
        out["readOnlyRootFilesystem"] = self.read_only_root_filesystem
        return out

    def to_deployment_json(self) -> dict[str, Any]:
        """The FunctionDeployment body that recreates this spec (used by the store)."""
        out = self.to_json()
        out["service"] = out.pop("name")
        return out


@dataclass(frozen=True)
class Replica:
    """One running (or paused, or dead) container of a function, as Docker reports it."""

    container_id: str
    container_name: str
    function: str
    namespace: str
    generation: int
    host_port: int | None
    state: str  # Docker's State.Status: created, running, paused, restarting, exited, dead
    created_at: datetime
    health: str | None = None  # Docker HEALTHCHECK status when the image has one
    # The container's own address on Docker's bridge. The gateway connects there directly,
    # which skips the userland docker-proxy behind the published loopback port (one process
    # and two copies fewer per request); the published port stays for users and as fallback.
    bridge_ip: str | None = None

    @property
    def endpoint(self) -> tuple[str, int] | None:
        """Where the gateway reaches the watchdog: bridge address if known, else loopback port."""
        if self.bridge_ip:
            return self.bridge_ip, WATCHDOG_CONTAINER_PORT
        if self.host_port:
            return "127.0.0.1", self.host_port
        return None

    @property
    def qualified_name(self) -> str:
        return f"{self.function}.{self.namespace}"
