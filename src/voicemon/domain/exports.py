"""Export files (SPEC 17): their columns, how a stored value becomes a cell, and the two encodings.

Columns are a contract with whoever reads the files (``docs/exports.md``): a column may be added at the
end of a kind's list, never renamed, moved or dropped. A kind's rows are tuples of cells in its column
order; a cell is ``None``, a bool, an int, a float or a str (the columns of :data:`JSON_COLUMNS` hold
JSON as its text). Both encodings give every row every column:

- CSV (RFC 4180, ``\\r\\n`` line ends, a header line): ``None`` is an empty cell, a bool is ``true`` or
  ``false``, JSON text is written as is. A text cell that a spreadsheet would read as a formula (it begins
  with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading ``'``; numbers are ours and
  are never touched, so ``-`` is never the start of a number cell.
- JSON Lines: one object a line, its keys the columns in order, values typed (JSON text as the JSON value).
  A platform-wide snapshot row has no ``organization_id`` key at all, as in every reply.

Snapshot columns are the reply fields of SPEC 6.1 flattened (:func:`flatten_snapshot`): a stage's fields
are prefixed with the stage, and a latency ``{count, avg, p50, p95, p99}`` named ``<name>_ms`` becomes
``<name>_count``, ``<name>_avg_ms``, ``<name>_p50_ms``…, as in ``transcription_latency_p95_ms``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from enum import StrEnum
from itertools import islice
from typing import Any

import orjson

from voicemon.domain.artifacts import ArtifactState
from voicemon.domain.events import NANO_USD_PER_USD
from voicemon.domain.snapshot import SnapshotParts, render_fields, render_parts
from voicemon.domain.snapshot_fields import ORG_BREAKDOWN
from voicemon.domain.timeutil import format_time

ROWS_PER_CHUNK = 500
"""Rows encoded into one piece of the stream: big enough that a piece costs little to send, small
enough that memory stays flat (a piece is tens of kilobytes)."""


class ExportKind(StrEnum):
    EVENTS = "events"
    ARTIFACTS = "artifacts"
    HISTORY = "history"
    ORGS = "orgs"


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"

    @property
    def media_type(self) -> str:
        return "text/csv; charset=utf-8" if self is ExportFormat.CSV else "application/x-ndjson"


Cell = None | bool | int | float | str
Row = tuple[Cell, ...]

# --- events ------------------------------------------------------------------------------------------

EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "artifact_id",
    "organization_id",
    "voice_note_id",
    "coach_user_id",
    "pipeline_stage",
    "timestamp",
    "received_at",
    "stage_started_at",
    "stage_completed_at",
    "duration_ms",
    "previous_status",
    "new_status",
    "error_code",
    "error_message",
    "ai_model",
    "ai_cost_usd",
    "confidence_score",
    "claim_count",
    "entity_count",
    "draft_count",
    "metadata",
)

EVENT_SOURCE = (
    "event_id",
    "event_type",
    "artifact_id",
    "organization_id",
    "voice_note_id",
    "coach_user_id",
    "pipeline_stage",
    "ts_ms",
    "received_ms",
    "stage_started_at_ms",
    "stage_completed_at_ms",
    "duration_us",
    "previous_status",
    "new_status",
    "error_code",
    "error_message",
    "cost_nusd",
    "confidence_ppb",
    "claim_count",
    "entity_count",
    "draft_count",
    "metadata",
)
"""The stored values :func:`event_cells` takes, in its argument order: times in epoch ms, the duration
in µs, the cost in nano-dollars, the confidence in parts per billion, the metadata as JSON text."""

_PPB = 1_000_000_000


def _time(ms: int | None) -> str | None:
    return format_time(ms) if ms is not None else None


def event_cells(
    event_id: str,
    event_type: str,
    artifact_id: str | None,
    organization_id: str | None,
    voice_note_id: str | None,
    coach_user_id: str | None,
    pipeline_stage: str | None,
    ts_ms: int,
    received_ms: int,
    stage_started_at_ms: int | None,
    stage_completed_at_ms: int | None,
    duration_us: int | None,
    previous_status: str | None,
    new_status: str | None,
    error_code: str | None,
    error_message: str | None,
    cost_nusd: int,
    confidence_ppb: int | None,
    claim_count: int | None,
    entity_count: int | None,
    draft_count: int | None,
    metadata: str | None,
) -> Row:
    """One stored event (:data:`EVENT_SOURCE`) as its :data:`EVENT_COLUMNS` cells. The hot loop of an
    events export: plain values in, plain values out, no object built per row."""
    model = None
    if metadata is not None and '"ai_model"' in metadata:
        found = orjson.loads(metadata).get("ai_model")
        model = found if isinstance(found, str) else None
    return (
        event_id,
        event_type,
        artifact_id,
        organization_id,
        voice_note_id,
        coach_user_id,
        pipeline_stage,
        format_time(ts_ms),
        format_time(received_ms),
        _time(stage_started_at_ms),
        _time(stage_completed_at_ms),
        duration_us / 1000 if duration_us is not None else None,
        previous_status,
        new_status,
        error_code,
        error_message,
        model,
        cost_nusd / NANO_USD_PER_USD,
        confidence_ppb / _PPB if confidence_ppb is not None else None,
        claim_count,
        entity_count,
        draft_count,
        metadata,
    )


# --- artifacts ---------------------------------------------------------------------------------------

ARTIFACT_COLUMNS = (
    "artifact_id",
    "organization_id",
    "voice_note_id",
    "coach_user_id",
    "source_channel",
    "status",
    "stuck",
    "current_stage",
    "failed_stage",
    "last_error_code",
    "last_error_message",
    "received_at",
    "completed_at",
    "last_event_at",
    "event_count",
    "retry_count",
    "total_ai_cost_usd",
)


def artifact_cells(s: ArtifactState, stuck: bool) -> Row:
    """An artifact summary as its :data:`ARTIFACT_COLUMNS` cells: the fields of the artifact list."""
    return (
        s.artifact_id,
        s.organization_id,
        s.voice_note_id,
        s.coach_user_id,
        s.source_channel,
        s.status.value,
        stuck,
        s.current_stage.value if s.current_stage else None,
        s.failed_stage.value if s.failed_stage else None,
        s.last_error_code,
        s.last_error_message,
        _time(s.received_at_ms),
        _time(s.completed_at_ms),
        format_time(s.last_event_at_ms),
        s.event_count,
        s.retry_count,
        s.total_cost_nusd / NANO_USD_PER_USD,
    )


# --- snapshots ---------------------------------------------------------------------------------------


def flatten_snapshot(rendered: Mapping[str, Any]) -> dict[str, Any]:
    """Reply fields of a snapshot (SPEC 6.1) as flat columns, in reply order (see the module docstring).

    >>> flatten_snapshot({"stages": [{"stage": "transcription", "failed": 1}], "x_latency_ms": {"count": 2, "p95": 3.0}})
    {'transcription_failed': 1, 'x_latency_count': 2, 'x_latency_p95_ms': 3.0}
    """  # noqa: E501
    flat: dict[str, Any] = {}
    for name, value in rendered.items():
        if name == "stages":
            for item in value:
                prefix = item["stage"]
                flat.update(
                    (f"{prefix}_{key}", cell)
                    for key, cell in flatten_snapshot({k: v for k, v in item.items() if k != "stage"}).items()
                )
        elif isinstance(value, Mapping):
            base = name.removesuffix("_ms")
            for key, cell in value.items():
                flat[f"{base}_{key}" if key == "count" else f"{base}_{key}_ms"] = cell
        else:
            flat[name] = value
    return flat


_EMPTY = SnapshotParts()
SNAPSHOT_COLUMNS = tuple(flatten_snapshot(render_parts(_EMPTY)))
HISTORY_COLUMNS = (
    "period_type",
    "period_start",
    "period_end",
    "organization_id",
    "computed_at",
    "live",
    *SNAPSHOT_COLUMNS,
)
ORG_FIELD_COLUMNS = tuple(flatten_snapshot(render_fields(_EMPTY, ORG_BREAKDOWN)))
ORG_COLUMNS = ("organization_id", "organization_name", *ORG_FIELD_COLUMNS)


def history_cells(
    period_type: str,
    start_ms: int,
    end_ms: int,
    organization_id: str | None,
    computed_ms: int,
    live: bool,
    parts: SnapshotParts,
) -> Row:
    """One snapshot row as its :data:`HISTORY_COLUMNS` cells."""
    flat = flatten_snapshot(render_parts(parts))
    head: Row = (
        period_type,
        format_time(start_ms),
        format_time(end_ms),
        organization_id,
        format_time(computed_ms),
        live,
    )
    return head + tuple(flat[c] for c in SNAPSHOT_COLUMNS)


def org_cells(organization_id: str, organization_name: str | None, parts: SnapshotParts) -> Row:
    """One organization's merged range as its :data:`ORG_COLUMNS` cells."""
    flat = flatten_snapshot(render_fields(parts, ORG_BREAKDOWN))
    return (organization_id, organization_name, *(flat[c] for c in ORG_FIELD_COLUMNS))


