"""Strict input, without a server: the one string rule, RFC 3339 times, strict request models, exact
integers in metadata, and the JSON body decoder of ``POST /v1/events``.

The HTTP replies, on both databases, are in ``tests/api/test_hostile_input.py``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as ModelError

from tests.conftest import NOW_MS
from voicemon.api import routes_events
from voicemon.api.schemas import EventIn, OrgIn, RetryIn, RunIn
from voicemon.domain.events import MAX_INT64, MIN_INT64, Event, FieldError, ValidationContext, validate_event
from voicemon.domain.text import INVALID_CHARACTER, NAME, TEXT, check_text
from voicemon.domain.timeutil import (
    HOUR_MS,
    MINUTE_MS,
    TimeParseError,
    format_time,
    parse_time,
    parse_time_text,
)
from voicemon.errors import BadRequest, ValidationError

CTX = ValidationContext(
    now_ms=NOW_MS,
    event_retention_ms=48 * HOUR_MS,
    scope_organization_id=None,
    new_event_id=lambda ms: f"generated-{ms}",
)

# Every code point, lone surrogates included (hypothesis leaves them out unless told).
ANY_CHARACTER = st.characters(exclude_categories=())


def event(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "event_type": "transcription_completed",
        "artifact_id": "a1",
        "timestamp": format_time(NOW_MS - MINUTE_MS),
        **fields,
    }


def errors_of(raw: dict[str, Any]) -> list[tuple[str, str]]:
    result = validate_event(raw, CTX)
    assert isinstance(result, list), result
    return [(e.field, e.code) for e in result]


def accepted(raw: dict[str, Any]) -> Event:
    result = validate_event(raw, CTX)
    assert isinstance(result, Event), result
    return result


# --- the string rule ----------------------------------------------------------------------------------


def _storable(value: str) -> bool:
    """What both databases hold: no NUL, and valid UTF-8 (which no lone surrogate is)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


@settings(max_examples=500)
@given(st.text(ANY_CHARACTER, max_size=20))
def test_text_is_refused_exactly_when_a_database_could_not_hold_it(value: str) -> None:
    problem = check_text(value)
    assert (problem is None) == _storable(value)
    if problem is not None:
        assert problem.code == INVALID_CHARACTER


@settings(max_examples=500)
@given(st.text(ANY_CHARACTER, max_size=20))
def test_a_name_is_also_refused_for_any_control_character(value: str) -> None:
    controls = any(unicodedata.category(ch) == "Cc" for ch in value)
    assert (check_text(value, kind=NAME) is None) == (_storable(value) and not controls)


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        ("a\x00", TEXT, "must not contain NUL (U+0000, at character 2)"),
        ("\ud800x", TEXT, "must not contain a lone UTF-16 surrogate (U+D800, at character 1)"),
        ("é\udfff", TEXT, "must not contain a lone UTF-16 surrogate (U+DFFF, at character 2)"),
        ("Acme\x1b[2J", NAME, "must not contain a control character (U+001B, at character 5)"),
        ("line\nbreak", NAME, "must not contain a control character (U+000A, at character 5)"),
        ("\x85", NAME, "must not contain a control character (U+0085, at character 1)"),
        ("\x7f", NAME, "must not contain a control character (U+007F, at character 1)"),
    ],
)
def test_the_message_names_the_character_and_where_it_is(value: str, kind: Any, message: str) -> None:
    problem = check_text(value, kind=kind)
    assert problem is not None
    assert (problem.code, problem.message) == (INVALID_CHARACTER, message)


@pytest.mark.parametrize("value", ["", "plain", "tab\there", "new\nline", "\x1b[31m", "\ud7ff\ue000", "😀"])
def test_text_keeps_every_other_character_as_given(value: str) -> None:
    assert check_text(value) is None


@pytest.mark.parametrize("value", ["Acme Inc.", "Ünïcödé GmbH", "東京", "a\u00a0b", "😀"])
def test_names_keep_printable_text(value: str) -> None:
    assert check_text(value, kind=NAME) is None


STRING_FIELDS = (
    "event_id",
    "artifact_id",
    "organization_id",
    "voice_note_id",
    "coach_user_id",
    "error_message",
    "error_code",
)


@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800", "\udc00"])
@pytest.mark.parametrize("name", STRING_FIELDS)
def test_every_event_string_field_refuses_what_a_database_cannot_hold(name: str, bad: str) -> None:
    assert errors_of(event(**{name: bad})) == [(name, INVALID_CHARACTER)]


