"""The classic watchdog's Http_* request variables."""

from __future__ import annotations

from watchdog.http11 import parse_request
from watchdog.modes.fork import cgi_env


def test_headers_method_path_and_query() -> None:
    request = parse_request(
        b"POST /fn/sub?a=1&b=two HTTP/1.1\r\n"
        b"content-type: text/plain\r\n"
        b"X-CALL-ID: id-1\r\n"
        b"x-multi: 1\r\n"
        b"x-multi: 2\r\n"
        b"Content-Length: 3"
    )
    env = cgi_env(request)
    assert env["Http_Method"] == "POST"
    assert env["Http_Path"] == "/fn/sub"
    assert env["Http_Query"] == "a=1&b=two"
    assert env["Http_Content_Type"] == "text/plain"
    assert env["Http_X_Call_Id"] == "id-1"
    assert env["Http_X_Multi"] == "1"
    assert env["Http_ContentLength"] == "3"


def test_no_query_is_empty() -> None:
    assert cgi_env(parse_request(b"GET / HTTP/1.1"))["Http_Query"] == ""
