"""The HTTP gateway: OpenFaaS REST API (`/system/*`), function proxy, health and metrics."""
