"""Schemathesis hooks for the gateway's API tests (scripts/api-test.sh).

- The admin endpoints get `Authorization: Bearer $ADMIN_TOKEN` through schemathesis' auth
  mechanism, so its `ignored_auth` check can still send requests without it and expect 401.
- The payment webhook is signed like the provider signs it: HMAC-SHA256 with
  $WEBHOOK_SECRET over `<t>.<raw body>`; the hook serializes the body itself so the signature
  covers exactly the bytes sent. A case whose signature header schemathesis left out on purpose
  (to check that it is required) stays unsigned.
- An Idempotency-Key gets a fresh value per call: schemathesis reuses generated values with
  different bodies, which the API answers 422 by design (tested in Tests/GatewayTests).
- A sale window's `closesAt` must come after its `opensAt`, also after one already stored: a
  rule across fields and across requests that no schema states. The hook orders two generated
  times in one body, and a PATCH that sets one time sets the other to null, so a schema-valid
  window is a valid one (bad windows are tested in Tests/GatewayTests/SaleWindowTests.swift).
"""
import hashlib
import hmac
import json
import os
import time
import uuid

import schemathesis

ADMIN_TOKEN = os.environ["ADMIN_TOKEN"]
WEBHOOK_SECRET = os.environ["WEBHOOK_SECRET"].encode()


@schemathesis.auth()
class AdminToken:
    def get(self, case, ctx):
        return ADMIN_TOKEN

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def _header(case, name):
    for key in (case.headers or {}):
        if key.lower() == name.lower():
            return key
    return None


def _millis(text):
    """An RFC 3339 time's Unix milliseconds as the gateway reads it (the pattern was matched)."""
    from datetime import datetime
    value = text.replace("z", "Z").replace("t", "T").replace("Z", "+00:00")
    head, _, rest = value.partition(".")
    if rest:
        digits = "".join(c for c in rest if c.isdigit())
        value = head + rest[len(digits):]
        fraction = int((digits + "000")[:3])
    else:
        fraction = 0
    try:
        return int(datetime.fromisoformat(value).timestamp()) * 1000 + fraction
    except ValueError:
        return 0


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if case.operation.path == "/v1/baskets/{basketId}" and isinstance(case.body, dict):
        opens, closes = case.body.get("opensAt"), case.body.get("closesAt")
        if isinstance(opens, str) and isinstance(closes, str) and _millis(closes) <= _millis(opens):
            case.body["opensAt"], case.body["closesAt"] = ("1971-01-01T00:00:00Z", "9998-01-01T00:00:00Z")
        if case.method.upper() == "PATCH":
            if isinstance(opens, str) and "closesAt" not in case.body:
                case.body["closesAt"] = None
            if isinstance(closes, str) and "opensAt" not in case.body:
                case.body["opensAt"] = None
    key = _header(case, "Idempotency-Key")
    if key is not None:
        case.headers[key] = "st-" + uuid.uuid4().hex
    if case.operation.path != "/v1/webhooks/payments":
        return
    signature = _header(case, "Webhook-Signature")
    if signature is None or not isinstance(case.body, (dict, list, str, int, float, bool)):
        return
    raw = json.dumps(case.body, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    mac = hmac.new(WEBHOOK_SECRET, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    case.headers[signature] = f"t={timestamp},v1={mac}"
    kwargs["data"] = raw
