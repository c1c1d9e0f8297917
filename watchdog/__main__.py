"""``python -m watchdog``: read the config from the environment and run until stopped.

Exit status: 0 after a drain, 1 when the function cannot run (its child died, a port is
taken), 2 when the configuration is invalid (with one line on stderr naming the variable).
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    started_at = time.perf_counter()
    from watchdog.config import ConfigError, WatchdogConfig

    try:
        config = WatchdogConfig.from_env(os.environ)
    except ConfigError as exc:
        print(f"watchdog: invalid configuration: {exc}", file=sys.stderr)
        return 2

    from watchdog.logs import setup_logging
    from watchdog.server import run

    setup_logging()
    return run(config, started_at)


if __name__ == "__main__":
    sys.exit(main())
