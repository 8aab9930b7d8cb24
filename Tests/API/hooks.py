"""Schemathesis hooks for the gateway's API tests (scripts/api-test.sh).

- The admin endpoints get `Authorization: Bearer $ADMIN_TOKEN` through schemathesis' auth
  mechanism, so its `ignored_auth` check can still send requests without it and expect 401.
- The payment webhook is signed like the provider signs it: HMAC-SHA256 with
  $WEBHOOK_SECRET over `<t>.<raw body>`; the hook serializes the body itself so the signature
  covers exactly the bytes sent. A case whose signature header schemathesis left out on purpose
  (to check that it is required) stays unsigned.
- An Idempotency-Key gets a fresh value per call: schemathesis reuses generated values with
  different bodies, which the API answers 422 by design (tested in Tests/GatewayTests).
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


@schemathesis.hook
def before_call(ctx, case, kwargs):
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