@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800"])
def test_metadata_strings_and_keys_refuse_what_a_database_cannot_hold(bad: str) -> None:
    assert errors_of(event(metadata={"ai_model": bad})) == [("metadata.ai_model", INVALID_CHARACTER)]
    assert errors_of(event(metadata={"note": bad})) == [("metadata.note", INVALID_CHARACTER)]
    assert errors_of(event(metadata={"deep": [{"x": bad}]})) == [("metadata.deep.0.x", INVALID_CHARACTER)]
    assert errors_of(event(metadata={bad: 1})) == [(f"metadata.{bad}", INVALID_CHARACTER)]
    assert errors_of(event(metadata={"o": {bad: 1}})) == [(f"metadata.o.{bad}", INVALID_CHARACTER)]


def test_event_strings_keep_control_characters_other_than_nul() -> None:
    kept = accepted(event(error_message="line 1\nline 2\ttab\x1b", metadata={"k": "\x01"}))
    assert kept.error_message == "line 1\nline 2\ttab\x1b"
    assert kept.metadata == {"k": "\x01"}


# --- reserved types -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["retry_initiated", "retry_succeeded", "retry_failed"])
@pytest.mark.parametrize("scope", [None, "org-a"])
def test_retry_types_are_reserved_for_every_key(kind: str, scope: str | None) -> None:
    ctx = ValidationContext(NOW_MS, 48 * HOUR_MS, scope, lambda ms: f"g-{ms}")
    result = validate_event(event(event_type=kind), ctx)
    assert isinstance(result, list)
    [error] = result
    assert (error.field, error.code) == ("event_type", "reserved_type")
    assert kind in error.message


# --- exact integers in metadata -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [MIN_INT64, -1, 0, MAX_INT64, 1e19, -1e300, 2.5, True, None, "9" * 40])
def test_unknown_metadata_keeps_what_a_64_bit_reader_holds_exactly(value: object) -> None:
    assert accepted(event(metadata={"x": value, "nested": [{"y": value}]})).metadata == {
        "x": value,
        "nested": [{"y": value}],
    }


@pytest.mark.parametrize("value", [MAX_INT64 + 1, 2**64, MIN_INT64 - 1, -(2**100)])
def test_unknown_metadata_refuses_integers_beyond_signed_64_bits(value: int) -> None:
    result = validate_event(event(metadata={"x": value, "deep": {"list": [1, value]}}), CTX)
    assert isinstance(result, list)
    assert [(e.field, e.code) for e in result] == [
        ("metadata.x", "out_of_range"),
        ("metadata.deep.list.1", "out_of_range"),
    ]
    assert all("64 bits" in e.message for e in result)


def test_metadata_errors_keep_their_order_known_keys_first() -> None:
    raw = event(metadata={"z": float("nan"), "claim_count": -1, "x": 2**64, "ai_model": 3})
    assert errors_of(raw) == [
        ("metadata.claim_count", "out_of_range"),
        ("metadata.ai_model", "invalid_type"),
        ("metadata.z", "not_finite"),
        ("metadata.x", "out_of_range"),
    ]


def test_deeply_nested_metadata_is_refused_without_a_crash() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    result = validate_event(event(metadata={"deep": deep}), CTX)
    assert isinstance(result, list)
    assert [e.field for e in result] == ["metadata"]


# --- the events body decoder ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("18446744073709551616", 2**64),
        ("-9223372036854775809", -(2**63) - 1),
        ("9223372036854775808", 2**63),
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("9223372036854775807", MAX_INT64),
        ("1e19", 1e19),
        ("18446744073709551616.0", 1.8446744073709552e19),
    ],
)
def test_the_body_decoder_keeps_every_number_as_written(literal: str, value: object) -> None:
    decoded = routes_events._decode(f'{{"metadata": {{"x": {literal}}}}}'.encode())
    assert decoded == {"metadata": {"x": value}}
    assert type(decoded["metadata"]["x"]) is type(value)


def test_the_body_decoder_uses_orjson_alone_without_a_rounded_integer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_stdlib(*_: object, **__: object) -> None:
        raise AssertionError("the stdlib decoder was used")

    monkeypatch.setattr(routes_events, "json", SimpleNamespace(loads=no_stdlib))
    body = b'{"event_id": "12345678901234567890123", "metadata": {"n": 9223372036854775807, "f": 2.5}}'
    assert routes_events._decode(body)["event_id"] == "12345678901234567890123"


