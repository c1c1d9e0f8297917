"""python3-http return values → HTTP responses."""

from __future__ import annotations

from collections import OrderedDict

import pytest

from watchdog.modes.python_result import ResultError, to_response

HTML = "text/html; charset=utf-8"


def test_none_is_empty_200() -> None:
    response = to_response(None)
    assert response.status == 200
    assert not response.body


@pytest.mark.parametrize(
    ("result", "body"),
    [("hi ✓", "hi ✓".encode()), (b"\x00raw", b"\x00raw"), (bytearray(b"ba"), b"ba")],
)
def test_str_and_bytes_are_the_body(result: object, body: bytes) -> None:
    response = to_response(result)
    assert response.status == 200
    assert response.body == body
    assert response.headers["Content-Type"] == HTML


def test_template_example() -> None:
    response = to_response({"statusCode": 200, "body": "Hello from OpenFaaS!"})
    assert (response.status, response.body) == (200, b"Hello from OpenFaaS!")


def test_status_code_defaults_to_200() -> None:
    assert to_response({"body": "x"}).status == 200


def test_status_code_as_string_is_accepted() -> None:
    assert to_response({"statusCode": "404"}).status == 404


@pytest.mark.parametrize("body", [{"a": [1, "é"]}, [1, {"b": None}]])
def test_dict_and_list_bodies_become_json(body: object) -> None:
    response = to_response({"statusCode": 201, "body": body})
    assert response.status == 201
    assert response.headers["Content-Type"] == "application/json"
    import json

    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == body


def test_headers_are_applied_and_override_content_type() -> None:
    response = to_response(
        {
            "body": {"a": 1},
            "headers": OrderedDict([("content-type", "application/vnd.x+json"), ("X-N", 5)]),
        }
    )
    assert response.headers["Content-Type"] == "application/vnd.x+json"
    assert response.headers["X-N"] == "5"


def test_headers_as_pairs() -> None:
    assert to_response({"headers": [("X-A", "1")]}).headers["X-A"] == "1"


def test_framing_headers_from_the_handler_are_dropped() -> None:
    response = to_response(
        {"body": "abc", "headers": {"Content-Length": "999", "Transfer-Encoding": "chunked"}}
    )
    assert "Content-Length" not in response.headers
    assert "Transfer-Encoding" not in response.headers


def test_missing_and_none_body_are_empty() -> None:
    assert not to_response({"statusCode": 204}).body
    assert not to_response({"statusCode": 204, "body": None}).body


def test_other_body_types_are_text() -> None:
    assert to_response({"body": 42}).body == b"42"


@pytest.mark.parametrize(
    "result",
    [
        42,
        ["a list at top level"],
        {"statusCode": "abc"},
        {"statusCode": 99},
        {"statusCode": True},
        {"body": {"not": {1, 2}}},
        {"headers": "X-A: 1"},
        {"headers": {"X-A": "a\r\nInjected: yes"}},
        {"headers": {"Bad Name": "x"}},
    ],
)
def test_invalid_results_raise(result: object) -> None:
    with pytest.raises(ResultError):
        to_response(result)
