"""Messages an operator reads say what is wrong and how to fix it: a body that is not JSON names the
parser's reason and where it stopped, on every route alike; a time whose ``+`` was lost in a query string
says to send it as ``%2B``; a refused role reads as English."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Api
from tests.helpers import assert_error, ev

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/orgs/org-a"),
        ("POST", "/v1/jobs/cleanup-events/runs"),
        ("POST", "/v1/artifacts/a1/retries"),
        ("POST", "/v1/events"),
    ],
)
@pytest.mark.parametrize(
    ("body", "places"),
    [
        (b'{"name": ', {(1, 10)}),
        # At the comma (orjson, on POST /v1/events) or at the brace after it (the other routes' parser).
        (b'{\n  "name": "x",\n}', {(2, 14), (3, 1)}),
    ],
    ids=["cut-short", "trailing-comma"],
)
def test_a_body_that_is_not_json_is_400_saying_why_and_where(
    api: Api, method: str, path: str, body: bytes, places: set[tuple[int, int]]
) -> None:
    message = assert_error(
        api.call(method, path, content=body, headers=JSON), 400, "invalid_json", field="body"
    )
    found = re.fullmatch(
        r"is not valid JSON: (?P<reason>.+) at line (?P<line>\d+) column (?P<column>\d+)", message
    )
    assert found, message
    assert (int(found["line"]), int(found["column"])) in places, message
    # The parser's own reason, never a bare offset such as "9: JSON decode error".
    assert not found["reason"][0].isdigit(), message


@pytest.mark.parametrize("name", ["start", "end"])
def test_an_unencoded_plus_in_a_query_time_says_to_send_it_as_2b(api: Api, name: str) -> None:
    # What a client sends when it pastes "+02:00" into a URL unencoded: the server reads a space.
    r = api.call("GET", f"/v1/metrics/history?period=hourly&{name}=2026-12-07T02:00:00+02:00")
    message = assert_error(r, 422, "invalid_time", field=name)
    assert message.endswith("in a query string, send + as %2B"), message


def test_an_encoded_plus_is_read_as_the_offset(api: Api) -> None:
    r = api.call("GET", "/v1/metrics/history?period=hourly&start=2026-12-07T02:00:00%2B02:00")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", ["yesterday", "2026-12-07 02:00:00", "2026-12-07T02:00:00 0200"])
def test_other_bad_times_get_no_hint_about_plus(api: Api, value: str) -> None:
    message = assert_error(api.call("GET", "/v1/events", params={"start": value}), 422, field="start")
    assert "%2B" not in message, message


def test_a_refused_role_reads_as_english(api: Api) -> None:
    viewer, ingest = api.key("viewer"), api.key("ingest")
    sent = api.call("POST", "/v1/events", viewer, json=ev("artifact_received"))
    assert assert_error(sent, 403, "forbidden_role") == "this needs an ingest or staff key"
    read = api.call("GET", "/v1/events", ingest)
    assert assert_error(read, 403, "forbidden_role") == "this needs a viewer or staff key"
