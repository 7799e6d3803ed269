"""FastAPI dependencies: the service container and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voicemon.api.edge import PRINCIPAL_STATE, authenticate
from voicemon.domain.access import Principal
from voicemon.domain.text import check_text
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
    """The caller. The request edge (api/edge.py) authenticated it before any body was read and left it
    in the request state; only a request the edge did not guard is authenticated here."""
    checked = getattr(request.state, PRINCIPAL_STATE, None)
    if isinstance(checked, Principal):
        return checked
    presented = credentials.credentials if credentials is not None else None
    return await authenticate((await services(request)).keys, presented)


async def reject_nul_characters(request: Request) -> None:
    """Refuse (422, naming the parameter) a path or query value that breaks
    :func:`~voicemon.domain.text.check_text`, so no database sees it, and an empty query value
    (``?end=``): a parameter with no value is a mistake, never "no filter"."""
    values = [(n, v) for n, v in request.path_params.items() if isinstance(v, str)]
    for name, value in [*values, *request.query_params.multi_items()]:
        if value == "":
            raise ValidationError("must not be empty; leave it out instead", code="empty", field=name)
        problem = check_text(value)
        if problem is not None:
            raise ValidationError(problem.message, code=problem.code, field=name)


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
