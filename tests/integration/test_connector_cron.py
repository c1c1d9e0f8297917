"""Cron through the real daemon, a real function container and real restarts.

Minute schedules are too slow for CI, and the daemon has no seconds hook (the 6-field form is a
constructor argument of the connector that only component tests use). So this test makes time
pass the honest way for a daemon: it is *down*. The daemon is stopped, the persisted mark of
the schedule ("handled up to") is moved 36 hours back in the state store, as if it had been
down that long, and a restarted daemon must catch up the latest missed firing of a daily
schedule in Asia/Kolkata: exactly once, through the real invoke path into the container, with
the cron headers and the deterministic call id. A second restart with the mark moved back
again must refuse to run that firing a second time (the claim in the store). On-time firing
with real time is covered by tests/component/connectors/test_cron*.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connectors.cron import LAST_SCOPE, last_key
from connectors.cron_schedule import fire_id
from runtime.store import Store
from tests.integration.daemon_fixtures import (  # noqa: F401
    DaemonProcess,
    daemon_factory,
    test_function_image,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

KOLKATA = ZoneInfo("Asia/Kolkata")
ANNOTATIONS = {
    "topic": "cron-function",
    "schedule": "@daily",
    "com.localfaas.cron.timezone": "Asia/Kolkata",
    "com.localfaas.cron.catchup": "latest",
    "com.localfaas.cron.catchup-grace": "48h",
}
DUPLICATES = re.compile(
    r'localfaas_connector_skipped_total\{connector="cron",function_name="probe.openfaas-fn",'
    r'reason="duplicate"\} (\S+)'
)


def cron_log(daemon: DaemonProcess) -> list[list[str]]:
    reply = daemon.request("GET", "/function/probe/cron-log")
    assert reply.status == 200, reply.body
    return [line.split("|") for line in reply.body.decode().splitlines()]


def cron_binding(daemon: DaemonProcess) -> dict[str, object] | None:
    reply = daemon.request("GET", "/system/connectors?name=probe")
    assert reply.status == 200, reply.body
    found = [b for b in reply.json()["bindings"] if b["connector"] == "cron"]
    return found[0] if found else None


def rewind_mark(state_dir: Path, hours: float) -> None:
    """As if the daemon had been down for ``hours``: the schedule was last handled then."""
    store = Store(state_dir / "state.db")
    try:
        mark = datetime.now(UTC) - timedelta(hours=hours)
        store.kv_put(LAST_SCOPE, last_key("openfaas-fn", "probe", "@daily"), mark.isoformat())
    finally:
        store.close()


def duplicates_refused(daemon: DaemonProcess) -> float:
    text = daemon.request("GET", "/metrics").body.decode()
    found = DUPLICATES.search(text)
    return float(found.group(1)) if found else 0.0


def test_cron_catch_up_reaches_the_container_once_across_restarts(
    daemon_factory: Callable[..., DaemonProcess], test_function_image: str, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    daemon = daemon_factory(state_dir)
    deploy = {"service": "probe", "image": test_function_image, "annotations": ANNOTATIONS}

    # A broken trigger is refused by the real daemon, naming the annotation.
    bad = {**deploy, "annotations": {**ANNOTATIONS, "com.localfaas.cron.timezone": "Asia/Kolkatta"}}
    reply = daemon.request("POST", "/system/functions", json_body=bad)
    assert reply.status == 400 and b"annotation com.localfaas.cron.timezone" in reply.body
    reply = daemon.request("POST", "/system/functions", json_body=deploy)
    assert reply.status == 202, reply.body
    daemon.wait_available("probe", 1)
    daemon.wait_for(lambda: cron_binding(daemon) is not None, "the cron binding")
    binding = cron_binding(daemon)
    assert binding is not None and binding["trigger"] == "@daily (Asia/Kolkata)"
    details = binding["details"]
    assert isinstance(details, dict)
    now_kolkata = datetime.now(KOLKATA)
    next_midnight = (now_kolkata + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    assert details["nextFire"] == next_midnight.isoformat()  # "...T00:00:00+05:30"
    assert cron_log(daemon) == []  # deploying never runs a firing from before the deploy

    # Down "for 36 hours": the restarted daemon runs the latest missed midnight, once.
    assert daemon.stop() == 0
    rewind_mark(state_dir, 36)
    daemon = daemon_factory(state_dir)
    daemon.wait_available("probe", 1)
    daemon.wait_for(lambda: len(cron_log(daemon)) >= 1, "the catch-up firing in the container")
    missed = now_kolkata.replace(hour=0, minute=0, second=0, microsecond=0)
    expected_id = fire_id("openfaas-fn", "probe", "@daily", missed)
    assert cron_log(daemon) == [[expected_id, "cron-function", "@daily", missed.isoformat()]]
    assert "cron catch-up probe.openfaas-fn" in daemon.log()

    # Again, with the mark moved back as before (the worst case: a crash right after the
    # claim): the claim in the store refuses the same firing.
    assert daemon.stop() == 0
    rewind_mark(state_dir, 36)
    daemon = daemon_factory(state_dir)
    daemon.wait_for(lambda: duplicates_refused(daemon) == 1, "the duplicate to be refused")
    daemon.wait_available("probe", 1)
    assert len(cron_log(daemon)) == 1
    assert "reason=already-fired" in daemon.log()
