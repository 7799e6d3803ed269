"""The export encoders (SPEC 17), as properties: what a CSV or JSON reader reads back is every cell, in
its column, with only formulas neutralised; pieces split anywhere; and the fast time renderer agrees with
the standard library."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from voicemon.domain.exports import (
    ARTIFACT_COLUMNS,
    EVENT_COLUMNS,
    HISTORY_COLUMNS,
    ROWS_PER_CHUNK,
    ExportFormat,
    ExportKind,
    encode,
    flatten_snapshot,
    neutralise,
)
from voicemon.domain.timeutil import format_time

scalars = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.sampled_from(["=1+1", "+cmd", "-2", "@SUM(A1)", "\tx", "\rx", 'a,"b"\r\nc', "'quoted"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


def artifact_rows() -> Any:
    stuck = ARTIFACT_COLUMNS.index("stuck")
    cells = [st.booleans() if i == stuck else scalars for i in range(len(ARTIFACT_COLUMNS))]
    return st.lists(st.tuples(*cells), max_size=8)


def _csv_text(cell: Any) -> str:
    if cell is None:
        return ""
    if cell is True or cell is False:
        return "true" if cell else "false"
    if isinstance(cell, str):
        return neutralise(cell)
    return str(cell)


@given(artifact_rows())
def test_csv_reads_back_every_cell_with_formulas_neutralised(rows: list[tuple[Any, ...]]) -> None:
    text = b"".join(encode(ExportFormat.CSV, ExportKind.ARTIFACTS, rows)).decode()
    table = list(csv.reader(io.StringIO(text, newline="")))
    assert table[0] == list(ARTIFACT_COLUMNS)
    assert table[1:] == [[_csv_text(c) for c in row] for row in rows]
    for line, row in zip(table[1:], rows, strict=True):
        texts = [cell for cell, given in zip(line, row, strict=True) if isinstance(given, str)]
        assert not any(cell[:1] in {"=", "+", "-", "@", "\t", "\r"} for cell in texts)


@given(st.lists(st.tuples(*[scalars] * len(EVENT_COLUMNS)), max_size=8))
def test_csv_of_events_reads_back_with_formulas_neutralised(rows: list[tuple[Any, ...]]) -> None:
    # Events have no flag column: their pieces take the fast path, written first and scanned after.
    text = b"".join(encode(ExportFormat.CSV, ExportKind.EVENTS, rows)).decode()
    table = list(csv.reader(io.StringIO(text, newline="")))
    assert table[1:] == [[_csv_text(c) for c in row] for row in rows]


@given(artifact_rows())
def test_json_lines_read_back_every_cell_typed(rows: list[tuple[Any, ...]]) -> None:
    data = b"".join(encode(ExportFormat.JSONL, ExportKind.ARTIFACTS, rows))
    lines = [orjson.loads(line) for line in data.splitlines()]
    assert lines == [dict(zip(ARTIFACT_COLUMNS, row, strict=True)) for row in rows]
    assert all(list(line) == list(ARTIFACT_COLUMNS) for line in lines)


@settings(max_examples=25)
@given(st.integers(min_value=0, max_value=3 * ROWS_PER_CHUNK + 1), st.sampled_from(list(ExportFormat)))
def test_pieces_hold_whole_rows_and_count_them(count: int, fmt: ExportFormat) -> None:
    metadata = '{"ai_model": "m", "n": [1, 2]}'
    rows = [(f"e-{i}", "artifact_received", *([None] * 20), metadata) for i in range(count)]
    told: list[int] = []
    pieces = list(encode(fmt, ExportKind.EVENTS, rows, told.append))
    assert sum(told) == count
    assert all(pieces), "no piece is empty"
    assert all(piece.endswith(b"\n") for piece in pieces), "a piece ends at a row's end"
    body = b"".join(pieces)
    if fmt is ExportFormat.JSONL:
        lines = [orjson.loads(line) for line in body.splitlines()]
        assert [line["event_id"] for line in lines] == [r[0] for r in rows]
        assert all(line["metadata"] == {"ai_model": "m", "n": [1, 2]} for line in lines)
    else:
        table = list(csv.reader(io.StringIO(body.decode(), newline="")))
        assert table[0] == list(EVENT_COLUMNS)
        assert len(table) == count + 1
        assert all(orjson.loads(line[-1]) == {"ai_model": "m", "n": [1, 2]} for line in table[1:])


def test_platform_history_rows_have_no_organization_key() -> None:
    platform = tuple(None if c == "organization_id" else 0 for c in HISTORY_COLUMNS)
    org = tuple("org-a" if c == "organization_id" else 0 for c in HISTORY_COLUMNS)
    lines = b"".join(encode(ExportFormat.JSONL, ExportKind.HISTORY, [platform, org])).splitlines()
    assert "organization_id" not in orjson.loads(lines[0])
    assert orjson.loads(lines[1])["organization_id"] == "org-a"


def test_snapshot_fields_flatten_by_stage_and_latency() -> None:
    rendered = {
        "artifacts_received": 3,
        "stages": [{"stage": "transcription", "failed": 1, "latency_ms": {"count": 2, "p95": 9.5}}],
        "end_to_end_latency_ms": {"count": 1, "avg": 4.0},
    }
    assert flatten_snapshot(rendered) == {
        "artifacts_received": 3,
        "transcription_failed": 1,
        "transcription_latency_count": 2,
        "transcription_latency_p95_ms": 9.5,
        "end_to_end_latency_count": 1,
        "end_to_end_latency_avg_ms": 4.0,
    }


@given(st.integers(min_value=-(10**12), max_value=253_402_300_799_999))
def test_time_text_is_the_standard_librarys(ms: int) -> None:
    moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
    assert format_time(ms) == f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
