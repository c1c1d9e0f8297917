from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import DEFAULT_BASE_IMAGE, Settings
from runtime.errors import InvalidSpec


def test_defaults() -> None:
    settings = Settings.load({})
    assert (settings.host, settings.port, settings.nats_url) == ("127.0.0.1", 8080, None)
    assert settings.base_image == DEFAULT_BASE_IMAGE


def test_env_then_flags() -> None:
    env = {
        "LOCALFAAS_HOST": "0.0.0.0",
        "LOCALFAAS_PORT": "9000",
        "LOCALFAAS_STATE_DIR": "/tmp/x",
        "LOCALFAAS_NATS_URL": "nats://127.0.0.1:4222",
        "LOCALFAAS_INVOKE_TIMEOUT": "2m",
        "LOCALFAAS_MAX_BODY_BYTES": "1024",
    }
    settings = Settings.load(env, port=9100, host=None)
    assert settings.host == "0.0.0.0"
    assert settings.port == 9100
    assert settings.state_dir == Path("/tmp/x")
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.invoke_timeout_s == 120.0
    assert settings.max_body_bytes == 1024


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"LOCALFAAS_PORT": "http"}, "LOCALFAAS_PORT"),
        ({"LOCALFAAS_PORT": "70000"}, "LOCALFAAS_PORT"),
        ({"LOCALFAAS_NATS_URL": "localhost:4222"}, "LOCALFAAS_NATS_URL"),
        ({"LOCALFAAS_INVOKE_TIMEOUT": "soon"}, "LOCALFAAS_INVOKE_TIMEOUT"),
        ({"LOCALFAAS_MAX_BODY_BYTES": "-1"}, "LOCALFAAS_MAX_BODY_BYTES"),
        ({"LOCALFAAS_ASYNC_MAX_BODY_BYTES": "lots"}, "LOCALFAAS_ASYNC_MAX_BODY_BYTES"),
        ({"LOCALFAAS_NATS_PORT": "0"}, "LOCALFAAS_NATS_PORT"),
        ({"LOCALFAAS_NATS_FSYNC": "maybe"}, "LOCALFAAS_NATS_FSYNC"),
        ({"LOCALFAAS_CALLBACK_DENY": "10.0.0.0/8,nonsense"}, "LOCALFAAS_CALLBACK_DENY"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        Settings.load(env)
    assert name in str(err.value)
    assert repr(next(iter(env.values()))) in str(err.value)


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(InvalidSpec, match="--port"):
        Settings.load({}, port=0)


def test_async_settings() -> None:
    defaults = Settings.load({})
    assert (defaults.async_max_body_bytes, defaults.nats_port, defaults.nats_fsync) == (
        1024 * 1024,
        0,
        True,
    )
    settings = Settings.load(
        {
            "LOCALFAAS_ASYNC_MAX_BODY_BYTES": "2048",
            "LOCALFAAS_NATS_PORT": "4333",
            "LOCALFAAS_NATS_FSYNC": "off",
            "LOCALFAAS_CALLBACK_ALLOW": "169.254.10.0/24, 10.1.2.3",
            "LOCALFAAS_CALLBACK_DENY": "192.168.0.0/16",
        }
    )
    assert settings.async_max_body_bytes == 2048
    assert settings.nats_port == 4333
    assert settings.nats_fsync is False
    assert settings.callback_allow == ("169.254.10.0/24", "10.1.2.3")
    assert settings.callback_deny == ("192.168.0.0/16",)
