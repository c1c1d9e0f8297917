"""ConnectorHost: owns the connectors, keeps their bindings in step with the functions, and
gives them the one way to invoke (`Dispatch`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from connectors.base import Binding, Connector
from runtime.errors import FunctionNotFound
from runtime.functions import FunctionManager
from runtime.invoker import BufferedResult, Invocation, Invoker
from runtime.queue.enqueue import Enqueued
from runtime.queue.errors import QueueUnavailable
from runtime.queue.message import Envelope
from runtime.queue.service import AsyncQueue

log = logging.getLogger("localfaas.connectors")


class InvokerDispatch:
    """Dispatch over the daemon's Invoker and async queue."""

    def __init__(self, invoker: Invoker, queue: AsyncQueue | None, invoke_timeout_s: float):
        self._invoker = invoker
        self._queue = queue
        self._timeout_s = invoke_timeout_s

    @property
    def invoke_timeout_s(self) -> float:
        return self._timeout_s

    async def invoke(self, inv: Invocation) -> BufferedResult:
        return await self._invoker.call_buffered(inv)

    async def enqueue(self, env: Envelope) -> Enqueued:
        if self._queue is None:
            raise QueueUnavailable("async invocations are not enabled")
        return await self._queue.enqueue(env)


class ConnectorHost:
    def __init__(self, functions: FunctionManager, connectors: Iterable[Connector]) -> None:
        self._functions = functions
        self.connectors: dict[str, Connector] = {c.name: c for c in connectors}
        self._changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        for connector in self.connectors.values():
            functions.validators.append(connector.validate)

    def get(self, name: str) -> Connector | None:
        return self.connectors.get(name)

    async def start(self) -> None:
        """Start every connector, then bind all known functions (and follow changes)."""
        for connector in self.connectors.values():
            await connector.start()
        self._functions.watch(self._changed)
        self._task = asyncio.create_task(self._apply_changes(), name="connector bindings")

    async def settle(self) -> None:
        """Wait until every change seen so far is applied (for tests and start-up)."""
        await self._changes.join()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for connector in reversed(list(self.connectors.values())):
            try:
                await connector.close()
            except Exception:
                log.exception("connector %s did not close cleanly", connector.name)

    def bindings(self, namespace: str | None = None, name: str | None = None) -> list[Binding]:
        found = [
            binding
            for connector in self.connectors.values()
            for binding in connector.bindings()
            if (namespace is None or binding.namespace == namespace)
            and (name is None or binding.function == name)
        ]
        return sorted(found, key=lambda b: (b.namespace, b.function, b.connector, b.trigger))

    def _changed(self, namespace: str, name: str) -> None:
        self._changes.put_nowait((namespace, name))

    async def _apply_changes(self) -> None:
        while True:
            namespace, name = await self._changes.get()
            try:
                await self._apply(namespace, name)
            finally:
                self._changes.task_done()

    async def _apply(self, namespace: str, name: str) -> None:
        try:
            spec = self._functions.get(name, namespace).spec
        except FunctionNotFound:
            spec = None
        for connector in self.connectors.values():
            try:
                if spec is None:
                    await connector.unbind(namespace, name)
                else:
                    await connector.bind(spec)
            except Exception:
                log.exception("connector %s could not bind %s.%s", connector.name, name, namespace)
