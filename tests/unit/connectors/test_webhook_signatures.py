"""Signature schemes: table tests with vectors computed here (and the Standard Webhooks
reference vector), accepted and refused, never leaking the key or the expected signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from multidict import CIMultiDict

from connectors.webhook_signatures import Rejected, SecretUnusable, keys_of, verify

NOW = 1_700_000_000
BODY = b'{"action":"opened","number":1}'
KEY = b"It's a Secret to Everybody"
OTHER = b"not the key"
EVENT = json.dumps({"id": "evt_1", "type": "charge.succeeded"}).encode()
STD_RAW = b"0123456789abcdef0123456789abcdef"
STD_SECRET = b"whsec_" + base64.b64encode(STD_RAW)
STD_OTHER = b"whsec_" + base64.b64encode(b"x" * 32)


def hexmac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def b64mac(key: bytes, data: bytes) -> str:
    return base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode()


def github(body: bytes = BODY, key: bytes = KEY, delivery: str | None = "d-1") -> CIMultiDict[str]:
    h = CIMultiDict({"X-Hub-Signature-256": "sha256=" + hexmac(key, body)})
    if delivery is not None:
        h["X-GitHub-Delivery"] = delivery
    return h


def stripe(body: bytes = BODY, key: bytes = KEY, t: int = NOW, extra: str = "") -> CIMultiDict[str]:
    sig = hexmac(key, f"{t}.".encode() + body)
    return CIMultiDict({"Stripe-Signature": f"t={t},v1={sig}{extra}"})


def standard(
    body: bytes = BODY,
    raw_keys: tuple[bytes, ...] = (STD_RAW,),
    t: int = NOW,
    msg_id: str = "msg_1",
    prefix: str = "webhook-",
) -> CIMultiDict[str]:
    signed = f"{msg_id}.{t}.".encode() + body
    sigs = " ".join("v1," + b64mac(k, signed) for k in raw_keys)
    return CIMultiDict(
        {prefix + "id": msg_id, prefix + "timestamp": str(t), prefix + "signature": sigs}
    )


def run(scheme: str, headers: CIMultiDict[str], body: bytes, secret: bytes, **kw: str) -> str:
    return verify(scheme, headers, body, secret, NOW, **kw)  # type: ignore[arg-type]


ACCEPTED = [
    ("github", github(), BODY, KEY, {}, "d-1"),
    ("github rotated: old and new key", github(), BODY, OTHER + b"\n" + KEY + b"\n", {}, "d-1"),
    ("github secret file ends in newline", github(), BODY, KEY + b"\r\n", {}, "d-1"),
    ("stripe", stripe(EVENT), EVENT, KEY, {}, "evt_1"),
    ("stripe tolerance edge old", stripe(t=NOW - 300), BODY, KEY, {}, None),
    ("stripe tolerance edge future", stripe(t=NOW + 300), BODY, KEY, {}, None),
    ("stripe several v1", stripe(extra=",v1=" + "0" * 64), BODY, KEY, {}, None),
    ("stripe v0 ignored", stripe(extra=",v0=abc"), BODY, KEY, {}, None),
    ("standard", standard(), BODY, STD_SECRET, {}, "msg_1"),
    (
        "standard several signatures (sender rotating)",
        standard(raw_keys=(b"y" * 32, STD_RAW)),
        BODY,
        STD_SECRET,
        {},
        "msg_1",
    ),
    ("standard rotated on our side", standard(), BODY, STD_OTHER + b"\n" + STD_SECRET, {}, "msg_1"),
    ("standard svix- headers", standard(prefix="svix-"), BODY, STD_SECRET, {}, "msg_1"),
    ("hmac hex", CIMultiDict({"X-Signature-256": hexmac(KEY, BODY)}), BODY, KEY, {}, None),
    (
        "hmac sha256= prefix",
        CIMultiDict({"X-Signature-256": "sha256=" + hexmac(KEY, BODY)}),
        BODY,
        KEY,
        {},
        None,
    ),
    (
        "hmac base64 custom header, id header",
        CIMultiDict({"X-Shopify-Hmac-Sha256": b64mac(KEY, BODY), "X-Id": "42"}),
        BODY,
        KEY,
        {"header": "X-Shopify-Hmac-Sha256", "id_header": "X-Id"},
        "42",
    ),
]


@pytest.mark.parametrize(
    ("scheme", "headers", "body", "secret", "kw", "delivery"),
    [(case[0].split()[0], *case[1:]) for case in ACCEPTED],
    ids=[case[0] for case in ACCEPTED],
)
def test_accepted(
    scheme: str,
    headers: CIMultiDict[str],
    body: bytes,
    secret: bytes,
    kw: dict[str, str],
    delivery: str | None,
) -> None:
    scheme = {"hmac": "hmac-sha256"}.get(scheme, scheme)
    got = run(scheme, headers, body, secret, **kw)
    if delivery is not None:
        assert got == delivery
    else:
        assert got


def test_standard_webhooks_reference_vector() -> None:
    """The vector published with the Standard Webhooks / Svix libraries."""
    headers = CIMultiDict(
        {
            "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "webhook-timestamp": "1614265330",
            "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        }
    )
    got = verify(
        "standard",
        headers,
        b'{"test": 2432232314}',
        b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        1614265330,
    )
    assert got == "msg_p5jXN8AQM9LWM0D4loKWxJek"


def test_stripe_delivery_id_is_the_event_id_else_the_signature() -> None:
    event = json.dumps({"id": "evt_123", "type": "charge.succeeded"}).encode()
    assert run("stripe", stripe(event), event, KEY) == "evt_123"
    # A retry is re-signed with a new timestamp but carries the same event id.
    assert run("stripe", stripe(event, t=NOW - 60), event, KEY) == "evt_123"
    assert run("stripe", stripe(b"[1]"), b"[1]", KEY) == "sig-" + hexmac(KEY, f"{NOW}.[1]".encode())


def test_hmac_without_id_header_identifies_the_payload() -> None:
    headers = CIMultiDict({"X-Signature-256": hexmac(KEY, BODY)})
    assert run("hmac-sha256", headers, BODY, KEY) == "sig-" + hexmac(KEY, BODY)


TAMPERED = BODY.replace(b"1", b"2")

REFUSED = [
    # (id, scheme, headers, body, secret, kw, words in the reason)
    ("github tampered body", "github", github(), TAMPERED, KEY, {}, "does not match"),
    ("github wrong secret", "github", github(), BODY, OTHER, {}, "does not match"),
    (
        "github missing signature",
        "github",
        CIMultiDict({"X-GitHub-Delivery": "d"}),
        BODY,
        KEY,
        {},
        "missing X-Hub-Signature-256",
    ),
    (
        "github sha1 only",
        "github",
        CIMultiDict({"X-Hub-Signature": "sha1=ab"}),
        BODY,
        KEY,
        {},
        "sha1",
    ),
    (
        "github no sha256= prefix",
        "github",
        CIMultiDict({"X-Hub-Signature-256": hexmac(KEY, BODY)}),
        BODY,
        KEY,
        {},
        "malformed",
    ),
    (
        "github short hex",
        "github",
        CIMultiDict({"X-Hub-Signature-256": "sha256=abcd"}),
        BODY,
        KEY,
        {},
        "64 hex",
    ),
    (
        "github missing delivery",
        "github",
        github(delivery=None),
        BODY,
        KEY,
        {},
        "missing X-GitHub-Delivery",
    ),
    ("github bad delivery id", "github", github(delivery="a b"), BODY, KEY, {}, "malformed"),
    ("stripe tampered", "stripe", stripe(), TAMPERED, KEY, {}, "no Stripe-Signature v1"),
    ("stripe wrong secret", "stripe", stripe(key=OTHER), BODY, KEY, {}, "no Stripe-Signature"),
    ("stripe too old", "stripe", stripe(t=NOW - 301), BODY, KEY, {}, "stale"),
    ("stripe too far in the future", "stripe", stripe(t=NOW + 301), BODY, KEY, {}, "future"),
    ("stripe missing", "stripe", CIMultiDict(), BODY, KEY, {}, "missing Stripe-Signature"),
    (
        "stripe no t",
        "stripe",
        CIMultiDict({"Stripe-Signature": "v1=" + "a" * 64}),
        BODY,
        KEY,
        {},
        "no timestamp",
    ),
    (
        "stripe no v1",
        "stripe",
        CIMultiDict({"Stripe-Signature": f"t={NOW}"}),
        BODY,
        KEY,
        {},
        "no v1",
    ),
    (
        "stripe garbage",
        "stripe",
        CIMultiDict({"Stripe-Signature": "garbage"}),
        BODY,
        KEY,
        {},
        "malformed",
    ),
    (
        "stripe t not a number",
        "stripe",
        CIMultiDict({"Stripe-Signature": "t=soon,v1=" + "a" * 64}),
        BODY,
        KEY,
        {},
        "timestamp",
    ),
    ("standard tampered", "standard", standard(), TAMPERED, STD_SECRET, {}, "no webhook-sig"),
    ("standard wrong secret", "standard", standard(), BODY, STD_OTHER, {}, "no webhook-sig"),
    (
        "standard id changed",
        "standard",
        CIMultiDict({**standard(), "webhook-id": "msg_2"}),
        BODY,
        STD_SECRET,
        {},
        "no webhook-sig",
    ),
    ("standard too old", "standard", standard(t=NOW - 301), BODY, STD_SECRET, {}, "stale"),
    (
        "standard too far in the future",
        "standard",
        standard(t=NOW + 301),
        BODY,
        STD_SECRET,
        {},
        "future",
    ),
    (
        "standard missing signature",
        "standard",
        CIMultiDict({"webhook-id": "m", "webhook-timestamp": str(NOW)}),
        BODY,
        STD_SECRET,
        {},
        "missing webhook-signature",
    ),
    (
        "standard missing id",
        "standard",
        CIMultiDict({"webhook-timestamp": str(NOW), "webhook-signature": "v1,AAAA"}),
        BODY,
        STD_SECRET,
        {},
        "missing webhook-id",
    ),
    (
        "standard bad timestamp",
        "standard",
        CIMultiDict({**standard(), "webhook-timestamp": "12:00"}),
        BODY,
        STD_SECRET,
        {},
        "timestamp",
    ),
    (
        "standard no comma",
        "standard",
        CIMultiDict({**standard(), "webhook-signature": "v1"}),
        BODY,
        STD_SECRET,
        {},
        "malformed",
    ),
    (
        "standard not base64",
        "standard",
        CIMultiDict({**standard(), "webhook-signature": "v1,@@@"}),
        BODY,
        STD_SECRET,
        {},
        "base64",
    ),
    (
        "standard only v1a",
        "standard",
        CIMultiDict({**standard(), "webhook-signature": "v1a,AAAA"}),
        BODY,
        STD_SECRET,
        {},
        "no v1",
    ),
    (
        "hmac tampered",
        "hmac-sha256",
        CIMultiDict({"X-Signature-256": hexmac(KEY, BODY)}),
        TAMPERED,
        KEY,
        {},
        "does not match",
    ),
    (
        "hmac wrong secret",
        "hmac-sha256",
        CIMultiDict({"X-Signature-256": hexmac(OTHER, BODY)}),
        BODY,
        KEY,
        {},
        "does not match",
    ),
    ("hmac missing header", "hmac-sha256", CIMultiDict(), BODY, KEY, {}, "missing X-Signature-256"),
    (
        "hmac default header ignored when configured",
        "hmac-sha256",
        CIMultiDict({"X-Signature-256": hexmac(KEY, BODY)}),
        BODY,
        KEY,
        {"header": "X-Sig"},
        "missing X-Sig",
    ),
    (
        "hmac garbage",
        "hmac-sha256",
        CIMultiDict({"X-Signature-256": "zzz"}),
        BODY,
        KEY,
        {},
        "malformed",
    ),
    (
        "hmac missing id header",
        "hmac-sha256",
        CIMultiDict({"X-Signature-256": hexmac(KEY, BODY)}),
        BODY,
        KEY,
        {"id_header": "X-Id"},
        "missing X-Id",
    ),
]


@pytest.mark.parametrize(
    ("scheme", "headers", "body", "secret", "kw", "words"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused(
    scheme: str,
    headers: CIMultiDict[str],
    body: bytes,
    secret: bytes,
    kw: dict[str, str],
    words: str,
) -> None:
    with pytest.raises(Rejected) as caught:
        run(scheme, headers, body, secret, **kw)
    reason = str(caught.value)
    assert words in reason
    # Never the key, nor the signature we expected.
    for key in keys_of(secret):
        assert key.decode() not in reason
    for expected in (hexmac(k, body) for k in keys_of(secret)):
        assert expected not in reason


@pytest.mark.parametrize(
    ("scheme", "secret"),
    [("github", b""), ("github", b"\n \n"), ("standard", b"whsec_!!not-base64!!")],
)
def test_unusable_secret(scheme: str, secret: bytes) -> None:
    headers = standard() if scheme == "standard" else github()
    with pytest.raises(SecretUnusable):
        run(scheme, headers, BODY, secret)


def test_keys_of() -> None:
    assert keys_of(b"a\n\n b \r\nc") == [b"a", b"b", b"c"]
    assert keys_of(b"") == []
