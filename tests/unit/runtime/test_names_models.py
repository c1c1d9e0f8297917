from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runtime.errors import InvalidSpec
from runtime.models import FunctionSpec, Replica
from runtime.names import check_name, split_qualified


@pytest.mark.parametrize("name", ["a", "hello", "hello-world", "a1", "1a", "x" * 63])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["Hello", "hello.world", "../etc", "-a", "a-", "a_b", "x" * 64, "", "héllo", "a b", "a/b"],
)
def test_invalid_names_are_rejected_with_the_value(name: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        check_name(name, "service")
    assert "service" in str(err.value)


def test_split_qualified() -> None:
    assert split_qualified("hello") == ("hello", "openfaas-fn")
    assert split_qualified("hello.dev") == ("hello", "dev")
    with pytest.raises(InvalidSpec):
        split_qualified("hello.Dev")
    with pytest.raises(InvalidSpec):
        split_qualified("hello.dev.x")


def test_spec_echoes_what_was_deployed() -> None:
    body = {
        "service": "hello",
        "image": "Registry:5000/Hello:Latest",
        "envProcess": "python index.py",
        "envVars": {"A": "1"},
        "limits": {"memory": "5Mi"},
        "labels": None,
        "annotations": {"topic": "x"},
        "readOnlyRootFilesystem": True,
        "unknownNewField": {"ignored": True},
    }
    status = FunctionSpec.from_json(body).to_json()
    assert status == {
        "name": "hello",
        "image": "Registry:5000/Hello:Latest",
        "namespace": "openfaas-fn",
        "envProcess": "python index.py",
        "envVars": {"A": "1"},
        "labels": {},
        "annotations": {"topic": "x"},
        "limits": {"memory": "5Mi"},
        "readOnlyRootFilesystem": True,
    }


def test_spec_omits_empty_optional_fields() -> None:
    status = FunctionSpec.from_json({"service": "a", "image": "b", "limits": {}}).to_json()
    assert "envVars" not in status and "limits" not in status and "requests" not in status
    assert status["labels"] == {} and status["annotations"] == {}


def test_deployment_round_trip() -> None:
    spec = FunctionSpec.from_json(
        {"service": "a", "image": "b", "secrets": ["s1"], "requests": {"cpu": "0.5"}}
    )
    assert FunctionSpec.from_json(spec.to_deployment_json()) == spec


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"image": "x"}, "service is required"),
        ({"service": "a"}, "image is required"),
        ({"service": "a", "image": "  "}, "image is required"),
        ({"service": "a", "image": "a b"}, "white space"),
        ({"service": "Bad", "image": "x"}, "service 'Bad' is invalid"),
        ({"service": "a", "image": "x", "namespace": "No"}, "namespace 'No' is invalid"),
        ({"service": "a", "image": "x", "envVars": ["A=1"]}, "envVars must be an object"),
        ({"service": "a", "image": "x", "envVars": {"A": {"b": 1}}}, "envVars.A"),
        ({"service": "a", "image": "x", "secrets": "s"}, "secrets must be a list"),
        ({"service": "a", "image": "x", "secrets": ["../x"]}, "secret name"),
        ({"service": "a", "image": "x", "limits": "1G"}, "limits must be an object"),
        ({"service": "a", "image": "x", "readOnlyRootFilesystem": "yes"}, "true or false"),
        ({"service": "a", "image": "x", "envProcess": 5}, "envProcess"),
    ],
)
def test_bad_deployments(body: object, message: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        FunctionSpec.from_json(body)
    assert message in str(err.value)


def _replica(**overrides: object) -> Replica:
    fields: dict[str, object] = dict(
        container_id="c1",
        container_name="lf-openfaas-fn-hello-1",
        function="hello",
        namespace="openfaas-fn",
        generation=1,
        host_port=49153,
        state="running",
        created_at=datetime.now(UTC),
    )
    fields.update(overrides)
    return Replica(**fields)  # type: ignore[arg-type]


def test_replica_endpoint_prefers_the_bridge_address_then_the_published_port() -> None:
    assert _replica(bridge_ip="172.17.0.5").endpoint == ("172.17.0.5", 8080)
    assert _replica().endpoint == ("127.0.0.1", 49153)
    assert _replica(host_port=None).endpoint is None
