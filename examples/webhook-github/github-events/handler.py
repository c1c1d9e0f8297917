"""Receives GitHub webhooks through localfaas' webhook connector (POST /webhook/github-events).

localfaas has already checked X-Hub-Signature-256 against the secret and dropped replays of a
delivery id, so the handler only deals with the event. It is a plain OpenFaaS python3-http
handler: X-GitHub-Event, X-GitHub-Delivery and the rest of GitHub's headers arrive unchanged,
plus X-Webhook-Id (the delivery id) and X-Connector: webhook.
"""

import json


def handle(event, context):
    kind = event.headers.get("X-GitHub-Event", "unknown")
    delivery = event.headers.get("X-Webhook-Id", "")
    try:
        payload = json.loads(event.body or b"{}")
    except ValueError:
        return {"statusCode": 400, "body": {"error": "the payload is not JSON"}}
    repo = (payload.get("repository") or {}).get("full_name")
    summary = {"event": kind, "delivery": delivery, "repository": repo}
    if kind == "ping":
        summary["zen"] = payload.get("zen")
    elif kind == "push":
        summary["ref"] = payload.get("ref")
        summary["commits"] = len(payload.get("commits") or [])
    print(f"github {kind} delivery={delivery} repository={repo}", flush=True)
    return {"statusCode": 200, "body": summary}
