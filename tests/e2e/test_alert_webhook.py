"""Alert notifications over real HTTP (SPEC 15): a signed webhook receiver on 127.0.0.1 that fails three
times before it accepts, and a Slack-style receiver. Each notification arrives with one
``X-Voicemon-Delivery`` id on every attempt, so the receiver keeps it once; the alert records it delivered
after four attempts."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from tests.conftest import NOW_MS, STAFF
from tests.helpers import ev
from voicemon.clock import FakeClock
from voicemon.domain.timeutil import MINUTE_MS
from voicemon.service import Services
from voicemon.service.transports import DELIVERY_HEADER, SIGNATURE_HEADER
from voicemon.settings import Settings

SECRET = "alert-hook-secret"


class Hook:
    """Answers 500 to the first ``fail_first`` requests, then 200; keeps each delivery id's body once."""

    def __init__(self, fail_first: int, secret: str | None) -> None:
        self.fail_first = fail_first
        self.secret = secret.encode() if secret else None
        self.attempts: list[str] = []
        self.kept: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = hook.answer(
                    body, self.headers.get(DELIVERY_HEADER, ""), self.headers.get(SIGNATURE_HEADER)
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def answer(self, body: bytes, delivery: str, signature: str | None) -> int:
        with self._lock:
            if self.secret is not None:
                expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
                if signature is None or not hmac.compare_digest(signature, expected):
                    self.bad_signatures += 1
                    return 401
            self.attempts.append(delivery)
            if len(self.attempts) <= self.fail_first:
                return 500
            self.kept.setdefault(delivery, orjson.loads(body))
            return 200

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def hooks() -> Iterator[tuple[Hook, Hook]]:
    webhook, slack = Hook(fail_first=3, secret=SECRET), Hook(fail_first=0, secret=None)
    yield webhook, slack
    webhook.stop()
    slack.stop()


def test_a_fired_alert_reaches_a_flaky_signed_webhook_once_and_slack(
    settings: Settings, hooks: tuple[Hook, Hook]
) -> None:
    webhook, slack = hooks
    clock = FakeClock(NOW_MS)
    configured = settings.model_copy(
        update={
            "alert_webhook_url": webhook.url,
            "alert_webhook_secret": SecretStr(SECRET),
            "alert_slack_url": slack.url,
            "retry_delivery_max_attempts": 5,
        }
    )
    svc = Services(configured, clock)
    svc.start()
    try:
        batch = []
        for i in range(20):
            batch += [
                ev("artifact_received", f"hook-{i}", NOW_MS - 2 * MINUTE_MS, organization_id="org-hook"),
                ev("artifact_failed", f"hook-{i}", NOW_MS - MINUTE_MS, organization_id="org-hook"),
            ]
        svc.ingest_blocking(batch, STAFF)
        svc.orgs.put(STAFF, "org-hook", "Hook FC")
        svc.alerts.evaluate(STAFF)
        for _ in range(8):  # backoff waits pass on the test clock
            svc.dispatcher.flush()
            clock.advance(10 * MINUTE_MS)
        [alert] = [a for a, _ in svc.alerts.list_alerts(STAFF, organization_id="org-hook").items]
        detail = svc.alerts.get(STAFF, alert.alert_id)
    finally:
        svc.stop()

    assert webhook.bad_signatures == 0
    # Two alerts fired (org-hook and the platform): the first three attempts failed, each id kept once.
    assert len(webhook.kept) == 2
    assert len(webhook.attempts) == 3 + 2
    [mine] = [b for b in webhook.kept.values() if b["alert"].get("organization_id") == "org-hook"]
    assert mine["type"] == "alert.fired"
    assert (mine["alert"]["alert_id"], mine["alert"]["organization_name"]) == (alert.alert_id, "Hook FC")
    texts = sorted(b["text"] for b in slack.kept.values())
    assert len(texts) == 2
    assert any("Hook FC" in t and t.startswith("[FIRING] [critical] failure_rate") for t in texts), texts
    told = sorted((d["channel"], d["status"]) for d in detail.deliveries)
    assert told == [("alert_slack", "delivered"), ("alert_webhook", "delivered")]
    [hooked] = [d for d in detail.deliveries if d["channel"] == "alert_webhook"]
    assert hooked["attempts"] >= 2
