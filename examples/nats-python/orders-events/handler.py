"""An OpenFaaS python3-http handler bound to NATS subjects (see ../stack.yml).

The message data is the body; its headers are request headers, plus X-Topic (the subject it
was published on) and X-Connector: nats. For a request, the returned body goes back to the
requester, with the status in the X-Function-Status header.
"""

import json


def handle(event, context):
    try:
        order = json.loads(event.body or b"{}")
    except ValueError:
        return {"statusCode": 400, "body": "the message is not JSON"}
    region = event.headers.get("X-Topic", "").rsplit(".", 1)[-1]
    print(f"order {order.get('id')} for {region}", flush=True)
    return {"statusCode": 200, "body": {"accepted": order.get("id"), "region": region}}
