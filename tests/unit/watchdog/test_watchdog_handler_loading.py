"""Loading the python-mode handler, and how import failures leave the mode."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from watchdog.config import WatchdogConfig
from watchdog.modes.python import HandlerLoadError, PythonMode, is_async_handler, load_handler


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write_module(directory: Path, source: str) -> str:
    name = f"handler_{uuid.uuid4().hex}"  # fresh name: no help from the import cache
    (directory / f"{name}.py").write_text(source)
    return name


def test_loads_sync_and_async_handlers(module_dir: Path) -> None:
    name = write_module(
        module_dir,
        "def handle(event, context):\n    return 'x'\n\nasync def ahandle(event, context):\n    return 'y'\n",
    )
    assert not is_async_handler(load_handler(name, "handle"))
    assert is_async_handler(load_handler(name, "ahandle"))


def test_object_with_async_call_counts_as_async(module_dir: Path) -> None:
    name = write_module(
        module_dir,
        "class H:\n    async def __call__(self, event, context):\n        return 'x'\n\nhandle = H()\n",
    )
    assert is_async_handler(load_handler(name, "handle"))


def test_missing_module_raises_import_error() -> None:
    with pytest.raises(ModuleNotFoundError):
        load_handler(f"no_such_module_{uuid.uuid4().hex}", "handle")


def test_module_raising_at_import_propagates(module_dir: Path) -> None:
    name = write_module(module_dir, "raise RuntimeError('bad import')\n")
    with pytest.raises(RuntimeError, match="bad import"):
        load_handler(name, "handle")


def test_syntax_error_propagates(module_dir: Path) -> None:
    name = write_module(module_dir, "def handle(:\n")
    with pytest.raises(SyntaxError):
        load_handler(name, "handle")


def test_missing_function(module_dir: Path) -> None:
    name = write_module(module_dir, "x = 1\n")
    with pytest.raises(HandlerLoadError, match="has no attribute 'handle'"):
        load_handler(name, "handle")


def test_not_callable(module_dir: Path) -> None:
    name = write_module(module_dir, "handle = 42\n")
    with pytest.raises(HandlerLoadError, match="is not callable"):
        load_handler(name, "handle")


async def test_failed_import_leaves_the_mode_unready_and_logs_the_traceback(
    module_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = write_module(module_dir, "import json\nraise ValueError('import-time boom')\n")
    mode = PythonMode(WatchdogConfig.from_env({"handler": f"{name}:handle"}))
    fatal: list[str] = []
    with caplog.at_level(logging.ERROR, logger="watchdog"):
        assert await mode.start(fatal.append) is False
    try:
        assert not mode.ready
        assert not await mode.check_ready()
        assert fatal == []  # not fatal: the watchdog stays up and says why
        record = next(r for r in caplog.records if "handler import failed" in r.getMessage())
        assert "import-time boom" in record.getMessage()
        assert record.exc_info is not None
    finally:
        await mode.close()


async def test_successful_import_makes_the_mode_ready(module_dir: Path) -> None:
    name = write_module(module_dir, "def handle(event, context):\n    return 'x'\n")
    mode = PythonMode(WatchdogConfig.from_env({"handler": f"{name}:handle"}))
    try:
        assert await mode.start(lambda reason: None) is True
        assert mode.ready
        assert await mode.check_ready()
        assert mode.description == f"handler={name}:handle"
    finally:
        await mode.close()
