from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from runtime.gateway.openapi import _merge, openapi_document


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_our_extensions_are_documented_and_every_ref_resolves() -> None:
    spec = json.loads(openapi_document())
    paths = spec["paths"]
    assert set(paths["/system/async/calls/{callId}"]) >= {"get", "delete"}
    assert "get" in paths["/system/async/dead-letters"]
    assert "post" in paths["/system/async/dead-letters/{callId}/replay"]
    assert "get" in paths["/system/async/queues"]
    assert set(paths["/system/namespace/{name}"]) == {"post", "delete"}
    for path in ("/async-function/{functionName}", "/async-function/{functionName}.{namespace}"):
        post = paths[path]["post"]
        assert {"202", "400", "404", "413", "503"} <= set(post["responses"])
        assert post["operationId"].startswith("InvokeAsync")  # OpenFaaS's own fields kept
        names = [p["name"] for p in post["parameters"]]
        assert "X-Callback-Url" in names and "X-Call-Id" in names
    schemas = spec["components"]["schemas"]
    for ref in _refs(spec):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def test_merge_adds_keys_extends_lists_and_overrides_scalars() -> None:
    base = {"a": {"x": 1, "l": [1, 2]}, "s": "old"}
    _merge(base, {"a": {"y": 2, "l": [2, 3]}, "s": "new", "n": {}})
    assert base == {"a": {"x": 1, "y": 2, "l": [1, 2, 3]}, "s": "new", "n": {}}
