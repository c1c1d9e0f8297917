"""WatchdogConfig.from_env: defaults, every variable, and errors that name the variable."""

from __future__ import annotations

import pytest

from watchdog.config import ConfigError, WatchdogConfig


def test_defaults() -> None:
    config = WatchdogConfig.from_env({"HOSTNAME": "fn-1"})
    assert config.mode == "python"
    assert config.handler == "function.handler:handle"
    assert (config.handler_module, config.handler_function) == ("function.handler", "handle")
    assert config.upstream_url == "http://127.0.0.1:8082"
    assert (config.read_timeout_s, config.write_timeout_s, config.exec_timeout_s) == (10, 10, 10)
    assert config.healthcheck_interval_s == 5
    assert config.max_inflight == 100
    assert config.prefix_logs is True
    assert config.ready_path == ""
    assert (config.port, config.metrics_port) == (8080, 8081)
    assert config.static_path == "/home/app/public"
    assert config.max_body_bytes == 10 * 1024 * 1024
    assert config.hostname == "fn-1"


def test_every_variable() -> None:
    env = {
        "mode": "http",
        "fprocess": "node 'my app.js' --flag",
        "upstream_url": "http://127.0.0.1:3000/",
        "read_timeout": "5s",
        "write_timeout": "1m",
        "exec_timeout": "0",
        "healthcheck_interval": "500ms",
        "max_inflight": "0",
        "prefix_logs": "false",
        "ready_path": "healthz",
        "handler": "app.main:entry",
        "port": "9000",
        "metrics_port": "9001",
        "static_path": "/srv/www",
        "max_body_bytes": "2Mi",
        "content_type": "text/plain",
    }
    config = WatchdogConfig.from_env(env)
    assert config.fprocess_argv == ["node", "my app.js", "--flag"]
    assert config.upstream_url == "http://127.0.0.1:3000"
    assert (config.read_timeout_s, config.write_timeout_s, config.exec_timeout_s) == (5, 60, 0)
    assert config.healthcheck_interval_s == 0.5
    assert config.max_inflight == 0
    assert config.prefix_logs is False
    assert config.ready_path == "/healthz"
    assert config.handler == "app.main:entry"
    assert (config.port, config.metrics_port) == (9000, 9001)
    assert config.static_path == "/srv/www"
    assert config.max_body_bytes == 2 * 1024 * 1024
    assert config.content_type == "text/plain"
    assert dict(config.env) == env


def test_of_watchdog_aliases_win() -> None:
    config = WatchdogConfig.from_env(
        {
            "mode": "fork",
            "fprocess": "cat",
            "function_process": "wc -c",
            "upstream_url": "http://a:1",
            "http_upstream_url": "http://b:2",
        }
    )
    assert config.fprocess == "wc -c"
    assert config.upstream_url == "http://b:2"


def test_empty_values_mean_unset() -> None:
    assert WatchdogConfig.from_env({"exec_timeout": "", "port": " "}) == WatchdogConfig.from_env({})


def test_config_is_frozen() -> None:
    config = WatchdogConfig.from_env({})
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("read_timeout", "abc"),
        ("write_timeout", "ten"),
        ("exec_timeout", "-1"),
        ("healthcheck_interval", "5 seconds"),
        ("max_inflight", "-3"),
        ("max_inflight", "1.5"),
        ("port", "http"),
        ("port", "65536"),
        ("metrics_port", "-1"),
        ("max_body_bytes", "0"),
        ("max_body_bytes", "10MB"),
        ("prefix_logs", "maybe"),
        ("mode", "afterburn"),
        ("handler", "function.handler"),
        ("handler", "function/handler.py:handle"),
        ("upstream_url", "https://127.0.0.1:8082"),
        ("upstream_url", "127.0.0.1:8082"),
        ("upstream_url", "http://127.0.0.1:port"),
        ("ready_path", "/has space"),
    ],
)
def test_bad_value_names_variable_and_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        WatchdogConfig.from_env({name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}: ")
    assert repr(value) in message
    assert "\n" not in message


def test_duration_message_explains_the_format() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^exec_timeout: invalid duration 'abc' \(use seconds like 10 or a duration like 30s\)$",
    ):
        WatchdogConfig.from_env({"exec_timeout": "abc"})


def test_write_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"^write_timeout: must be over 0s"):
        WatchdogConfig.from_env({"write_timeout": "0s"})


@pytest.mark.parametrize("mode", ["http", "fork"])
def test_fprocess_required_for_child_modes(mode: str) -> None:
    with pytest.raises(ConfigError, match=rf"^fprocess: required for mode={mode}"):
        WatchdogConfig.from_env({"mode": mode})


def test_fprocess_must_split() -> None:
    with pytest.raises(ConfigError, match=r"^fprocess: cannot split"):
        WatchdogConfig.from_env({"mode": "fork", "fprocess": "sh -c 'unbalanced"})


def test_ports_must_differ() -> None:
    with pytest.raises(ConfigError, match=r"^metrics_port: 9000 is also the function port"):
        WatchdogConfig.from_env({"port": "9000", "metrics_port": "9000"})
    WatchdogConfig.from_env({"port": "0", "metrics_port": "0"})  # both ephemeral is fine


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("TRUE", True), ("t", True), ("0", False), ("False", False)],
)
def test_prefix_logs_booleans(value: str, expected: bool) -> None:
    assert WatchdogConfig.from_env({"prefix_logs": value}).prefix_logs is expected
