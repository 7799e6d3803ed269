"""FastAPI dependencies: the service container and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voicemon.domain.access import Principal
from voicemon.errors import ValidationError
from voicemon.service import Services

_bearer = HTTPBearer(auto_error=False, description="An API key made by `voicemon keys create`")


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    presented = credentials.credentials if credentials is not None else None
    return services(request).keys.authenticate(presented)


def reject_nul_characters(request: Request) -> None:
    """Refuse NUL in path and query values (422): PostgreSQL text cannot hold it, so no database sees it."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if "\x00" in value:
            raise ValidationError("must not contain NUL characters", code="invalid_character", field=name)


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
