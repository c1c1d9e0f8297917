"""A small synchronous client of the gateway API for the CLI (stdlib only: fast start-up)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from runtime.errors import LocalFaasError


class GatewayError(LocalFaasError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _error_message(body: bytes) -> str:
    """The message of an error body: plain text as is, or a JSON object's "message"."""
    text = body.decode(errors="replace").strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            return str(parsed["message"]).strip()
    return text


def _segment(value: str) -> str:
    """One path segment, quoted, so a value with '/' or '?' cannot reach another route."""
    return urllib.parse.quote(value, safe="")


class GatewayClient:
    def __init__(
        self, url: str, user: str | None, password: str | None, timeout_s: float = 60.0
    ) -> None:
        self.url = url.rstrip("/")
        self.user, self.password = user, password
        self._timeout_s = timeout_s
        self._auth = None
        if user and password:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._auth = f"Basic {token}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        if self._auth and path.startswith("/system/"):
            request.add_header("Authorization", self._auth)
        try:
            response = _opener.open(request, timeout=self._timeout_s)
        except urllib.error.HTTPError as exc:
            if stream or exc.code >= 400:
                message = _error_message(exc.read()) or exc.reason
                if exc.code < 400:
                    return Reply(exc.code, dict(exc.headers), message.encode())
                raise GatewayError(exc.code, f"{exc.code} {message}") from None
            raise
        except urllib.error.URLError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.url}: {exc.reason}") from None
        if stream:
            return response
        with response:
            return Reply(response.status, dict(response.headers), response.read())

    def _json(self, method: str, path: str, payload: Any) -> Reply:
        reply: Reply = self._request(
            method,
            path,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        return reply

    # -- management ------------------------------------------------------------------------

    def list_functions(self, namespace: str | None = None) -> list[dict[str, Any]]:
        query = {"namespace": namespace} if namespace else None
        result: list[dict[str, Any]] = self._request("GET", "/system/functions", query=query).json()
        return result

    def get_function(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        query = {"namespace": namespace} if namespace else None
        result: dict[str, Any] = self._request(
            "GET", f"/system/function/{name}", query=query
        ).json()
        return result

    def connector_bindings(
        self, name: str | None = None, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Triggers from `GET /system/connectors` (cron, NATS subjects, webhooks, routes)."""
        query = {k: v for k, v in (("name", name), ("namespace", namespace)) if v}
        result: list[dict[str, Any]] = self._request(
            "GET", "/system/connectors", query=query or None
        ).json()["bindings"]
        return result

    def deploy(self, deployment: dict[str, Any]) -> str:
        """PUT, then POST when the function does not exist yet (as faas-cli does)."""
        try:
            self._json("PUT", "/system/functions", deployment)
            return "updated"
        except GatewayError as exc:
            if exc.status != 404:
                raise
        self._json("POST", "/system/functions", deployment)
        return "deployed"

    def delete(self, name: str, namespace: str | None = None) -> None:
        payload = {"functionName": name}
        if namespace:
            payload["namespace"] = namespace
        self._json("DELETE", "/system/functions", payload)

    def scale(self, name: str, replicas: int, namespace: str | None = None) -> None:
        payload: dict[str, Any] = {"serviceName": name, "replicas": replicas}
        if namespace:
            payload["namespace"] = namespace
        self._json("POST", f"/system/scale-function/{name}", payload)

    def list_secrets(self, namespace: str | None = None) -> list[dict[str, Any]]:
        query = {"namespace": namespace} if namespace else None
        result: list[dict[str, Any]] = self._request("GET", "/system/secrets", query=query).json()
        return result

    def put_secret(
        self, name: str, value: bytes, namespace: str | None = None, *, update: bool
    ) -> None:
        payload: dict[str, Any] = {"name": name, "rawValue": base64.b64encode(value).decode()}
        if namespace:
            payload["namespace"] = namespace
        self._json("PUT" if update else "POST", "/system/secrets", payload)

    def delete_secret(self, name: str, namespace: str | None = None) -> None:
        payload = {"name": name}
        if namespace:
            payload["namespace"] = namespace
        self._json("DELETE", "/system/secrets", payload)

    def list_namespaces(self) -> list[str]:
        result: list[str] = self._request("GET", "/system/namespaces").json()
        return result

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/system/info").json()
        return result

    def logs(
        self, name: str, namespace: str | None, *, follow: bool, tail: int | None, since: str | None
    ) -> Iterator[dict[str, Any]]:
        query = {"name": name, "follow": "true" if follow else "false"}
        if namespace:
            query["namespace"] = namespace
        if tail is not None:
            query["tail"] = str(tail)
        if since:
            query["since"] = since
        response = self._request("GET", "/system/logs", query=query, stream=True)
        with response:
            for line in response:
                if line.strip():
                    yield json.loads(line)

    # -- async calls -----------------------------------------------------------------------

    def call_status(self, call_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "GET", f"/system/async/calls/{_segment(call_id)}"
        ).json()
        return result

    def cancel_call(self, call_id: str) -> dict[str, Any]:
        """Cancel a queued call; 409 (GatewayError) when it is already running or finished."""
        result: dict[str, Any] = self._request(
            "DELETE", f"/system/async/calls/{_segment(call_id)}"
        ).json()
        return result

    def list_dead_letters(
        self,
        namespace: str | None = None,
        name: str | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        query: dict[str, str] = {}
        if namespace:
            query["namespace"] = namespace
        if name:
            query["name"] = name
        if after is not None:
            query["after"] = str(after)
        if limit is not None:
            query["limit"] = str(limit)
        result: list[dict[str, Any]] = self._request(
            "GET", "/system/async/dead-letters", query=query
        ).json()
        return result

    def replay_dead_letter(self, call_id: str) -> dict[str, Any]:
        """Queue a dead-lettered call again (202); returns its status (state "queued")."""
        result: dict[str, Any] = self._request(
            "POST", f"/system/async/dead-letters/{_segment(call_id)}/replay"
        ).json()
        return result

    def list_queues(self, namespace: str | None = None) -> list[dict[str, Any]]:
        query = {"namespace": namespace} if namespace else None
        result: list[dict[str, Any]] = self._request(
            "GET", "/system/async/queues", query=query
        ).json()
        return result

    # -- invocation ------------------------------------------------------------------------

    def invoke(
        self,
        name: str,
        body: bytes,
        *,
        namespace: str | None = None,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        asynchronous: bool = False,
    ) -> Reply:
        target = f"{name}.{namespace}" if namespace else name
        prefix = "/async-function/" if asynchronous else "/function/"
        reply: Reply = self._request(
            method,
            prefix + target,
            body=body if method not in ("GET", "HEAD") else None,
            headers=headers,
            query=query,
        )
        return reply
