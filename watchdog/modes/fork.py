"""Fork mode (the classic watchdog): one ``fprocess`` per request.

The request body goes to the process's stdin and its stdout is the response body; request
headers arrive as ``Http_*`` environment variables. stderr is relayed to the log, line by
line, never into the response. Each process gets its own process group, so exec_timeout
kills everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys

from watchdog.body import BodyError, read_body
from watchdog.config import WatchdogConfig
from watchdog.http11 import Request, Response
from watchdog.logs import relay_lines
from watchdog.modes import OnFatal
from watchdog.responses import refusal

log = logging.getLogger("watchdog")


def cgi_env(request: Request) -> dict[str, str]:
    """The classic watchdog's request variables: ``Http_<Header_Name>`` plus method, path, query."""
    env = {
        "Http_Method": request.method,
        "Http_Path": request.path,
        "Http_Query": request.query_string,
    }
    if request.content_length is not None:
        env["Http_ContentLength"] = str(request.content_length)
    for name in request.headers:
        key = "Http_" + _canonical(name)
        if key not in env:  # first value wins, as in the classic watchdog
            env[key] = request.headers[name]
    return env


def _canonical(name: str) -> str:
    # Go's canonical header form (x-call-id → X-Call-Id), hyphens as underscores.
    return "_".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class ForkMode:
    """Starts ``fprocess`` for every request."""

    def __init__(self, config: WatchdogConfig) -> None:
        self._config = config
        self._argv = config.fprocess_argv
        self._base_env = dict(config.env)
        self._ready = False
        self._stderr_prefix = b"stderr: " if config.prefix_logs else b""

    @property
    def description(self) -> str:
        return f"fprocess={self._config.fprocess!r}"

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self, on_fatal: OnFatal) -> bool:
        command = self._argv[0]
        if shutil.which(command, path=self._base_env.get("PATH", os.defpath)) is None:
            # Not fatal: the process stays up and unready, and says why.
            log.error("fprocess command %r not found; the function stays unready", command)
            return False
        self._ready = True
        return True

    async def check_ready(self) -> bool:
        return self._ready

    async def handle(self, request: Request, start: float) -> Response:
        if not self._ready:
            return refusal(503, "function not ready: fprocess command not found")
        try:
            body = await read_body(
                request, self._config.max_body_bytes, self._config.read_timeout_s
            )
        except BodyError as exc:
            return refusal(exc.status, exc.message)
        env = self._base_env | cgi_env(request)
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:  # e.g. out of processes or memory, or the command vanished
            log.error("cannot start fprocess %r: %s", self._config.fprocess, exc)
            return refusal(500, "function could not be started")
        exec_timeout_s = self._config.exec_timeout_s
        try:
            async with asyncio.timeout(exec_timeout_s or None):
                output, code = await self._run(process, body)
        except TimeoutError:
            _kill_group(process.pid)
            await process.wait()
            log.warning(
                "exec_timeout %gs reached: killed fprocess pid=%d and its process group",
                exec_timeout_s,
                process.pid,
            )
            return refusal(504, f"function timed out after exec_timeout ({exec_timeout_s:g}s)")
        except BaseException:
            # Cancelled (shutdown) or failed: leave nothing running behind.
            _kill_group(process.pid)
            raise
        if code != 0:
            log.warning("fprocess pid=%d exited with code %d", process.pid, code)
            return refusal(500, f"function exited with code {code}")
        return Response(200, output, self._headers(request))

    async def _run(self, process: asyncio.subprocess.Process, body: bytes) -> tuple[bytes, int]:
        assert process.stdin and process.stdout and process.stderr
        output, _, _ = await asyncio.gather(
            process.stdout.read(),
            _feed(process.stdin, body),
            relay_lines(process.stderr, sys.stderr.buffer, self._stderr_prefix),
        )
        return output, await process.wait()

    def _headers(self, request: Request) -> dict[str, str]:
        # As the classic watchdog: the content_type setting, else the caller's Content-Type.
        content_type = self._config.content_type or request.headers.get("Content-Type", "")
        return {"Content-Type": content_type} if content_type else {}

    async def stop(self) -> None:
        """Nothing long-lived to stop: each process ends with its request."""

    async def close(self) -> None:
        """Nothing held."""


async def _feed(stdin: asyncio.StreamWriter, body: bytes) -> None:
    try:
        if body:
            stdin.write(body)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the function does not read its input (e.g. `date`); that is fine
    finally:
        stdin.close()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
