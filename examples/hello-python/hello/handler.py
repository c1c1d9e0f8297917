"""An OpenFaaS python3-http handler: runs unchanged on OpenFaaS and on localfaas."""


def handle(event, context):
    name = event.body.decode().strip() or event.query.get("name") or "world"
    return {
        "statusCode": 200,
        "body": {"message": f"Hello, {name}!", "path": event.path, "host": context.hostname},
        "headers": {"X-Example": "hello"},
    }
