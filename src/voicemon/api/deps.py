"""FastAPI dependencies: the service container and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voicemon.domain.access import Principal
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


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
