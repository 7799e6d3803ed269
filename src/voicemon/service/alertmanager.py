"""A client of Alertmanager's API v2: how voicemon's alert notifications reach an Alertmanager.

Alertmanager has no alert ids: an alert *is* its label set. Posting the same labels again updates the one
alert, so voicemon re-posts a firing alert with ``endsAt`` moving forward to keep it active, and posts it
once more with ``endsAt`` = the resolution time to resolve it (resolved alerts leave ``GET
/api/v2/alerts`` at once). A silence whose matchers equal exactly the alert's labels suppresses that one
alert: "acknowledge until resolved" is such a silence, extended while the alert fires and expired when it
resolves.

What Alertmanager does with silence ids (checked against 0.25):

- Updating an active silence in place keeps its id only while the matchers and the start (to the
  second) are unchanged. Otherwise it expires the old silence and answers with a replacement's id; the
  same happens for an expired id. Alertmanager moves a start in the past to "now", so re-sending a past
  ``starts_at_ms`` replaces an active silence: callers keep the id :meth:`AlertmanagerClient.put_silence`
  returns, never the one they gave.
- An id it does not know (never made, or garbage-collected after its retention) is answered with 404;
  :meth:`~AlertmanagerClient.put_silence` then makes a new silence.
- Deleting an expired silence succeeds; deleting an unknown one is a 404 on newer versions and a 500
  "silence not found" on 0.25. :meth:`~AlertmanagerClient.expire_silence` takes both as done.

Times are epoch milliseconds (UTC) here and RFC 3339 on the wire. Every failure raises
:class:`DeliveryError`, so the outbox tries again later.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from voicemon.domain.timeutil import format_time
from voicemon.errors import DeliveryError

logger = logging.getLogger(__name__)

DEFAULT_SILENCE_COMMENT = "acknowledged in voicemon"
DEFAULT_SILENCE_CREATOR = "voicemon"


def alert_payload(
    labels: dict[str, str],
    annotations: dict[str, str],
    starts_at_ms: int,
    ends_at_ms: int,
    generator_url: str | None = None,
) -> dict[str, Any]:
    """One alert as :meth:`AlertmanagerClient.post_alerts` sends it; ``labels`` identify the alert.

    >>> alert_payload({"alertname": "errors"}, {}, 0, 60_000)["endsAt"]
    '1970-01-01T00:01:00.000Z'
    """
    alert: dict[str, Any] = {
        "labels": dict(labels),
        "annotations": dict(annotations),
        "startsAt": format_time(starts_at_ms),
        "endsAt": format_time(ends_at_ms),
    }
    if generator_url is not None:
        alert["generatorURL"] = generator_url
    return alert


class AlertmanagerClient:
    """Posts alerts to, and silences them in, the Alertmanager at ``base_url`` (``http://host:9093``).

    Each method raises :class:`DeliveryError` when Alertmanager is unreachable or refuses the request.

    >>> mock = httpx.MockTransport(lambda r: httpx.Response(200, json={"silenceID": "s-1"}))
    >>> am = AlertmanagerClient("http://am.test", 5.0, httpx.Client(transport=mock))
    >>> am.put_silence({"alertname": "errors"}, 0, 60_000, "ops", "")
    's-1'
    >>> am.close()
    """

    def __init__(self, base_url: str, timeout_s: float, client: httpx.Client | None = None) -> None:
        self._api = base_url.rstrip("/") + "/api/v2"
        self._client = client or httpx.Client(timeout=timeout_s)

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Create, refresh or resolve alerts (see :func:`alert_payload` for one alert's shape)."""
        response = self._request("POST", "/alerts", json=alerts)
        if not response.is_success:
            raise DeliveryError(f"alertmanager answered {response.status_code} to posted alerts")

    def put_silence(
        self,
        matchers: dict[str, str],
        starts_at_ms: int,
        ends_at_ms: int,
        created_by: str,
        comment: str,
        silence_id: str | None = None,
    ) -> str:
        """Create a silence of the alerts whose labels equal ``matchers``, or update ``silence_id``.

        Returns the silence's id, which may differ from ``silence_id``: Alertmanager replaces a silence
        it cannot update in place, and an unknown id gets a new silence. An empty ``created_by`` or
        ``comment`` is given a default: Alertmanager's UI insists on both, though 0.25's API takes them empty.
        """
        body: dict[str, Any] = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in matchers.items()
            ],
            "startsAt": format_time(starts_at_ms),
            "endsAt": format_time(ends_at_ms),
            "createdBy": created_by or DEFAULT_SILENCE_CREATOR,
            "comment": comment or DEFAULT_SILENCE_COMMENT,
        }
        if silence_id is not None:
            response = self._request("POST", "/silences", json={"id": silence_id, **body})
            if response.status_code != 404:
                return self._silence_id(response)
            logger.info(
                "silence unknown to alertmanager, creating a new one",
                extra={"action": "alertmanager_silence_recreated", "silence_id": silence_id},
            )
        return self._silence_id(self._request("POST", "/silences", json=body))

    def expire_silence(self, silence_id: str) -> None:
        """Expire a silence now; one that is already expired or unknown counts as expired."""
        response = self._request("DELETE", f"/silence/{silence_id}")
        if response.is_success or response.status_code == 404:
            return
        # Alertmanager 0.25 answers 500 "silence not found" for an unknown id.
        if response.status_code == 500 and "not found" in response.text:
            return
        raise DeliveryError(f"alertmanager answered {response.status_code} to expiring a silence")

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, json: Any = None) -> httpx.Response:
        try:
            return self._client.request(method, self._api + path, json=json)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"alertmanager unreachable: {exc.__class__.__name__}") from exc

    def _silence_id(self, response: httpx.Response) -> str:
        if not response.is_success:
            raise DeliveryError(f"alertmanager answered {response.status_code} to a silence")
        try:
            silence_id = response.json()["silenceID"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryError("alertmanager's silence reply has no silenceID") from exc
        if not isinstance(silence_id, str) or not silence_id:
            raise DeliveryError("alertmanager's silence reply has no silenceID")
        return silence_id