@pytest.mark.parametrize(
    "body",
    [
        b'{"x": 18446744073709551616, "y": NaN}',
        b'{"x": 18446744073709551616, "y": Infinity}',
        b'{"x": 18446744073709551616, "y": -Infinity}',
        b'{"x": 18446744073709551616, "y": "\\ud800"}',
        b'{"x": 18446744073709551616,}',
    ],
)
def test_the_body_decoder_accepts_no_more_than_strict_json(body: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        routes_events._decode(body)
    assert refused.value.code == "invalid_json"


# --- RFC 3339 -----------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@st.composite
def rfc3339(draw: st.DrawFn) -> tuple[str, int, tuple[int, int]]:
    """A valid RFC 3339 date-time, its epoch ms (worked out by datetime, not by parse_time), and where
    in the text its fraction digits are (start, end)."""
    local = draw(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)))
    local = local.replace(microsecond=0)
    digits = draw(st.text("0123456789", max_size=9))
    offset_minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    zulu = draw(st.sampled_from(["Z", "z", None]))
    sep = draw(st.sampled_from("Tt"))
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    fraction_start = len(text) + 1
    if digits or draw(st.booleans()):
        digits = digits or "0"
        text += "." + digits
    fraction = (fraction_start, fraction_start + len(digits)) if digits else (0, 0)
    millis = int(digits[:3].ljust(3, "0")) if digits else 0
    if zulu is not None and draw(st.booleans()):
        text += zulu
        offset_minutes = 0
    else:
        sign = "-" if offset_minutes < 0 or (offset_minutes == 0 and draw(st.booleans())) else "+"
        text += f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    instant = local.replace(tzinfo=UTC) - timedelta(minutes=offset_minutes)
    return text, (instant - _EPOCH) // timedelta(milliseconds=1) + millis, fraction


@settings(max_examples=400)
@given(rfc3339())
def test_parse_time_reads_every_rfc3339_date_time(case: tuple[str, int, tuple[int, int]]) -> None:
    text, ms, _ = case
    assert parse_time(text) == ms


@settings(max_examples=400)
@given(rfc3339(), st.data())
def test_parse_time_refuses_a_date_time_missing_any_character(
    case: tuple[str, int, tuple[int, int]], data: st.DataObject
) -> None:
    text, _, (start, end) = case
    i = data.draw(st.integers(0, len(text) - 1))
    shorter = text[:i] + text[i + 1 :]
    if start <= i < end and end - start > 1:
        assert parse_time(shorter) is not None  # one fraction digit fewer is still RFC 3339
        return
    with pytest.raises(TimeParseError):
        parse_time(shorter)


@settings(max_examples=400)
@given(rfc3339(), st.data())
def test_parse_time_refuses_a_date_time_with_any_character_added(
    case: tuple[str, int, tuple[int, int]], data: st.DataObject
) -> None:
    text, _, (start, end) = case
    i = data.draw(st.integers(0, len(text)))
    extra = data.draw(st.one_of(st.sampled_from("0123456789 :-+.TZtz"), ANY_CHARACTER))
    longer = text[:i] + extra + text[i:]
    if extra in "0123456789" and end > start and start <= i <= end:
        assert parse_time(longer) is not None  # one fraction digit more is still RFC 3339
        return
    with pytest.raises(TimeParseError):
        parse_time(longer)


@settings(max_examples=200)
@given(rfc3339())
def test_a_date_time_without_its_offset_is_naive(case: tuple[str, int, tuple[int, int]]) -> None:
    text, _, _ = case
    local = re.sub(r"([Zz]|[+-]\d\d:\d\d)$", "", text)
    with pytest.raises(TimeParseError) as refused:
        parse_time(local)
    assert refused.value.code == "naive_time"


@pytest.mark.parametrize(
    "text",
    [
        "20261202T065841Z",  # ISO 8601 basic format
        "2026-12-02T06:58Z",  # no seconds
        "2026-12-02T06Z",  # hour only
        "2026-12-02T06:58:41+0000",  # offset without colon
        "2026-12-02T06:58:41+00",  # offset without minutes
        "2026-12-02T06:58:41+00:00:00",  # offset with seconds
        "2026-12-02 06:58:41Z",  # space for T
        "2026-12-02T06:58:41.Z",  # empty fraction
        "2026-12-02T06:58:41,5Z",  # comma fraction
        "2026-12-02T6:58:41Z",  # one-digit hour
        "2026-W49-3T06:58:41Z",  # week date
        "2026-336T06:58:41Z",  # ordinal date
        "+2026-12-02T06:58:41Z",  # signed year
        "2026-12-02T06:58:41Z\n",
        " 2026-12-02T06:58:41Z",
        "2026-12-02T24:00:00Z",
        "2026-12-02T06:60:00Z",
        "2026-12-31T23:59:60Z",  # leap second: refused (see parse_time)
        "2026-02-29T00:00:00Z",
        "2026-12-02T06:58:41+24:00",
        "2026-12-02T06:58:41+05:60",
        "٢٠٢٦-12-02T06:58:41Z",  # non-ASCII digits
        "2026-12-02T06:58:41.\u0661Z",  # non-ASCII fraction digit
        "2026-12-02T06:58:41UTC",
    ],
)
def test_parse_time_refuses_other_iso_8601_spellings(text: str) -> None:
    with pytest.raises(TimeParseError) as refused:
        parse_time(text)
    assert refused.value.code == "invalid_time", text


