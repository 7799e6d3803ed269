"""FastAPI dependencies: the service container and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from voicemon.domain.access import Principal
from voicemon.errors import ValidationError
from voicemon.service import Services

_bearer = HTTPBearer(auto_error=False, description="An API key made by `voicemon keys create`")


# These dependencies are async so that FastAPI runs them on the event loop: a sync dependency costs a
# trip through the thread pool on every request, which is most of the cost of a small ingest request.


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    presented = credentials.credentials if credentials is not None else None
    keys = (await services(request)).keys
    known = keys.cached(presented)
    if known is not None:
        return known
    # A cache miss reads the database: off the event loop.
    return await run_in_threadpool(keys.authenticate, presented)


async def reject_nul_characters(request: Request) -> None:
    """Refuse NUL in path and query values (422): PostgreSQL text cannot hold it, so no database sees it."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if "\x00" in value:
            raise ValidationError("must not contain NUL characters", code="invalid_character", field=name)


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
