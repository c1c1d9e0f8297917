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
