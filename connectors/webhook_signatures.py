"""Webhook signature schemes, as pure functions of (headers, raw body, keys, now).

Each `verify_*` returns the delivery's id (what retries of the same delivery share, used to
de-duplicate them) or raises `Rejected` with a reason that is safe to show the sender: it never
contains a key or the signature we expected.

- github: ``X-Hub-Signature-256: sha256=<hex>`` over the body; id ``X-GitHub-Delivery``.
- stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`` over ``t.body``, the whole
  ``whsec_...`` string being the key; 300 s tolerance; id the event's JSON ``id`` (else the
  signature).
- standard (Standard Webhooks / Svix): ``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature: v1,<base64> [v1,<base64> ...]`` over ``id.timestamp.body``, key the
  base64 after ``whsec_``; ±5 min. The legacy ``svix-*`` header names are accepted too.
- hmac-sha256: a configurable header holding the HMAC-SHA256 of the body in hex (optionally
  ``sha256=``-prefixed) or base64; id from a configurable header, else the signature.

A secret may hold several keys, one per line: any of them verifies (rotation without downtime).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence

SCHEMES = ("github", "stripe", "standard", "hmac-sha256")
TOLERANCE_S = 300
MAX_ID_LEN = 256
DEFAULT_HMAC_HEADER = "X-Signature-256"

GITHUB_SIGNATURE = "X-Hub-Signature-256"
GITHUB_DELIVERY = "X-GitHub-Delivery"
STRIPE_SIGNATURE = "Stripe-Signature"

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LEN}}}")  # visible ASCII: safe in a header and a key

# Case-insensitive (a CIMultiDict / aiohttp's request headers).
Headers = Mapping[str, str]


class Rejected(Exception):
    """The request is not an authentic, fresh delivery (→ 401); the message says why."""


class SecretUnusable(Exception):
    """The function's secret cannot be a key for its scheme (→ 500: the operator must fix it)."""


def keys_of(secret: bytes) -> list[bytes]:
    """The keys in a secret's value: one per line, surrounding white space ignored (a file
    written with `echo` ends in a newline)."""
    keys = [line.strip() for line in secret.splitlines()]
    return [key for key in keys if key]


def _mac(key: bytes, *parts: bytes) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()


def _matches(expected: Sequence[bytes], given: Sequence[bytes]) -> bytes | None:
    """The first given signature equal (in constant time) to an expected one."""
    found: bytes | None = None
    for want in expected:
        for sig in given:
            if hmac.compare_digest(want, sig) and found is None:
                found = sig
    return found