COLUMNS: dict[ExportKind, tuple[str, ...]] = {
    ExportKind.EVENTS: EVENT_COLUMNS,
    ExportKind.ARTIFACTS: ARTIFACT_COLUMNS,
    ExportKind.HISTORY: HISTORY_COLUMNS,
    ExportKind.ORGS: ORG_COLUMNS,
}
# Columns whose cells are not plain scalars: booleans (CSV writes true or false), and JSON kept as its
# text (CSV writes the text, JSON Lines the JSON value).
FLAG_COLUMNS = frozenset({"stuck", "live"})
JSON_COLUMNS = frozenset({"metadata"})

# --- encodings ---------------------------------------------------------------------------------------

FORMULA_STARTS = frozenset({"=", "+", "-", "@", "\t", "\r"})


def neutralise(text: str) -> str:
    """A text cell as a spreadsheet shows it, never runs it: a leading ``'`` when it would be a formula.

    >>> neutralise("=HYPERLINK(1)"), neutralise("ok")
    ("'=HYPERLINK(1)", 'ok')
    """
    return "'" + text if text[:1] in FORMULA_STARTS else text


def _indices(columns: Sequence[str], names: frozenset[str]) -> tuple[int, ...]:
    return tuple(i for i, name in enumerate(columns) if name in names)


