"""localfaas watchdog: the HTTP shim on port 8080 inside every function container.

Function images install this package alone (no ``runtime/``) and start it with
``python -m watchdog``. Importing the package is deliberately free of side effects and
heavy imports: cold starts pay for asyncio and the selected mode's code only in
``watchdog.__main__``. The HTTP server is our own (``watchdog.httpserver``); only http mode
imports aiohttp, as its upstream client.
"""

from __future__ import annotations

__version__ = "0.1.0"
