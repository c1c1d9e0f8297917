"""Static mode end to end: files from a folder, and nothing outside it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

BIG = bytes(range(256)) * 4096  # 1 MiB: streamed, not sent in one piece


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("static")
    public = root / "public"
    (public / "docs").mkdir(parents=True)
    (public / "index.html").write_text("<h1>home</h1>")
    (public / "app.js").write_text("console.log(1)")
    (public / "docs" / "index.html").write_text("docs home")
    (root / "secret.txt").write_text("do not serve")
    (public / "link-out").symlink_to(root / "secret.txt")
    (public / "big.bin").write_bytes(BIG)
    return public


@pytest.fixture(scope="module")
def static(start_module_watchdog: Any, site: Path) -> Any:
    return start_module_watchdog({"mode": "static", "static_path": str(site)})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/", "<h1>home</h1>"),
        ("/app.js", "console.log(1)"),
        ("/docs/", "docs home"),
        ("/docs", "docs home"),
    ],
)
async def test_serves_files_and_index(static: Any, path: str, body: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(static.url(path)) as response:
        assert response.status == 200
        assert await response.text() == body
        assert "X-Duration-Seconds" in response.headers


async def test_content_type_from_the_file_name(static: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(static.url("/index.html")) as response,
    ):
        assert response.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/missing.txt", "/link-out", "/docs/../../secret.txt"])
async def test_nothing_outside_the_folder(static: Any, path: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(static.url(path)) as response:
        assert response.status == 404


def test_raw_traversal_is_not_served(static: Any) -> None:
    # Clients normalise "..", so send the request line by hand.
    for target in ("/../secret.txt", "/%2e%2e/secret.txt", "/docs/%2e%2e/%2e%2e/secret.txt"):
        with socket.create_connection(("127.0.0.1", static.port), timeout=5) as conn:
            conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        assert b"do not serve" not in reply, target
        assert reply.startswith((b"HTTP/1.1 404", b"HTTP/1.1 400")), target


async def test_only_get_and_head(static: Any) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.head(static.url("/app.js")) as response:
            assert response.status == 200
        async with session.post(static.url("/app.js")) as response:
            assert response.status == 405


async def test_a_large_file_streams_intact(static: Any) -> None:
    async with aiohttp.ClientSession() as session, session.get(static.url("/big.bin")) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(BIG))
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert "X-Duration-Seconds" in response.headers
        assert await response.read() == BIG


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [("bytes=0-9", 0, 9), ("bytes=1048570-", 1048570, 1048575), ("bytes=-6", 1048570, 1048575),
     ("bytes=100-999999999", 100, 1048575)],
)  # fmt: skip
async def test_one_byte_range_is_206(static: Any, spec: str, start: int, end: int) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(static.url("/big.bin"), headers={"Range": spec}) as response,
    ):
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(BIG)}"
        assert await response.read() == BIG[start : end + 1]


async def test_range_past_the_end_is_416(static: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(static.url("/app.js"), headers={"Range": "bytes=500-"}) as response,
    ):
        assert response.status == 416
        assert response.headers["Content-Range"] == "bytes */14"


async def test_validators_give_304(static: Any) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(static.url("/app.js")) as response:
            etag = response.headers["ETag"]
            last_modified = response.headers["Last-Modified"]
        async with session.get(static.url("/app.js"), headers={"If-None-Match": etag}) as response:
            assert response.status == 304
            assert await response.read() == b""
        async with session.get(
            static.url("/app.js"), headers={"If-Modified-Since": last_modified}
        ) as response:
            assert response.status == 304
        async with session.get(
            static.url("/app.js"), headers={"If-None-Match": '"other"'}
        ) as response:
            assert response.status == 200


async def test_head_has_the_file_length_and_no_body(static: Any) -> None:
    async with aiohttp.ClientSession() as session:
        for path, length in (("/app.js", 14), ("/big.bin", len(BIG))):
            async with session.head(static.url(path)) as response:
                assert response.status == 200
                assert response.headers["Content-Length"] == str(length)
                assert await response.read() == b""
