"""A tiny orders API behind a friendly path (`com.localfaas.http.route: /api/orders`).

The gateway strips the route's prefix: this handler sees `/` and `/42`, and learns where it
is mounted from `X-Forwarded-Prefix` (for links such as `Location`). Orders live in memory:
one replica, lost on restart; it is an example of routing, not of storage.
"""

import json

ORDERS = {}


def handle(event, context):
    prefix = event.headers.get("X-Forwarded-Prefix") or ""
    path = event.path.rstrip("/") or "/"
    if path == "/":
        if event.method == "POST":
            order_id = str(len(ORDERS) + 1)
            ORDERS[order_id] = json.loads(event.body or b"{}")
            return {
                "statusCode": 201,
                "body": {"id": order_id, **ORDERS[order_id]},
                "headers": {"Location": f"{prefix}/{order_id}"},
            }
        if event.method == "GET":
            return {"statusCode": 200, "body": [{"id": k, **v} for k, v in ORDERS.items()]}
    elif path.count("/") == 1 and event.method == "GET":
        order_id = path[1:]
        if order_id in ORDERS:
            return {"statusCode": 200, "body": {"id": order_id, **ORDERS[order_id]}}
        return {"statusCode": 404, "body": {"error": f"no order {order_id}"}}
    return {"statusCode": 405 if path == "/" else 404, "body": {"error": "not here"}}
