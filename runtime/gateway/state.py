"""What gateway handlers reach through `request.app[SERVICES]`."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from connectors.host import ConnectorHost
from runtime.config import Settings
from runtime.functions import FunctionManager
from runtime.invoker import Invoker
from runtime.metrics import GatewayMetrics
from runtime.provider.base import Provider
from runtime.queue.service import AsyncQueue
from runtime.secrets import SecretFiles
from runtime.store import Store


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    secrets: SecretFiles
    provider: Provider
    functions: FunctionManager
    invoker: Invoker
    metrics: GatewayMetrics
    session: aiohttp.ClientSession
    queue: AsyncQueue | None = None  # async invocations; None in gateways built without them
    connectors: ConnectorHost | None = None  # event connectors; None in gateways without them


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
