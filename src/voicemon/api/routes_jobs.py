"""``/v1/jobs``: the scheduled jobs, their runs, and runs by hand (staff only: the runner checks)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from voicemon.api.deps import PrincipalDep
from voicemon.api.render import run_out
from voicemon.api.schemas import ErrorReply, JobList, RunIn, RunList, RunOut
from voicemon.domain.timeutil import TimeParseError, format_time, parse_time
from voicemon.errors import ValidationError
from voicemon.jobs import JobRunner

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobName = Annotated[str, Path(min_length=1, max_length=64)]


def _runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


@router.get("", response_model=JobList, summary="Jobs with their schedule, next run and last run")
def list_jobs(request: Request, principal: PrincipalDep) -> dict[str, Any]:
    return {
        "items": [
            {
                "name": o.job.name,
                "schedule": o.job.schedule,
                "next_run_at": format_time(o.next_run_ms),
                "last_run": run_out(o.last_run) if o.last_run else None,
            }
            for o in _runner(request).overview(principal)
        ]
    }


@router.post(
    "/{name}/runs",
    response_model=RunOut,
    responses={404: {"model": ErrorReply}, 409: {"model": ErrorReply}},
    summary="Run a job now, to its end; without a target it does what the scheduled run would do now",
)
def run_job(
    request: Request, principal: PrincipalDep, name: JobName, body: RunIn | None = None
) -> dict[str, Any]:
    target_ms = None
    if body is not None and body.target is not None:
        try:
            target_ms = parse_time(body.target)
        except TimeParseError as exc:
            raise ValidationError(str(exc), code=exc.code, field="target") from None
    return run_out(_runner(request).run_now(principal, name, target_ms))


@router.get(
    "/{name}/runs",
    response_model=RunList,
    responses={404: {"model": ErrorReply}},
    summary="Recent runs of one job, newest first",
)
def list_runs(
    request: Request,
    principal: PrincipalDep,
    name: JobName,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    return {"items": [run_out(r) for r in _runner(request).runs(principal, name, limit)]}
