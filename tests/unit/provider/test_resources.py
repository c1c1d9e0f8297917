from __future__ import annotations

import pytest

from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec, Resources
from runtime.provider.resources import (
    DEFAULT_MEMORY_BYTES,
    DOCKER_MIN_MEMORY_BYTES,
    GIB,
    MIB,
    RuntimeResources,
    parse_cpu,
    parse_memory,
    runtime_resources,
    validate_resources,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("128Mi", 128 * MIB),
        ("128M", 128_000_000),
        ("1G", 1_000_000_000),
        ("1Gi", GIB),
        ("512k", 512_000),
        ("512Ki", 512 * 1024),
        ("1048576", 1048576),
        ("0.5Gi", GIB // 2),
        ("1.5", 2),  # fractional bytes round up, as in Kubernetes
        ("1e3", 1000),
        ("2E6", 2_000_000),
        ("1E", 10**18),
        (" 64Mi ", 64 * MIB),
        ("1Ti", 2**40),
    ],
)
def test_memory_quantities(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("12XB", "use e.g. 128Mi"),
        ("128MB", "use e.g. 128Mi"),
        ("128mi", "use e.g. 128Mi"),
        ("512m", "'m' means milli"),
        ("", "use e.g. 128Mi"),
        ("-1Mi", "use e.g. 128Mi"),
        ("0", "more than 0"),
        ("Mi", "use e.g. 128Mi"),
        ("1.2.3", "use e.g. 128Mi"),
        ("1 Gi", "use e.g. 128Mi"),
        ("99999999Ei", "too large"),
    ],
)
def test_bad_memory_quantities_name_field_and_value(text: str, hint: str) -> None:
    with pytest.raises(InvalidSpec) as failure:
        parse_memory(text, "limits.memory")
    message = str(failure.value)
    assert message.startswith(f"limits.memory: invalid quantity {text!r}")
    assert hint in message


def test_the_documented_error_message() -> None:
    with pytest.raises(InvalidSpec) as failure:
        parse_memory("12XB", "limits.memory")
    assert str(failure.value) == "limits.memory: invalid quantity '12XB' (use e.g. 128Mi)"


@pytest.mark.parametrize(
    ("text", "nano"),
    [
        ("0.5", 500_000_000),
        ("500m", 500_000_000),
        ("2", 2_000_000_000),
        ("1.25", 1_250_000_000),
        ("100m", 100_000_000),
        ("1m", 1_000_000),
        (".5", 500_000_000),
    ],
)
def test_cpu_quantities(text: str, nano: int) -> None:
    assert parse_cpu(text) == nano


@pytest.mark.parametrize("text", ["", "0", "0m", "-1", "1Gi", "half", "1k", "2cpu"])
def test_bad_cpu_quantities(text: str) -> None:
    with pytest.raises(InvalidSpec, match=r"^limits\.cpu: invalid quantity"):
        parse_cpu(text, "limits.cpu")


def _spec(limits: Resources | None = None, requests: Resources | None = None) -> FunctionSpec:
    return FunctionSpec(name="fn", image="img", limits=limits, requests=requests)


@pytest.mark.parametrize(
    ("limits", "requests", "host_cpus", "expected"),
    [
        (None, None, 2, RuntimeResources(memory_bytes=DEFAULT_MEMORY_BYTES)),
        (Resources(memory="128Mi"), None, 2, RuntimeResources(memory_bytes=128 * MIB)),
        # Below Docker's floor: raised at run time.
        (Resources(memory="5Mi"), None, 2, RuntimeResources(memory_bytes=DOCKER_MIN_MEMORY_BYTES)),
        (
            Resources(memory="128Mi"),
            Resources(memory="1Mi"),
            2,
            RuntimeResources(memory_bytes=128 * MIB, memory_reservation_bytes=6 * MIB),
        ),
        # No limit but a large request: the default limit grows to the request.
        (
            None,
            Resources(memory="512Mi"),
            2,
            RuntimeResources(memory_bytes=512 * MIB, memory_reservation_bytes=512 * MIB),
        ),
        (
            Resources(cpu="500m"),
            Resources(cpu="250m"),
            2,
            RuntimeResources(
                memory_bytes=DEFAULT_MEMORY_BYTES, nano_cpus=500_000_000, cpu_shares=256
            ),
        ),
        # More cores than the host has: capped; less than Docker's 0.01: raised.
        (Resources(cpu="8"), None, 2, RuntimeResources(DEFAULT_MEMORY_BYTES, nano_cpus=2 * 10**9)),
        (
            Resources(cpu="8"),
            None,
            None,
            RuntimeResources(DEFAULT_MEMORY_BYTES, nano_cpus=8 * 10**9),
        ),
        (Resources(cpu="1m"), None, 2, RuntimeResources(DEFAULT_MEMORY_BYTES, nano_cpus=10**7)),
        (None, Resources(cpu="1m"), 2, RuntimeResources(DEFAULT_MEMORY_BYTES, cpu_shares=2)),
    ],
)
def test_runtime_resources(
    limits: Resources | None,
    requests: Resources | None,
    host_cpus: int | None,
    expected: RuntimeResources,
) -> None:
    assert runtime_resources(_spec(limits, requests), host_cpus=host_cpus) == expected


@pytest.mark.parametrize(
    ("limits", "requests", "message"),
    [
        (Resources(memory="64Mi"), Resources(memory="128Mi"), "requests.memory '128Mi' is more"),
        (Resources(cpu="0.5"), Resources(cpu="1"), "requests.cpu '1' is more than limits.cpu"),
        (None, Resources(memory="lots"), "requests.memory: invalid quantity 'lots'"),
        (None, Resources(cpu="fast"), "requests.cpu: invalid quantity 'fast'"),
        (Resources(cpu="x"), None, "limits.cpu: invalid quantity 'x'"),
    ],
)
def test_validate_resources_rejects(
    limits: Resources | None, requests: Resources | None, message: str
) -> None:
    with pytest.raises(InvalidSpec) as failure:
        validate_resources(_spec(limits, requests))
    assert message in str(failure.value)
