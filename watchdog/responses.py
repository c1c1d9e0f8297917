"""Responses the watchdog itself produces, and the headers it adds to every function response.

Anything the watchdog answers on the function's behalf (429 at the in-flight limit, 503 not
ready, 504 exec timeout, 413, ...) carries ``X-Localfaas-Origin: watchdog``, so the gateway
can tell a refusal by the watchdog from a response the function chose to send.
"""

from __future__ import annotations

from watchdog.http11 import Headers, Response

DURATION_HEADER = "X-Duration-Seconds"
ORIGIN_HEADER = "X-Localfaas-Origin"
ORIGIN_VALUE = "watchdog"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


def refusal(status: int, text: str) -> Response:
    """A short text response produced by the watchdog, marked with the origin header."""
    return text_response(status, text + "\n")


def text_response(status: int, text: str) -> Response:
    """A plain text response of the watchdog's own (probes too), with the origin header."""
    return Response(
        status,
        text.encode(),
        Headers._trusted(
            [("Content-Type", TEXT_CONTENT_TYPE), (ORIGIN_HEADER, ORIGIN_VALUE)],
            {"content-type": TEXT_CONTENT_TYPE, ORIGIN_HEADER.lower(): ORIGIN_VALUE},
        ),
    )


def duration_value(duration_s: float) -> str:
    """The ``X-Duration-Seconds`` value: float seconds, microsecond resolution."""
    return f"{duration_s:.6f}"