@pytest.mark.parametrize("text", ["2026-12-02T06:58:41", "2026-12-02t06:58:41.5", "2026-12-02"])
def test_local_times_keep_their_own_code(text: str) -> None:
    with pytest.raises(TimeParseError) as refused:
        parse_time(text)
    assert refused.value.code == "naive_time"


def test_parse_time_truncates_fractions_to_milliseconds() -> None:
    base = parse_time("2026-11-28T11:05:00Z")
    assert parse_time("2026-11-28T11:05:00.9999999Z") == base + 999
    assert parse_time("2026-11-28T11:05:00.0001Z") == base
    assert parse_time("2026-11-28T11:05:00.1-00:00") == base + 100
    assert parse_time("2024-02-29T00:00:00+14:00") == parse_time("2024-02-28T10:00:00Z")


def test_parse_time_keeps_its_range() -> None:
    assert parse_time("1970-01-01T00:00:00Z") == 0
    assert parse_time("9999-12-31T23:59:59.999Z") == 253_402_300_799_999
    for outside in ("1969-12-31T23:59:59.999Z", "1970-01-01T00:30:00+01:00", "9999-12-31T23:00:00-01:00"):
        with pytest.raises(TimeParseError, match="outside the years"):
            parse_time(outside)


@pytest.mark.parametrize("value", ["1795863900000", "0", "-0"])
def test_a_time_parameter_takes_epoch_ms_as_ascii_digits(value: str) -> None:
    assert parse_time_text("start", value) == int(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", "empty"),
        ("²", "invalid_time"),
        ("١٧٩٥٨٦٣٩٠٠٠٠٠", "invalid_time"),
        ("+1795863900000", "invalid_time"),
        ("1795863900000.0", "invalid_time"),
        ("9" * 5000, "invalid_time"),
        ("-1", "invalid_time"),
        ("2026-12-02T06Z", "invalid_time"),
    ],
)
def test_a_bad_time_parameter_names_itself_once(value: str, code: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_time_text("end", value)
    assert (refused.value.field, refused.value.code) == ("end", code)
    assert "end" not in refused.value.message


# --- strict request models ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", [False, True, 1.0, 1.5, [], {}])
def test_a_job_target_is_a_string_or_an_integer_never_a_boolean(target: object) -> None:
    with pytest.raises(ValidationError) as refused:
        RunIn.model_validate({"target": target})
    assert (refused.value.field, refused.value.code) == ("target", "invalid_time")


@pytest.mark.parametrize("target", [None, 0, 1_795_863_900_000, "2026-11-28T11:05:00Z"])
def test_a_job_target_takes_its_two_forms(target: object) -> None:
    assert RunIn.model_validate({"target": target}).target == target


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (RetryIn, {"stage": "full", "reason": "a\x00"}, "reason"),
        (RetryIn, {"stage": "full", "reason": "\ud800"}, "reason"),
        (OrgIn, {"name": "a\x00"}, "name"),
        (OrgIn, {"name": "\udfff"}, "name"),
        (RunIn, {"target": "2026\x00"}, "target"),
        (EventIn, {"event_type": "artifact_received", "artifact_id": "a\x00"}, "artifact_id"),
    ],
)
def test_request_strings_follow_the_one_rule(model: Any, body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    assert (refused.value.field, refused.value.code) == (field, INVALID_CHARACTER)


def test_request_models_refuse_extra_fields_and_coercion() -> None:
    for model, body in [
        (RetryIn, {"stage": "full", "reason": "x", "extra": 1}),
        (RetryIn, {"stage": "full", "reason": 5}),
        (OrgIn, {"name": 5}),
        (EventIn, {"event_type": "artifact_received", "duration_ms": True}),
        (EventIn, {"event_type": "artifact_received", "duration_ms": "5"}),
        (EventIn, {"event_type": "artifact_received", "event_id": 5}),
    ]:
        with pytest.raises(ModelError):
            model.model_validate(body)


def test_float_fields_still_take_json_integers_and_enums_their_strings() -> None:
    parsed = EventIn.model_validate_json(
        '{"event_type": "transcription_completed", "pipeline_stage": "transcription", "duration_ms": 1200}'
    )
    assert parsed.duration_ms == 1200.0
    assert parsed.event_type.value == "transcription_completed"
    assert EventIn.model_validate({"event_type": "artifact_received", "duration_ms": 7}).duration_ms == 7.0


def test_field_error_is_what_the_checker_reports() -> None:
    # FieldError stays the validator's currency: one per broken rule, naming the field.
    assert validate_event(event(error_code="\x00"), CTX) == [
        FieldError("error_code", INVALID_CHARACTER, "must not contain NUL (U+0000, at character 1)")
    ]
