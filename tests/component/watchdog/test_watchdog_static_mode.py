"""Static mode end to end: files from a folder, and nothing outside it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest


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
