from typing import Any


def handle(event: Any, context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": "Hello from localfaas!"}
