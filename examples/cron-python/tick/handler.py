"""An OpenFaaS python3-http handler run by the cron connector: prints one line per firing
(see it with `localfaas logs tick`)."""

from datetime import datetime, timezone


def handle(event, context):
    fire_time = event.headers.get("X-Fire-Time", "?")
    schedule = event.headers.get("X-Schedule", "?")
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    print(f"tick fired for {fire_time} (schedule {schedule!r}), started {started}", flush=True)
    return {"statusCode": 200, "body": {"fireTime": fire_time, "schedule": schedule}}