Counted = Callable[[int], None]


def _uncounted(_: int) -> None:
    pass


def encode(
    fmt: ExportFormat, kind: ExportKind, rows: Iterable[Row], counted: Counted | None = None
) -> Generator[bytes, None, None]:
    """The file of ``kind``'s rows, in pieces of :data:`ROWS_PER_CHUNK` rows (the CSV header comes with
    the first piece); ``counted`` is told each piece's number of rows before it is yielded. Nothing is
    held beyond one piece, whatever the number of rows."""
    columns = COLUMNS[kind]
    counted = counted or _uncounted
    if fmt is ExportFormat.CSV:
        return _csv(columns, rows, counted)
    return _jsonl(columns, rows, counted, omit_platform_org=kind is ExportKind.HISTORY)


def _csv(columns: Sequence[str], rows: Iterable[Row], counted: Counted) -> Generator[bytes, None, None]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    flags = _indices(columns, FLAG_COLUMNS)
    starts = FORMULA_STARTS
    source = iter(rows)
    while True:
        piece = list(islice(source, ROWS_PER_CHUNK))
        # Every text cell is checked (inline: this is the export's hot loop), whichever column it is in.
        lines = [[("'" + c if c[:1] in starts else c) if c.__class__ is str else c for c in r] for r in piece]
        for i in flags:
            for line in lines:
                line[i] = "true" if line[i] else "false"
        writer.writerows(lines)
        text = buffer.getvalue()
        if text:  # an empty piece could read as the end of a chunked body
            counted(len(piece))
            yield text.encode()
        if len(piece) < ROWS_PER_CHUNK:
            return
        buffer.seek(0)
        buffer.truncate()


def _jsonl(
    columns: Sequence[str], rows: Iterable[Row], counted: Counted, *, omit_platform_org: bool
) -> Generator[bytes, None, None]:
    org = columns.index("organization_id")
    json = _indices(columns, JSON_COLUMNS)
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    piece: list[bytes] = []
    for row in rows:
        line: dict[str, Any] = dict(zip(columns, row, strict=True))
        for i in json:
            text = row[i]
            if isinstance(text, str):
                line[columns[i]] = orjson.Fragment(text)
        if omit_platform_org and row[org] is None:
            del line["organization_id"]
        piece.append(dumps(line, option=newline))
        if len(piece) == ROWS_PER_CHUNK:
            counted(len(piece))
            yield b"".join(piece)
            piece.clear()
    if piece:
        counted(len(piece))
        yield b"".join(piece)
