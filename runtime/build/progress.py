"""Build progress: parsed from the classic builder's `Step N/M : ...` lines, shown as a bar on a
terminal and as one plain line per step when piped (CI logs, files)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
BAR_WIDTH = 20


@dataclass(frozen=True)
class BuildProgress:
    """One state change of a build.

    `step`/`total` count Dockerfile steps; both are 0 for the preparation phases before
    Docker runs (probing the base image, downloading wheels), whose text is in `message`.
    """

    step: int
    total: int
    message: str
    subject: str = ""  # what is being built: a function name, or "watchdog image"


ProgressCallback = Callable[[BuildProgress], None]


def parse_step(line: str, subject: str = "") -> BuildProgress | None:
    """`Step 5/9 : COPY function/ /home/app/function/` → BuildProgress(5, 9, "COPY ...")."""
    match = _STEP.match(line.strip())
    if match is None:
        return None
    return BuildProgress(int(match.group(1)), int(match.group(2)), match.group(3), subject)


def render_plain(progress: BuildProgress) -> str:
    who = f"building {progress.subject}" if progress.subject else "building"
    if progress.total == 0:
        return f"{who}: {progress.message}"
    return f"{who}: step {progress.step}/{progress.total}: {progress.message}"


def render_bar(progress: BuildProgress, width: int) -> str:
    """`[########------------] 5/9 building hello: COPY function/ ...`, cut to `width`."""
    who = f"building {progress.subject}" if progress.subject else "building"
    if progress.total == 0:
        line = f"[{'-' * BAR_WIDTH}] {who}: {progress.message}"
    else:
        filled = BAR_WIDTH * progress.step // progress.total
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        line = f"[{bar}] {progress.step}/{progress.total} {who}: {progress.message}"
    if len(line) > width:
        line = line[: max(width - 3, 0)] + "..."
    return line


class ProgressPrinter:
    """A `ProgressCallback` writing to a stream: a redrawn bar on a TTY, plain lines otherwise.

    Call `close()` after the build so the bar's line is ended.
    """

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._open_line = False
        self._subject: str | None = None

    def __call__(self, progress: BuildProgress) -> None:
        if not self._tty:
            self._stream.write(render_plain(progress) + "\n")
            self._stream.flush()
            return
        if self._open_line and progress.subject != self._subject:
            # A new image (the watchdog image, then the function): keep the finished bar.
            self._stream.write("\n")
        self._subject = progress.subject
        width = shutil.get_terminal_size().columns - 1
        self._stream.write("\r\x1b[2K" + render_bar(progress, width))
        self._stream.flush()
        self._open_line = True

    def close(self) -> None:
        if self._open_line:
            self._stream.write("\n")
            self._stream.flush()
            self._open_line = False


_NEW_LAYER = re.compile(r"^---> [0-9a-f]{12,}$")
# The daemon wraps a RUN step's stderr in colour codes.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BuildStreamParser:
    """Folds the classic builder's JSON stream into progress events and a summary.

    Tracks which steps were rebuilt (printed a new ` ---> <id>` without ` ---> Using cache`)
    and keeps the current step's output, so a failure can name the step and show what it
    printed.
    """

    TAIL_LINES = 20

    def __init__(self, subject: str = "") -> None:
        self.subject = subject
        self.current: BuildProgress | None = None
        self.uncached_steps: list[str] = []
        self.steps_total = 0
        self.image_id: str | None = None
        self.tail: list[str] = []
        self._buffer = ""
        self._cached = False
        self._produced = False

    def feed(self, chunk: object) -> list[BuildProgress]:
        """Consume one decoded JSON object of the stream; return the steps that started."""
        if not isinstance(chunk, dict):
            return []
        aux = chunk.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]
        text = chunk.get("stream")
        if not isinstance(text, str):
            return []
        # A chunk usually holds whole lines, but nothing guarantees it.
        *lines, self._buffer = (self._buffer + text).split("\n")
        return [p for p in map(self._line, lines) if p is not None]

    def finish(self) -> None:
        """End of stream: account for the last step."""
        if self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        self._close_step()
        self.current = None

    def failure_message(self, error: str) -> str:
        who = f"building {self.subject}" if self.subject else "build"
        where = ""
        if self.current is not None:
            where = f" at step {self.current.step}/{self.current.total} ({self.current.message})"
        message = f"{who} failed{where}: {error.strip()}"
        if self.tail:
            message += "\n" + "\n".join(self.tail[-self.TAIL_LINES :])
        return message

    def _line(self, line: str) -> BuildProgress | None:
        line = _ANSI.sub("", line)
        progress = parse_step(line, self.subject)
        if progress is not None:
            self._close_step()
            self.current = progress
            self.steps_total = progress.total
            self.tail = []
            return progress
        stripped = line.strip()
        if stripped == "---> Using cache":
            self._cached = True
        elif _NEW_LAYER.match(stripped):
            self._produced = True
        elif stripped.startswith(("---> Running in ", "Removing intermediate container ")):
            pass
        elif stripped.startswith(("Successfully built ", "Successfully tagged ")):
            pass
        elif stripped:
            self.tail.append(line.rstrip())
            del self.tail[: -self.TAIL_LINES]
        return None

    def _close_step(self) -> None:
        step = self.current
        if step is not None and self._produced and not self._cached:
            # FROM "produces" the base image's ID: that is a lookup, not a rebuilt step.
            if not step.message.upper().startswith("FROM "):
                self.uncached_steps.append(step.message)
        self._cached = False
        self._produced = False
