"""The classic watchdog's Http_* request variables."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from watchdog.modes.fork import cgi_env


def test_headers_method_path_and_query() -> None:
    request = make_mocked_request(
        "POST",
        "/fn/sub?a=1&b=two",
        headers=CIMultiDict(
            [
                ("content-type", "text/plain"),
                ("X-CALL-ID", "id-1"),
                ("x-multi", "1"),
                ("x-multi", "2"),
            ]
        ),
    )
    env = cgi_env(request)
    assert env["Http_Method"] == "POST"
    assert env["Http_Path"] == "/fn/sub"
    assert env["Http_Query"] == "a=1&b=two"
    assert env["Http_Content_Type"] == "text/plain"
    assert env["Http_X_Call_Id"] == "id-1"
    assert env["Http_X_Multi"] == "1"


def test_no_query_is_empty() -> None:
    assert cgi_env(make_mocked_request("GET", "/"))["Http_Query"] == ""
