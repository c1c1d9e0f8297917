"""The gateway's HTTP/1.1 client to replicas (see client.py for why it is not aiohttp's)."""

from runtime.upstream.body import BodyStream
from runtime.upstream.client import UpstreamClient, UpstreamDisconnected, UpstreamResponse
from runtime.upstream.http1 import HOP_BY_HOP, ProtocolError

__all__ = [
    "HOP_BY_HOP",
    "BodyStream",
    "ProtocolError",
    "UpstreamClient",
    "UpstreamDisconnected",
    "UpstreamResponse",
]
