"""Name rules shared by every entry point: a name reaches a path, a container name, a Docker
label or a NATS subject only after it passed here."""

from __future__ import annotations

import re

from runtime.errors import InvalidSpec

DEFAULT_NAMESPACE = "openfaas-fn"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME_LEN = 63


def is_valid_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= MAX_NAME_LEN
        and _DNS1123_LABEL.fullmatch(value) is not None
    )


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a DNS-1123 label, else raise InvalidSpec naming ``what``."""
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"{what} is required")
    if not is_valid_name(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidSpec(
            f"{what} {shown!r} is invalid: use at most {MAX_NAME_LEN} lowercase letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    return value


def split_qualified(value: str, default_namespace: str = DEFAULT_NAMESPACE) -> tuple[str, str]:
    """`name` or `name.namespace` (as in /function/{name}.{namespace}) → (name, namespace)."""
    name, dot, namespace = value.partition(".")
    check_name(name, "function name")
    if dot:
        check_name(namespace, "namespace")
        return name, namespace
    return name, default_namespace
