"""The simulated pipeline's retry webhook: verifies the signature, then hands the command over; answers
500 when the command could not be honoured, so that it is delivered again."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from voicemon.sim.pipeline import RetryOrder

logger = logging.getLogger(__name__)


class RetryWebhook:
    """An HTTP endpoint on 127.0.0.1 that accepts POSTed retry commands."""

    def __init__(
        self,
        secret: str | None,
        on_retry: Callable[[RetryOrder], None],
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not webhook.verify(body, self.headers.get("X-Voicemon-Signature")):
                    self.send_response(401)
                    self.end_headers()
                    return
                try:
                    order = RetryOrder.from_json(json.loads(body))
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                    self.end_headers()
                    return
                try:
                    on_retry(order)
                except Exception:
                    # Not honoured: a 5xx makes the sender deliver the command again later.
                    logger.exception("retry command not honoured", extra={"action": "sim_retry_refused"})
                    self.send_response(500)
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self._secret = secret
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="voicemon-sim-webhook", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/retries"

    def verify(self, body: bytes, header: str | None) -> bool:
        if not self._secret:
            return True
        expected = "sha256=" + hmac.new(self._secret.encode(), body, hashlib.sha256).hexdigest()
        return header is not None and hmac.compare_digest(header, expected)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
