from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec, Resources
from runtime.provider.base import ReplicaRequest
from runtime.provider.container_config import (
    MAX_CONTAINER_NAME,
    container_config,
    container_name,
    is_root_user,
    labels_match,
    replica_labels,
)
from runtime.provider.resources import DEFAULT_MEMORY_BYTES, MIB


def _config(
    spec: FunctionSpec | None = None, *, image_user: str | None = None, **request: Any
) -> dict[str, Any]:
    spec = spec or FunctionSpec(name="hello", image="example/hello:1")
    return container_config(
        ReplicaRequest(spec=spec, generation=request.pop("generation", 4), **request),
        instance_id="inst-1",
        image_user=image_user,
        host_cpus=2,
    )


def test_minimal_spec_gets_the_full_hardening() -> None:
    config = _config()
    assert config == {
        "Image": "example/hello:1",
        "Env": [],
        "Labels": {
            "com.localfaas.managed": "true",
            "com.localfaas.instance": "inst-1",
            "com.localfaas.function": "hello",
            "com.localfaas.namespace": "openfaas-fn",
            "com.localfaas.generation": "4",
        },
        "ExposedPorts": {"8080/tcp": {}},
        "User": "10001:10001",
        "HostConfig": {
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
            "ExtraHosts": ["gateway:host-gateway"],
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges:true"],
            "PidsLimit": 512,
            "Memory": DEFAULT_MEMORY_BYTES,
            "MemorySwap": DEFAULT_MEMORY_BYTES,
            "RestartPolicy": {"Name": "no"},
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
            "Init": False,
            "Privileged": False,
            "NetworkMode": "bridge",
        },
    }


@pytest.mark.parametrize(
    ("image_user", "expected"),
    [
        (None, "10001:10001"),
        ("", "10001:10001"),
        ("root", "10001:10001"),
        ("0", "10001:10001"),
        ("0:0", "10001:10001"),
        ("root:staff", "10001:10001"),
        ("1000", "1000"),
        ("1000:1000", "1000:1000"),
        ("app", "app"),
        ("app:app", "app:app"),
        ("1000:0", "1000:0"),  # a non-root user in the root group is still non-root
    ],
)
def test_user_is_the_images_unless_root(image_user: str | None, expected: str) -> None:
    assert _config(image_user=image_user)["User"] == expected
    assert is_root_user(image_user) == (expected == "10001:10001")


@pytest.mark.parametrize(
    ("spec_fields", "host_config_part"),
    [
        ({"limits": Resources(memory="128Mi")}, {"Memory": 128 * MIB, "MemorySwap": 128 * MIB}),
        ({"limits": Resources(memory="5Mi")}, {"Memory": 6 * MIB}),
        ({"requests": Resources(memory="64Mi")}, {"MemoryReservation": 64 * MIB}),
        ({"limits": Resources(cpu="0.5")}, {"NanoCpus": 500_000_000}),
        ({"limits": Resources(cpu="500m")}, {"NanoCpus": 500_000_000}),
        ({"limits": Resources(cpu="2")}, {"NanoCpus": 2_000_000_000}),
        ({"limits": Resources(cpu="16")}, {"NanoCpus": 2_000_000_000}),
        ({"requests": Resources(cpu="1")}, {"CpuShares": 1024}),
        (
            {"read_only_root_filesystem": True},
            {"ReadonlyRootfs": True, "Tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"}},
        ),
    ],
)
def test_spec_fields_map_to_host_config(
    spec_fields: dict[str, Any], host_config_part: dict[str, Any]
) -> None:
    host = _config(FunctionSpec(name="fn", image="img", **spec_fields))["HostConfig"]
    assert {key: host.get(key) for key in host_config_part} == host_config_part


def test_defaults_leave_optional_keys_out() -> None:
    host = _config()["HostConfig"]
    for key in ("MemoryReservation", "NanoCpus", "CpuShares", "ReadonlyRootfs", "Tmpfs"):
        assert key not in host
    for key in ("Binds", "GroupAdd", "CapAdd", "Devices", "PidMode", "IpcMode"):
        assert key not in host


def test_secrets_are_bound_read_only_with_the_group() -> None:
    host = _config(secrets_dir=Path("/state/mounts/openfaas-fn/hello"), secrets_gid=23456)[
        "HostConfig"
    ]
    assert host["Binds"] == ["/state/mounts/openfaas-fn/hello:/var/openfaas/secrets:ro"]
    assert host["GroupAdd"] == ["23456"]


def test_env_vars_and_envprocess() -> None:
    spec = FunctionSpec(
        name="fn",
        image="img",
        env_vars={"A": "1", "fprocess": "from-env", "B": "x=y"},
        env_process="python3 index.py",
    )
    assert _config(spec)["Env"] == ["A=1", "fprocess=python3 index.py", "B=x=y"]
    without = FunctionSpec(name="fn", image="img", env_vars={"fprocess": "cat"})
    assert _config(without)["Env"] == ["fprocess=cat"]


def test_user_labels_and_annotations_become_labels_but_never_override_ours() -> None:
    spec = FunctionSpec(
        name="fn",
        image="img",
        namespace="team-a",
        labels={"com.openfaas.scale.max": "5", "com.localfaas.instance": "someone-else"},
        annotations={"topic": "orders", "schedule": "*/5 * * * *"},
    )
    labels = replica_labels(spec, instance_id="inst-1", generation=2)
    assert labels == {
        "com.openfaas.scale.max": "5",
        "com.localfaas.instance": "inst-1",
        "com.localfaas.annotation.topic": "orders",
        "com.localfaas.annotation.schedule": "*/5 * * * *",
        "com.localfaas.managed": "true",
        "com.localfaas.function": "fn",
        "com.localfaas.namespace": "team-a",
        "com.localfaas.generation": "2",
    }
    assert labels_match(labels, "inst-1")
    assert not labels_match(labels, "inst-2")
    assert not labels_match({"com.localfaas.instance": "inst-1"}, "inst-1")
    assert not labels_match(None, "inst-1")


def test_bad_quantity_names_the_field() -> None:
    spec = FunctionSpec(name="fn", image="img", limits=Resources(memory="12XB"))
    with pytest.raises(InvalidSpec, match=r"^limits\.memory: invalid quantity '12XB'"):
        _config(spec)


def test_container_names() -> None:
    spec = FunctionSpec(name="hello", image="img")
    assert container_name(spec, "ab12cd") == "lf-openfaas-fn-hello-ab12cd"
    random_name = container_name(spec)
    assert random_name.startswith("lf-openfaas-fn-hello-")
    suffix = random_name.rsplit("-", 1)[1]
    assert len(suffix) == 6 and suffix.isalnum() and suffix == suffix.lower()
    assert container_name(spec) != random_name  # 36^6 choices

    longest = FunctionSpec(name="n" * 63, image="img", namespace="s" * 63)
    name = container_name(longest, "ab12cd")
    assert len(name) <= MAX_CONTAINER_NAME
    assert name.endswith("-ab12cd") and name.startswith("lf-" + "s" * 63 + "-")