def _header(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise Rejected(f"missing {name} header")
    return value.strip()


def _delivery_id(value: str, where: str) -> str:
    if _ID.fullmatch(value) is None:
        raise Rejected(f"malformed {where}: use 1 to {MAX_ID_LEN} visible ASCII characters")
    return value


def _check_time(raw: str, now: float, where: str, tolerance_s: int) -> None:
    try:
        sent = int(raw)
    except ValueError:
        raise Rejected(f"malformed {where}: not a unix timestamp") from None
    age_s = now - sent
    if age_s > tolerance_s:
        raise Rejected(f"stale {where}: {int(age_s)}s old, the tolerance is {tolerance_s}s")
    if -age_s > tolerance_s:
        raise Rejected(f"{where} is {int(-age_s)}s in the future, the tolerance is {tolerance_s}s")


def _hex(value: str, where: str) -> bytes:
    if _HEX64.fullmatch(value) is None:
        raise Rejected(f"malformed {where}: expected 64 hex digits")
    return bytes.fromhex(value)


def verify_github(headers: Headers, body: bytes, keys: Sequence[bytes]) -> str:
    if headers.get(GITHUB_SIGNATURE) is None and headers.get("X-Hub-Signature") is not None:
        raise Rejected(f"only {GITHUB_SIGNATURE} (sha256) is accepted, not X-Hub-Signature (sha1)")
    raw = _header(headers, GITHUB_SIGNATURE)
    algo, sep, digest = raw.partition("=")
    if not sep or algo != "sha256":
        raise Rejected(f"malformed {GITHUB_SIGNATURE}: expected sha256=<hex>")
    given = _hex(digest, GITHUB_SIGNATURE)
    if _matches([_mac(key, body) for key in keys], [given]) is None:
        raise Rejected(f"{GITHUB_SIGNATURE} does not match the body")
    return _delivery_id(_header(headers, GITHUB_DELIVERY), GITHUB_DELIVERY)


def verify_stripe(
    headers: Headers, body: bytes, keys: Sequence[bytes], now: float, tolerance_s: int = TOLERANCE_S
) -> str:
    raw = _header(headers, STRIPE_SIGNATURE)
    timestamp: str | None = None
    given: list[bytes] = []
    for item in raw.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise Rejected(f"malformed {STRIPE_SIGNATURE}: expected t=<unix>,v1=<hex>")
        if name == "t":
            timestamp = value
        elif name == "v1":
            given.append(_hex(value, f"{STRIPE_SIGNATURE} v1"))
        # v0 (test-mode legacy) and unknown schemes are ignored, as Stripe's libraries do.
    if timestamp is None:
        raise Rejected(f"malformed {STRIPE_SIGNATURE}: no timestamp (t=)")
    if not given:
        raise Rejected(f"malformed {STRIPE_SIGNATURE}: no v1 signature")
    if not timestamp.isdigit():
        raise Rejected(f"malformed {STRIPE_SIGNATURE}: t is not a unix timestamp")
    expected = [_mac(key, timestamp.encode(), b".", body) for key in keys]
    matched = _matches(expected, given)
    if matched is None:
        raise Rejected(f"no {STRIPE_SIGNATURE} v1 signature matches the body")
    _check_time(timestamp, now, f"{STRIPE_SIGNATURE} timestamp", tolerance_s)
    try:
        event_id = json.loads(body).get("id")
    except (ValueError, AttributeError):
        event_id = None
    if isinstance(event_id, str) and _ID.fullmatch(event_id):
        return event_id
    return "sig-" + matched.hex()


def _standard_key(key: bytes) -> bytes:
    raw = key[len(b"whsec_") :] if key.startswith(b"whsec_") else key
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise SecretUnusable(
            "a Standard Webhooks secret must be whsec_ followed by base64"
        ) from None


def verify_standard(
    headers: Headers, body: bytes, keys: Sequence[bytes], now: float, tolerance_s: int = TOLERANCE_S
) -> str:
    prefix = "webhook-" if headers.get("webhook-signature") is not None else "svix-"
    if headers.get(prefix + "signature") is None:
        raise Rejected("missing webhook-signature header")
    msg_id = _delivery_id(_header(headers, prefix + "id"), prefix + "id")
    timestamp = _header(headers, prefix + "timestamp")
    if not timestamp.isdigit():
        raise Rejected(f"malformed {prefix}timestamp: not a unix timestamp")
    given: list[bytes] = []
    for item in _header(headers, prefix + "signature").split():
        version, sep, sig = item.partition(",")
        if not sep:
            raise Rejected(f"malformed {prefix}signature: expected v1,<base64>")
        if version != "v1":
            continue  # e.g. v1a (asymmetric): not ours to check
        try:
            given.append(base64.b64decode(sig, validate=True))
        except (binascii.Error, ValueError):
            raise Rejected(f"malformed {prefix}signature: a v1 signature is not base64") from None
    if not given:
        raise Rejected(f"malformed {prefix}signature: no v1 signature")
    signed = f"{msg_id}.{timestamp}.".encode()
    expected = [_mac(_standard_key(key), signed, body) for key in keys]
    if _matches(expected, given) is None:
        raise Rejected(f"no {prefix}signature matches the body")
    _check_time(timestamp, now, f"{prefix}timestamp", tolerance_s)
    return msg_id


def _digest_of(value: str, where: str) -> bytes:
    if value[:7].lower() == "sha256=":
        value = value[7:]
    if _HEX64.fullmatch(value):
        return bytes.fromhex(value)
    try:
        altchars = b"-_" if "-" in value or "_" in value else None
        digest = base64.b64decode(value, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise Rejected(f"malformed {where}: expected the SHA-256 HMAC in hex or base64")
    return digest


def verify_hmac(
    headers: Headers,
    body: bytes,
    keys: Sequence[bytes],
    header: str = DEFAULT_HMAC_HEADER,
    id_header: str | None = None,
) -> str:
    given = _digest_of(_header(headers, header), header)
    if _matches([_mac(key, body) for key in keys], [given]) is None:
        raise Rejected(f"{header} does not match the body")
    if id_header is not None:
        return _delivery_id(_header(headers, id_header), id_header)
    # No id header: the signature identifies the payload, so an identical signed body is
    # treated as a retry of the same delivery.
    return "sig-" + given.hex()


def verify(
    scheme: str,
    headers: Headers,
    body: bytes,
    secret: bytes,
    now: float,
    *,
    header: str | None = None,
    id_header: str | None = None,
) -> str:
    """Check a delivery under ``scheme``; its delivery id, or Rejected / SecretUnusable."""
    keys = keys_of(secret)
    if not keys:
        raise SecretUnusable("the secret is empty")
    if scheme == "github":
        return verify_github(headers, body, keys)
    if scheme == "stripe":
        return verify_stripe(headers, body, keys, now)
    if scheme == "standard":
        return verify_standard(headers, body, keys, now)
    if scheme == "hmac-sha256":
        return verify_hmac(headers, body, keys, header or DEFAULT_HMAC_HEADER, id_header)
    raise ValueError(f"unknown webhook scheme {scheme!r}")
