"""Resource quantities (`limits`/`requests`) → the numbers Docker wants. Pure, table-tested.

Quantities follow Kubernetes (`resource.ParseQuantity`, which faasd and faas-netes use), so a
stack file means the same thing here as on OpenFaaS: `128Mi` = 128 * 2^20 bytes, `128M` =
128 * 10^6, `512k` = 512 000, plain numbers are bytes; cpu `0.5`, `500m`, `2`.

The spec keeps what was deployed; the clamping to what Docker accepts (memory at least 6 MiB,
cpu between 0.01 and the host's cores) happens here, at run time only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# Docker refuses a memory limit or reservation below 6 MiB (daemon/daemon_unix.go linuxMinMemory).
DOCKER_MIN_MEMORY_BYTES = 6 * MIB
# A function without limits.memory still gets one: an unbounded function can take the host down.
DEFAULT_MEMORY_BYTES = 256 * MIB
# Docker's CFS period is 100 ms and the kernel's smallest quota is 1 ms: 0.01 CPU is the floor.
DOCKER_MIN_NANO_CPUS = 10_000_000
NANO = 1_000_000_000
# Kubelet's mapping of requests.cpu to cgroup cpu.shares: 1024 per CPU, at least 2.
SHARES_PER_CPU = 1024
MIN_CPU_SHARES = 2

_MEMORY_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE](?P<exponent>[+-]?[0-9]+))?(?P<suffix>[A-Za-z]*)$"
)


def _split(value: str, field: str, example: str) -> tuple[Decimal, str]:
    text = value.strip()
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise InvalidSpec(f"{field}: invalid quantity {value!r} (use e.g. {example})")
    try:
        number = Decimal(match["number"])
        if match["exponent"] is not None:
            number = number.scaleb(int(match["exponent"]))
    except (InvalidOperation, ValueError, OverflowError):
        raise InvalidSpec(f"{field}: invalid quantity {value!r} (use e.g. {example})") from None
    return number, match["suffix"]


def parse_memory(value: str, field: str = "limits.memory") -> int:
    """A Kubernetes memory quantity → bytes (rounded up, as Kubernetes does); InvalidSpec if bad."""
    number, suffix = _split(value, field, "128Mi")
    if suffix == "m":
        # Kubernetes reads `512m` as 0.512 bytes and Docker as 512 MiB: refuse rather than guess.
        raise InvalidSpec(
            f"{field}: invalid quantity {value!r} (use e.g. 128Mi; 'm' means milli, not mega)"
        )
    multiplier = _MEMORY_SUFFIX.get(suffix)
    if multiplier is None:
        raise InvalidSpec(f"{field}: invalid quantity {value!r} (use e.g. 128Mi)")
    if number <= 0:
        raise InvalidSpec(f"{field}: invalid quantity {value!r} (must be more than 0)")
    result = math.ceil(number * multiplier)
    if result > 2**62:
        raise InvalidSpec(f"{field}: invalid quantity {value!r} (too large)")
    return result


def parse_cpu(value: str, field: str = "limits.cpu") -> int:
    """A Kubernetes cpu quantity (`0.5`, `500m`, `2`) → nano CPUs; InvalidSpec if bad."""
    number, suffix = _split(value, field, "0.5 or 500m")
    if suffix == "m":
        number = number / 1000
    elif suffix != "":
        raise InvalidSpec(f"{field}: invalid quantity {value!r} (use e.g. 0.5 or 500m)")
    if number <= 0:
        raise InvalidSpec(f"{field}: invalid quantity {value!r} (must be more than 0)")
    if number > 1_000_000:
        raise InvalidSpec(f"{field}: invalid quantity {value!r} (too large)")
    return math.ceil(number * NANO)


@dataclass(frozen=True)
class RuntimeResources:
    """What a replica actually gets from Docker (after defaults and clamping)."""

    memory_bytes: int
    memory_reservation_bytes: int | None = None
    nano_cpus: int | None = None
    cpu_shares: int | None = None


def validate_resources(spec: FunctionSpec) -> None:
    """Deploy-time check (the gateway may call it): every quantity parses, requests ≤ limits."""
    runtime_resources(spec, host_cpus=None)


def runtime_resources(spec: FunctionSpec, *, host_cpus: int | None) -> RuntimeResources:
    """The Docker resources of one replica of ``spec``; ``host_cpus`` caps the cpu limit."""
    limit_mem_text = spec.limits.memory if spec.limits else None
    limit_cpu_text = spec.limits.cpu if spec.limits else None
    request_mem_text = spec.requests.memory if spec.requests else None
    request_cpu_text = spec.requests.cpu if spec.requests else None
    limit_mem = parse_memory(limit_mem_text, "limits.memory") if limit_mem_text else None
    request_mem = parse_memory(request_mem_text, "requests.memory") if request_mem_text else None
    limit_cpu = parse_cpu(limit_cpu_text, "limits.cpu") if limit_cpu_text else None
    request_cpu = parse_cpu(request_cpu_text, "requests.cpu") if request_cpu_text else None

    if limit_mem is not None and request_mem is not None and request_mem > limit_mem:
        raise InvalidSpec(
            f"requests.memory {request_mem_text!r} is more than limits.memory {limit_mem_text!r}"
        )
    if limit_cpu is not None and request_cpu is not None and request_cpu > limit_cpu:
        raise InvalidSpec(
            f"requests.cpu {request_cpu_text!r} is more than limits.cpu {limit_cpu_text!r}"
        )

    if limit_mem is None:
        # No limit given: the default, but never below what the function asked to reserve.
        memory = max(DEFAULT_MEMORY_BYTES, request_mem or 0)
    else:
        memory = max(limit_mem, DOCKER_MIN_MEMORY_BYTES)
    reservation = None
    if request_mem is not None:
        reservation = min(max(request_mem, DOCKER_MIN_MEMORY_BYTES), memory)

    nano_cpus = None
    if limit_cpu is not None:
        nano_cpus = max(limit_cpu, DOCKER_MIN_NANO_CPUS)
        if host_cpus is not None and host_cpus > 0:
            # Docker refuses more CPUs than the host has; a stack file written for a bigger
            # machine should still run here, just capped.
            nano_cpus = min(nano_cpus, host_cpus * NANO)
    cpu_shares = None
    if request_cpu is not None:
        cpu_shares = max(MIN_CPU_SHARES, request_cpu * SHARES_PER_CPU // NANO)
    return RuntimeResources(
        memory_bytes=memory,
        memory_reservation_bytes=reservation,
        nano_cpus=nano_cpus,
        cpu_shares=cpu_shares,
    )
